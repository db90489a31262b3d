"""Precision, in Lightning's vocabulary everywhere (``32-true``, ``16-mixed``, ``bf16-mixed``): the fastest one the
hardware runs natively (the configs' ``${fast_precision:...}``) and the autocast dtype each one means."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from mobilevit.errors import UserInputError
from mobilevit.utils.machine import cpu_flags

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: without them bf16 autocast runs emulated and slow.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Lightning precision -> dtype of torch.autocast (None: plain float32). "32" is Lightning's short form of "32-true".
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "32-true": None,
    "32": None,
    "16-mixed": torch.float16,
    "bf16-mixed": torch.bfloat16,
}


@functools.cache
def cpu_supports_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX)."""
    flags = cpu_flags(cpuinfo)  # empty where unreadable (not Linux): stay on float32
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def gpu_supports_bf16() -> bool:
    """True when the current GPU runs bfloat16 natively (compute capability >= 8.0, Ampere on; ROCm GPUs).

    ``torch.cuda.is_bf16_supported()`` alone also counts emulation (T4, V100), where bf16 convolutions are slow.
    """
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def fast_precision(accelerator: str = "auto") -> str:
    """Lightning ``precision`` for the fast path on ``accelerator`` (cpu, gpu/cuda or auto).

    GPU: ``bf16-mixed`` where the GPU runs bf16 natively, else ``16-mixed``. CPU: ``bf16-mixed`` with native bf16
    instructions, else ``32-true``. Pair with channels-last memory format (``module.channels_last=true``, the default).
    """
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_gpu:
        return "bf16-mixed" if gpu_supports_bf16() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"


def autocast_dtype(precision: str, device_type: str, key: str = "precision") -> torch.dtype | None:
    """The ``torch.autocast`` dtype of a Lightning ``precision`` on ``device_type`` (None: float32, no autocast).

    ``auto`` means :func:`fast_precision` of the device. Anything else is a UserInputError naming config ``key``.
    """
    if precision == "auto":
        precision = fast_precision(device_type)
    if precision not in AUTOCAST_DTYPES:
        valid = ["auto", *AUTOCAST_DTYPES]
        raise UserInputError(f"{key} must be one of {valid} (Lightning's precision names), got {precision!r}.")
    return AUTOCAST_DTYPES[precision]
