"""Training of the micro model family from scratch, on scenes rendered on the fly.

Order: the CLIP (contrastive, captions vs renders, with hard negatives: groups of scenes that differ
in one attribute only), the VAE (reconstruction, weighted towards the shape), the UNet (v-prediction
on VAE latents, weighted towards the shape's cells and towards high noise levels, captions dropped
10 % of the time so classifier-free guidance works) together with its text encoder (initialised from
the CLIP's text tower), the ControlNet (the frozen UNet conditioned on the scene's mask), and the
attribute judge (classification of real renders with perturbed outlines, never of generated images).
Captions come from `lab.micro.captions` (canonical, or varied: synonyms, word orders, fillers).

The UNet and ControlNet end with a probe on held-out scenes (`probe`): the loss at each noise level
with the right caption, and how much a wrong position, shape or colour word raises it.

Every step's data and noise derive from (seed, component, step), so a component resumed from its
last checkpoint continues exactly where it stopped. Checkpoints hold the model, the optimizer, the
EMA and the step; a finished component is saved in its final form and is not trained again.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.training_utils import EMAModel, compute_snr
from torch import nn
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from lab.micro.models import (
    IMAGE_SIZE,
    LATENT_SIZE,
    AttributeJudge,
    clip_image_processor,
    micro_tokenizer,
    new_clip,
    new_controlnet,
    new_unet,
    new_vae,
    scheduler,
    text_encoder_from_clip,
    to_model_input,
)
from lab.micro.captions import training_caption
from lab.micro.outlines import PERTURBATIONS, perturbed_renders
from lab.micro.probe import ProbeSet, probe, probe_set
from lab.micro.world import ATTRIBUTES, Scene, render, sample_scene

log = logging.getLogger(__name__)

COMPONENTS = ("clip", "vae", "unet", "controlnet", "judge")
TRAIN_SEED_OFFSET = 0  # evaluation scenes use seeds from EVAL_SEED_OFFSET on, never seen in training
EVAL_SEED_OFFSET = 1 << 40


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    device: str = "cpu"
    steps: dict[str, int] = field(
        default_factory=lambda: {"clip": 1000, "vae": 2000, "unet": 4500, "controlnet": 2000, "judge": 1000}
    )
    batch: dict[str, int] = field(
        default_factory=lambda: {"clip": 128, "vae": 16, "unet": 64, "controlnet": 32, "judge": 64}
    )
    lr: dict[str, float] = field(
        default_factory=lambda: {"clip": 1e-3, "vae": 1e-3, "unet": 8e-4, "controlnet": 4e-4, "judge": 2e-3}
    )
    caption_dropout: float = 0.1  # UNet: empty caption, for classifier-free guidance
    # The UNet's text encoder starts as the micro CLIP's text tower and is trained with the UNet
    # (the contrastive loss trains only the pooled end-of-text token; the UNet attends to every token).
    train_text_encoder: bool = True
    controlnet_caption_dropout: float = 0.3
    judge_max_blur: float = 1.5  # Gaussian blur of the judge's training renders, up to this sigma in pixels
    vae_shape_weight: float = 9.0  # extra reconstruction weight near the shape (see train_vae)
    phrase_keep: float = 0.75  # each of size / position / background is named with this probability
    varied_captions: float = 0.5  # share of captions drawn from the varied forms (lab.micro.captions)
    # CLIP batches: this share of scenes comes in groups of `hard_negative_group` that differ in one
    # attribute only (position, shape, color or size, by `hard_negative_attributes`' weights), so
    # the contrastive loss must tell them apart by that attribute's words.
    hard_negatives: float = 0.5
    hard_negative_group: int = 4
    hard_negative_attributes: dict[str, float] = field(
        default_factory=lambda: {"position": 0.45, "shape": 0.35, "color": 0.1, "size": 0.1}
    )
    # UNet and ControlNet loss: latent cells on or next to the shape weigh this much more (the shape
    # is 5-11 % of a scene; its outline decides circle against square) ...
    shape_weight: float = 4.0
    # ... and this share of timesteps is drawn from [high_noise_from, 1000), where the shape and its
    # place are decided, the rest uniformly.
    high_noise_share: float = 0.3
    high_noise_from: int = 900
    # The UNet's first `layout_steps` steps: canonical captions naming every attribute, timesteps in
    # [layout_from, 1000) only. At that noise the latent shows almost nothing, so the caption alone
    # says where the shape goes; with varied captions and the usual timesteps the UNet reads the
    # place from the noisy latent instead and never starts attending to the position words (probe:
    # wrong-position penalty 0.0000 after 1500 steps), while this warm-up makes it do so within a
    # few hundred steps, and the usual training afterwards keeps it.
    layout_steps: int = 400
    layout_from: int = 900
    judge_perturbed: float = 0.75  # share of the judge's renders with a perturbed outline (lab.micro.outlines)
    latent_pool: int = 32768  # scenes encoded once for the UNet and ControlNet
    probe_scenes: int = 256
    probe_every: int = 1000  # also probe every this many UNet steps (0: only at the end)
    checkpoint_every_s: float = 120.0


def step_rng(config: TrainConfig, component: str, step: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, COMPONENTS.index(component), step])


def render_batch(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1] (N, 3, 64, 64), the shapes' masks as 0/1 floats (N, 1, 64, 64))."""
    pixels, masks = zip(*(render(s, IMAGE_SIZE) for s in scenes))
    return to_model_input(pixels), torch.from_numpy(np.stack(masks).astype(np.float32)).unsqueeze(1)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return f


