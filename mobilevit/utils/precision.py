"""The fastest training/inference precision the hardware supports (the configs' ``${fast_precision:...}``)."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: without them bf16 autocast runs emulated and slow.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_supports_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:  # not Linux: no way to tell cheaply, stay on float32
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def fast_precision(accelerator: str = "auto") -> str:
    """Lightning ``precision`` for the fast path on ``accelerator`` (cpu, gpu/cuda or auto).

    GPU: ``bf16-mixed`` where supported, else ``16-mixed``. CPU: ``bf16-mixed`` with native bf16 instructions,
    else ``32-true``. Pair with channels-last memory format (``module.channels_last=true``, the default).
    """
    use_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_gpu:
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_supports_bf16() else "32-true"

