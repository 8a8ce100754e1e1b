"""What every stage after generation costs per image at real sizes, on this machine's CPU.

    python -m benchmarks.stage_costs [--sizes 512 1024] [--images N] [--clip vit-b-32 vit-l-14] [--quick]

Per image, on 1 thread, without Ray: the QC pixel checks (black/flat/non-finite and the perceptual
hash), the watermark's embedding and its read-back check (as the write stage runs them), the
perceptual hash of the delivered pixels, PNG encoding at each zlib level (milliseconds and bytes),
the provenance record and its PNG text chunks, and the write stage end to end (mark, encode, store
on local disk, index shard) at the default PNG level and at the one chosen here. QC's CLIP model
(CLIP score, and the FID features of a 'clip' backbone, which share its image embedding) is priced
with real-size CLIP architectures built from their published configs with random weights (the
cost does not depend on the weights), at batch 8.

The images are a fixed procedural scene per seed: smooth colour fields with edges and a little
sensor-like noise, which PNG compresses about as it does generated photographs (random noise would
not compress at all, flat colour far too well).

From the per-image costs the table derives "CPU cores per GPU": the cores the post-generation work
needs to keep up with a GPU making N images/s, with QC on the GPU (its usual place) and on the CPU.

Results: benchmarks/results/stage-costs-cpu-<machine>.json (with --quick: out/benchmarks/), and a
table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.machine import machine, machine_slug, versions
from benchmarks.results import result_path, write_result

PNG_LEVELS = (0, 1, 2, 3, 6, 9)
CLIP_VARIANTS = ("vit-b-32", "vit-l-14")
GPU_RATES = (7.0, 25.0)  # images/s per GPU: SD 1.5 512 px on an H100/H200, few-step SDXL 1024 px


def scene(size: int, seed: int) -> np.ndarray:
    """A procedural (size, size, 3) uint8 image: smooth colour fields, a few hard-edged shapes, mild noise."""
    rng = np.random.default_rng(seed)
    import cv2

    field = np.zeros((size, size, 3), np.float32)
    for scale in (4, 8, 16):
        low = rng.uniform(0, 255, (scale, scale, 3)).astype(np.float32)
        field += cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) / 3
    for _ in range(6):
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.circle(field, center, int(rng.integers(size // 20, size // 5)), color, -1, lineType=cv2.LINE_AA)
    field += rng.normal(0, 2.0, field.shape).astype(np.float32)
    return np.clip(np.rint(field), 0, 255).astype(np.uint8)


def per_image(fn, items: list, repeats: int = 1) -> float:
    """Median seconds of `fn(item)` over the items (each run `repeats` times, best kept)."""
    times = []
    for item in items:
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            fn(item)
            best = min(best, time.perf_counter() - started)
        times.append(best)
    return statistics.median(times)


def _spec(size: int, output: str, level: int):
    from diffgen.schemas.job import JobSpec

    return JobSpec.model_validate({
        "run_id": "stage-costs", "model": {"id": str(_model_folder())},
        "sampler": {"width": size, "height": size, "steps": 1},
        "write": {"png_compress_level": level, "upload_concurrency": 1},
        "output": output,
    })  # fmt: skip


@functools.cache
def _model_folder() -> Path:
    """A tiny model folder, built once: the write stage hashes its weights for provenance once per worker."""
    from lab.builders.tiny import build_tiny_sd

    return build_tiny_sd(Path(tempfile.mkdtemp(prefix="stage-costs-model-")) / "tiny-sd")


def write_rows(images: list[np.ndarray], size: int) -> list[dict]:
    """Rows as the write stage receives them from generation (and QC)."""
    rows = []
    for i, pixels in enumerate(images):
        rows.append({
            "record_id": f"r{i:06d}", "slot_id": f"r{i:06d}", "attempt": 0, "id": f"row{i}", "sample_index": 0,
            "prompt": "a photograph of a red bicycle leaning on a wall", "negative_prompt": "", "seed": i,
            "steps": 25, "guidance_scale": 7.5, "width": size, "height": size, "status": None, "error": None,
            "pixels": pixels.tobytes(), "phash": 0, "pipeline_class": "StableDiffusionPipeline",
        })  # fmt: skip
    return rows


def write_stage_cost(images: list[np.ndarray], size: int, level: int) -> dict:
    """The write stage end to end (mark, encode, store, index shard) per image, local disk."""
    import pyarrow as pa

    from diffgen.stages.write import WriteStage

    with tempfile.TemporaryDirectory(prefix="stage-costs-out-") as out:
        spec = _spec(size, out, level)
        stage = WriteStage(spec, out, "stage-costs")
        stage.setup()
        rows = write_rows(images, size)
        table = pa.Table.from_pylist(rows)
        stage(table.slice(0, 1))  # warm: imports, first file
        started = time.perf_counter()
        index = stage(table)
        seconds = (time.perf_counter() - started) / len(rows)
        written = index.column("status").to_pylist().count("written")
        return {"ms": round(seconds * 1000, 2), "written": written, "images": len(rows)}


def png_costs(images: list[np.ndarray]) -> dict:
    from diffgen.provenance.png import encode_png

    out = {}
    for level in PNG_LEVELS:
        ms = per_image(lambda p, lv=level: encode_png(p, {"k": "v"}, lv), images) * 1000
        size = statistics.median(len(encode_png(p, {"k": "v"}, level)) for p in images)
        out[str(level)] = {"ms": round(ms, 2), "bytes": int(size)}
    return out


def choose_level(png: dict) -> int:
    """The fastest level whose files are at most 25 % larger than the smallest. Storage is the cheap
    side of the trade: at 1024 px zlib's default level costs seconds of CPU per image for ~15 % fewer
    bytes than level 1, and a GPU making 25 images/s would need tens of cores to keep up with it."""
    limit = min(v["bytes"] for v in png.values()) * 1.25
    fitting = [int(level) for level, v in png.items() if v["bytes"] <= limit]
    return min(fitting, key=lambda level: png[str(level)]["ms"])


def clip_cost(variant: str, images: list[np.ndarray], folder: Path) -> dict:
    from diffgen.metrics.clip_model import ClipModel
    from lab.builders.real_size import build_real_size_clip

    path = build_real_size_clip(folder / variant, variant)
    clip = ClipModel(path, batch_size=8)
    prompts = ["a photograph of a red bicycle leaning on a wall"] * len(images)
    clip.image_embeddings(images[:2])  # warm
    started = time.perf_counter()
    clip.image_embeddings(images)
    image_s = (time.perf_counter() - started) / len(images)
    started = time.perf_counter()
    clip.text_embeddings(prompts)
    text_s = (time.perf_counter() - started) / len(images)
    return {"image_embedding_ms": round(image_s * 1000, 1), "text_embedding_ms": round(text_s * 1000, 1),
            "parameters_m": round(sum(p.numel() for p in clip.model.parameters()) / 1e6, 1)}  # fmt: skip


def measure_size(size: int, n: int, clips: tuple[str, ...], models: Path) -> dict:
    from diffgen.metrics.image_checks import check_images, phash
    from diffgen.provenance import watermark
    from diffgen.provenance.record import png_text_chunks

    images = [scene(size, seed) for seed in range(n)]
    payload = bytes(range(8))
    marked = [watermark.embed(p, payload) for p in images]
    png = png_costs(marked)
    level = choose_level(png)
    stages = {
        "pixel_checks_ms": per_image(lambda p: check_images([p], 0, 2.0), images) * 1000,
        "phash_ms": per_image(phash, images) * 1000,
        "watermark_embed_ms": per_image(lambda p: watermark.embed(p, payload), images) * 1000,
        "watermark_read_back_ms": per_image(lambda p: watermark.extract(p, search=False), marked) * 1000,
        "watermark_decode_with_search_ms": per_image(lambda p: watermark.extract(p), marked[:2]) * 1000,
    }
    from diffgen.stages.write import WriteStage

    with tempfile.TemporaryDirectory() as out:
        stage = WriteStage(_spec(size, out, level), out, "stage-costs")
        stage.setup()
        row = write_rows(images[:1], size)[0] | {"created_at": datetime.now(UTC)}
        stages["provenance_record_ms"] = per_image(lambda _: png_text_chunks(stage._record(row, payload)),
                                                   list(range(n))) * 1000  # fmt: skip
    result = {
        "images": n,
        "stages_ms": {k: round(v, 2) for k, v in stages.items()},
        "png": png,
        "png_level_chosen": level,
        "write_stage": {"level_6": write_stage_cost(images, size, 6), f"level_{level}": write_stage_cost(images, size, level)},
        "clip": {v: clip_cost(v, images[: max(8, min(n, 16))], models) for v in clips},
    }
    result["post_generation_cpu_ms"] = post_generation(result, level)
    return result


def post_generation(result: dict, level: int) -> dict:
    """CPU milliseconds per image after generation: QC pixel checks + the write stage (which holds the
    watermark, its read-back, the phash of the delivered pixels, PNG encoding, provenance and the store),
    without and with QC's CLIP on the CPU."""
    s = result["stages_ms"]
    base = s["pixel_checks_ms"] + result["write_stage"][f"level_{level}"]["ms"]
    out = {"qc_on_gpu": round(base, 1)}
    for variant, c in result["clip"].items():
        out[f"qc_on_cpu_{variant}"] = round(base + c["image_embedding_ms"] + c["text_embedding_ms"], 1)
    return out


