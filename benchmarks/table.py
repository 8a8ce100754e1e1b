"""A results file as markdown tables for stdout: variants, ratios, CPU per process role."""

from __future__ import annotations

import json
import statistics


def variant_line(name: str, v: dict) -> str:
    threads = v["threads"] or f"{v.get('default_threads', '?')} (default)"
    bare = v["kind"] == "bare"
    shape = f"{v['actors']} x {threads}"
    if bare:
        shape = f"bare x {threads}" if v["actors"] == 1 else f"{v['actors']} bare x {threads}"
    qc, mark = ("-", "-") if bare else ("on" if v["qc"] else "off", "on" if v["watermark"] else "off")
    output = "-" if bare else v["output"]
    steady = "-" if v["steady_images_per_s"] is None else f"{v['steady_images_per_s']:.3f}"
    halves = [r.get("steady_first_half_images_per_s") for r in v["runs"]]
    first = statistics.median(h for h in halves if h) if any(halves) else None
    # A first half much faster than the second: a backlog drained there, the run was short.
    drained = first is not None and v["steady_images_per_s"] and first > 1.3 * v["steady_images_per_s"]
    first_text = "-" if first is None else f"{first:.3f}{' (drain: run longer)' if drained else ''}"
    return (
        f"| {name} | {shape} | {qc} | {mark} | {output} | {v['images']} | {v['e2e_wall_s']:.1f} | "
        f"{v['e2e_images_per_s']:.3f} | {steady} | {first_text} |"
    )


def ratio_lines(ratios: dict[str, dict]) -> list[str]:
    lines = ["", "| ratio | steady | e2e | target | |", "|---|---|---|---|---|"]
    for name, r in ratios.items():
        verdict = {True: "PASS", False: "FAIL", None: "?"}[r["passed"]] if "target" in r else ""
        target = f">= {r['target']}" if "target" in r else ""
        lines.append(f"| {name} ({r['of']}) | {r['steady']} | {r['e2e']} | {target} | {verdict} |")
    return lines


def cpu_profile_lines(variants: dict[str, dict]) -> list[str]:
    profiles = [(name, v["runs"][0]["cpu_profile"]) for name, v in variants.items()
                if v["runs"] and v["runs"][0].get("cpu_profile")]  # fmt: skip
    if not profiles:
        return []
    lines = ["", "CPU per image by process, first run of each variant (cores busy: CPU s / wall s):", ""]
    for name, prof in profiles:
        n = variants[name]["images"]
        roles = ", ".join(f"{role} {sec / n * 1000:.0f} ms" for role, sec in prof["cpu_s_by_role"].items())
        lines.append(f"- {name}: {prof['cores_busy']} cores busy; {roles}")
    return lines


VARIANTS_HEADER = [
    "| variant | actors x threads | QC | watermark | output | images | e2e s | e2e img/s | steady img/s "
    "| 1st half img/s |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def table(result: dict) -> str:
    """Per block: the variants, the ratios, CPU per image by process role, and the block's other findings."""
    lines = []
    for title, block in result["models"].items():
        lines.append(f"\n## {title}: {block['settings_line']}\n")
        if block["variants"]:
            lines += [*VARIANTS_HEADER, *(variant_line(name, v) for name, v in block["variants"].items())]
        if block["ratios"]:
            lines += ratio_lines(block["ratios"])
        lines += cpu_profile_lines(block["variants"])
        for key in ("gpu", "same_images", "stage_profile"):
            if block.get(key):
                lines.append(f"\n{key}: {json.dumps(block[key])}")
    return "\n".join(lines)