class Trainer:
    """One component's loop: resume, step, checkpoint, progress, and optional probes along the way."""

    def __init__(self, name: str, work: Path, config: TrainConfig, model: torch.nn.Module, ema: EMAModel | None = None):
        self.name, self.config, self.model, self.ema = name, config, model, ema
        self.folder = work / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.total = config.steps[name]
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr[name], weight_decay=1e-2)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(min(200, self.total // 10 + 1), self.total)
        )
        self.step = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.losses: list[float] = []
        self.history: list[dict] = []  # probes during training
        checkpoint = self.folder / "checkpoint.pt"
        if checkpoint.is_file():
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            self.step, self.seconds, self.losses = state["step"], state["seconds"], state["losses"]
            self.cpu_seconds, self.history = state.get("cpu_seconds", 0.0), state.get("history", [])
            log.info("%s: resumed at step %d of %d", name, self.step, self.total)

    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "losses": self.losses,
            "history": self.history,
        }
        tmp = self.folder / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.folder / "checkpoint.pt")

    def run(self, loss_fn: Callable[[int], torch.Tensor], probe_every: int = 0,
            probe_fn: Callable[[], dict] | None = None) -> dict:  # fmt: skip
        """Train to the last step; with `probe_fn`, call it every `probe_every` steps (on the EMA
        weights when there are some) and keep what it returns in the report's `history`."""
        self.model.train()
        last_save = last_log = time.monotonic()
        while self.step < self.total:
            started, cpu_started = time.monotonic(), time.process_time()
            loss = loss_fn(self.step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.schedule.step()
            if self.ema is not None:
                self.ema.step(self.model.parameters())
            self.step += 1
            self.losses.append(float(loss.detach()))
            now = time.monotonic()
            self.seconds += now - started
            self.cpu_seconds += time.process_time() - cpu_started
            if now - last_log > 20 or self.step == self.total:
                recent = float(np.mean(self.losses[-50:]))
                eta = self.seconds / self.step * (self.total - self.step)
                log.info("%s: step %d/%d loss %.4f (%.2f s/step, %.0f s left)", self.name, self.step, self.total,
                         recent, self.seconds / self.step, eta)  # fmt: skip
                last_log = now
            if probe_fn is not None and probe_every and self.step % probe_every == 0 and self.step < self.total:
                self.history.append({"step": self.step, **self._probe(probe_fn)})
            if now - last_save > self.config.checkpoint_every_s:
                self.save_checkpoint()
                last_save = now
        self.save_checkpoint()
        self.model.eval()
        if self.ema is not None:
            self.ema.copy_to(self.model.parameters())
        final_loss = round(float(np.mean(self.losses[-50:])), 5)
        report = {"steps": self.step, "seconds": round(self.seconds, 1), "cpu_seconds": round(self.cpu_seconds, 1),
                  "final_loss": final_loss, "batch": self.config.batch[self.name], "lr": self.config.lr[self.name],
                  "loss_curve": _curve(self.losses)}  # fmt: skip
        if self.history:
            report["history"] = self.history
        return report

    def _probe(self, probe_fn: Callable[[], dict]) -> dict:
        if self.ema is None:
            self.model.eval()
            result = probe_fn()
        else:
            self.ema.store(self.model.parameters())
            self.ema.copy_to(self.model.parameters())
            self.model.eval()
            result = probe_fn()
            self.ema.restore(self.model.parameters())
        self.model.train()
        return result


def _curve(losses: list[float], points: int = 20) -> list[list[float]]:
    """The training loss as (step, mean loss of the steps up to it) at `points` evenly spaced steps."""
    edges = np.linspace(0, len(losses), points + 1).astype(int)
    return [[int(b), round(float(np.mean(losses[a:b])), 5)] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _scenes(config: TrainConfig, component: str, step: int, n: int) -> tuple[list[Scene], np.random.Generator]:
    rng = step_rng(config, component, step)
    return [sample_scene(rng) for _ in range(n)], rng


def hard_negative_scenes(config: TrainConfig, rng: np.random.Generator, n: int) -> tuple[list[Scene], list[str]]:
    """`n` scenes in groups that differ in one attribute only, and for each the attribute its
    caption must name (the one its group varies)."""
    names = list(config.hard_negative_attributes)
    weights = np.array([config.hard_negative_attributes[k] for k in names], dtype=float)
    scenes: list[Scene] = []
    varied: list[str] = []
    while len(scenes) < n:
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        base = sample_scene(rng)
        values = [v for v in ATTRIBUTES[name] if name != "color" or v != base.background]
        count = min(config.hard_negative_group, len(values), n - len(scenes))
        for value in rng.choice(values, size=count, replace=False):
            scenes.append(dataclasses.replace(base, **{name: str(value)}))
            varied.append(name)
    return scenes, varied


def train_clip(config: TrainConfig, work: Path, tokenizer: CLIPTokenizer) -> tuple[CLIPModel, dict]:
    torch.manual_seed(config.seed)
    clip = new_clip(tokenizer).to(config.device)
    mean = torch.tensor(clip_image_processor().image_mean).view(1, 3, 1, 1)
    std = torch.tensor(clip_image_processor().image_std).view(1, 3, 1, 1)

    def loss(step: int) -> torch.Tensor:
        rng = step_rng(config, "clip", step)
        hard = round(config.batch["clip"] * config.hard_negatives)
        scenes, varied = hard_negative_scenes(config, rng, hard)
        scenes += [sample_scene(rng) for _ in range(config.batch["clip"] - hard)]
        varied += [""] * (config.batch["clip"] - hard)
        images, _ = render_batch(scenes)
        pixels = ((images + 1) / 2 - mean) / std
        captions = [training_caption(s, rng, config.phrase_keep, config.varied_captions, always=(v,))
                    for s, v in zip(scenes, varied)]  # fmt: skip
        text = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt")
        out = clip(input_ids=text.input_ids.to(config.device), attention_mask=text.attention_mask.to(config.device),
                   pixel_values=pixels.to(config.device), return_loss=True)  # fmt: skip
        return out.loss

    return clip, Trainer("clip", work, config, clip).run(loss)


def train_vae(config: TrainConfig, work: Path) -> tuple[AutoencoderKL, dict]:
    torch.manual_seed(config.seed + 1)
    vae = new_vae().to(config.device)

    def loss(step: int) -> torch.Tensor:
        scenes, _ = _scenes(config, "vae", step, config.batch["vae"])
        images, masks = render_batch(scenes)
        images = images.to(config.device)
        # The shape covers 5-11 % of a scene: weighted by area alone, its color and outline lose to the
        # flat background. Pixels within 2 of the shape's mask weigh `vae_shape_weight` more.
        near = F.max_pool2d(masks.to(config.device), kernel_size=5, stride=1, padding=2)
        weight = 1.0 + config.vae_shape_weight * near
        posterior = vae.encode(images).latent_dist
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(config.device)
        recon = vae.decode(z).sample
        error = (recon - images).abs() + (recon - images).square()
        return (error * weight).mean() / weight.mean() + 1e-6 * posterior.kl().mean()

    return vae, Trainer("vae", work, config, vae).run(loss)


@dataclass
class LatentPool:
    """Scenes encoded once by the trained VAE: latents (already scaled), control maps, scenes."""

    scenes: list[Scene]
    latents: torch.Tensor
    control: torch.Tensor
    scaling_factor: float


def latent_pool(config: TrainConfig, vae: AutoencoderKL, work: Path) -> LatentPool:
    path = work / "latents.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)
        return LatentPool(**state)
    rng = np.random.default_rng([config.seed, 99])
    scenes = [sample_scene(rng) for _ in range(config.latent_pool)]
    latents, controls = [], []
    with torch.no_grad():
        for start in range(0, len(scenes), 256):
            images, masks = render_batch(scenes[start : start + 256])
            latents.append(vae.encode(images.to(config.device)).latent_dist.mean.cpu())
            controls.append(masks > 0.5)
    latents_t = torch.cat(latents)
    scaling = float(1.0 / latents_t.std())
    pool = LatentPool(scenes, latents_t * scaling, torch.cat(controls), scaling)
    torch.save(pool.__dict__, path)
    return pool


def sample_timesteps(config: TrainConfig, n: int, generator: torch.Generator, total: int) -> torch.Tensor:
    """Training timesteps: `high_noise_share` of them uniform in [high_noise_from, total), the rest
    uniform over all."""
    t = torch.randint(0, total, (n,), generator=generator)
    high = torch.randint(config.high_noise_from, total, (n,), generator=generator)
    return torch.where(torch.rand(n, generator=generator) < config.high_noise_share, high, t)


def _noise_batch(config: TrainConfig, component: str, step: int, pool: LatentPool, noise: DDPMScheduler):
    rng = step_rng(config, component, step)
    index = rng.integers(0, len(pool.scenes), size=config.batch[component])
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    x0 = pool.latents[index]
    eps = torch.randn(x0.shape, generator=generator)
    t = sample_timesteps(config, len(index), generator, noise.config.num_train_timesteps)
    return rng, index, x0, eps, t, noise.add_noise(x0, eps, t)


def _encode_text(
    text_encoder, tokenizer: CLIPTokenizer, captions: list[str], device: str, grad: bool = False
) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt").input_ids.to(device)
    with torch.set_grad_enabled(grad):
        return text_encoder(ids)[0]


def _captions(
    pool: LatentPool, index: np.ndarray, rng: np.random.Generator, config: TrainConfig, dropout: float
) -> list[str]:
    return [
        "" if rng.random() < dropout else training_caption(pool.scenes[i], rng, config.phrase_keep,
                                                           config.varied_captions)
        for i in index
    ]  # fmt: skip


def shape_cells(control: torch.Tensor) -> torch.Tensor:
    """The latent cells (N, 1, 16, 16) on or next to the shape, as 0/1 floats, from its 64x64 mask."""
    cells = F.max_pool2d(control.float(), kernel_size=IMAGE_SIZE // LATENT_SIZE)
    return F.max_pool2d(cells, kernel_size=3, stride=1, padding=1)


def _diffusion_loss(pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, noise,
                    weight: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """MSE against the scheduler's target: the velocity for v-prediction (already balanced across
    noise levels, and defined at zero SNR), else the noise weighted by min(SNR, 5) / SNR (Hang et
    al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"). `weight` (N, 1, H, W)
    weighs latent cells; the loss is normalised by its mean, so a uniform weight changes nothing."""
    if noise.config.prediction_type == "v_prediction":
        target, per_level = noise.get_velocity(x0, eps, t), torch.ones(len(t))
    else:
        snr = compute_snr(noise, t)
        target, per_level = eps, torch.clamp(snr, max=5.0) / snr
    error = (pred.float() - target.to(pred.device).float()).square()
    if weight is None:
        weight = torch.ones_like(error[:, :1])
    weight = weight.to(error.device)
    per_sample = (error * weight).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))
    return (per_sample * per_level.to(per_sample.device)).mean()


def train_unet(
    config, work, pool: LatentPool, text_encoder, tokenizer, probe_set: ProbeSet | None = None
) -> tuple[UNet2DConditionModel, CLIPTextModel, dict]:
    """The UNet, and with `config.train_text_encoder` a copy of the text encoder trained along with it
    (same optimizer, same EMA); else the frozen text encoder as given. With `probe_set`, the report
    holds the final probe (and, with `config.probe_every`, probes along the way)."""
    torch.manual_seed(config.seed + 2)
    unet = new_unet().to(config.device)
    joint = config.train_text_encoder
    text_encoder = copy.deepcopy(text_encoder).requires_grad_(joint)
    model = nn.ModuleDict({"unet": unet, "text_encoder": text_encoder}) if joint else unet
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True)
    noise = DDPMScheduler.from_config(scheduler().config)

    def loss(step: int) -> torch.Tensor:
        rng, index, x0, eps, t, noisy = _noise_batch(config, "unet", step, pool, noise)
        if step < config.layout_steps:
            t = config.layout_from + t % (noise.config.num_train_timesteps - config.layout_from)
            noisy = noise.add_noise(x0, eps, t)
            captions = ["" if rng.random() < config.caption_dropout else pool.scenes[i].caption() for i in index]
        else:
            captions = _captions(pool, index, rng, config, config.caption_dropout)
        text = _encode_text(text_encoder, tokenizer, captions, config.device, grad=joint)
        pred = unet(noisy.to(config.device), t.to(config.device), text).sample
        weight = 1.0 + config.shape_weight * shape_cells(pool.control[index])
        return _diffusion_loss(pred, x0, eps, t, noise, weight)

    def probe_now() -> dict:
        return probe(probe_set, unet, text_encoder, tokenizer, noise, config.device)

    trainer = Trainer("unet", work, config, model, ema)
    measured = trainer.run(loss, config.probe_every, probe_now if probe_set is not None else None)
    if probe_set is not None:
        measured["probe"] = probe_now()
    return unet, text_encoder.eval(), {**measured, "text_encoder_trained": joint}


def train_controlnet(config, work, pool: LatentPool, unet, text_encoder, tokenizer,
                     probe_set: ProbeSet | None = None) -> tuple[ControlNetModel, dict]:  # fmt: skip
    torch.manual_seed(config.seed + 3)
    controlnet = new_controlnet(unet).to(config.device)
    unet.requires_grad_(False)
    noise = DDPMScheduler.from_config(scheduler().config)

    def loss(step: int) -> torch.Tensor:
        rng, index, x0, eps, t, noisy = _noise_batch(config, "controlnet", step, pool, noise)
        captions = _captions(pool, index, rng, config, config.controlnet_caption_dropout)
        text = _encode_text(text_encoder, tokenizer, captions, config.device)
        control = pool.control[index].float().repeat(1, 3, 1, 1).to(config.device)
        noisy, t = noisy.to(config.device), t.to(config.device)
        down, mid = controlnet(noisy, t, text, controlnet_cond=control, return_dict=False)
        pred = unet(noisy, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        weight = 1.0 + config.shape_weight * shape_cells(pool.control[index])
        return _diffusion_loss(pred, x0, eps, t, noise, weight)

    measured = Trainer("controlnet", work, config, controlnet).run(loss)
    if probe_set is not None:
        measured["probe"] = probe(probe_set, unet, text_encoder, tokenizer, noise, config.device, controlnet)
    return controlnet, measured


def _blur(images: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own standard deviation in pixels (0: unchanged)."""
    x = np.arange(-3, 4, dtype=np.float32)
    out = images.clone()
    for i, sigma in enumerate(sigmas):
        if sigma < 0.05:
            continue
        k = torch.from_numpy(np.exp(-(x**2) / (2 * sigma**2)))
        k = (k / k.sum()).to(images)
        channels = images.shape[1]
        img = F.pad(images[i : i + 1], (3, 3, 3, 3), mode="replicate")
        img = F.conv2d(img, k.view(1, 1, 1, 7).repeat(channels, 1, 1, 1), groups=channels)
        out[i : i + 1] = F.conv2d(img, k.view(1, 1, 7, 1).repeat(channels, 1, 1, 1), groups=channels)
    return out


def train_judge(config: TrainConfig, work: Path) -> tuple[AttributeJudge, dict]:
    torch.manual_seed(config.seed + 4)
    judge = AttributeJudge().to(config.device)

    def loss(step: int) -> torch.Tensor:
        scenes, rng = _scenes(config, "judge", step, config.batch["judge"])
        # Outlines as a generated image may draw them (a wobbly disc, a square with soft corners, bent
        # sides), each keeping its label: the judge must read what a person would see.
        kinds = [str(rng.choice(PERTURBATIONS[1:])) if rng.random() < config.judge_perturbed else "none"
                 for _ in scenes]  # fmt: skip
        images, _ = perturbed_renders(scenes, rng, kinds)
        # Soft edges and sensor-like noise, so the judge relies neither on razor-sharp outlines nor on
        # perfectly flat colour (a generated image has neither, and must be judged on what it shows).
        images = _blur(images, rng.uniform(0, config.judge_max_blur, size=len(scenes)))
        sigma = torch.from_numpy(rng.uniform(0, 0.08, size=(len(scenes), 1, 1, 1)).astype(np.float32))
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        images = images + sigma * torch.randn(images.shape, generator=generator)
        logits = judge(images.to(config.device))
        total = torch.zeros((), device=config.device)
        for name, values in ATTRIBUTES.items():
            target = torch.tensor([values.index(getattr(s, name)) for s in scenes], device=config.device)
            total = total + F.cross_entropy(logits[name], target)
        return total

    return judge, Trainer("judge", work, config, judge).run(loss)


def assemble_pipeline(vae, text_encoder, tokenizer, unet) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _component(
    name: str,
    folder: Path,
    work: Path,
    only: tuple[str, ...],
    train: Callable[[], tuple[torch.nn.Module, dict]] | None,
    save: Callable[[torch.nn.Module, Path], None] | None,
) -> dict | None:
    """Train and save one component to `folder` unless this run's work folder marks it finished
    (`work/<name>/done.json`); returns what its training measured, also written beside the weights
    as `folder/training.json`. The marker lives in the work folder, not beside the weights, so a
    fresh clone, whose committed family carries its own training.json files, trains everything."""
    marker = work / name / "done.json"
    if marker.is_file() or name not in only:
        return json.loads(marker.read_text()) if marker.is_file() else None
    started = time.monotonic()
    model, measured = train()
    save(model, folder)
    measured["wall_seconds"] = round(time.monotonic() - started, 1)  # with probes and saving
    text = json.dumps(measured, indent=2) + "\n"
    (folder / "training.json").write_text(text)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(text)
    return measured


def train_all(config: TrainConfig, work: Path, out: Path, only: tuple[str, ...] = COMPONENTS) -> dict:
    """Train (or resume) every component and save the family under `out`:
    `micro-sd/` (the pipeline), `micro-controlnet/`, `micro-clip/`, `micro-judge/`. Returns what each
    component's training measured (steps, seconds, final loss)."""
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = micro_tokenizer()
    report: dict[str, dict | None] = {}

    def save_clip(clip: CLIPModel, folder: Path) -> None:
        clip.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        clip_image_processor().save_pretrained(folder)

    def save_pretrained(model, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)

    clip_dir = out / "micro-clip"
    report["clip"] = _component("clip", clip_dir, work, only, lambda: train_clip(config, work, tokenizer), save_clip)
    clip = CLIPModel.from_pretrained(clip_dir, local_files_only=True).to(config.device).eval()
    text_encoder = text_encoder_from_clip(clip).to(config.device)

    vae_dir = work / "vae-final"
    report["vae"] = _component("vae", vae_dir, work, only, lambda: train_vae(config, work), save_pretrained)
    vae = AutoencoderKL.from_pretrained(vae_dir).to(config.device).eval()
    started = time.monotonic()
    pool = latent_pool(config, vae, work)
    vae.register_to_config(scaling_factor=pool.scaling_factor)
    probes = probe_set(vae, pool.scaling_factor, config.probe_scenes, config.seed, config.device)
    pool_seconds = round(time.monotonic() - started, 1)

    unet_dir = work / "unet-final"

    def train_unet_and_text() -> tuple[nn.Module, dict]:
        unet, text, measured = train_unet(config, work, pool, text_encoder, tokenizer, probes)
        measured["latent_pool_seconds"] = pool_seconds  # encoding the pool (0 when read from --work)
        return nn.ModuleDict({"unet": unet, "text_encoder": text}), measured

    def save_unet_and_text(pair: nn.ModuleDict, folder: Path) -> None:
        for name, module in pair.items():
            module.save_pretrained(folder / name, safe_serialization=True)

    report["unet"] = _component("unet", unet_dir, work, only, train_unet_and_text, save_unet_and_text)
    if (unet_dir / "unet").is_dir():  # trained now or before; else (--only without unet) no pipeline yet
        unet = UNet2DConditionModel.from_pretrained(unet_dir / "unet").to(config.device).eval()
        text_encoder = CLIPTextModel.from_pretrained(unet_dir / "text_encoder").to(config.device).eval()
        pipeline = assemble_pipeline(vae, text_encoder, tokenizer, unet)
        pipeline.save_pretrained(out / "micro-sd", safe_serialization=True)
        index_path = out / "micro-sd" / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_trained_sizes"] = [[IMAGE_SIZE, IMAGE_SIZE]]  # diffgen refuses other sizes (loading.trained_sizes)
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

        report["controlnet"] = _component(
            "controlnet", out / "micro-controlnet", work, only,
            lambda: train_controlnet(config, work, pool, unet, text_encoder, tokenizer, probes), save_pretrained,
        )  # fmt: skip
    else:
        report["controlnet"] = _component("controlnet", out / "micro-controlnet", work, (), None, None)
    report["judge"] = _component(
        "judge", out / "micro-judge", work, only, lambda: train_judge(config, work), lambda m, f: m.save(f)
    )
    return report
