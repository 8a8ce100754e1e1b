"""Throughput estimates for the plan: measured seconds per image, and a short calibration run.

`throughput.yaml` beside this module holds measurements, each with the machine it came from.
One matches a kind of image when model (folder or hub name), family, device, size,
classifier-free guidance and ControlNet count agree; a different step count is scaled
linearly from the nearest measured one (the denoiser runs once per step and dominates; the
VAE decode, once per image, makes this slightly pessimistic for more steps and optimistic for
fewer). img2img and inpaint rows count the steps diffusers actually runs, `int(steps * strength)`.

The estimate assumes each actor runs at the measured speed (its own GPU, or its own cores:
CPU actors sharing one node's cores do not add up) and leaves out Ray's start-up and the writes.
"""

from __future__ import annotations

import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import yaml

from diffgen.generation.loading import model_family, model_index, placement
from diffgen.schemas.job import JobSpec

TABLE = Path(__file__).with_name("throughput.yaml")


@dataclass(frozen=True)
class Key:
    """A kind of image, as far as generation speed goes."""

    model: str
    family: str
    device: str  # cpu | cuda
    width: int
    height: int
    steps: int
    cfg: bool
    controlnets: int = 0

    def __str__(self) -> str:
        return (
            f"model={self.model} family={self.family} device={self.device} size={self.width}x{self.height} "
            f"steps={self.steps} cfg={'on' if self.cfg else 'off'} controlnets={self.controlnets}"
        )

    def same_but_steps(self, other: Key) -> bool:
        return asdict(self) | {"steps": 0} == asdict(other) | {"steps": 0}


@dataclass(frozen=True)
class Measurement:
    key: Key
    seconds_per_image: float  # generation only, in batches of `batch_size`, after warm-up
    load_seconds: float  # loading the pipeline set once per actor
    batch_size: int
    machine: str
    measured: str  # ISO date

    def to_dict(self) -> dict[str, object]:
        """The table's entry format (one YAML mapping)."""
        return {**asdict(self.key), **{k: v for k, v in asdict(self).items() if k != "key"}}

    @classmethod
    def from_dict(cls, entry: dict) -> Measurement:
        fields = set(Key.__dataclass_fields__)
        key = Key(**{k: v for k, v in entry.items() if k in fields})
        return cls(key, **{k: v for k, v in entry.items() if k not in fields})


def load_table(path: Path = TABLE) -> list[Measurement]:
    if not path.exists():
        return []
    return [Measurement.from_dict(entry) for entry in yaml.safe_load(path.read_text())["measurements"]]


def lookup(table: list[Measurement], key: Key) -> tuple[Measurement, float] | None:
    """The measurement nearest in steps to `key` with everything else equal, and its seconds per
    image scaled to `key.steps`; the table's first entry wins a tie."""
    candidates = [m for m in table if m.key.same_but_steps(key)]
    if not candidates:
        return None
    best = min(candidates, key=lambda m: abs(m.key.steps - key.steps))
    return best, best.seconds_per_image * key.steps / best.key.steps


def model_name(spec: JobSpec) -> str:
    """The model's folder or hub name: `/models/sd15` and `org/sd15` are both `sd15`."""
    return spec.model.id.rstrip("/").rsplit("/", 1)[-1]


def job_device(spec: JobSpec) -> str:
    """Where the job's actors run on a cluster that has what it asks for."""
    return placement(spec.compute, cuda_available=True).device.type


def record_keys(spec: JobSpec, records: pa.Table) -> list[Key]:
    """Each record's kind (records as `diffgen.dataset.records.expand` makes them)."""
    _, index = model_index(spec.model)
    family = model_family(index)
    base = {"model": model_name(spec), "family": family.name, "device": job_device(spec),
            "controlnets": len(spec.controlnets)}  # fmt: skip
    columns = records.select(["width", "height", "steps", "guidance_scale", "strength"]).to_pydict()
    keys = []
    for width, height, steps, guidance, strength in zip(*columns.values()):
        run_steps = steps if strength is None else max(1, min(int(steps * strength), steps))
        keys.append(
            Key(**base, width=width, height=height, steps=run_steps, cfg=family.classifier_free and guidance > 1)
        )
    return keys


