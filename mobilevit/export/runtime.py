"""Run an exported artifact (``.onnx`` through ONNX Runtime, ``.pte`` through the ExecuTorch runtime, ``.tflite``
through LiteRT's interpreter, ``.mlpackage`` through Core ML on macOS) with its sidecar: what evaluate.py and predict
use to measure the file that ships."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mobilevit.data.transforms import Preprocessing
from mobilevit.errors import UserInputError
from mobilevit.export.sidecar import preprocessing_of, read_sidecar
from mobilevit.inference import hflip_tta_logits

if TYPE_CHECKING:
    import lightning as L
    from torch.utils.data import DataLoader

# Artifact suffix -> format name; the extra that installs each format's runtime and the module it provides.
FORMATS: dict[str, str] = {".onnx": "onnx", ".pte": "executorch", ".tflite": "litert", ".mlpackage": "coreml"}
# ExecuTorch, LiteRT and Core ML files are exported for one image per call (export.executorch/litert/coreml.MAX_BATCH).
PTE_MAX_BATCH = TFLITE_MAX_BATCH = MLPACKAGE_MAX_BATCH = 1
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnxruntime", "export"),
    "executorch": ("executorch", "executorch"),
    "litert": ("ai_edge_litert", "litert"),
    "coreml": ("coremltools", "coreml"),
}  # fmt: skip
COREML_PLATFORM = "Darwin"  # Core ML runs on Apple platforms only (coremltools predicts on macOS)


def require_extra(module: str, extra: str) -> None:
    """A UserInputError naming the ``pip install`` that provides ``module`` when it is not installed."""
    if importlib.util.find_spec(module) is None:
        raise UserInputError(f"{module} is not installed: pip install 'mobilevit[{extra}]' (or -e \".[{extra}]\").")


def is_artifact(path: str | Path) -> bool:
    """Whether ``path`` names an exported artifact (by suffix) rather than a checkpoint."""
    return Path(path).suffix in FORMATS


def onnxruntime_session(path: str | Path, threads: int | None = None, profile_prefix: str | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (None: ONNX Runtime's default);
    with ``profile_prefix``, its profiler writes there (``end_profiling()`` returns the file)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def litert_interpreter(path: str | Path, threads: int | None = None) -> Any:
    """LiteRT's interpreter of ``path`` (its XNNPACK delegate on, ``threads`` threads; None: LiteRT's default),
    tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


