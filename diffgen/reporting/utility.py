"""The utility score of an output (qc/utility.json): train on synthetic, test on real (TSTR).

A recipe of four linear probes (`diffgen.metrics.probe`) on the QC CLIP's image embeddings, all
tested on one held-out share of a labelled real set (`diffgen.metrics.labelled_set`):

1. check the real set against the synthetic labels: classes in both are scored, the others named;
   fewer than 2 shared classes, or a class with fewer than 2 real images, stop before any work
2. split each class's real images by seeded keys: `test_fraction` to test, the rest a training pool
3. probes: `synthetic` (every sampled synthetic image), `real` (the pool, as many per class as the
   synthetic sample has, capped by the pool), `few_shot` (`few_shot` per class from the pool) and
   `few_shot_plus_synthetic` (those and every synthetic image)
4. score each on the test set, with a paired stratified bootstrap (`diffgen.metrics.bootstrap`) for
   the intervals of accuracy, macro-F1, the synthetic/real ratio and the augmentation gain

Synthetic features arrive as one seeded bottom-k sample per label (`diffgen.metrics.reservoir`):
from the QC actors after a run, or embedded here from the written images (`synthetic_samples`),
and either way the same records are chosen for the same seed.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from diffgen.dataset import storage
from diffgen.dataset.index import read_index
from diffgen.dataset.layout import REPORT_JSON, UTILITY_JSON
from diffgen.metrics.bootstrap import LEVEL, interval, stratified_resamples
from diffgen.metrics.classification import Scores, confusion, scores
from diffgen.metrics.labelled_set import LabelledSet, LabelledSetError, open_labelled_set
from diffgen.metrics.probe import fit_probe
from diffgen.metrics.reservoir import Reservoir, bottom_k, sample_keys
from diffgen.reporting.versions import package_versions
from diffgen.schemas.job import JobSpecError
from diffgen.schemas.qc import QcSpec
from diffgen.schemas.record import RecordStatus
from diffgen.schemas.report import QcReport
from diffgen.schemas.utility import Interval, ProbeResult, UtilityReport, UtilitySpec

log = logging.getLogger(__name__)

FIELD = "qc.utility"


@dataclass
class RealFeatures:
    names: list[str]  # each image's key inside the real set (`LabelledSet.keys`): the split hashes these
    labels: list[str]
    features: np.ndarray
    warnings: list[str] = field(default_factory=list)


def check_real_set(spec: UtilitySpec, synthetic_labels: Collection[str] | None) -> LabelledSet:
    """The real set, listed and checked against the synthetic labels (None: not known yet); a `JobSpecError`
    names the field, file, column or class that makes a utility score impossible."""
    try:
        real = open_labelled_set(spec.real, label_column=spec.label_column, image_column=spec.image_column)
    except LabelledSetError as e:
        raise JobSpecError(f"{FIELD}.real: {e}") from None
    counts = real.counts()
    if len(counts) < 2:
        raise JobSpecError(f"{FIELD}.real: {spec.real} holds {len(counts)} class(es) {list(counts)}; "
                           "a utility score needs at least 2")  # fmt: skip
    classes = sorted(counts) if synthetic_labels is None else sorted(set(counts) & set(synthetic_labels))
    if synthetic_labels is not None and len(classes) < 2:
        raise JobSpecError(
            f"{FIELD}: the labels do not overlap: column '{spec.label_column}' has {sorted(set(synthetic_labels))[:10]}, "
            f"the real set {spec.real} has {list(counts)[:10]}; at least 2 must be in both"
        )
    small = [f"'{c}' ({counts[c]})" for c in classes if counts[c] < 2]
    if small:
        raise JobSpecError(f"{FIELD}.real: too few real images to split into test and training for class(es) "
                           f"{', '.join(small)}; each needs at least 2")  # fmt: skip
    return real


def embed_real(real: LabelledSet, clip) -> RealFeatures:
    """Decode and embed every real image with the QC CLIP (`diffgen.metrics.clip_model.ClipModel`)."""
    try:
        loaded = real.load()
    except LabelledSetError as e:
        raise JobSpecError(f"{FIELD}.real: {e}") from None
    features = clip.image_embeddings(loaded.images)
    return RealFeatures(loaded.keys, loaded.labels, features, loaded.warnings)


def synthetic_samples(output: str, spec: UtilitySpec, clip, *, batch_size: int = 64) -> dict[str, Reservoir]:
    """One seeded sample per label of an output's written images, embedded here: the records a run's
    QC actors would have kept for the same seed, chosen from the index before any image is read."""
    from diffgen.generation.images import read_image  # the image reader, only for a standalone score

    written = _written(output, spec)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for rid, uri, label in zip(*(written.column(c).to_pylist() for c in ("record_id", "image_uri", spec.label_column))):
        if label is not None:
            by_label.setdefault(str(label), []).append((rid, uri))
    samples = {}
    for label, rows in sorted(by_label.items()):
        sample = Reservoir(clip.name, clip.resize, clip.dim, capacity=spec.max_per_class, seed=spec.seed)
        uris = dict(rows)
        chosen = bottom_k(list(uris), spec.seed, spec.max_per_class)
        for start in range(0, len(chosen), batch_size):
            ids = chosen[start : start + batch_size]
            images = [np.asarray(read_image(uris[i]).image) for i in ids]
            sample.update(ids, clip.image_embeddings(images))
        sample.offered = len(rows)
        samples[label] = sample
    return samples


def _written(output: str, spec: UtilitySpec) -> pa.Table:
    index = read_index(output)
    if index is None:
        raise JobSpecError(f"{output} has no index: not a diffgen output")
    if spec.label_column not in index.column_names:
        raise JobSpecError(f"{FIELD}.label_column: the index of {output} has no column '{spec.label_column}' "
                           f"(columns: {', '.join(index.column_names)})")  # fmt: skip
    return index.filter(pa.compute.equal(index.column("status"), RecordStatus.WRITTEN.value))


def written_labels(output: str, spec: UtilitySpec) -> set[str]:
    """The labels of an output's written images (for `check_real_set` before any image is read)."""
    return {str(v) for v in _written(output, spec).column(spec.label_column).to_pylist() if v is not None}


