"""Quantization-aware training (mobilevit/callbacks/qat.py, experiment=flowers102_qat): a tiny v1 and v2 checkpoint
fine-tuned through XNNPACK's int8 fake-quantization, the checkpoint read back (float weights + learned ranges), the
int8 program exported with those ranges and no calibration; the one-line refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC

import train as train_script
from mobilevit.errors import UserInputError
from mobilevit.export import calibration, load_artifact, main as export_main
from mobilevit.export.sidecar import sidecar_path
from mobilevit.models import read_weights
from mobilevit.models.pretrained import FAKE_QUANT_PREFIX

pytest.importorskip("executorch", reason="quantization-aware training needs pip install -e '.[executorch]'")


def _qat_config(make_cfg, source: Path, *overrides: str):  # noqa: ANN202 - DictConfig
    return make_cfg(
        ["experiment=flowers102_qat", *TINY_SYNTHETIC, *FAST_TRAIN, "logger=none", f"model.pretrained={source}",
         "trainer.max_epochs=1", "+trainer.limit_train_batches=3", *overrides]
    )  # fmt: skip


@pytest.mark.parametrize("name", ["mobilevitv2_050"])  # the family post-training int8 served worst; 4 minutes each
def test_qat_fine_tunes_through_int8_and_exports_with_the_learned_ranges(
    name: str, tiny_checkpoints, make_cfg, tmp_path: Path, monkeypatch, capsys
) -> None:
    source = tiny_checkpoints[name]
    # With the transformer's residual adds kept float: the int8 program must rebuild the graph QAT trained.
    cfg = _qat_config(make_cfg, source, f"model={name}", "callbacks.qat.float_ops=[residual]")
    assert cfg.callbacks.qat.source == str(source) and cfg.trainer.precision == "32-true" and not cfg.test
    metrics, objects = train_script.train(cfg)
    assert isinstance(objects["model"].net, torch.fx.GraphModule) and "val/acc" in metrics

    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    # A resume prepares the graph before Lightning restores it: the fake-quantizers' state loads strictly.
    resumed_cfg = make_cfg([f"ckpt_path={last}", "trainer.max_epochs=2", "trainer.enable_progress_bar=false"], "train",
                           "resumed")  # fmt: skip
    _, resumed = train_script.train(resumed_cfg)
    assert resumed["trainer"].global_step == 2 * objects["trainer"].global_step
    assert isinstance(resumed["model"].net, torch.fx.GraphModule)
    weights, fp32 = read_weights(last), read_weights(source)
    assert weights.state_dict.keys() == fp32.state_dict.keys()  # the float weights under their usual names
    assert weights.fake_quant_state and all(key.startswith(FAKE_QUANT_PREFIX) for key in weights.fake_quant_state)
    assert any(not torch.equal(weights.state_dict[key], fp32.state_dict[key]) for key in fp32.state_dict)  # trained
    # The ranges were learned: a fake-quantizer's scale starts at 1 and follows the observed activations.
    scales = [value for key, value in weights.fake_quant_state.items() if key.endswith(".scale")]
    assert scales and sum(not torch.all(scale == 1.0) for scale in scales) > len(scales) / 2
    weights.build()  # evaluate.py and predict read the float weights of the checkpoint

    def no_calibration(*args):  # noqa: ANN002, ANN202
        raise AssertionError("a QAT checkpoint's int8 program must not be calibrated")

    monkeypatch.setattr(calibration, "calibration_images", no_calibration)
    program = tmp_path / "qat_int8.pte"
    int8 = [str(last), "--format", "executorch", "--quantize", "int8", "--output", str(program)]
    assert export_main([*int8, "--float-ops", "attention"]) == 2
    assert "trained with callbacks.qat.float_ops=['residual']" in capsys.readouterr().err
    assert export_main(int8) == 0
    quantization = json.loads(sidecar_path(program).read_text())["quantization"]
    assert quantization == {
        "scheme": "int8", "runtime": "xnnpack", "method": "qat", "float_ops": ["residual"], "qat_from": str(source)
    }  # fmt: skip
    from mobilevit.export.executorch import qat_int8_network

    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = qat_int8_network(weights, (32, 32))(images)
    # Ranges trained on another int8 graph (an earlier version's) are refused in one line, not loaded half.
    stale = dataclasses.replace(weights, fake_quant_state=dict(list(weights.fake_quant_state.items())[:-2]))
    with pytest.raises(UserInputError, match="belong to another int8 graph .2 fake-quantizer tensors missing, 0 unk"):
        qat_int8_network(stale, (32, 32))
    # XNNPACK's integer kernels against PT2E's float simulation of the same int8 graph: rounding differs by a step.
    assert (load_artifact(program)(images) - expected).abs().max() <= 0.05 * expected.abs().max()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.pretrained=null"], "set model.pretrained=<fp32 checkpoint>"),
        (["data.image_size=64", "data.source_size=64"], "was trained with data.image_size=32, this run has"),
        (["data.multiscale=true", "data.multiscale_sizes=[32,64]"], "captures the network at one input size"),
        (["data.eval_image_size=64"], "captures the network at one input size"),
    ],
)
def test_qat_refuses_in_one_line(overrides: list[str], message: str, tiny_checkpoints, make_cfg) -> None:
    cfg = _qat_config(make_cfg, tiny_checkpoints["mobilevit_xxs"], "model=mobilevit_xxs", *overrides)
    with pytest.raises(UserInputError, match=message) as error:
        train_script.train(cfg)
    assert "\n" not in str(error.value)
