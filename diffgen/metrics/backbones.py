"""Named feature extractors for FID: images in, (N, D) float64 features out.

A backbone's `name`, `resize` and `dim` are its mode: they go into every `FeatureStats` and
every FID number, because numbers from different modes are not comparable (clean-fid's lesson
on resizing). The table is fixed:

- `pixels-16`: no weights at all, so FID always works offline. Each image is resized to 16x16
  with PIL's antialiased bicubic filter and its RGB values (in [0, 1]) are the 768 features.
  16 rather than 32: sqrtm cost grows as D³ and a covariance needs N > D images, and 3072-d
  pixel features would need both in amounts a QC group rarely has.
- `clip`: the projected image embeddings of any local CLIP folder (`path`), named
  `clip:<folder>@<weights hash>`, resized by the folder's own image processor (PIL backend).
- `inception-v3-pt`: the standard FID network, only from the weights file the user supplies
  (`path`), run by torch-fidelity. Numbers from it are comparable with published FIDs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from diffgen.metrics.rgb import as_rgb_batch

if TYPE_CHECKING:
    from diffgen.metrics.clip_model import ClipModel

# The file torch-fidelity converts from the TF FID graph (its own download URL ends in this name).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class BackboneError(RuntimeError):
    """A backbone that cannot be built as configured; the message says what is missing."""


class Backbone(Protocol):
    name: str
    resize: str
    dim: int

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, dim) float64 features of N (H, W, 3) uint8 images."""
        ...


class PixelBackbone:
    """Downsampled pixels as features: deterministic, weightless, crude but honest."""

    def __init__(self, size: int):
        self.size = size
        self.name = f"pixels-{size}"
        self.resize = f"pil-bicubic-antialias-{size}x{size}"
        self.dim = size * size * 3

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        rows = [
            np.asarray(Image.fromarray(a).resize((self.size, self.size), Image.Resampling.BICUBIC), np.float64).ravel()
            for a in as_rgb_batch(images)
        ]
        return np.stack(rows) / 255.0 if rows else np.zeros((0, self.dim))


class ClipBackbone:
    """Projected CLIP image embeddings; pass the ClipModel a CLIP scorer already holds to share it."""

    def __init__(self, clip: ClipModel):
        self.clip = clip
        self.name = clip.name
        self.resize = clip.resize
        self.dim = clip.dim

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.clip.image_embeddings(images)


class InceptionBackbone:
    """torch-fidelity's FID Inception v3 (2048-d pool features), resized as TF1 did to 299x299.

    torch-fidelity reads the weights with `torch.load(weights_only=False)`, which can run code
    stored in the file: point it only at a copy of the published file.
    """

    name = "inception-v3-pt"
    resize = "tf1-bilinear-299x299"
    dim = 2048

    def __init__(self, weights: str | Path | None, device: str = "cpu", batch_size: int = 32):
        problems = []
        if weights is None:
            problems.append(f"set its path to a local copy of the FID Inception weights ({INCEPTION_WEIGHTS_FILE})")
        elif not Path(weights).is_file():
            problems.append(f"weights file {weights} does not exist (expected {INCEPTION_WEIGHTS_FILE})")
        if importlib.util.find_spec("torch_fidelity") is None:
            problems.append("install torch-fidelity (it needs torchvision built for your torch)")
        if problems:
            raise BackboneError(
                "backbone 'inception-v3-pt' runs the standard FID Inception network, which no installable "
                "package ships offline: " + "; ".join(problems) + ". Without them use 'pixels-16' or 'clip'."
            )
        import torch
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.torch = torch
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
        ).to(self.device)

    def extract(self, images: Sequence[np.ndarray]) -> np.ndarray:
        images = as_rgb_batch(images)
        out = np.zeros((len(images), self.dim))
        # The network resizes internally, but only images of one size can share a tensor.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        for members in by_shape.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                x = self.torch.from_numpy(np.stack([images[i] for i in chunk]).transpose(0, 3, 1, 2).copy())
                with self.torch.inference_mode():
                    (features,) = self.model(x.to(self.device))
                out[chunk] = features.cpu().numpy()
        return out


def _pixels(path: str | None, device: str) -> Backbone:
    if path is not None:
        raise BackboneError("backbone 'pixels-16' needs no weights; remove its path")
    return PixelBackbone(16)


def _clip(path: str | None, device: str) -> Backbone:
    if path is None:
        raise BackboneError("backbone 'clip' needs a path: a local CLIP model folder")
    # Imported here so that pixel-only users (a driver merging statistics) never load torch.
    from diffgen.metrics.clip_model import ClipModel

    return ClipBackbone(ClipModel(path, device=device))


def _inception(path: str | None, device: str) -> Backbone:
    return InceptionBackbone(path, device=device)


BACKBONES: dict[str, Callable[[str | None, str], Backbone]] = {
    "pixels-16": _pixels,
    "clip": _clip,
    "inception-v3-pt": _inception,
}


def load_backbone(name: str, path: str | None = None, device: str = "cpu") -> Backbone:
    """Build a backbone from the table; `path` is the CLIP folder or the Inception weights file."""
    if name not in BACKBONES:
        raise BackboneError(f"Unknown backbone '{name}'. Choose from: {', '.join(BACKBONES)}")
    return BACKBONES[name](path, device)
