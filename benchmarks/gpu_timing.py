"""How busy the GPU is: CUDA events around the UNet's calls, and NVML utilisation sampled in the background."""

from __future__ import annotations

import statistics
import threading
import time

import torch


class UnetTimer:
    """CUDA events around every UNet call: the span each call occupies on the GPU's stream."""

    def __init__(self, unet: torch.nn.Module):
        self.pending: list[list] = []

        # Eager even when the UNet is compiled: the hooks become graph breaks at its edges.
        @torch.compiler.disable
        def before(module, args):
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self.pending.append([start, None])

        @torch.compiler.disable
        def after(module, args, output):
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pending[-1][1] = end

        unet.register_forward_pre_hook(before)
        unet.register_forward_hook(after)

    def collect(self) -> float:
        """UNet GPU seconds since the last call (synchronises)."""
        torch.cuda.synchronize()
        spent = sum(s.elapsed_time(e) for s, e in self.pending if e is not None) / 1000.0
        self.pending.clear()
        return spent


class NvmlSampler:
    """GPU utilisation (NVML: share of time a kernel ran) sampled every 50 ms, when pynvml is installed."""

    def __init__(self, index: int = 0):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.time(), self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def mean_between(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return round(statistics.fmean(inside) / 100.0, 4) if inside else None
