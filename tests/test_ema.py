"""mobilevit/callbacks/ema.py (``callbacks=[default,ema]``): an exponential moving average of the weights is
validated, saved, tested, exported and resumed; with ``update_starting_at_step`` the plain weights serve until then."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from helpers import TINY_BUDGET
from lightning.pytorch.callbacks import EMAWeightAveraging
from recorders import StateRecorder, ValidationStates, float_state

import train as train_script
from evaluate import evaluate
from mobilevit.checkpoint import classifier_from_weights, load_checkpoint, read_trained
from mobilevit.models import read_weights
from mobilevit.utils import instantiate_callbacks


def _manual_ema(states: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """torch.optim.swa_utils' EMA: the first update copies the weights, later ones blend in (1 - decay)."""
    ema = dict(states[0])
    for state in states[1:]:
        ema = {key: decay * ema[key] + (1 - decay) * state[key] for key in ema}
    return ema


def _mean_loss(classifier: torch.nn.Module, loader: torch.utils.data.DataLoader) -> float:
    classifier.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(classifier(images), targets, reduction="sum") for images, targets in loader]
    return float(torch.stack(losses).sum()) / len(loader.dataset)


def _state_of(classifier: torch.nn.Module, checkpoint_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    classifier.load_state_dict(checkpoint_state)
    return classifier.eval()


def test_ema_weights_are_validated_saved_tested_and_exported(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    decay = 0.6  # low, so 4 steps move the average visibly away from the raw weights
    recorder = StateRecorder()
    monkeypatch.setattr(
        train_script, "instantiate_callbacks", lambda cfg, **options: [*instantiate_callbacks(cfg, **options), recorder]
    )
    cfg_overrides = [
        *TINY_SYNTHETIC,
        *FAST_TRAIN,
        *TINY_BUDGET,
        "callbacks=[default,ema]",
        f"callbacks.ema.decay={decay}",
        "data.batch_size=12",  # val and test: one batch each
        "optimizer.lr=0.05",
        "scheduler=none",
        "test_weights=best",  # the final test scores the best checkpoint, as evaluate.py below
    ]
    cfg = make_cfg(cfg_overrides, run_name="ema")
    metrics, objects = train_script.train(cfg)
    assert any(isinstance(callback, EMAWeightAveraging) for callback in instantiate_callbacks(cfg.callbacks))
    assert len(recorder.states) == 4
    ema = _manual_ema(recorder.states, decay)
    raw = recorder.states[-1]

    # last.ckpt (rewritten after every validation): state_dict = EMA weights, the raw ones kept aside.
    last_path = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    last = load_checkpoint(last_path)  # weights_only=True
    assert last["global_step"] == 4 and last["averaging_state"]["n_averaged"] == 4
    assert set(last["state_dict"]) == set(last["current_model_state"]) and all(k.startswith("net.") for k in ema)
    for key in ema:
        assert torch.allclose(last["state_dict"][key], ema[key], atol=1e-6), key
        assert torch.equal(last["current_model_state"][key], raw[key]), key
    assert any(not torch.allclose(ema[key], raw[key], atol=1e-4) for key in ema)

    # Validation ran on the EMA weights: the logged val/loss is theirs, not the raw weights'.
    datamodule = objects["datamodule"]
    classifier = classifier_from_weights(read_trained(last_path))
    ema_val_loss = _mean_loss(classifier, datamodule.val_dataloader())
    raw_val_loss = _mean_loss(_state_of(classifier, last["current_model_state"]), datamodule.val_dataloader())
    assert metrics["val/loss"] == pytest.approx(ema_val_loss, abs=1e-5)
    assert abs(metrics["val/loss"] - raw_val_loss) > 1e-3

    # The final test and evaluate.py score the best checkpoint's EMA weights.
    best = objects["best_ckpt"]
    eval_cfg = make_cfg([f"ckpt_path={best}", "trainer=cpu", "trainer.precision=32-true"], "eval", "eval")
    result = evaluate(eval_cfg)
    assert result["loss"] == pytest.approx(metrics["test/loss"], abs=1e-5)
    best_ckpt = load_checkpoint(best)
    raw_test_loss = _mean_loss(_state_of(classifier, best_ckpt["current_model_state"]), datamodule.test_dataloader())
    assert abs(metrics["test/loss"] - raw_test_loss) > 1e-3

    # python -m mobilevit.export rebuilds the network from the same EMA weights.
    exported = read_weights(best).build().state_dict()
    assert all(torch.equal(exported[key], best_ckpt["state_dict"]["net." + key]) for key in exported)

    # Resuming restores both: training continues from the raw weights, the average from the saved one.
    resumed_cfg = make_cfg(
        [*cfg_overrides, f"ckpt_path={last_path}", "trainer.max_epochs=3", "test=false"], run_name="resumed"
    )
    train_script.train(resumed_cfg)
    assert len(recorder.starts) == 2 and len(recorder.states) == 6
    assert all(torch.equal(recorder.starts[1][key], raw[key]) for key in raw)
    resumed = load_checkpoint(Path(resumed_cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    ema = _manual_ema(recorder.states, decay)
    assert all(torch.allclose(resumed["state_dict"][key], ema[key], atol=1e-6) for key in ema)


def test_ema_keeps_the_plain_weights_until_update_starting_at_step(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """callbacks.ema.update_starting_at_step=2, 4 steps, validation after steps 2 and 4: the first validation uses
    the plain weights of step 2 (not the untrained ones), the second and the final weights the average of steps 3-4."""
    decay = 0.6
    recorder, validated = StateRecorder(), ValidationStates()
    with_recorders = lambda cfg, **options: [*instantiate_callbacks(cfg, **options), recorder, validated]  # noqa: E731
    monkeypatch.setattr(train_script, "instantiate_callbacks", with_recorders)
    overrides = [*TINY_SYNTHETIC, *FAST_TRAIN, *TINY_BUDGET, "callbacks=[default,ema]", f"callbacks.ema.decay={decay}",
                 "callbacks.ema.update_starting_at_step=2", "optimizer.lr=0.05", "scheduler=none", "test=false"]  # fmt: skip
    _, objects = train_script.train(make_cfg(overrides, run_name="ema_start"))
    assert len(recorder.states) == 4 and len(validated.states) == 2
    first, second = validated.states
    assert all(torch.equal(first[key], recorder.states[1][key]) for key in first)  # plain weights after step 2
    assert any(not torch.allclose(first[key], recorder.starts[0][key]) for key in first)  # not the untrained ones
    ema = _manual_ema(recorder.states[2:], decay)  # the average starts from step 3's weights
    final = float_state(objects["model"])
    for key in ema:
        assert torch.allclose(second[key], ema[key], atol=1e-6), key
        assert torch.allclose(final[key], ema[key], atol=1e-6), key
