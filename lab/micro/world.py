"""The micro world: procedural scenes of one coloured shape on a plain background, with exact truth.

The embedded default model family (`jobs/train_micro.py`) is trained on these scenes and judged
against them (`jobs/evaluate_micro.py`). A scene is fully determined by its seed: the attributes, a
little jitter in position and size, its caption, its pixels, its exact mask and the mask's edges.

    shape       circle, square, triangle, star
    color       red, green, blue, yellow, purple, orange
    size        small, large
    position    top left, top, top right, left, center, right, bottom left, bottom, bottom right
    background  white, black, gray, or one of the shape colors other than the shape's own

Captions read "a small red triangle at the top left on a blue background"; during training the
size, position and background phrases are each left out at times (the model then picks them), so
"a red star" is a valid prompt too. Pixels are rendered at 4x and box-filtered down, so edges are
anti-aliased; the mask is that coverage at 0.5.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    **COLORS,
}
SIZES: dict[str, float] = {"small": 0.12, "large": 0.19}  # radius as a share of the side
# name -> (x, y) of the shape's center as a share of the side
POSITIONS: dict[str, tuple[float, float]] = {
    f"{row} {col}".strip() if (row, col) != ("", "") else "center": (x, y)
    for row, y in (("top", 0.25), ("", 0.5), ("bottom", 0.75))
    for col, x in (("left", 0.25), ("", 0.5), ("right", 0.75))
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}
SUPERSAMPLE = 4
POSITION_JITTER = 0.02
SIZE_JITTER = 0.08


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str
    size: str
    position: str
    background: str
    dx: float = 0.0  # jitter, as a share of the side
    dy: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in ATTRIBUTES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.background == self.color:
            raise ValueError(f"a {self.color} shape on a {self.background} background is invisible")

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def caption(self, *, size: bool = True, position: bool = True, background: bool = True) -> str:
        words = ([self.size] if size else []) + [self.color, self.shape]
        words.insert(0, "an" if words[0][0] in "aeiou" else "a")
        if position:
            words += ["at the", self.position]
        if background:
            words += ["on an" if self.background[0] in "aeiou" else "on a", self.background, "background"]
        return " ".join(words)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_scene(rng: np.random.Generator, **fixed: str) -> Scene:
    """A random scene; any attribute given in `fixed` is kept (the background is drawn from the ones
    that differ from the shape's color)."""
    unknown = set(fixed) - set(ATTRIBUTES)
    if unknown:
        raise ValueError(f"unknown attributes {sorted(unknown)}; known: {', '.join(ATTRIBUTES)}")
    chosen = {}
    for name in ("shape", "color", "size", "position"):
        chosen[name] = fixed.get(name) or str(rng.choice(ATTRIBUTES[name]))
    backgrounds = [b for b in BACKGROUNDS if b != chosen["color"]]
    chosen["background"] = fixed.get("background") or str(rng.choice(backgrounds))
    jitter = rng.uniform(-1.0, 1.0, size=3)
    return Scene(
        **chosen,
        dx=float(jitter[0] * POSITION_JITTER),
        dy=float(jitter[1] * POSITION_JITTER),
        scale=float(1.0 + jitter[2] * SIZE_JITTER),
    )


def scene_for_seed(seed: int) -> Scene:
    return sample_scene(np.random.default_rng([seed, 0x5CE9E]))


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Polygon vertices (pixel units) for polygonal shapes; None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = r * 0.85  # about the circle's area
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # equilateral, pointing up, centred on its centroid
        r *= 1.2  # about the circle's area
        return [(cx + r * np.cos(a), cy - r * np.sin(a)) for a in np.deg2rad([90, 210, 330])]
    angles = np.deg2rad(90 + 36 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, r * 1.05, r * 0.45)
    return [(cx + q * np.cos(a), cy - q * np.sin(a)) for q, a in zip(radii, angles)]


def coverage(scene: Scene, size: int) -> np.ndarray:
    """The shape's anti-aliased coverage in [0, 1], float32 (size, size)."""
    big = size * SUPERSAMPLE
    x, y = POSITIONS[scene.position]
    cx, cy = (x + scene.dx) * big, (y + scene.dy) * big
    r = SIZES[scene.size] * scene.scale * big
    layer = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(layer)
    outline = _outline(scene.shape, cx, cy, r)
    if outline is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:
        draw.polygon(outline, fill=255)
    small = layer.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(scene: Scene, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 (size, size, 3), mask bool (size, size))."""
    alpha = coverage(scene, size)[..., None]
    fg = np.asarray(COLORS[scene.color], np.float32)
    bg = np.asarray(BACKGROUNDS[scene.background], np.float32)
    rgb = alpha * fg + (1.0 - alpha) * bg
    return np.clip(rgb.round(), 0, 255).astype(np.uint8), alpha[..., 0] >= 0.5


def mask_image(mask: np.ndarray) -> np.ndarray:
    """A mask as the ControlNet's conditioning image: white shape on black, RGB uint8."""
    return np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)


def edge_image(mask: np.ndarray) -> np.ndarray:
    """The mask's one-pixel boundary (morphological gradient), white on black, RGB uint8."""
    m = Image.fromarray(mask.astype(np.uint8) * 255)
    edges = np.asarray(m.filter(ImageFilter.MaxFilter(3)), np.int16) - np.asarray(m.filter(ImageFilter.MinFilter(3)))
    return np.repeat((edges > 0).astype(np.uint8)[..., None] * 255, 3, axis=2)


_WORDS = {name: sorted(values, key=len, reverse=True) for name, values in ATTRIBUTES.items()}


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a prompt names, by the micro world's vocabulary (missing ones are absent).

    "a small red star at the top left on a blue background" -> shape star, color red, size small,
    position top left, background blue."""
    text = " ".join(re.findall(r"[a-z]+", text.lower()))
    found: dict[str, str] = {}
    background = re.search(r"on an? (\w+) background", text)
    if background and background.group(1) in BACKGROUNDS:
        found["background"] = background.group(1)
        text = text[: background.start()] + text[background.end() :]
    position = re.search(r"at the ([a-z ]+?)(?= on |$)", text)
    if position and position.group(1).strip() in POSITIONS:
        found["position"] = position.group(1).strip()
        text = text[: position.start()] + text[position.end() :]
    tokens = text.split()
    for name in ("shape", "color", "size"):
        hit = [t for t in tokens if t in ATTRIBUTES[name]]
        if hit:
            found[name] = hit[0]
    return found


def vocabulary() -> list[str]:
    """Every word the captions use."""
    words = {"a", "an", "at", "the", "on", "background"}
    for values in ATTRIBUTES.values():
        for value in values:
            words.update(value.split())
    return sorted(words)


def segment(image: np.ndarray, floor: float = 30.0) -> np.ndarray:
    """The foreground of a generated scene. The background is the median of the image's border; a
    pixel is foreground when its RGB distance from it exceeds half the shape's own distance (the
    90th percentile among pixels farther than `floor`), which is coverage >= 0.5 on a render. Used
    to measure a ControlNet's IoU."""
    rgb = np.asarray(image, np.float32)[..., :3]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distance = np.linalg.norm(rgb - np.median(border, axis=0), axis=-1)
    far = distance[distance > floor]
    if far.size == 0:
        return np.zeros(distance.shape, bool)
    return distance > max(floor, 0.5 * float(np.percentile(far, 90)))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
