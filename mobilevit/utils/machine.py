"""What a result was measured on: CPU or GPU, cores, load, library versions and the date."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from datetime import datetime, timezone
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform reports)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags: the "flags" line of Linux /proc/cpuinfo on x86, "Features" on Arm (empty when the file
    is unreadable, e.g. not Linux)."""
    try:
        with open(cpuinfo) as file:
            return next((set(line.split(":", 1)[1].split()) for line in file if line.startswith(("flags", "Features"))),
                        set())  # fmt: skip
    except OSError:
        return set()


# CPU flags of int8 dot-product instructions: where XNNPACK's and ONNX Runtime's int8 kernels outrun their float32 ones.
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def int8_dot_product_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The :data:`INT8_DOT_PRODUCT_FLAGS` this CPU has (empty when none, or when /proc/cpuinfo is unreadable)."""
    flags = cpu_flags(cpuinfo)
    return [flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags]


def _package_version(name: str) -> str | None:
    try:
        module = __import__(name)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU/GPU, cores, load, library versions and date (UTC)."""
    info: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "int8_dot_product": int8_dot_product_flags(),
        "torch": torch.__version__,
        "torchvision": _package_version("torchvision"),
        "timm": _package_version("timm"),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_label(info: dict[str, Any]) -> str:
    """Short human description, e.g. ``Intel(R) Xeon(R) Processor, 2 cores`` or the GPU's name."""
    return info.get("gpu") or f"{info['cpu_model']}, {info['usable_cores']} cores"
