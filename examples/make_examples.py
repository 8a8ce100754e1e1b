"""`python examples/make_examples.py`: write the manifests and input images of the default, ControlNet
and img2img examples (their job YAMLs sit beside them) and the default job's QC reference set, all
from the micro world the embedded model was trained on. Deterministic: re-running rewrites the same
bytes, so the committed files can be checked against it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lab.micro.world import SHAPES, Scene, mask_image, render, sample_scene  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZE = 64


def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)
    return path.relative_to(path.parents[1]).as_posix()  # relative to the example folder (the manifest's)


def _manifest(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def _scenes(seed: int, n: int, **fixed: str) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, **fixed) for _ in range(n)]


def make_default(folder: Path) -> None:
    """The default job's manifest (three prompts per shape, from short to fully specified, with shape
    and color label columns) and its QC reference set (32 real renders of the micro world)."""
    rows = []
    for shape in SHAPES:
        for k, scene in enumerate(_scenes(SHAPES.index(shape), 3, shape=shape)):
            prompt = scene.caption(size=k == 2, position=k >= 1, background=True)
            rows.append({"id": f"{shape}-{k}", "prompt": prompt, "num_images": 2, "seed": None, "label": shape,
                         "color": scene.color, "split": "val" if k == 2 else "train"})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("num_images", pa.int32()), ("seed", pa.int64()),
         ("label", pa.string()), ("color", pa.string()), ("split", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")
    for i, scene in enumerate(_scenes(100, 32)):
        _save(Image.fromarray(render(scene)[0]), folder / "reference" / f"{scene.shape}-{i:02d}.png")


def make_controlnet(folder: Path) -> None:
    """Shape masks (white on black) for the micro ControlNet; the prompts name no position or size,
    so the mask alone places and sizes each shape."""
    rows = []
    for i, scene in enumerate(_scenes(200, 4)):
        uri = _save(Image.fromarray(mask_image(render(scene)[1])), folder / "controls" / f"mask-{i}.png")
        rows.append({"id": f"mask-{i}", "prompt": scene.caption(size=False, position=False), "control_image": uri,
                     "num_images": 2, "label": scene.shape})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("control_image", pa.string()), ("num_images", pa.int32()),
         ("label", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")


def make_img2img(folder: Path) -> None:
    """Renders to recolor (img2img), one at a lower strength, and one with a mask to repaint only its
    left half (inpaint)."""
    rows = []
    recolor = {"circle": "blue", "square": "yellow", "triangle": "red"}
    for shape, new_color in recolor.items():
        scene = _scenes(300 + len(rows), 1, shape=shape, size="large", position="center", background="white")[0]
        if scene.color == new_color:
            scene = replace(scene, color="green")
        uri = _save(Image.fromarray(render(scene)[0]), folder / "init" / f"{shape}.png")
        prompt = replace(scene, color=new_color).caption()
        rows.append({"id": f"{shape}-recolored", "prompt": prompt, "init_image": uri, "mask_image": None,
                     "strength": None, "label": shape})  # fmt: skip
    rows.append({"id": "circle-faint", "prompt": rows[0]["prompt"], "init_image": rows[0]["init_image"],
                 "mask_image": None, "strength": 0.4, "label": "circle"})  # fmt: skip
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (0, 0, SIZE // 2, SIZE))  # white = repaint
    mask_uri = _save(mask, folder / "masks" / "left-half.png")
    rows.append({"id": "square-inpainted", "prompt": "a large purple square at the center on a white background",
                 "init_image": rows[1]["init_image"], "mask_image": mask_uri, "strength": 0.9,
                 "label": "square"})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("init_image", pa.string()), ("mask_image", pa.string()),
         ("strength", pa.float64()), ("label", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")


def make_utility(folder: Path) -> None:
    """The utility example: a manifest whose `label` is the shape (8 prompts per shape, colours, sizes and
    backgrounds drawn at random, 4 images each) and a labelled real set of 50 renders per shape in class
    subfolders (`real/<shape>/`), drawn from other seeds than the prompts."""
    rows = []
    for shape in SHAPES:
        for k, scene in enumerate(_scenes(400 + SHAPES.index(shape), 8, shape=shape)):
            rows.append({"id": f"{shape}-{k}", "prompt": scene.caption(position=False), "num_images": 4,
                         "label": shape, "color": scene.color})  # fmt: skip
    schema = pa.schema(
        [("id", pa.string()), ("prompt", pa.string()), ("num_images", pa.int32()), ("label", pa.string()),
         ("color", pa.string())]
    )  # fmt: skip
    _manifest(rows, schema, folder / "manifest.parquet")
    for shape in SHAPES:
        for i, scene in enumerate(_scenes(500 + SHAPES.index(shape), 50, shape=shape)):
            path = folder / "real" / shape / f"{shape}-{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(scene)[0]).save(path, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=HERE, help="the examples folder (default: this script's)")
    args = parser.parse_args(argv)
    make_default(args.root / "default")
    make_controlnet(args.root / "controlnet")
    make_img2img(args.root / "img2img")
    make_utility(args.root / "utility")
    print(f"wrote the inputs of the default, controlnet, img2img and utility examples under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