def cores_table(sizes: dict) -> list[str]:
    lines = ["| size | post-generation CPU ms/image (QC on GPU) | cores per GPU at "
             + " | cores at ".join(f"{r:g} img/s" for r in GPU_RATES) + " |",
             "|---|---|" + "---|" * len(GPU_RATES)]  # fmt: skip
    for size, r in sizes.items():
        ms = r["post_generation_cpu_ms"]["qc_on_gpu"]
        lines.append(f"| {size}² | {ms:.1f} | " + " | ".join(f"{ms * rate / 1000:.2f}" for rate in GPU_RATES) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_costs", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--images", type=int, default=12, help="images per size (default 12; --quick 4)")
    parser.add_argument("--clip", nargs="*", choices=CLIP_VARIANTS, default=list(CLIP_VARIANTS))
    parser.add_argument("--quick", action="store_true", help="4 images per size, results under out/benchmarks/")
    parser.add_argument("--out", type=Path, help="write the results JSON here instead")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n = 4 if args.quick else args.images
    started, wall = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="stage-costs-models-") as models:
        sizes = {str(size): measure_size(size, n, tuple(args.clip), Path(models)) for size in args.sizes}
    result = {
        "benchmark": "stage costs after generation",
        "mode": "cpu",
        "quick": args.quick,
        "command": "python -m benchmarks.stage_costs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "created_at": started,
        "session_wall_s": round(time.perf_counter() - wall, 1),
        "machine": info,
        "versions": versions(),
        "method": __doc__.split("\n\n", 2)[2].strip(),
        "torch_threads": 1,
        "sizes": sizes,
    }
    out = args.out or result_path("stage-costs", "cpu", machine_slug(info, gpu=False), args.quick)
    write_result(result, out)
    print("\n".join(cores_table(sizes)))
    print(json.dumps({s: {"png": r["png"], "stages_ms": r["stages_ms"], "clip": r["clip"]} for s, r in sizes.items()},
                     indent=1))  # fmt: skip
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
