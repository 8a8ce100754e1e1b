"""The QC stage: score and check each sampled image, reject the ones below the job's thresholds,
and summarise the kept ones as FID feature statistics per group.

Only rows still in flight (status null, pixels present) are checked; rows already rejected or
failed pass through untouched. A row failing a check becomes `rejected` with every reason in
`error` (e.g. "qc: clip_score 12.3 < 20.0; flat") and in `qc_reasons`. Near duplicates are
looked for among the rows that pass the other checks, so the first image of a cluster is kept.

With a reference set, a passing image within `phash_max_distance` bits of a reference image is
rejected too ("reference duplicate of <name>"), and `self.reference` holds the reference's
FID statistics in the same backbone, computed once and cached beside the reference.

`self.stats` grows with every batch; on Ray each scoring actor sends it to a sink that the driver
merges (`diffgen.pipelines.qc`). A retried batch counts again, so FID statistics are exact only
for runs without retries (they are a summary, not a record).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from diffgen.metrics.backbones import Backbone, ClipBackbone, load_backbone
from diffgen.metrics.clip_score import ClipScorer
from diffgen.metrics.frechet import FeatureStats
from diffgen.metrics.image_checks import check_images, near_duplicates, reference_duplicates
from diffgen.metrics.reference import load_stats, reference_hashes, reference_sample, reference_stats
from diffgen.metrics.reservoir import Reservoir
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.record import QC_REASON_TYPE, QcReason, RecordStatus, Rejection

ALL_GROUP = "__all__"
# The group of rows whose `fid_group_by` cell is null.
NULL_GROUP = "__null__"

class QcStage:
    reads = ("record_id", "prompt", "pixels", "status", "error", "width", "height")
    adds = ("clip_score", "clip_truncated", "pixel_std", "phash", "qc_reasons", "replaceable")

    def __init__(self, spec: QcSpec, device: str = "cpu", *, fid_over: Literal["kept", "scored"] = "kept"):
        """`fid_over`: the images the FID statistics summarise. A run keeps statistics of the images it
        keeps (they are what it writes); rescoring an output (`diffgen qc`) of every image it scores,
        since the output holds them all whatever today's thresholds say."""
        self.spec = spec
        self.device = device
        self.fid_over = fid_over
        if spec.fid_group_by is not None:
            self.reads = (*QcStage.reads, spec.fid_group_by)
        if spec.utility is not None and spec.utility.label_column not in self.reads:
            self.reads = (*self.reads, spec.utility.label_column)
        self.stats: dict[str, FeatureStats] = {}
        # Seeded feature samples (diffgen.metrics.reservoir): per FID group, of the FID backbone's features
        # (KID, CMMD, precision/recall), and per utility label, of the CLIP embeddings (the utility probes).
        self.samples: dict[str, Reservoir] = {}
        self.label_samples: dict[str, Reservoir] = {}
        self.reference_sample: Reservoir | None = None
        self.reference: FeatureStats | None = None
        self._reference_names: list[str] = []
        self._reference_hashes: list[int] = []
        self._scorer: ClipScorer | None = None
        self._backbone: Backbone | None = None

    def setup(self) -> None:
        """Once per worker: load the CLIP model (shared with a 'clip' backbone) and the FID backbone."""
        if self.spec.clip_model is not None:
            self._scorer = ClipScorer.load(self.spec.clip_model, device=self.device)
        if self.spec.fid_backbone == "clip":
            self._backbone = ClipBackbone(self._scorer.clip)
        else:
            self._backbone = load_backbone(self.spec.fid_backbone, self.spec.fid_weights, self.device)
        spec = self.spec
        if spec.reference is not None:
            column = spec.reference_image_column
            self._reference_names, self._reference_hashes = reference_hashes(spec.reference, image_column=column)
            self.reference = reference_stats(spec.reference, self._backbone, image_column=column)
            if spec.sample_size:
                self.reference_sample = reference_sample(spec.reference, self._backbone, capacity=spec.sample_size,
                                                         seed=spec.sample_seed, image_column=column)  # fmt: skip
        elif spec.reference_stats is not None:
            self.reference = load_stats(spec.reference_stats, self._backbone)

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._backbone is None:
            self.setup()
        rows = batch.to_pylist()
        todo = [i for i, r in enumerate(rows) if r["status"] is None and r["pixels"] is not None]
        images = [np.frombuffer(rows[i]["pixels"], np.uint8).reshape(rows[i]["height"], rows[i]["width"], 3)
                  for i in todo]  # fmt: skip
        n = len(rows)
        clip_score: list[float | None] = [None] * n
        truncated: list[bool | None] = [None] * n
        std: list[float | None] = [None] * n
        hashes: list[int | None] = [None] * n
        reasons: list[list[Rejection] | None] = [None] * n
        # A 'clip' FID backbone is the scorer's own model: its features are the score's image embeddings.
        # The CLIP embeddings serve the score, a 'clip' backbone and the utility's samples: computed once.
        shared = self._scorer is not None and getattr(self._backbone, "clip", None) is self._scorer.clip
        embedded = self._scorer.clip.image_embeddings(images) if todo and self._scorer is not None else None
        features = embedded if shared else None
        if todo and self._scorer is not None:
            prompts = [rows[i]["prompt"] for i in todo]
            scores = self._scorer.score_embedded(embedded, prompts)
            for i, s, t in zip(todo, scores, self._scorer.truncated(prompts)):
                clip_score[i], truncated[i] = float(s), bool(t)
        threshold = self.spec.min_clip_score
        for i, check in zip(todo, check_images(images, self.spec.black_level, self.spec.flat_std)):
            std[i], hashes[i] = check.pixel_std, check.phash
            found = []
            if threshold is not None and clip_score[i] < threshold:
                found.append(Rejection(QcReason.CLIP_SCORE, f"{clip_score[i]:.1f} < {threshold:.1f}"))
            # A black image is also flat; naming both would say nothing more.
            if check.black:
                found.append(Rejection(QcReason.BLACK))
            elif check.flat:
                found.append(Rejection(QcReason.FLAT))
            reasons[i] = found
        passing = [i for i in todo if not reasons[i]]
        if self._reference_hashes:
            found = reference_duplicates(
                [hashes[i] for i in passing], self._reference_hashes, self.spec.phash_max_distance
            )
            for i, ref in zip(passing, found):
                if ref >= 0:
                    reasons[i].append(Rejection(QcReason.REFERENCE_DUPLICATE, self._reference_names[ref]))
            passing = [i for i in passing if not reasons[i]]
        for i, first in zip(passing, near_duplicates([hashes[i] for i in passing], self.spec.phash_max_distance)):
            if first >= 0:
                reasons[i].append(Rejection(QcReason.DUPLICATE, rows[passing[first]]["record_id"]))
        for i in todo:
            if reasons[i]:
                error = "qc: " + "; ".join(r.describe() for r in reasons[i])
                # Every QC reason is about this image, not its inputs: another seed may pass.
                rows[i].update(status=RecordStatus.REJECTED.value, error=error, replaceable=True)
        kept = [k for k, i in enumerate(todo) if not reasons[i] or self.fid_over == "scored"]
        if kept:
            kept_features = self._backbone.extract([images[k] for k in kept]) if features is None else features[kept]
            self._update_stats(kept_features, [rows[todo[k]] for k in kept])
            if self.spec.utility is not None:
                self._update_labels(embedded[kept], [rows[todo[k]] for k in kept])

        out = batch.set_column(batch.schema.get_field_index("status"), "status",
                               pa.array([r["status"] for r in rows], pa.string()))  # fmt: skip
        out = out.set_column(out.schema.get_field_index("error"), "error",
                             pa.array([r["error"] for r in rows], pa.string()))  # fmt: skip
        added = {
            "clip_score": pa.array(clip_score, pa.float64()),
            "clip_truncated": pa.array(truncated, pa.bool_()),
            "pixel_std": pa.array(std, pa.float64()),
            "phash": pa.array(hashes, pa.uint64()),
            "qc_reasons": pa.array([None if r is None else [x.to_row() for x in r] for r in reasons],
                                   pa.list_(QC_REASON_TYPE)),
            "replaceable": pa.array([r.get("replaceable") for r in rows], pa.bool_()),
        }
        for name, column in added.items():
            if name in out.column_names:
                out = out.set_column(out.schema.get_field_index(name), name, column)
            else:
                out = out.append_column(name, column)
        return out

    def _update_stats(self, features: np.ndarray, rows: list[dict]) -> None:
        groups: dict[str, list[int]] = {ALL_GROUP: list(range(len(rows)))}
        if self.spec.fid_group_by is not None:
            for k, row in enumerate(rows):
                value = row[self.spec.fid_group_by]
                groups.setdefault(NULL_GROUP if value is None else str(value), []).append(k)
        for group, members in groups.items():
            if group not in self.stats:
                self.stats[group] = FeatureStats(self._backbone.name, self._backbone.resize, self._backbone.dim)
            self.stats[group].update(features[members])
            if self.spec.sample_size:
                if group not in self.samples:
                    self.samples[group] = Reservoir(self._backbone.name, self._backbone.resize, self._backbone.dim,
                                                    capacity=self.spec.sample_size, seed=self.spec.sample_seed)
                self.samples[group].update([rows[k]["record_id"] for k in members], features[members])

    def _update_labels(self, embeddings: np.ndarray, rows: list[dict]) -> None:
        utility, clip = self.spec.utility, self._scorer.clip
        by_label: dict[str, list[int]] = {}
        for k, row in enumerate(rows):
            if row[utility.label_column] is not None:
                by_label.setdefault(str(row[utility.label_column]), []).append(k)
        for label, members in by_label.items():
            if label not in self.label_samples:
                self.label_samples[label] = Reservoir(clip.name, clip.resize, clip.dim,
                                                      capacity=utility.max_per_class, seed=utility.seed)
            self.label_samples[label].update([rows[k]["record_id"] for k in members], embeddings[members])
