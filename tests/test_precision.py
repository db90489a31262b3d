"""The fast path: precision picked from the hardware, in-place activations, and their numerical equivalence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mobilevit.errors import UserInputError
from mobilevit.models import create_model, fuse_batchnorm
from mobilevit.utils import precision as precision_module
from mobilevit.utils.precision import autocast_dtype, cpu_supports_bf16, fast_precision


@pytest.mark.parametrize(("flags", "expected"), [("avx512_bf16", True), ("amx_bf16 amx_tile", True), ("avx2", False)])
def test_cpu_bf16_detection_reads_cpu_flags(flags: str, expected: bool, tmp_path: Path) -> None:
    cpuinfo = tmp_path / f"cpuinfo_{expected}_{len(flags)}"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse sse2 avx {flags}\n")
    assert cpu_supports_bf16(cpuinfo) is expected
    assert cpu_supports_bf16(tmp_path / "missing") is False


def test_fast_precision_falls_back_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native_bf16, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(precision_module, "cpu_supports_bf16", lambda native=native_bf16: native)
        assert fast_precision("cpu") == fast_precision("auto") == expected
    monkeypatch.setattr(precision_module, "gpu_supports_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fast_precision("gpu") == fast_precision("auto") == "bf16-mixed"
    assert fast_precision("cpu") == "32-true"  # a CPU run on a GPU machine still follows the CPU


@pytest.mark.parametrize(
    ("name", "capability", "expected"),
    [("T4", (7, 5), "16-mixed"), ("V100", (7, 0), "16-mixed"), ("A100", (8, 0), "bf16-mixed"), ("H100", (9, 0), "bf16-mixed")],
)
def test_fast_precision_on_gpus_by_compute_capability(
    name: str, capability: tuple[int, int], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 only where the GPU runs it natively (compute capability >= 8.0). On a T4 or V100, torch reports bf16 as
    supported because it can emulate it, but emulated bf16 convolutions are slow: 16-mixed there."""
    major, minor = capability
    props = type("Props", (), {"major": major, "minor": minor, "name": name})()
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    assert torch.cuda.is_bf16_supported() is True  # what the old check relied on, even on a T4 or V100
    assert fast_precision("gpu") == fast_precision("cuda") == fast_precision("auto") == expected


def test_autocast_dtype_speaks_lightnings_precision_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("32-true", "cpu") is None and autocast_dtype("32", "cpu") is None
    assert autocast_dtype("bf16-mixed", "cpu") is torch.bfloat16 and autocast_dtype("16-mixed", "cuda") is torch.float16
    monkeypatch.setattr(precision_module, "fast_precision", lambda device_type: "bf16-mixed")
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    with pytest.raises(UserInputError, match=r"benchmark.precision must be one of \['auto', '32-true', .*got 'fp32'"):
        autocast_dtype("fp32", "cpu", key="benchmark.precision")


@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_fast_inference_path_matches_the_plain_model(name: str) -> None:
    """Fused BN + channels-last: float32 within 1e-4 of the plain model; bf16 autocast within bf16 rounding."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, or fusing would be a no-op
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(4, 3, 96, 96)
    fast = fuse_batchnorm(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = model(images)
        fp32 = fast(images.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = fast(images.to(memory_format=torch.channels_last)).float()
    scale = plain.abs().max().item()
    assert scale > 0.1
    assert (fp32 - plain).abs().max().item() <= 1e-4 * max(1.0, scale)
    assert (bf16 - plain).abs().max().item() <= 0.05 * scale
    assert torch.equal(bf16.argmax(1), plain.argmax(1))


def test_in_place_activations_keep_training_gradients_exact() -> None:
    """ConvBNAct's SiLU runs in place (fewer memory passes); gradients equal an out-of-place copy's."""
    torch.manual_seed(0)
    model = create_model("mobilevit_xxs", num_classes=5).train()
    reference = create_model("mobilevit_xxs", num_classes=5).train()
    reference.load_state_dict(model.state_dict())
    in_place = [m for m in model.modules() if isinstance(m, torch.nn.SiLU) and m.inplace]
    assert len(in_place) > 10
    for module in reference.modules():
        if isinstance(module, torch.nn.SiLU):
            module.inplace = False
    images, targets = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    for net in (model, reference):
        torch.nn.functional.cross_entropy(net(images), targets).backward()
    for (name, a), b in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


def test_default_training_path_uses_the_fast_precision(make_cfg) -> None:
    """train.py with the default trainer precision and channels-last: bf16-mixed here when the CPU has it."""
    from conftest import FAST_TRAIN, TINY_SYNTHETIC
    from train import train

    overrides = [o for o in FAST_TRAIN if not o.startswith("trainer.precision")]
    cfg = make_cfg([*TINY_SYNTHETIC, *overrides, "model=mobilevit_xxs", "trainer.max_epochs=1", "logger=none"])
    assert cfg.trainer.precision == fast_precision("cpu")
    metrics, objects = train(cfg)
    trainer, module = objects["trainer"], objects["model"]
    assert trainer.precision == fast_precision("cpu")
    assert module.net.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()) and "test/acc" in metrics
