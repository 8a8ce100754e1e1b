"""How well the dwtDctSvd watermark survives common edits.

    python -m benchmarks.watermark_robustness --n 300 --sizes 64 256    (from the repository root)

For each size, N images get a distinct 64-bit payload (`diffgen.provenance.watermark.payload_for`), are
attacked, and the payload is read back from the attacked pixels. Two kinds of image:
  - `sd`: real outputs of a diffusers Stable Diffusion pipeline (`lab.builders.tiny.build_tiny_sd`,
    random weights, so they look like coloured noise: the hard case for a chroma watermark);
  - `procedural`: smooth gradients with PIL-drawn shapes and a little noise, closer to what
    trained models produce.
Attacks (all decoded at the original size, since the decoder has no resynchronisation):
  - none: the marked pixels as written (a lossless PNG gives the same);
  - jpeg_q90, jpeg_q75: Pillow JPEG at that quality, default 4:2:0 chroma subsampling;
  - resize_75, resize_50: bicubic down to 75% / 50% of each side, bicubic back up;
  - crop_10_pad: keep the central 90% of each side, pad the cut border back with black in place
    (the block grid stays aligned);
  - crop_10_resize: keep the central 90% of each side, bicubic-resize it back to full size
    (the grid is shifted and scaled);
  - unmarked: the payload read from the image before embedding, i.e. the chance level.
Writes benchmarks/results/watermark_robustness.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.environment import prepare_environment
from benchmarks.paths import RESULTS

DEFAULT_OUT = RESULTS / "watermark_robustness.json"


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    return attack


def _resize(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        small = Image.fromarray(pixels).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC)
        return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))

    return attack


def _central_box(pixels: np.ndarray, keep: float) -> tuple[int, int, int, int]:
    h, w = pixels.shape[:2]
    dh, dw = round(h * (1 - keep) / 2), round(w * (1 - keep) / 2)
    return dh, h - dh, dw, w - dw


def _crop_pad(pixels: np.ndarray) -> np.ndarray:
    top, bottom, left, right = _central_box(pixels, 0.9)
    out = np.zeros_like(pixels)
    out[top:bottom, left:right] = pixels[top:bottom, left:right]
    return out


def _crop_resize(pixels: np.ndarray) -> np.ndarray:
    top, bottom, left, right = _central_box(pixels, 0.9)
    h, w = pixels.shape[:2]
    return np.asarray(Image.fromarray(pixels[top:bottom, left:right]).resize((w, h), Image.Resampling.BICUBIC))


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda p: p,
    "jpeg_q90": _jpeg(90),
    "jpeg_q75": _jpeg(75),
    "resize_75": _resize(0.75),
    "resize_50": _resize(0.5),
    "crop_10_pad": _crop_pad,
    "crop_10_resize": _crop_resize,
}
DESCRIPTIONS: dict[str, str] = {
    "none": "marked pixels as written",
    "jpeg_q90": "Pillow JPEG quality 90, 4:2:0",
    "jpeg_q75": "Pillow JPEG quality 75, 4:2:0",
    "resize_75": "bicubic to 75% of each side and back",
    "resize_50": "bicubic to 50% of each side and back",
    "crop_10_pad": "central 90% of each side kept, border padded black in place",
    "crop_10_resize": "central 90% of each side kept, bicubic-resized back to full size",
    "unmarked": "payload read from the image before embedding (chance level)",
}


def procedural(size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random gradient with a few flat shapes, softened and lightly noised."""
    y, x = np.mgrid[0:size, 0:size] / size
    corners = rng.uniform(0, 255, (4, 3))
    base = (
        corners[0] * ((1 - x) * (1 - y))[..., None]
        + corners[1] * (x * (1 - y))[..., None]
        + corners[2] * ((1 - x) * y)[..., None]
        + corners[3] * (x * y)[..., None]
    )
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * size
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * size, y0 + rng.uniform(0.1, 0.6) * size
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=size / 256))
    noisy = np.asarray(image).astype(np.float64) + rng.normal(0, 2.0, (size, size, 3))
    return noisy.clip(0, 255).round().astype(np.uint8)


def sd_images(size: int, count: int, steps: int, seed: int) -> list[np.ndarray]:
    """`count` images from a tiny random-weight SD pipeline, loaded from disk like a real checkpoint."""
    if count == 0:
        return []
    import torch
    from diffusers import StableDiffusionPipeline

    from lab.builders.tiny import build_tiny_sd

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd(Path(tmp) / "tiny-sd", width=size)
        pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red fox in snow", "a lighthouse at dusk", "a bowl of fruit", "a city street in rain"]
    images: list[np.ndarray] = []
    batch = 8
    for start in range(0, count, batch):
        n = min(batch, count - start)
        with torch.inference_mode():
            out = pipe(
                prompt=[prompts[(start + i) % len(prompts)] for i in range(n)],
                width=size,
                height=size,
                num_inference_steps=steps,
                guidance_scale=1.0,
                generator=[torch.Generator("cpu").manual_seed(seed + start + i) for i in range(n)],
                output_type="np",
            ).images
        images.extend((np.clip(img, 0, 1) * 255).round().astype(np.uint8) for img in out)
    return images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def summarise(accuracies: list[float]) -> dict[str, float]:
    a = np.asarray(accuracies)
    return {
        "images": int(a.size),
        "mean_bit_accuracy": round(float(a.mean()), 4),
        "share_all_64_bits": round(float((a == 1.0).mean()), 4),
        "share_at_least_0.9": round(float((a >= 0.9).mean()), 4),
    }


