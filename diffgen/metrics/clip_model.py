"""A CLIP model from a local folder, loaded once: projected image and text embeddings.

Shared by the CLIP FID backbone and the CLIP score so one actor holds one copy. Images always
go through the PIL image processor, never the torchvision one: the two resize differently, and
a number must not change with whether torchvision happens to be installed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel
from transformers.image_utils import PILImageResampling
from transformers.utils import logging as transformers_logging

from diffgen.metrics.rgb import as_rgb_batch


class ClipLoadError(RuntimeError):
    """The CLIP folder is missing, incomplete or unreadable."""


class ClipModel:
    """CLIPModel, its tokenizer and its image processor from one local folder (no downloads).

    `name` is `clip:<folder name>@<first 12 hex of the weights' sha256>`: two numbers with
    the same name came from the same weights. `resize` is the image processor's mode.
    """

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 32):
        transformers_logging.disable_progress_bar()
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ClipLoadError(f"CLIP model: {folder} is not a model folder (no config.json)")
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise ClipLoadError(f"CLIP model: {folder} has no .safetensors weights")
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.image_processor = CLIPImageProcessorPil.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ClipLoadError(f"CLIP model: cannot load {folder}: {e}") from None
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dim = int(self.model.config.projection_dim)
        self.max_length = int(
            min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        )
        digest = hashlib.sha256()
        for file in weights:
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        self.name = f"clip:{folder.name}@{digest.hexdigest()[:12]}"
        self.resize = _resize_mode(self.image_processor)

    def image_embeddings(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, projection_dim) float64 projected image embeddings, not normalised."""
        images = as_rgb_batch(images)
        chunks = [np.zeros((0, self.dim))]
        for start in range(0, len(images), self.batch_size):
            pil = [Image.fromarray(a) for a in images[start : start + self.batch_size]]
            pixels = self.image_processor(images=pil, return_tensors="pt")["pixel_values"]
            with torch.inference_mode():
                out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            chunks.append(out.pooler_output.float().cpu().numpy().astype(np.float64))
        return np.concatenate(chunks)

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, projection_dim) float64 projected text embeddings, not normalised; long prompts are cut."""
        prompts = _as_prompts(prompts)
        chunks = [np.zeros((0, self.dim))]
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.tokenizer(
                prompts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                out = self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            chunks.append(out.pooler_output.float().cpu().numpy().astype(np.float64))
        return np.concatenate(chunks)

    def truncated(self, prompts: Sequence[str]) -> np.ndarray:
        """Whether each prompt is longer than the text tower takes (so only its start is embedded)."""
        prompts = _as_prompts(prompts)
        if not prompts:
            return np.zeros(0, dtype=bool)
        # verbose=False: the tokenizer's "sequence is longer than" warning is what this reports.
        ids = self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]
        return np.array([len(i) > self.max_length for i in ids], dtype=bool)


def _as_prompts(prompts: Sequence[str]) -> list[str]:
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i}: expected a str, got {type(p).__name__}")
    return prompts


def _resize_mode(processor: CLIPImageProcessorPil) -> str:
    """The processor's geometry as a name, e.g. 'pil-bicubic-shortest-224-crop-224x224'."""
    parts = [f"pil-{PILImageResampling(processor.resample).name.lower()}"]
    if processor.do_resize:
        size = processor.size
        shortest = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
        if shortest:
            parts.append(f"shortest-{shortest}")
        else:
            parts.append(f"{size['height']}x{size['width']}")
    if processor.do_center_crop:
        crop = processor.crop_size
        parts.append(f"crop-{crop['height']}x{crop['width']}")
    return "-".join(parts)
