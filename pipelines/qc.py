"""QC on Ray: scoring actors that keep FID statistics, the sink that merges them, and QC of an old output.

Each scoring actor keeps its own per-group `FeatureStats` (count, sum, sum of outer products) and
bounded seeded feature samples (`Reservoir`, for KID, CMMD, precision/recall and the utility probes),
and sends them to one `StatsSink` actor: cumulatively every `FLUSH_SECONDS`
and a last time when Ray Data shuts the pool down gracefully (the UDF's `__del__`). The sink keeps
the latest statistics of each actor instance, so a flush repeated or superseded never counts twice;
the driver merges them once the run is over and computes the Fréchet distances (`diffgen.reporting.report`).

An instance that dies without its last flush (a lost node) leaves its latest periodic flush; the
report then says how many images the FID covers next to how many were written.

`qc_output` runs the same scoring over an output written earlier (`diffgen qc OUTPUT_URI`):
it reads the index, loads the written images, scores them and rewrites `qc/report.*`. It
never changes the index: images that fail today's thresholds are counted as `would_reject`.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import ray

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import INDEX_DIR
from diffgen.generation.images import ImageInputError, read_image
from diffgen.metrics.frechet import FeatureStats
from diffgen.metrics.reservoir import Reservoir
from diffgen.pipelines.cluster import connect
from diffgen.pipelines.priority import lower_cpu_priority
from diffgen.reporting.report import QcEvidence, build_report, write_report
from diffgen.schemas.job import JobSpecError
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.record import RecordStatus
from diffgen.stages.qc import QcStage

log = logging.getLogger(__name__)

FLUSH_SECONDS = 30.0
# How long the driver waits, after the last batch, for every actor's final flush.
FINAL_FLUSH_TIMEOUT_S = 30.0


@ray.remote(num_cpus=0)
class StatsSink:
    """The latest cumulative statistics of every scoring actor instance, and the reference's."""

    def __init__(self):
        self.latest: dict[str, tuple[dict[str, bytes], int, bool]] = {}
        self.reference: bytes | None = None
        # instance -> {"groups" | "labels": {name: Reservoir bytes}}; the reference's sample
        self.samples: dict[str, dict[str, dict[str, bytes]]] = {}
        self.reference_sample: bytes | None = None

    def register(self, instance: str) -> None:
        self.latest.setdefault(instance, ({}, 0, False))

    def put(self, instance: str, stats: dict[str, bytes], rows: int, final: bool,
            samples: dict[str, dict[str, bytes]] | None = None) -> None:  # fmt: skip
        self.latest[instance] = (stats, rows, final)
        self.samples[instance] = samples or {}

    def put_reference(self, stats: bytes, sample: bytes | None = None) -> None:
        self.reference = stats
        self.reference_sample = sample

    def collect_samples(self) -> tuple[dict[str, dict[str, list[bytes]]], bytes | None]:
        by_kind: dict[str, dict[str, list[bytes]]] = {"groups": {}, "labels": {}}
        for samples in self.samples.values():
            for kind, named in samples.items():
                for name, data in named.items():
                    by_kind[kind].setdefault(name, []).append(data)
        return by_kind, self.reference_sample

    def pending(self) -> list[str]:
        return sorted(i for i, (_, _, final) in self.latest.items() if not final)

    def collect(self) -> tuple[dict[str, list[bytes]], int, bytes | None]:
        by_group: dict[str, list[bytes]] = {}
        for stats, _, _ in self.latest.values():
            for group, data in stats.items():
                by_group.setdefault(group, []).append(data)
        return by_group, sum(rows for _, rows, _ in self.latest.values()), self.reference


class QcActor(QcStage):
    """The QC stage as a Ray Data actor that reports its FID statistics to a `StatsSink`."""

    def __init__(
        self, spec: QcSpec, sink: ray.actor.ActorHandle, niceness: int | None = None, fid_over: str = "kept"
    ):
        lower_cpu_priority(niceness)
        super().__init__(spec, fid_over=fid_over)
        self.setup()
        self._sink = sink
        self._instance = uuid.uuid4().hex
        self._rows = 0
        self._flushed_at = time.monotonic()
        ray.get(sink.register.remote(self._instance))
        if self.reference is not None:
            sample = None if self.reference_sample is None else self.reference_sample.to_bytes()
            ray.get(sink.put_reference.remote(self.reference.to_bytes(), sample))

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = super().__call__(batch)
        self._rows += batch.num_rows
        if time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self._flush(final=False)
        return out

    def _flush(self, final: bool) -> None:
        stats = {group: s.to_bytes() for group, s in self.stats.items()}
        samples = {"groups": {g: s.to_bytes() for g, s in self.samples.items()},
                   "labels": {label: s.to_bytes() for label, s in self.label_samples.items()}}  # fmt: skip
        ray.get(self._sink.put.remote(self._instance, stats, self._rows, final, samples))
        self._flushed_at = time.monotonic()

    def __del__(self):
        # Ray Data deletes the UDF when it shuts the pool down gracefully; a killed actor never gets here.
        try:
            self._flush(final=True)
        except Exception as e:  # noqa: BLE001 - a failing flush must not hide the shutdown itself
            log.warning("QC actor %s could not flush its FID statistics: %s", getattr(self, "_instance", "?"), e)