def run(n: int, sizes: list[int], sd_images_per_size: int, sd_steps: int, seed: int) -> dict:
    # Imported here, not at the top: OpenCV, under it, sets environment variables when imported.
    from diffgen.provenance import watermark

    results: dict = {
        "method": f"invisible-watermark {watermark.METHOD} via diffgen.provenance.watermark, "
        f"{watermark.PAYLOAD_BITS}-bit payload",
        "created_at": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "n_per_size": n,
        "sd_images_per_size": min(sd_images_per_size, n),
        "sd_steps": sd_steps,
        "seed": seed,
        "attacks": DESCRIPTIONS,
        "sizes": {},
    }
    for size in sizes:
        started = time.perf_counter()
        n_sd = min(sd_images_per_size, n)
        sources = ["sd"] * n_sd + ["procedural"] * (n - n_sd)
        rng = np.random.default_rng(seed + size)
        images = sd_images(size, n_sd, sd_steps, seed) + [procedural(size, rng) for _ in range(n - n_sd)]
        generated = time.perf_counter()
        per_source: dict[str, dict[str, list[float]]] = {}
        psnrs: dict[str, list[float]] = {}
        embed_seconds = extract_seconds = 0.0
        for i, (source, pixels) in enumerate(zip(sources, images, strict=True)):
            payload = watermark.payload_for("watermark-benchmark", f"{size}-{i}")
            t = time.perf_counter()
            marked = watermark.embed(pixels, payload)
            embed_seconds += time.perf_counter() - t
            psnrs.setdefault(source, []).append(psnr(pixels, marked))
            acc = per_source.setdefault(source, {})
            for name, attack in ATTACKS.items():
                t = time.perf_counter()
                found = watermark.extract(attack(marked))
                extract_seconds += time.perf_counter() - t
                acc.setdefault(name, []).append(watermark.bit_accuracy(found, payload))
            acc.setdefault("unmarked", []).append(watermark.bit_accuracy(watermark.extract(pixels), payload))
        everything = {name: [a for src in per_source.values() for a in src[name]] for name in DESCRIPTIONS}
        results["sizes"][str(size)] = {
            "all": {name: summarise(v) for name, v in everything.items()},
            "by_source": {src: {name: summarise(v) for name, v in acc.items()} for src, acc in per_source.items()},
            "psnr_db": {
                src: {"mean": round(float(np.mean(v)), 2), "min": round(float(np.min(v)), 2)}
                for src, v in psnrs.items()
            },
            "seconds": {
                "generate_images": round(generated - started, 2),
                "embed_per_image": round(embed_seconds / n, 4),
                "extract_per_image_incl_attack": round(extract_seconds / (n * len(ATTACKS)), 4),
            },
        }
    return results


def markdown(results: dict) -> str:
    lines = []
    for size, data in results["sizes"].items():
        counts = {src: next(iter(v.values()))["images"] for src, v in data["by_source"].items()}
        sources = " + ".join(f"{c} {src}" for src, c in counts.items())
        psnr_text = "; ".join(f"{src} {v['mean']} dB (min {v['min']})" for src, v in data["psnr_db"].items())
        lines += [
            f"\n### {size}x{size} ({sources} images; PSNR after embedding: {psnr_text})\n",
            "| attack | mean bit accuracy | all 64 bits | >= 0.9 | sd: mean / all 64 | procedural: mean / all 64 |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in data["all"].items():
            cells = []
            for src in ("sd", "procedural"):
                t = data["by_source"].get(src, {}).get(name)
                cells.append(f"{t['mean_bit_accuracy']:.3f} / {t['share_all_64_bits']:.0%}" if t else "-")
            lines.append(
                f"| {name} | {s['mean_bit_accuracy']:.3f} | {s['share_all_64_bits']:.0%} | "
                f"{s['share_at_least_0.9']:.0%} | {cells[0]} | {cells[1]} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.watermark_robustness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, default=300, help="images per size (default 300)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="square image sides (>= 64)")
    parser.add_argument(
        "--sd-images", type=int, default=100, help="how many of the N come from the tiny SD model (default 100)"
    )
    parser.add_argument("--sd-steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    prepare_environment()
    from diffgen.provenance import watermark

    if args.n < 1 or any(s < watermark.MIN_SIDE for s in args.sizes):
        parser.error(f"--n must be >= 1 and every size >= {watermark.MIN_SIDE}")
    results = run(args.n, args.sizes, args.sd_images, args.sd_steps, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
