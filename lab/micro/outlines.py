"""Outline perturbations of real renders: blobs, rounded corners and elastic warps.

A generated shape is never the exact polygon of a render: its outline wobbles, its corners round
off, its sides bend. The attribute judge is trained on renders perturbed this way, each keeping its
label, so that it reads the shape a person would see (a wobbly disc is still a circle, a square with
softened corners still a square) instead of calling every imperfect outline by one default name;
the evaluation reports the judge on held-out perturbed renders too.

All three work on a batch of anti-aliased coverage maps (`world.coverage`) at once, in torch:

- blob: the outline's radius around the shape's centre is multiplied by 1 + sum_k a_k cos(k theta
  + phi_k), k = 2..5 (a radial warp of the plane around the centre);
- rounded corners: a Gaussian blur of the coverage re-thresholded at one half (it rounds convex
  corners by about the blur's width and leaves straight sides and round outlines in place);
- elastic warp: a smooth random displacement field (a 4x4 grid of offsets, upsampled bicubically).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from lab.micro.world import BACKGROUNDS, COLORS, POSITIONS, SIZES, Scene, coverage

Perturbation = Literal["none", "blob", "rounded", "warp"]
PERTURBATIONS: tuple[Perturbation, ...] = ("none", "blob", "rounded", "warp")
BLOB_AMPLITUDE = 0.05  # the largest a_k; at most 4 x 0.05 = 20 % of the radius in all
# the blur's width as a share of the shape's radius (less for the star, whose thin points would go)
ROUNDING_SIGMA = {"circle": (0.12, 0.22), "square": (0.12, 0.22), "triangle": (0.1, 0.2), "star": (0.06, 0.12)}
WARP_AMPLITUDE = 0.03  # the largest displacement, as a share of the side


def _grid(n: int, size: int) -> torch.Tensor:
    """The identity sampling grid (n, size, size, 2) in [-1, 1] (x, y), pixel centres."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y], dim=-1).expand(n, size, size, 2).clone()


def _blob(alpha: torch.Tensor, scenes: list[Scene], rng: np.random.Generator) -> torch.Tensor:
    n, _, size, _ = alpha.shape
    grid = _grid(n, size)
    centre = torch.tensor([[POSITIONS[s.position][0] + s.dx, POSITIONS[s.position][1] + s.dy] for s in scenes],
                          dtype=torch.float32) * 2 - 1  # fmt: skip
    offset = grid - centre.view(n, 1, 1, 2)
    theta = torch.atan2(offset[..., 1], offset[..., 0])
    k = torch.arange(2, 6, dtype=torch.float32)
    amplitude = torch.from_numpy(rng.uniform(0, BLOB_AMPLITUDE, size=(n, 4)).astype(np.float32))
    phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, size=(n, 4)).astype(np.float32))
    wobble = 1 + (amplitude.view(n, 1, 1, 4) * torch.cos(k * theta[..., None] + phase.view(n, 1, 1, 4))).sum(-1)
    # A point at radius r * wobble(theta) of the new outline comes from radius r of the old one.
    source = centre.view(n, 1, 1, 2) + offset / wobble[..., None]
    return F.grid_sample(alpha, source, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rounded(alpha: torch.Tensor, scenes: list[Scene], rng: np.random.Generator) -> torch.Tensor:
    size = alpha.shape[-1]
    out = torch.empty_like(alpha)
    for i, s in enumerate(scenes):
        sigma = SIZES[s.size] * s.scale * size * rng.uniform(*ROUNDING_SIGMA[s.shape])
        half = int(np.ceil(3 * sigma))
        x = torch.arange(-half, half + 1, dtype=torch.float32)
        k = torch.exp(-(x**2) / (2 * sigma**2))
        k = k / k.sum()
        img = F.pad(alpha[i : i + 1], (half, half, half, half))
        img = F.conv2d(F.conv2d(img, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        # Re-sharpened to an edge about one pixel wide, the width of the render's own anti-aliasing.
        out[i] = ((img[0] - 0.5) * 2.0 * max(1.0, sigma) + 0.5).clamp(0, 1)
    return out


def _warp(alpha: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    n, _, size, _ = alpha.shape
    coarse = torch.from_numpy(rng.uniform(-1, 1, size=(n, 2, 4, 4)).astype(np.float32)) * WARP_AMPLITUDE * 2
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return F.grid_sample(alpha, _grid(n, size) + field, mode="bilinear", padding_mode="zeros", align_corners=False)


def perturbed_coverage(scenes: list[Scene], kinds: list[Perturbation], rng: np.random.Generator,
                       size: int = 64) -> torch.Tensor:  # fmt: skip
    """The scenes' coverage maps (N, 1, size, size) in [0, 1], each perturbed by its kind."""
    alpha = torch.from_numpy(np.stack([coverage(s, size) for s in scenes])).unsqueeze(1)
    out = alpha.clone()
    for kind, perturb in (("blob", lambda a, ss: _blob(a, ss, rng)), ("rounded", lambda a, ss: _rounded(a, ss, rng)),
                          ("warp", lambda a, ss: _warp(a, rng))):  # fmt: skip
        index = [i for i, k in enumerate(kinds) if k == kind]
        if index:
            out[index] = perturb(alpha[index], [scenes[i] for i in index])
    return out


def compose(alpha: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
    """Coverage maps painted with each scene's shape and background colors: RGB in [-1, 1] (N, 3, H, W)."""
    fg = torch.tensor([COLORS[s.color] for s in scenes], dtype=torch.float32).view(-1, 3, 1, 1)
    bg = torch.tensor([BACKGROUNDS[s.background] for s in scenes], dtype=torch.float32).view(-1, 3, 1, 1)
    rgb = (alpha * fg + (1 - alpha) * bg).round()
    return rgb / 127.5 - 1.0


def perturbed_renders(scenes: list[Scene], rng: np.random.Generator,
                      kinds: list[Perturbation] | None = None) -> tuple[torch.Tensor, list[Perturbation]]:  # fmt: skip
    """Renders of `scenes` in [-1, 1] (N, 3, 64, 64), each with a perturbation drawn at random
    (or the given `kinds`), and the kinds used."""
    if kinds is None:
        kinds = [PERTURBATIONS[i] for i in rng.integers(0, len(PERTURBATIONS), size=len(scenes))]
    return compose(perturbed_coverage(scenes, kinds, rng), scenes), kinds
