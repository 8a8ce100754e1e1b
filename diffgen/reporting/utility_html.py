"""The utility section of qc/report.html: the probes' scores with their intervals, the ratio and the
augmentation gain per class, and each probe's confusion matrix as a picture."""

from __future__ import annotations

from diffgen.reporting.charts import confusion_svg, escape
from diffgen.schemas.utility import Interval, UtilityReport


def _iv(iv: Interval, digits: int = 3) -> str:
    if iv.value is None:
        return "–"
    if iv.low is None:
        return f"{iv.value:.{digits}f}"
    return f"{iv.value:.{digits}f} <span class='muted'>[{iv.low:.{digits}f}, {iv.high:.{digits}f}]</span>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def utility_section(u: UtilityReport) -> str:
    """The section's HTML (its <h2> included); numbers are value [2.5 %, 97.5 %] of the bootstrap."""
    probes = {p.name: p for p in u.probes}
    head = (f"<p>Linear probes on <b>{escape(u.backbone)}</b> image embeddings ({u.dim}-d), trained as named and "
            f"tested on {sum(u.test_images.values())} held-out real images of {escape(u.real)} "
            f"(label column <code>{escape(u.label_column)}</code>); intervals: {u.level:.0%} bootstrap, "
            f"{u.resamples} resamples. Created {escape(u.created_at.isoformat())}.</p>"
            f"<p><b>synthetic / real accuracy: {_iv(u.ratio)}</b> · augmentation gain at {u.few_shot} real per "
            f"class: <b>{_iv(u.augmentation_gain)}</b></p>")  # fmt: skip
    overall = _table(
        ["probe", "trained on", "images", "accuracy", "macro-F1"],
        [[escape(p.name), escape(p.trained_on), str(sum(p.train_images.values())), _iv(p.accuracy), _iv(p.macro_f1)]
         for p in u.probes],
    )  # fmt: skip
    per_class = _table(
        ["class", "synthetic (written)", "real (test)", "synthetic-trained acc.", "real-trained acc.", "ratio",
         "gain"],
        [[escape(c), f"{u.synthetic_images[c]} ({u.synthetic_written[c]})", f"{u.real_images[c]} ({u.test_images[c]})",
          _iv(probes["synthetic"].class_accuracy[c]), _iv(probes["real"].class_accuracy[c]), _iv(u.class_ratio[c]),
          _iv(u.class_gain[c])] for c in u.classes],
    )  # fmt: skip
    pictures = "".join(confusion_svg(probes[n].confusion, u.classes, f"{n}-trained, on real test images")
                       for n in ("synthetic", "real") if n in probes)  # fmt: skip
    warnings = "".join(f"<p class='warn'>{escape(w)}</p>" for w in u.warnings)
    return (f"<h2>Utility: train on synthetic, test on real</h2>{head}{warnings}{overall}"
            f"<h3>Per class</h3>{per_class}<div class='charts'>{pictures}</div>")  # fmt: skip
