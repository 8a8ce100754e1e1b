"""How well the watermark (scheme 2: cell QIM, BCH and a 24-bit check, crop search) survives what datasets do.

    python -m benchmarks.watermark_robustness --n 300 --sizes 64 256 512 1024    (from the repository root)
    python -m benchmarks.watermark_robustness --false-positives 100000           (unmarked crops only)

For each size, N images get a distinct payload, are attacked, and the payload is decoded from the
attacked pixels (at whatever size the attack leaves). Two kinds of image:
  - `sd`: real outputs of a diffusers Stable Diffusion pipeline (`lab.builders.tiny.build_tiny_sd`,
    random weights, so they look like coloured noise: the hard case for a chroma watermark);
  - `procedural`: smooth gradients with PIL-drawn shapes and a little noise, closer to what
    trained models produce.
Per attack: exact-payload recovery (the decoder returns the payload embedded), wrong payloads (it
returns another one: a false positive on a marked image), the mean bit accuracy of the channel
before error correction (codeword bits read at the best crop map), and false positives on the
unmarked original put through the same attack. Per size: PSNR and SSIM of the embedding, embed and
decode time. `--false-positives K` decodes K random crops (random size and place, random rescale)
of unmarked images and counts any payload found.
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


def _encode(fmt: str, quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt, quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    return attack


def _downscale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Bicubic down to `factor` of each side, decoded at that size (what a dataset's resize leaves)."""

    def attack(pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        return np.asarray(Image.fromarray(pixels).resize((round(w * factor), round(h * factor)), Image.Resampling.BICUBIC))

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


def _crop_resize(keep: float) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        top, bottom, left, right = _central_box(pixels, keep)
        h, w = pixels.shape[:2]
        return np.asarray(Image.fromarray(pixels[top:bottom, left:right]).resize((w, h), Image.Resampling.BICUBIC))

    return attack


def _rotate(degrees: float) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(pixels).rotate(degrees, Image.Resampling.BICUBIC, fillcolor=(0, 0, 0)))

    return attack


def _levels(brightness: float, contrast: float) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float64)
        x = (x - 128.0) * contrast + 128.0 + 255.0 * brightness
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    return attack