class Artifact:
    """An exported model ready to run on CPU: ``artifact(images)`` maps float32 (B, 3, H, W) to logits (B, C).

    ``class_names``, ``preprocessing`` (the evaluation transform) and ``hflip_tta`` come from the sidecar.
    Raises UserInputError for a missing file or sidecar, an unknown suffix, or a runtime that is not installed.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():  # a file, or a folder (.mlpackage)
            raise UserInputError(f"Artifact {self.path} does not exist.")
        if self.path.suffix not in FORMATS:
            raise UserInputError(f"{self.path}: unknown artifact type; valid: {', '.join(FORMATS)}.")
        self.format = FORMATS[self.path.suffix]
        self.sidecar: dict[str, Any] = read_sidecar(self.path)
        self.class_names: list[str] = list(self.sidecar["class_names"])
        self.preprocessing: Preprocessing = preprocessing_of(self.sidecar)
        self.hflip_tta: bool = bool(self.sidecar.get("hflip_tta", False))
        if self.format == "coreml" and platform.system() != COREML_PLATFORM:
            raise UserInputError(
                f"{self.path}: Core ML runs only on macOS, not on {platform.system()}; run the .pte, .tflite or .onnx "
                "export of the same checkpoint here, or this file on a Mac."
            )
        require_extra(*EXTRAS[self.format])
        if self.format == "onnx":
            self._session = onnxruntime_session(self.path, threads)
        elif self.format == "litert":
            self._interpreter = litert_interpreter(self.path, threads)
        elif self.format == "coreml":
            import coremltools as ct

            self._mlmodel = ct.models.MLModel(str(self.path))  # every compute unit Core ML chooses, as on a device
        else:
            from executorch.runtime import Runtime

            if threads:  # ExecuTorch's one process-wide thread pool (XNNPACK runs on it)
                from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

                _unsafe_reset_threadpool(threads)
            self._method = Runtime.get().load_program(self.path).load_method("forward")

    def eval_transform(self) -> Any:
        """The evaluation transform recorded in the sidecar (PIL image -> float32 (3, S, S))."""
        return self.preprocessing.eval_transform()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().contiguous()
        if self.format == "onnx":
            (logits,) = self._session.run(None, {"images": images.numpy()})
            return torch.from_numpy(np.asarray(logits))
        if self.format == "litert":
            return torch.cat([self._run_litert(chunk) for chunk in images.split(TFLITE_MAX_BATCH)])
        if self.format == "coreml":
            chunks = images.split(MLPACKAGE_MAX_BATCH)
            logits = [self._mlmodel.predict({"images": chunk.numpy()})["logits"] for chunk in chunks]
            return torch.from_numpy(np.concatenate(logits).astype(np.float32))
        return torch.cat([self._method.execute([chunk])[0].clone() for chunk in images.split(PTE_MAX_BATCH)])

    def _run_litert(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of one call of the LiteRT interpreter; an int8 file's input is quantized and its output dequantized
        with the scale and zero point the file gives them."""
        (source,), (result,) = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        x = images.numpy()
        if source["dtype"] != np.float32:
            scale, zero_point = source["quantization"]
            info = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(source["dtype"])
        self._interpreter.set_tensor(source["index"], x)
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(result["index"])
        if result["dtype"] != np.float32:
            scale, zero_point = result["quantization"]
            logits = (logits.astype(np.float32) - zero_point) * scale
        return torch.from_numpy(np.array(logits, dtype=np.float32))

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) the artifact was exported for."""
        height, width = self.sidecar["input"]["shape"][2:]
        return int(height), int(width)


def load_artifact(path: str | Path, threads: int | None = None) -> Artifact:
    """:class:`Artifact` of ``path`` (its sidecar read and checked)."""
    return Artifact(path, threads)


def artifact_datamodule(artifact: Artifact, overrides: dict[str, Any] | None = None) -> L.LightningDataModule:
    """The data module of the training run an artifact was exported from (its sidecar's ``data``, checked like a
    checkpoint's stored config), with non-None ``overrides``; every split uses the evaluation transform."""
    from mobilevit.checkpoint import check_stored_targets, datamodule_from_weights
    from mobilevit.models.pretrained import Weights

    data_cfg = artifact.sidecar.get("data")
    if not isinstance(data_cfg, dict):
        raise UserInputError(
            f"The sidecar of {artifact.path} records no training data config (exported from a weights file, not a "
            "train.py checkpoint): evaluate the checkpoint, or export from the .ckpt."
        )
    run_config = {"model": {"_target_": "mobilevit.models.create_model"}, "data": data_cfg}
    check_stored_targets(artifact.path, run_config)
    record = Weights(
        source=str(artifact.path),
        layout="ours",
        variant=str(artifact.sidecar.get("model")),
        num_classes=len(artifact.class_names),
        class_names=tuple(artifact.class_names),
        preprocessing=artifact.preprocessing,
        state_dict={},
        run_config=run_config,
    )
    datamodule = datamodule_from_weights(record, overrides)
    size = (datamodule.eval_image_size, datamodule.eval_image_size)
    if size != artifact.image_size:
        raise UserInputError(
            f"{artifact.path} was exported for {artifact.image_size[0]} x {artifact.image_size[1]} px but the data "
            f"gives {size[0]} x {size[1]} px: leave data.image_size/eval_image_size alone or export at that size."
        )
    return datamodule


@torch.inference_mode()
def artifact_logits(
    artifact: Artifact, dataloader: DataLoader, hflip_tta: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C) float32, targets (N,)) of every batch of ``dataloader`` run through the artifact's runtime
    (flip-averaged log-probabilities with ``hflip_tta``, as :func:`mobilevit.inference.hflip_tta_logits`)."""
    logits, targets = [], []
    for images, labels in dataloader:
        logits.append(hflip_tta_logits(artifact, images) if hflip_tta else artifact(images))
        targets.append(labels)
    return torch.cat(logits).float(), torch.cat(targets)
