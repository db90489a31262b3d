"""mobilevit/utils/lr_scheduler.py: the budget-aware learning-rate schedule (warm-up, then a decay that reaches ~0
exactly when the budget runs out) and its resume where it stopped. The budget itself is tested in test_budget.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mobilevit.errors import UserInputError
from mobilevit.utils.lr_scheduler import WarmupDecayLR


def _scheduler(progress=None, **kwargs) -> WarmupDecayLR:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = WarmupDecayLR(optimizer, total_steps=100, steps_per_epoch=10, progress=progress, **kwargs)
    optimizer.step()  # as in training: the optimizer steps before its scheduler
    return scheduler


@pytest.mark.parametrize("decay, mid", [("cosine", 0.5), ("linear", 0.5)])
def test_decay_follows_the_budget_fraction(decay: str, mid: float) -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], decay=decay, min_lr=0.0)
    assert scheduler.get_last_lr() == [1.0]
    for fraction, expected in ((0.25, None), (0.5, mid), (1.0, 0.0), (1.7, 0.0)):
        spent[0] = fraction
        scheduler.step()
        if expected is not None:
            assert scheduler.get_last_lr()[0] == pytest.approx(expected, abs=1e-12)
    spent[0] = 0.25
    scheduler.step()
    quarter = scheduler.get_last_lr()[0]
    assert quarter == pytest.approx(0.75 if decay == "linear" else 0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_then_decay_over_the_budget_left() -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], warmup_epochs=1, warmup_start_factor=0.0)
    for step in range(1, 10):  # warmup: 10 steps, lr rises linearly, the budget is ignored
        spent[0] = step / 100
        scheduler.step()
        assert scheduler.get_last_lr()[0] == pytest.approx(step / 10)
    spent[0] = 0.2  # the warmup ends at 20 % of the budget: the decay spans the remaining 80 %
    scheduler.step()
    assert scheduler.decay_start == pytest.approx(0.2) and scheduler.get_last_lr()[0] == pytest.approx(1.0)
    spent[0] = 0.6
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5)  # halfway through the decay (cosine)


def test_state_is_plain_and_resumes_the_decay() -> None:
    spent = [0.0]
    scheduler = _scheduler(progress=lambda: spent[0], decay="linear")
    spent[0] = 0.4
    scheduler.step()
    state = scheduler.state_dict()
    assert "progress" not in state and state["decay_start"] == 0.0
    torch.save(state, Path("/dev/null"))  # picklable without the callable
    resumed = _scheduler(progress=lambda: 0.7, decay="linear")
    resumed.load_state_dict(state)
    resumed.step()
    assert resumed.get_last_lr()[0] == pytest.approx(0.3)


def test_unknown_decay_names_the_key() -> None:
    with pytest.raises(UserInputError, match="scheduler.decay must be one of"):
        _scheduler(decay="step")


def test_warmup_cosine_schedule() -> None:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = WarmupDecayLR(optimizer, total_steps=100, steps_per_epoch=10, warmup_epochs=2, min_lr=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert scheduler.warmup_steps == 20
    assert lrs[0] == pytest.approx(0.01)  # warmup_start_factor * lr
    assert all(a < b for a, b in zip(lrs[:20], lrs[1:21]))  # rising warmup
    assert lrs[20] == pytest.approx(1.0)  # peak after warmup
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:]))  # then decaying
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # min_lr at the end
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_warmup_cosine_resume_keeps_new_length() -> None:
    def make(total: int) -> tuple[torch.optim.Optimizer, WarmupDecayLR]:
        optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
        return optimizer, WarmupDecayLR(optimizer, total_steps=total, steps_per_epoch=10, warmup_epochs=1)

    optimizer, scheduler = make(50)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer, resumed = make(100)  # e.g. resumed with a larger trainer.max_epochs
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 30 and resumed.total_steps == 100
    assert resumed.get_lr()[0] == pytest.approx(resumed.lr_at(30, 1.0))
