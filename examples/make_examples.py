"""`python examples/make_examples.py`: write the small input images and manifests of the ControlNet
and img2img examples (their job YAMLs sit beside them), and the default job's QC reference set. Deterministic: re-running rewrites the
same bytes, so the committed files can be checked against it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 64


def _shape(kind: str, fill: tuple[int, int, int], background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    box = (14, 14, 50, 50)
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "triangle":
        draw.polygon([(32, 10), (54, 52), (10, 52)], fill=fill)
    elif kind == "ring":
        draw.ellipse(box, fill=fill)
        draw.ellipse((24, 24, 40, 40), fill=background)
    return image


def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path.relative_to(path.parents[1]).as_posix()  # relative to the example folder (the manifest's)


def _manifest(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def make_controlnet(folder: Path) -> None:
    """Filled grey shapes: the job's canny preprocessor turns each into its outline."""
    rows = []
    for kind in ("circle", "square", "triangle", "ring"):
        uri = _save(_shape(kind, (180, 180, 180)), folder / "controls" / f"{kind}.png")
        rows.append({"id": f"{kind}-1", "prompt": f"a {kind} made of glass", "control_image": uri, "num_images": 2,
                     "label": kind})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("control_image", pa.string()), ("num_images", pa.int32()),
         ("label", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")


def make_img2img(folder: Path) -> None:
    """Coloured shapes to restyle (img2img), and one with a mask to repaint only its left half (inpaint)."""
    rng = np.random.default_rng(0)
    rows = []
    for kind, colour in (("circle", (200, 40, 40)), ("square", (40, 160, 60)), ("triangle", (40, 60, 200))):
        background = tuple(int(c) for c in rng.integers(0, 80, 3))
        uri = _save(_shape(kind, colour, background), folder / "init" / f"{kind}.png")
        rows.append({"id": f"{kind}-restyled", "prompt": f"a {kind}, oil painting", "init_image": uri,
                     "mask_image": None, "strength": None, "label": kind})  # fmt: skip
    rows.append({"id": "circle-faint", "prompt": "a circle, oil painting", "init_image": rows[0]["init_image"],
                 "mask_image": None, "strength": 0.4, "label": "circle"})  # fmt: skip
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, SIZE // 2, SIZE))  # white = repaint
    mask_uri = _save(mask, folder / "masks" / "left-half.png")
    rows.append({"id": "square-inpainted", "prompt": "a square, left half made of gold",
                 "init_image": rows[1]["init_image"], "mask_image": mask_uri, "strength": 0.9,
                 "label": "square"})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("init_image", pa.string()), ("mask_image", pa.string()),
         ("strength", pa.float64()), ("label", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")


def make_reference(folder: Path) -> None:
    """A small reference set for the default job's FID: each shape in four colours on a dark background."""
    rng = np.random.default_rng(1)
    colours = ((200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40))
    for kind in ("circle", "square", "triangle", "ring"):
        for k, colour in enumerate(colours):
            background = tuple(int(c) for c in rng.integers(0, 80, 3))
            _save(_shape(kind, colour, background), folder / f"{kind}-{k}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=HERE, help="the examples folder (default: this script's)")
    args = parser.parse_args(argv)
    make_controlnet(args.root / "controlnet")
    make_img2img(args.root / "img2img")
    make_reference(args.root / "default" / "reference")
    print(f"wrote {args.root / 'controlnet'}, {args.root / 'img2img'} and {args.root / 'default' / 'reference'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