def _split(real: RealFeatures, classes: list[str], spec: UtilitySpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(test row indices, each class's training pool in key order), both seeded by `spec.seed`."""
    keys = sample_keys(real.names, spec.seed)
    labels = np.array(real.labels, dtype=object)
    test, pools = [], {}
    for c in classes:
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(keys[members], kind="stable")]
        n_test = min(len(members) - 1, max(1, math.ceil(len(members) * spec.test_fraction)))
        test.append(members[:n_test])
        pools[c] = members[n_test:]
    return np.concatenate(test), pools


def _result(name: str, trained_on: str, train: Counter, truth: np.ndarray, predicted: np.ndarray,
            boot: np.ndarray, classes: list[str]) -> tuple[ProbeResult, Scores]:  # fmt: skip
    whole = scores(confusion(truth, predicted, len(classes)))
    resampled = scores(confusion(truth[boot], predicted[boot], len(classes)))

    def iv(value: float, samples: np.ndarray) -> Interval:
        return _interval(value, samples)

    result = ProbeResult(
        name=name, trained_on=trained_on, train_images={c: int(train[c]) for c in classes},
        accuracy=iv(whole.accuracy, resampled.accuracy), macro_f1=iv(whole.macro_f1, resampled.macro_f1),
        class_accuracy={c: iv(whole.class_accuracy[k], resampled.class_accuracy[:, k]) for k, c in enumerate(classes)},
        class_f1={c: iv(whole.class_f1[k], resampled.class_f1[:, k]) for k, c in enumerate(classes)},
        confusion=confusion(truth, predicted, len(classes)).tolist(),
    )  # fmt: skip
    return result, resampled


def _interval(value: float, samples: np.ndarray) -> Interval:
    low, high = interval(samples)
    value = float(value)
    return Interval(value=value if math.isfinite(value) else None, low=low, high=high)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def utility_report(
    synthetic: dict[str, Reservoir], real: RealFeatures, spec: UtilitySpec, *, output: str, created_at: datetime
) -> UtilityReport:
    """Steps 1-4 of the recipe on features already computed."""
    real_counts = dict(sorted(Counter(real.labels).items()))
    synthetic = {label: s for label, s in synthetic.items() if len(s)}
    classes = sorted(set(real_counts) & set(synthetic))
    synthetic_only = sorted(set(synthetic) - set(real_counts))
    real_only = sorted(set(real_counts) - set(synthetic))
    if len(classes) < 2:
        raise JobSpecError(f"{FIELD}: the labels do not overlap: written images have {sorted(synthetic)[:10]}, the "
                           f"real set {spec.real} has {list(real_counts)[:10]}; at least 2 must be in both")  # fmt: skip
    warnings = list(real.warnings)
    if synthetic_only:
        warnings.append(f"label(s) {synthetic_only} of written images are not in the real set: not scored")
    if real_only:
        warnings.append(f"label(s) {real_only} of the real set have no written image: not scored")
    small = [f"'{c}' ({real_counts[c]})" for c in classes if real_counts[c] < 2]
    if small:
        raise JobSpecError(f"{FIELD}.real: too few real images to split for class(es) {', '.join(small)}")
    first = synthetic[classes[0]]
    if real.features.shape[1] != first.dim:
        raise JobSpecError(f"{FIELD}: real features have {real.features.shape[1]} dimensions, synthetic {first.dim}")

    # 2. the split
    test, pools = _split(real, classes, spec)
    truth = np.array([classes.index(real.labels[i]) for i in test])
    syn_x = np.concatenate([synthetic[c].features for c in classes]).astype(np.float64)
    syn_y = [c for c in classes for _ in range(len(synthetic[c]))]
    real_n = {c: min(len(synthetic[c]), len(pools[c])) for c in classes}
    few_n = {c: min(spec.few_shot, len(pools[c])) for c in classes}
    for c in classes:
        if len(pools[c]) < spec.few_shot:
            warnings.append(f"class '{c}': {len(pools[c])} real training image(s), fewer than few_shot "
                            f"{spec.few_shot}; its few-shot baselines use {len(pools[c])}")  # fmt: skip
    real_rows = np.concatenate([pools[c][: real_n[c]] for c in classes])
    few_rows = np.concatenate([pools[c][: few_n[c]] for c in classes])

    # 3. the probes: (name, in words, training features, training labels)
    def rows(idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return real.features[idx], [real.labels[i] for i in idx]

    few_x, few_y = rows(few_rows)
    real_x, real_y = rows(real_rows)
    probes = [
        ("synthetic", "the synthetic sample", syn_x, syn_y),
        ("real", "real images, as many per class as the synthetic sample (capped by the pool)", real_x, real_y),
        ("few_shot", f"{spec.few_shot} real images per class", few_x, few_y),
        ("few_shot_plus_synthetic", f"{spec.few_shot} real images per class and the synthetic sample",
         np.concatenate([few_x, syn_x]), few_y + syn_y),
    ]  # fmt: skip

    # 4. scores with a paired bootstrap over the test rows
    boot = stratified_resamples(truth, spec.resamples, spec.seed)
    results, resampled = [], {}
    for name, words, x, y in probes:
        probe = fit_probe(x, y, classes, c=spec.probe_c)
        predicted = probe.predict(real.features[test])
        result, resampled[name] = _result(name, words, Counter(y), truth, predicted, boot, classes)
        results.append(result)
    by_name = {r.name: r for r in results}
    acc = {name: by_name[name].accuracy.value or 0.0 for name in by_name}
    syn, rl, few, aug = (resampled[n] for n in ("synthetic", "real", "few_shot", "few_shot_plus_synthetic"))
    ratio_whole = acc["synthetic"] / acc["real"] if acc["real"] > 0 else float("nan")

    def class_value(name: str, c: str) -> float:
        v = by_name[name].class_accuracy[c].value
        return float("nan") if v is None else v

    return UtilityReport(
        output=output, created_at=created_at, real=spec.real, label_column=spec.label_column,
        backbone=first.backbone, dim=first.dim, classes=classes, synthetic_only=synthetic_only, real_only=real_only,
        synthetic_images={c: len(synthetic[c]) for c in classes},
        synthetic_written={c: synthetic[c].offered for c in classes},
        real_images={c: real_counts[c] for c in classes},
        test_images={c: int((truth == k).sum()) for k, c in enumerate(classes)},
        probes=results,
        ratio=_interval(ratio_whole, _ratio(syn.accuracy, rl.accuracy)),
        class_ratio={c: _interval(_ratio(np.array(class_value("synthetic", c)), np.array(class_value("real", c))),
                                  _ratio(syn.class_accuracy[:, k], rl.class_accuracy[:, k]))
                     for k, c in enumerate(classes)},
        few_shot=spec.few_shot,
        augmentation_gain=_interval(acc["few_shot_plus_synthetic"] - acc["few_shot"], aug.accuracy - few.accuracy),
        class_gain={c: _interval(class_value("few_shot_plus_synthetic", c) - class_value("few_shot", c),
                                 aug.class_accuracy[:, k] - few.class_accuracy[:, k]) for k, c in enumerate(classes)},
        resamples=spec.resamples, level=LEVEL, seed=spec.seed, warnings=warnings, versions=package_versions(),
    )  # fmt: skip


def write_utility(report: UtilityReport) -> UtilityReport:
    """Write qc/utility.json under the report's output."""
    storage.write_bytes(storage.join(report.output, UTILITY_JSON), report.model_dump_json(indent=2).encode())
    log.info("utility: synthetic/real accuracy ratio %s, augmentation gain %s at %d real per class",
             _fmt(report.ratio), _fmt(report.augmentation_gain), report.few_shot)  # fmt: skip
    return report


def _fmt(iv: Interval) -> str:
    return "–" if iv.value is None else f"{iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def check_before_run(qc: QcSpec, manifest: pa.Table) -> None:
    """The pre-flight of `qc.utility`: the manifest has the label column, the real set lists, shares at
    least 2 labels with it, has 2 images of each shared label, and every real image decodes."""
    if not qc.enabled or qc.utility is None:
        return
    spec = qc.utility
    if spec.label_column not in manifest.column_names:
        raise JobSpecError(f"{FIELD}.label_column: the manifest has no column '{spec.label_column}' "
                           f"(columns: {', '.join(manifest.column_names)})")  # fmt: skip
    labels = {str(v) for v in manifest.column(spec.label_column).to_pylist() if v is not None}
    real = check_real_set(spec, labels)
    try:
        real.load()
    except LabelledSetError as e:
        raise JobSpecError(f"{FIELD}.real: {e}") from None


def score_output(
    output: str, qc: QcSpec, *, label_samples: dict[str, Reservoir] | None = None, created_at: datetime
) -> UtilityReport:
    """The utility of an output's written images, written to qc/utility.json and into qc/report.html.

    `label_samples` (from the run's QC actors) are used when they cover every written image with a
    label; otherwise (a resumed run, a standalone score) the written images are sampled and embedded here.
    """
    from diffgen.metrics.clip_model import ClipModel  # loads torch: only when a score is asked for

    spec = qc.utility
    if spec is None or qc.clip_model is None:
        raise JobSpecError(f"{FIELD}: needs qc.utility.real and qc.clip_model")
    written = Counter(str(v) for v in _written(output, spec).column(spec.label_column).to_pylist() if v is not None)
    real = check_real_set(spec, set(written))
    clip = ClipModel(qc.clip_model)
    real_features = embed_real(real, clip)
    covered = label_samples and sum(s.offered for s in label_samples.values()) >= sum(written.values())
    if covered and all(s.backbone == clip.name for s in label_samples.values()):
        samples = label_samples
    else:
        log.info("utility: embedding a sample of the %d written images with a label", sum(written.values()))
        samples = synthetic_samples(output, spec, clip)
    report = write_utility(utility_report(samples, real_features, spec, output=output, created_at=created_at))
    report_json = storage.join(output, REPORT_JSON)
    if storage.exists(report_json):
        from diffgen.reporting.report import write_report  # the page is redrawn with the utility section

        write_report(QcReport.model_validate_json(storage.read_bytes(report_json)))
    return report