def _then(*attacks: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def attack(pixels: np.ndarray) -> np.ndarray:
        for a in attacks:
            pixels = a(pixels)
        return pixels

    return attack


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda p: p,
    "jpeg_q90": _encode("JPEG", 90),
    "jpeg_q75": _encode("JPEG", 75),
    "jpeg_q50": _encode("JPEG", 50),
    "webp_q80": _encode("WEBP", 80),
    "resize_75": _downscale(0.75),
    "resize_50": _downscale(0.5),
    "crop_10_pad": _crop_pad,
    "crop_10_resize": _crop_resize(0.9),
    "crop_25_resize": _crop_resize(0.75),
    "rotate_2": _rotate(2.0),
    "brightness_+10": _levels(0.10, 1.0),
    "brightness_-10": _levels(-0.10, 1.0),
    "contrast_+10": _levels(0.0, 1.10),
    "contrast_-10": _levels(0.0, 0.90),
    "jpeg_q75_then_resize_50": _then(_encode("JPEG", 75), _downscale(0.5)),
    "resize_50_then_jpeg_q75": _then(_downscale(0.5), _encode("JPEG", 75)),
}
DESCRIPTIONS: dict[str, str] = {
    "none": "marked pixels as written (a lossless PNG gives the same)",
    "jpeg_q90": "Pillow JPEG quality 90, 4:2:0",
    "jpeg_q75": "Pillow JPEG quality 75, 4:2:0",
    "jpeg_q50": "Pillow JPEG quality 50, 4:2:0",
    "webp_q80": "Pillow WebP quality 80",
    "resize_75": "bicubic down to 75% of each side, decoded at that size",
    "resize_50": "bicubic down to 50% of each side, decoded at that size",
    "crop_10_pad": "central 90% of each side kept, border padded black in place",
    "crop_10_resize": "central 90% of each side kept, bicubic-resized back to full size",
    "crop_25_resize": "central 75% of each side kept, bicubic-resized back to full size",
    "rotate_2": "rotated 2 degrees about the centre, same size, corners black",
    "brightness_+10": "+10% of full scale added to every channel, clipped",
    "brightness_-10": "-10% of full scale added to every channel, clipped",
    "contrast_+10": "contrast x1.10 about mid-grey, clipped",
    "contrast_-10": "contrast x0.90 about mid-grey",
    "jpeg_q75_then_resize_50": "JPEG q75, then bicubic down to 50% of each side",
    "resize_50_then_jpeg_q75": "bicubic down to 50% of each side, then JPEG q75",
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


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the luma planes (Wang, Bovik, Sheikh and Simoncelli 2004: 11x11 Gaussian window, sigma 1.5)."""
    import cv2

    weights = np.array([0.299, 0.587, 0.114])
    x, y = a.astype(np.float64) @ weights, b.astype(np.float64) @ weights
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    return float(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def channel_accuracy(pixels: np.ndarray, payload: bytes, layout) -> float:
    """Share of codeword bits read right before error correction, at the best of the decoder's crop maps."""
    from diffgen.provenance import watermark

    if min(pixels.shape[:2]) < 16:
        return 0.5
    work, visible = watermark._canvas(pixels), watermark._visible_mask(pixels)
    truth = layout.code.encode(payload)
    best = 0.0
    for scale, gain in {(1.0, 1.0), *watermark._best_maps(work, visible, layout)}:
        phase = watermark._phase(watermark._measure(work, visible, layout, scale)[0], layout, gain)
        bits = ((phase > 0.25) & (phase < 0.75)).astype(np.uint8)
        best = max(best, float((bits == truth).mean()))
    return best


def run(n: int, sizes: list[int], sd_images_per_size: int, sd_steps: int, seed: int) -> dict:
    # Imported here, not at the top: OpenCV, under it, sets environment variables when imported.
    from diffgen.provenance import watermark

    results: dict = {
        "method": f"diffgen.provenance.watermark scheme 2 ({watermark.METHOD}): {watermark.PAYLOAD_BITS}-bit payload, "
        "24-bit check, BCH; exact payload or nothing",
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
        cells: dict[str, dict[str, list]] = {name: {"exact": [], "wrong": [], "acc": [], "fp": []} for name in ATTACKS}
        by_source: dict[str, dict[str, list[bool]]] = {}
        psnrs, ssims, embed_s, decode_s = [], [], [], []
        for i, (source, pixels) in enumerate(zip(sources, images, strict=True)):
            payload = watermark.payload_from_hex(f"{size:04x}{i:012x}")
            t = time.perf_counter()
            marked = watermark.embed(pixels, payload)
            embed_s.append(time.perf_counter() - t)
            psnrs.append(psnr(pixels, marked))
            ssims.append(ssim(pixels, marked))
            layout = watermark.layout_for(size, size)
            for name, attack in ATTACKS.items():
                attacked = attack(marked)
                t = time.perf_counter()
                detection = watermark.decode(attacked)
                decode_s.append(time.perf_counter() - t)
                found = detection.payload if detection is not None else None
                cell = cells[name]
                cell["exact"].append(found == payload)
                cell["wrong"].append(found is not None and found != payload)
                exact = found == payload and detection.layout == layout.name
                cell["acc"].append(1 - detection.corrected / layout.code.bits if exact else
                                   channel_accuracy(attacked, payload, layout))  # fmt: skip
                cell["fp"].append(watermark.extract(attack(pixels)) is not None)
                by_source.setdefault(source, {}).setdefault(name, []).append(found == payload)
        results["sizes"][str(size)] = {
            "images": n,
            "by_source_images": {src: sources.count(src) for src in by_source},
            "attacks": {
                name: {
                    "exact_payload": round(float(np.mean(c["exact"])), 4),
                    "wrong_payload": int(np.sum(c["wrong"])),
                    "channel_bit_accuracy": round(float(np.mean(c["acc"])), 4),
                    "false_positives_unmarked": int(np.sum(c["fp"])),
                }
                for name, c in cells.items()
            },
            "exact_payload_by_source": {
                src: {name: round(float(np.mean(v)), 4) for name, v in per.items()} for src, per in by_source.items()
            },
            "psnr_db": {"mean": round(float(np.mean(psnrs)), 2), "min": round(float(np.min(psnrs)), 2)},
            "ssim": {"mean": round(float(np.mean(ssims)), 4), "min": round(float(np.min(ssims)), 4)},
            "seconds": {
                "generate_images": round(generated - started, 2),
                "embed_per_image": round(float(np.mean(embed_s)), 4),
                "decode_per_image": round(float(np.mean(decode_s)), 4),
            },
        }
    return results


def false_positives(count: int, seed: int) -> dict:
    """Decode `count` random crops of unmarked images (random share, place and output size); count payloads."""
    from diffgen.provenance import watermark

    rng = np.random.default_rng(seed)
    bases = [procedural(512, rng) for _ in range(40)] + sd_images(256, 20, 4, seed)
    found, started = 0, time.perf_counter()
    for _ in range(count):
        base = bases[rng.integers(len(bases))]
        h, w = base.shape[:2]
        ch, cw = rng.integers(h // 3, h + 1), rng.integers(w // 3, w + 1)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = base[y : y + ch, x : x + cw]
        side = int(rng.integers(64, 257))
        crop = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
        found += watermark.extract(crop) is not None
    return {"unmarked_crops": count, "payloads_found": found, "seconds": round(time.perf_counter() - started, 1)}


def markdown(results: dict) -> str:
    sizes = list(results.get("sizes", {}))
    lines = []
    if sizes:
        head = " | ".join(f"{s} px" for s in sizes)
        lines += [f"| attack | {head} |", "|---|" + "---|" * len(sizes)]
        for name in ATTACKS:
            cells = []
            for size in sizes:
                a = results["sizes"][size]["attacks"][name]
                cells.append(f"{a['exact_payload']:.0%} ({a['channel_bit_accuracy']:.3f}, {a['false_positives_unmarked']})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for key in ("psnr_db", "ssim"):
            cells = [f"{results['sizes'][s][key]['mean']} (min {results['sizes'][s][key]['min']})" for s in sizes]
            lines.append(f"| embedding {key} | " + " | ".join(cells) + " |")
        times = [
            f"{results['sizes'][s]['seconds']['embed_per_image'] * 1000:.0f} / "
            f"{results['sizes'][s]['seconds']['decode_per_image'] * 1000:.0f} ms"
            for s in sizes
        ]
        lines.append("| embed / decode per image | " + " | ".join(times) + " |")
        wrong = sum(a["wrong_payload"] for s in sizes for a in results["sizes"][s]["attacks"].values())
        lines.append(f"\ncells: exact payload recovered (channel bit accuracy before BCH, false positives on the "
                     f"unmarked image so attacked); wrong payloads returned on marked images: {wrong}")
    if "false_positives" in results:
        fp = results["false_positives"]
        lines.append(f"\nunmarked random crops decoded: {fp['unmarked_crops']}, payloads found: {fp['payloads_found']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.watermark_robustness", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--n", type=int, default=300, help="images per size (default 300; 0: none)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512, 1024], help="square image sides (>= 64)")
    parser.add_argument(
        "--sd-images", type=int, default=100, help="how many of the N come from the tiny SD model (default 100)"
    )
    parser.add_argument("--sd-steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--false-positives", type=int, default=0, metavar="K", help="also decode K unmarked crops")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    prepare_environment()
    from diffgen.provenance import watermark

    if args.n < 0 or any(s < watermark.MIN_SIDE for s in args.sizes):
        parser.error(f"--n must be >= 0 and every size >= {watermark.MIN_SIDE}")
    results = run(args.n, args.sizes if args.n else [], args.sd_images, args.sd_steps, args.seed)
    if args.false_positives:
        results["false_positives"] = false_positives(args.false_positives, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
