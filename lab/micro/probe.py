"""What a trained UNet (or ControlNet) has learned, read from its loss on held-out scenes.

For a fixed set of held-out scenes, fixed noise and ten noise levels (t = 999, 899, ..., 99), the
probe measures the v-prediction loss with the scene's own caption, and how much it rises when one
word is wrong: another position, another shape, circle and square swapped, another colour, or no
caption at all. A model that ignores a word has a penalty of zero for it; the level at which a
penalty appears says when in sampling that word decides the image (high t: the first steps).
Each loss is given over the whole latent and over the cells on or next to the shape only (where
the shape's outline is decided, 5-11 % of the image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lab.micro.models import to_model_input
from lab.micro.world import ATTRIBUTES, Scene, render, sample_scene

LEVELS = tuple(range(999, 0, -100))  # 999, 899, ..., 99
PROBE_SEED = 0x9B0BE


@dataclass
class ProbeSet:
    """Held-out scenes, their latents (scaled as the UNet sees them) and shape masks (N, 1, 64, 64)."""

    scenes: list[Scene]
    latents: torch.Tensor
    control: torch.Tensor


@torch.no_grad()
def probe_set(vae, scaling_factor: float, n: int, seed: int = 0, device: str = "cpu") -> ProbeSet:
    rng = np.random.default_rng([seed, PROBE_SEED])
    scenes = [sample_scene(rng) for _ in range(n)]
    pixels, masks = zip(*(render(s) for s in scenes))
    latents = torch.cat([vae.encode(to_model_input(pixels[i : i + 128]).to(device)).latent_dist.mean.cpu()
                         for i in range(0, n, 128)])  # fmt: skip
    control = torch.from_numpy(np.stack(masks)).unsqueeze(1)
    return ProbeSet(scenes, latents * scaling_factor, control)


def wrong_captions(scenes: list[Scene], seed: int = 0) -> dict[str, list[str | None]]:
    """Each scene's caption with one word wrong (None where a variant does not apply to a scene)."""
    rng = np.random.default_rng([seed, PROBE_SEED, 1])

    def other(values: tuple[str, ...], *avoid: str) -> str:
        choices = [v for v in values if v not in avoid]
        return str(choices[int(rng.integers(len(choices)))])

    swap = {"circle": "square", "square": "circle"}
    return {
        "right": [s.caption() for s in scenes],
        "position": [dataclasses.replace(s, position=other(ATTRIBUTES["position"], s.position)).caption()
                     for s in scenes],
        "shape": [dataclasses.replace(s, shape=other(ATTRIBUTES["shape"], s.shape)).caption() for s in scenes],
        "circle_square": [dataclasses.replace(s, shape=swap[s.shape]).caption() if s.shape in swap else None
                          for s in scenes],
        "color": [dataclasses.replace(s, color=other(ATTRIBUTES["color"], s.color, s.background)).caption()
                  for s in scenes],
        "no_caption": ["" for _ in scenes],
    }  # fmt: skip


def _encode(text_encoder, tokenizer, captions: list[str], device: str) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device))[0]


@torch.no_grad()
def probe(probe_set: ProbeSet, unet, text_encoder, tokenizer, noise, device: str = "cpu", controlnet=None,
          batch: int = 128) -> dict:  # fmt: skip
    """Losses per noise level with the right caption, and the penalty of each wrong word (the loss
    with it minus the loss with the right caption, on the same scenes and noise)."""
    scenes, x0 = probe_set.scenes, probe_set.latents
    cells = F.max_pool2d(F.max_pool2d(probe_set.control.float(), 4), 3, stride=1, padding=1)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    eps = torch.randn((len(LEVELS), *x0.shape), generator=generator)
    variants = wrong_captions(scenes)
    control = probe_set.control.float().repeat(1, 3, 1, 1)
    # loss[variant][level] -> (N,) plain and shape-cell losses; NaN where the variant does not apply
    plain = {k: np.full((len(LEVELS), len(scenes)), np.nan) for k in variants}
    on_shape = {k: np.full((len(LEVELS), len(scenes)), np.nan) for k in variants}
    for name, captions in variants.items():
        rows = [i for i, c in enumerate(captions) if c is not None]
        for start in range(0, len(rows), batch):
            idx = rows[start : start + batch]
            text = _encode(text_encoder, tokenizer, [captions[i] for i in idx], device)
            for li, level in enumerate(LEVELS):
                t = torch.full((len(idx),), level, dtype=torch.long)
                noisy = noise.add_noise(x0[idx], eps[li, idx], t).to(device)
                extra = {}
                if controlnet is not None:
                    down, mid = controlnet(noisy, t.to(device), text, controlnet_cond=control[idx].to(device),
                                           return_dict=False)  # fmt: skip
                    extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
                pred = unet(noisy, t.to(device), text, **extra).sample.float().cpu()
                error = (pred - noise.get_velocity(x0[idx], eps[li, idx], t)).square().mean(dim=1, keepdim=True)
                plain[name][li, idx] = error.mean(dim=(1, 2, 3)).numpy()
                w = cells[idx]
                on_shape[name][li, idx] = ((error * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))).numpy()

    def rounded(values) -> list[float]:
        return [round(float(v), 5) for v in values]

    def penalties(table: dict[str, np.ndarray]) -> dict[str, list[float]]:
        return {k: rounded(np.nanmean(v - table["right"], axis=1)) for k, v in table.items() if k != "right"}

    penalty = penalties(plain)
    return {
        "levels": list(LEVELS),
        "scenes": len(scenes),
        "loss": rounded(np.nanmean(plain["right"], axis=1)),
        "loss_shape_cells": rounded(np.nanmean(on_shape["right"], axis=1)),
        "penalty": penalty,
        "penalty_shape_cells": penalties(on_shape),
        "penalty_mean": {k: round(float(np.mean(v)), 5) for k, v in penalty.items()},
        "penalty_shape_cells_mean": {k: round(float(np.mean(v)), 5) for k, v in penalties(on_shape).items()},
    }
