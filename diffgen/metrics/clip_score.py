"""CLIP score: how well each image matches its prompt, as 100 * max(cos(image, text), 0).

Hessel et al., "CLIPScore: A Reference-free Evaluation Metric for Image Captioning", EMNLP 2021,
on torchmetrics' scale (w = 100 where the paper uses 2.5). The score is per pair, so it never depends on
which other images share the batch; only scores from the same CLIP weights (`name`) compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffgen.metrics.clip_model import ClipModel
from diffgen.metrics.rgb import as_rgb_batch


def clip_score_kernel(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """100 * max(cos, 0) row by row for two (N, D) embedding arrays."""
    if image_embeddings.shape != text_embeddings.shape or image_embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must be two (N, D) arrays of one shape, "
            f"got {image_embeddings.shape} and {text_embeddings.shape}"
        )
    # A zero embedding has no direction; the floor keeps its score 0 instead of NaN.
    norms = np.linalg.norm(image_embeddings, axis=1) * np.linalg.norm(text_embeddings, axis=1)
    cos = (image_embeddings * text_embeddings).sum(axis=1) / np.maximum(norms, 1e-12)
    return 100.0 * np.clip(cos, 0.0, None)


class ClipScorer:
    """A CLIP model loaded once, scoring (image, prompt) pairs in batches."""

    def __init__(self, clip: ClipModel):
        self.clip = clip

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", batch_size: int = 32) -> ClipScorer:
        return cls(ClipModel(folder, device=device, batch_size=batch_size))

    @property
    def name(self) -> str:
        return self.clip.name

    def score(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        """(N,) float64 scores in [0, 100] for N (H, W, 3) uint8 images and their prompts.

        Prompts longer than the text tower takes are cut to their start; `truncated`
        says which.
        """
        images, prompts = as_rgb_batch(images), list(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
        return self.score_embedded(self.clip.image_embeddings(images), prompts)

    def score_embedded(self, image_embeddings: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """`score` for images already embedded by `self.clip` (e.g. as a CLIP FID backbone's features)."""
        prompts = list(prompts)
        if len(image_embeddings) != len(prompts):
            raise ValueError(f"got {len(image_embeddings)} image embeddings but {len(prompts)} prompts")
        return clip_score_kernel(image_embeddings, self.clip.text_embeddings(prompts))

    def truncated(self, prompts: Sequence[str]) -> np.ndarray:
        """(N,) bool: the prompt was longer than the text tower's maximum and only its start was scored."""
        return self.clip.truncated(prompts)