def qc_map(
    ds: ray.data.Dataset,
    spec: QcSpec,
    sink: ray.actor.ActorHandle,
    *,
    batch_size: int,
    gpus: float,
    niceness: int | None = None,
    fid_over: str = "kept",
) -> ray.data.Dataset:
    """`ds` scored by one QC actor (a quarter GPU next to the generators when there are GPUs), at
    `niceness` (`diffgen.pipelines.priority`) when it shares the nodes with generation."""
    return ds.map_batches(
        QcActor,
        fn_constructor_args=(spec, sink, niceness, fid_over),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_gpus=0.25 if gpus > 0 else 0,
        # No reserved CPU, for the same two-core starvation reason as the generation actors.
        num_cpus=0,
    )


def gather(
    sink: ray.actor.ActorHandle, timeout_s: float = FINAL_FLUSH_TIMEOUT_S
) -> tuple[dict[str, FeatureStats], int, FeatureStats | None, dict[str, Reservoir], dict[str, Reservoir],
           Reservoir | None]:  # fmt: skip
    """Merged per-group statistics, the rows they cover, the reference statistics, and the merged feature
    samples (per group, per utility label, the reference's), once every actor has flushed for the last
    time (or `timeout_s` has passed): `QcEvidence`'s fields in order."""
    start = time.monotonic()
    while pending := ray.get(sink.pending.remote()):
        if time.monotonic() - start > timeout_s:
            log.warning("%d QC actor(s) never sent their final FID statistics; using their latest", len(pending))
            break
        time.sleep(0.1)
    log.info("FID statistics gathered after %.1f s", time.monotonic() - start)
    by_group, rows, reference = ray.get(sink.collect.remote())
    merged = {}
    for group, blobs in by_group.items():
        stats = [FeatureStats.from_bytes(b) for b in blobs]
        merged[group] = stats[0]
        for s in stats[1:]:
            merged[group] = merged[group].merge(s)
    by_kind, reference_sample = ray.get(sink.collect_samples.remote())
    samples = {kind: {name: _merged([Reservoir.from_bytes(b) for b in blobs]) for name, blobs in named.items()}
               for kind, named in by_kind.items()}  # fmt: skip
    return (merged, rows, None if reference is None else FeatureStats.from_bytes(reference), samples["groups"],
            samples["labels"], None if reference_sample is None else Reservoir.from_bytes(reference_sample))  # fmt: skip


def _merged(samples: list[Reservoir]) -> Reservoir:
    out = samples[0]
    for s in samples[1:]:
        out = out.merge(s)
    return out


class _LoadImages:
    """Index rows of written images -> the QC stage's input: decoded pixels, status cleared."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        pixels, status, error = [], [], []
        for uri in batch.column("image_uri").to_pylist():
            try:
                image = read_image(uri).image
            except ImageInputError as e:
                pixels.append(None), status.append(RecordStatus.FAILED.value), error.append(str(e))
                continue
            pixels.append(np.asarray(image).tobytes()), status.append(None), error.append(None)
        for name, values in (("status", status), ("error", error)):
            batch = batch.set_column(batch.schema.get_field_index(name), name, pa.array(values, pa.string()))
        return batch.append_column("pixels", pa.array(pixels, pa.binary()))


def qc_output(output: str, spec: QcSpec, *, batch_size: int = 16) -> dict:
    """Score every written image of an existing output and rewrite its QC report; returns the report."""
    index = read_index(output)
    if index is None:
        raise FileNotFoundError(f"{output} has no index ({storage.join(output, INDEX_DIR)}); is it a diffgen output?")
    if spec.fid_group_by is not None and spec.fid_group_by not in index.column_names:
        raise JobSpecError(f"qc.fid_group_by: the index of {output} has no column '{spec.fid_group_by}'")
    written = index.filter(pa.compute.equal(index.column("status"), RecordStatus.WRITTEN.value))
    connect()
    sink = StatsSink.remote()
    keep = [c for c in written.column_names if c not in QcStage.adds]
    ds = ray.data.from_arrow(written.select(keep)).map_batches(
        _LoadImages, batch_size=batch_size, batch_format="pyarrow", num_cpus=0.5
    )
    # FID is of the output as it is: every written image, whatever today's thresholds would reject.
    ds = qc_map(ds, spec, sink, batch_size=batch_size, gpus=0, fid_over="scored")
    scored = [b.drop_columns(["pixels"]) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    rescored = pa.concat_tables(scored, promote_options="default") if scored else written.slice(0, 0)
    evidence = QcEvidence(*gather(sink))
    return write_report(build_report(output, spec, index, evidence, rescored=rescored, created_at=datetime.now(UTC)))
