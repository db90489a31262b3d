"""Training reports: TensorBoard confusion matrix / confused pairs / mistakes grid, and training_history.png."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_TRAIN, TINY_SYNTHETIC
from lightning.pytorch.trainer.call import _call_callbacks_load_state_dict
from PIL import Image
from recorders import SpyReports, target
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mobilevit.callbacks import TrainingDiagnostics
from mobilevit.callbacks.diagnostics import Mistake, misclassified_figure, training_history_figure
from mobilevit.errors import UserInputError
from mobilevit.utils import instantiate_callbacks
from train import train

TRAIN_3_EPOCHS = [
    *TINY_SYNTHETIC,
    *FAST_TRAIN,
    "model=mobilevit_xxs",
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=2",
    "test=false",
]


SPY = f"callbacks.reports._target_={target(SpyReports)}"


def _reports_callback(objects: dict) -> SpyReports:
    (callback,) = [c for c in objects["trainer"].callbacks if isinstance(c, SpyReports)]
    return callback


def _png(image_event) -> Image.Image:
    return Image.open(io.BytesIO(image_event.encoded_image_string))


def test_reports_in_tensorboard_and_history_png(make_cfg) -> None:
    cfg = make_cfg(
        [
            *TRAIN_3_EPOCHS,
            SPY,
            "logger=tensorboard",
            "callbacks.reports.every_n_epochs=2",
            "callbacks.reports.max_images=4",
            "callbacks.reports.max_pairs=1",
        ]
    )
    _, objects = train(cfg)
    callback = _reports_callback(objects)
    run_dir = Path(cfg.paths.output_dir)
    val_batches = 2  # 12 validation images, batch size 8
    # Every epoch is collected from the validation pass itself (any may turn out to be the last), the sanity check
    # not at all; epoch 2 (every_n_epochs) and epoch 3 (the last validated) are reported.
    assert callback.collected == {0: val_batches, 1: val_batches, 2: val_batches}
    assert callback.reports_logged == 2
    assert callback._hook is None and not objects["model"]._forward_hooks

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    confusion = events.Images("val/confusion_matrix")
    assert len(confusion) == 2 and confusion[0].step < confusion[1].step
    assert min(_png(confusion[-1]).size) >= 300
    mistakes = events.Images("val/misclassified")
    assert len(mistakes) == 2
    with _png(mistakes[-1]) as grid:
        assert grid.width > 400  # up to 4 images per row
    table = events.Tensors("val/most_confused/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "Most confused classes after epoch 3" in table and "| 1 |" in table and "| 2 |" not in table

    # training_history.png and the per-epoch values behind it, equal to what the logger got.
    history = callback.history
    assert all(sorted(history[name]) == [0, 1, 2] for name in ("train/loss", "train/acc", "val/loss", "val/acc"))
    logged_val_acc = [event.value for event in events.Scalars("val/acc")]
    assert [history["val/acc"][epoch] for epoch in range(3)] == pytest.approx(logged_val_acc)
    logged_train_loss = [event.value for event in events.Scalars("train/loss_epoch")]
    assert [history["train/loss"][epoch] for epoch in range(3)] == pytest.approx(logged_train_loss)
    with Image.open(run_dir / "training_history.png") as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 400

    # The history is stored in checkpoints, so a resumed run plots every epoch.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    restored = TrainingDiagnostics()
    assert callback.state_key == "TrainingDiagnostics"
    restored.load_state_dict(checkpoint["callbacks"][callback.state_key])
    # A checkpoint written under the former name (TrainingReports) resumes with its history, through the key that
    # Lightning falls back to when a checkpoint lacks state_key.
    legacy = TrainingDiagnostics()
    renamed = {"callbacks": {"TrainingReports": checkpoint["callbacks"][callback.state_key]}}
    _call_callbacks_load_state_dict(SimpleNamespace(callbacks=[legacy]), renamed)
    assert legacy.history == restored.history
    saved_epoch = checkpoint["epoch"]
    assert restored.history == {
        name: {epoch: value for epoch, value in series.items() if epoch <= saved_epoch}
        for name, series in history.items()
    }
    assert restored.history["val/acc"]


def test_reports_need_tensorboard_but_history_does_not(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_cfg([*TRAIN_3_EPOCHS, SPY, "trainer.max_epochs=1", "logger=csv", "callbacks.reports.every_n_epochs=1"])
    with caplog.at_level(logging.INFO, logger="mobilevit.callbacks.diagnostics"):
        _, objects = train(cfg)
    assert "no TensorBoard logger" in caplog.text
    callback = _reports_callback(objects)
    assert callback.collected == {} and callback.reports_logged == 0
    assert (Path(cfg.paths.output_dir) / "training_history.png").is_file()


def test_last_epoch_report_and_no_history_file(make_cfg) -> None:
    overrides = [*TRAIN_3_EPOCHS, SPY, "trainer.max_epochs=2", "logger=tensorboard"]
    overrides.append("callbacks.reports.history_file=null")
    cfg = make_cfg([*overrides, "callbacks.reports.every_n_epochs=0", "callbacks.reports.order=index"])
    _, objects = train(cfg)
    callback = _reports_callback(objects)
    assert callback.collected == {0: 2, 1: 2} and callback.reports_logged == 1  # only after the last epoch
    assert not (Path(cfg.paths.output_dir) / "training_history.png").exists()

    cfg = make_cfg(
        [*overrides, "callbacks.reports.every_n_epochs=5", "callbacks.reports.on_last_epoch=false"], run_name="off"
    )
    _, objects = train(cfg)
    callback = _reports_callback(objects)
    assert callback.collected == {} and callback.reports_logged == 0


def test_reports_config(make_cfg) -> None:
    cfg = make_cfg()
    node = cfg.callbacks.reports
    assert node.every_n_epochs == 5 and node.on_last_epoch is True and node.order == "recall"
    assert node.max_images == 16 and node.max_pairs == 20
    assert Path(node.history_file) == Path(cfg.paths.output_dir) / "training_history.png"
    (callback,) = [c for c in instantiate_callbacks(cfg.callbacks) if isinstance(c, TrainingDiagnostics)]
    assert callback.history_file == Path(cfg.paths.output_dir) / "training_history.png"
    no_callbacks = instantiate_callbacks(make_cfg(["callbacks=none"]).callbacks)
    assert not any(isinstance(c, TrainingDiagnostics) for c in no_callbacks)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"every_n_epochs": -1}, "callbacks.reports.every_n_epochs"),
        ({"max_images": 1.5}, "callbacks.reports.max_images"),
        ({"max_pairs": -2}, "callbacks.reports.max_pairs"),
        ({"order": "alphabetical"}, "callbacks.reports.order"),
    ],
)
def test_bad_arguments_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(UserInputError, match=key.replace(".", r"\.")):
        TrainingDiagnostics(**kwargs)


class _CountingNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3 * 4 * 4, 3)
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(images.flatten(1))


def test_predictions_come_from_the_validation_forward_pass() -> None:
    callback = TrainingDiagnostics(max_images=2)
    net = _CountingNet()
    images, targets = torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 0, 1])
    callback._hook = net.register_forward_hook(callback._capture)
    with torch.no_grad():
        expected = net(images)  # what validation_step computes
    callback.on_validation_batch_end(None, net, None, (images, targets), 0)
    assert net.calls == 1 and torch.equal(callback._logits[0], expected)
    # A validation_step that never calls forward: the callback computes the logits itself.
    callback.on_validation_batch_end(None, net, None, (images, targets), 1)
    assert net.calls == 2 and torch.equal(callback._logits[1], expected)
    callback._remove_hook()
    assert not net._forward_hooks


def test_add_batch_keeps_the_most_confident_mistakes() -> None:
    callback = TrainingDiagnostics(max_images=2)
    images = torch.rand(3, 3, 4, 4)
    targets = torch.tensor([0, 1, 2])
    # Batch 1: sample 0 right, samples 1 (p~0.67) and 2 (p~0.99) wrong. Batch 2: one mistake with p~0.84.
    callback.add_batch(images, targets, torch.tensor([[5.0, 0, 0], [0, 0, 0.7], [5.0, 0, 0]]))
    callback.add_batch(images[:1], torch.tensor([2]), torch.tensor([[0, 2.0, 0]]))
    kept = callback._mistakes
    assert [(m.true, m.predicted) for m in kept] == [(2, 0), (2, 1)]
    assert kept[0].confidence > kept[1].confidence > 0.67
    assert kept[0].image.dtype == torch.uint8 and kept[0].image.shape == (3, 4, 4)
    assert torch.equal(kept[0].image, (images[2] * 255).round().to(torch.uint8))
    assert torch.cat(callback._targets).tolist() == [0, 1, 2, 2]


def test_mistakes_and_history_figures(tmp_path: Path) -> None:
    mistakes = [
        Mistake(torch.full((3, 8, 8), 200, dtype=torch.uint8), 0, 1, 0.9),
        Mistake(torch.zeros(3, 8, 8, dtype=torch.uint8), 1, 0, 0.6),
    ]
    names = ["giant white arum lily with a very long name", "rose"]
    figure = misclassified_figure(mistakes, names, title="mistakes")
    titles = [ax.get_title(loc="left") for ax in figure.axes if ax.get_title(loc="left")]
    assert titles[0] == "true: giant white arum lily\nwith a very long name\npred: rose (90%)"
    assert titles[1] == "true: rose\npred: giant white arum lily\nwith a very long name (60%)"

    history = {"train/loss": {0: 2.0, 1: 1.0}, "train/acc": {0: 0.3, 1: 0.6}, "val/loss": {0: 1.5}, "val/acc": {0: 0.5}}
    figure = training_history_figure(history, title="xxs")
    loss_ax, acc_ax = figure.axes[:2]
    assert [line.get_label() for line in loss_ax.lines] == ["train", "val"]
    assert list(loss_ax.lines[0].get_xdata()) == [1, 2] and list(loss_ax.lines[1].get_ydata()) == [1.5]
    assert [text.get_text() for text in acc_ax.get_legend().get_texts()] == ["train", "val", "best val 50.0% (epoch 1)"]
    figure.savefig(tmp_path / "history.png")
    with Image.open(tmp_path / "history.png") as image:
        assert image.size == (1440, 552)  # 12 x 4.6 inches at 120 dpi
