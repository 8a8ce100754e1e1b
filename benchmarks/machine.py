"""The machine and the package versions a result was measured with."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """CPU, cores, memory, platform, the load average now, and the first CUDA device if there is one."""
    import psutil

    info = {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def machine_slug(info: dict, gpu: bool) -> str:
    """The machine's part of a result file's name: `intel-xeon-2c`, `nvidia-h100-80gb-hbm3`."""
    name = info["gpu"]["name"] if gpu else f"{info['cpu_model']}-{info['logical_cores']}c"
    name = re.sub(r"\((r|tm)\)|processor|cpu @.*", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def versions() -> dict:
    """diffgen's recorded package versions, and the few more a benchmark depends on."""
    from importlib.metadata import PackageNotFoundError, version

    from diffgen.reporting.versions import package_versions

    found = package_versions()
    for name in ("numpy", "invisible-watermark", "moto", "accelerate", "pynvml", "nvidia-ml-py"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
