"""Ratios of steady rates between variants, and the targets some of them are held to (issue #8)."""

from __future__ import annotations

from benchmarks.measurement import rounded

TARGETS = {
    "pipeline_over_bare": 0.90,
    "qc_on_over_off": 0.95,
    "watermark_on_over_off": 0.95,
    "actors_2_over_1": 1.7,
}
# name -> (numerator variant, denominator variant, what the ratio says)
RATIOS = {
    "pipeline_over_bare": ("pipeline", "bare", "everything on, 1 actor, default threads, over the bare loop"),
    "qc_on_over_off": ("pipeline", "no-qc", "QC on over off"),
    "watermark_on_over_off": ("pipeline", "no-watermark", "watermark on over off (provenance text stays on)"),
    "actors_2_over_1": ("actors-2x1", "actors-1x1", "2 actors x 1 thread over 1 actor x 1 thread"),
    "actors_2x1_over_1x2": ("actors-2x1", "actors-1x2", "2 actors x 1 thread over 1 actor x 2 threads (same cores)"),
    "default_threads_over_2": ("pipeline", "actors-1x2", "1 actor: diffgen's default threads over 2 threads"),
    "s3_over_local": ("pipeline-s3", "pipeline", "writing to loopback S3 over a local folder"),
    "bare_2_threads_over_1": ("bare", "bare-1t", "bare loop, 2 threads over 1"),
    "best_pipeline_over_bare": ("actors-2x1", "bare", "2 actors x 1 thread, everything on, over the bare loop"),
    "bare_2_processes_over_1": ("bare-2x1", "bare-1t", "2 bare loops side by side over 1 (what the cores allow)"),
    "actors_2x1_over_bare_2x1": ("actors-2x1", "bare-2x1", "2 actors over 2 bare loops side by side"),
    "helper_niceness_2x1": ("actors-2x1", "actors-2x1-ray-niceness",
                            "2 actors: QC and writers at niceness 19 over Ray's 15 (the generators')"),
}  # fmt: skip


def ratios(variants: dict[str, dict], specs: dict = RATIOS) -> dict[str, dict]:
    """Every ratio of `specs` whose two variants ran: steady and end-to-end, with its target where it has one."""
    out = {}
    for name, (num, den, says) in specs.items():
        if num not in variants or den not in variants:
            continue
        a, b = variants[num], variants[den]
        both = a["steady_images_per_s"] and b["steady_images_per_s"]
        steady = a["steady_images_per_s"] / b["steady_images_per_s"] if both else None
        entry = {
            "of": f"{num} / {den}",
            "says": says,
            "steady": rounded(steady, 3),
            "e2e": round(a["e2e_images_per_s"] / b["e2e_images_per_s"], 3),
        }
        if name in TARGETS:
            entry.update(target=TARGETS[name], passed=None if steady is None else steady >= TARGETS[name])
        out[name] = entry
    return out