def estimate(spec: JobSpec, records: pa.Table, table: list[Measurement]) -> dict[str, object]:
    """Actor-seconds (GPU-seconds on a GPU) and wall time for `records`, from `table`."""
    device = job_device(spec)
    if records.num_rows == 0:
        return {"available": True, "device": device, "actor_seconds": 0.0, "wall_time_s": 0.0,
                "message": "nothing to generate"}  # fmt: skip
    basis, missing = [], Counter()
    for key, images in Counter(record_keys(spec, records)).most_common():
        found = lookup(table, key)
        if found is None:
            missing[key] = images
            continue
        measurement, seconds = found
        basis.append({"key": str(key), "images": images, "seconds_per_image": round(seconds, 4),
                      "measured_steps": measurement.key.steps, "load_seconds": measurement.load_seconds,
                      "machine": measurement.machine, "measured": measurement.measured})  # fmt: skip
    if not basis:
        key = next(iter(missing))
        return {"available": False, "device": device,
                "message": f"no estimate: no throughput measured for {key}; run with --calibrate"}  # fmt: skip
    actor_seconds = sum(b["images"] * b["seconds_per_image"] for b in basis)
    load = max(b["load_seconds"] for b in basis)
    wall = load + actor_seconds / spec.compute.num_actors
    machines = "; ".join(sorted({b["machine"] for b in basis}))
    message = (
        f"~{wall:.0f} s wall on {spec.compute.num_actors} {device} actor(s) ({actor_seconds:.0f} actor-seconds "
        f"+ {load:.0f} s load), from measurements on {machines}"
    )
    if missing:
        message += (f"; {sum(missing.values())} image(s) not counted: no throughput measured for "
                    f"{next(iter(missing))}; run with --calibrate")  # fmt: skip
    return {
        "available": True,
        "device": device,
        "images_estimated": sum(b["images"] for b in basis),
        "images_without_estimate": sum(missing.values()),
        "actor_seconds": round(actor_seconds, 1),
        "gpu_seconds": round(actor_seconds * spec.compute.gpus_per_actor, 1) if device == "cuda" else None,
        "wall_time_s": round(wall, 1),
        "basis": basis,
        "message": message,
    }


class CalibrationError(RuntimeError):
    """The calibration run could not measure anything (wrong device here, or every image failed)."""


def describe_machine(device: str) -> str:
    import torch

    if device == "cuda":
        where = torch.cuda.get_device_name()
    else:
        where = (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
        )
    return f"{where}; torch {torch.__version__}"


def calibrate(spec: JobSpec, records: pa.Table, *, batches: int = 2) -> Measurement:
    """Time `batches` batches of the job's most common kind of image on this machine, with the job's
    model and compute options. Loading and a one-image warm-up are timed apart, not counted."""
    import torch

    from diffgen.stages.generate import GenerateStage

    device = job_device(spec)
    if device == "cuda" and not torch.cuda.is_available():
        raise CalibrationError("the job runs on CUDA and this machine has none; calibrate where it runs")
    if records.num_rows == 0:
        raise CalibrationError("no records to calibrate with")
    keys = record_keys(spec, records)
    key = Counter(keys).most_common(1)[0][0]
    same = [i for i, k in enumerate(keys) if k == key]
    size = spec.compute.batch_size
    picked = records.take(pa.array([same[i % len(same)] for i in range(1 + batches * size)], pa.int64()))
    stage = GenerateStage(spec)
    started = time.perf_counter()
    stage.setup()
    load = time.perf_counter() - started
    stage(picked.slice(0, 1))
    started = time.perf_counter()
    errors = [e for b in range(batches) for e in stage(picked.slice(1 + b * size, size)).column("error").to_pylist()]
    elapsed = time.perf_counter() - started
    if all(errors):
        raise CalibrationError(f"no calibration image came out: {errors[0]}")
    return Measurement(key, round(elapsed / len(errors), 4), round(load, 2), size, describe_machine(device),
                       datetime.now(UTC).date().isoformat())  # fmt: skip
