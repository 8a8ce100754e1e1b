"""Measured properties of the micro model family, on scenes it never saw in training.

Generation goes through diffgen's own loading and sampling (`load_pipeline_set`, `generate`), so
what is measured is what `diffgen run` produces. Measures:

- attribute accuracy: the share of images in which the independent judge (trained on real renders
  only) finds the prompted shape and the prompted color (and shape, color and position), at the
  default guidance and without guidance; also the other named attributes, per prompted shape and
  per prompted position; and the judge on held-out real renders, on the same renders with perturbed
  outlines (`lab.micro.outlines`) and through the VAE and back (what the latent space can show at
  best); shape and color right at several guidance scales on validation prompts, where the default
  guidance was chosen;
- prompts as people write them: the held-out paraphrase set (`micro-sd/eval_paraphrases.jsonl`,
  written before training and never trained on): shape and color right, and each other attribute a
  prompt names, overall and per kind of paraphrase (filler, number, order, ...);
- ControlNet: IoU of the generated shape's mask (`microworld.segment`) against the control mask,
  for prompts that name no position or size (the mask alone places the shape), and the same
  prompts without the ControlNet as the baseline;
- CLIP score (the micro CLIP) of each image with its own prompt and with another image's prompt;
- FID in the micro CLIP's image space against held-out real renders, next to the floor (other
  held-out real renders against the same) and the ceiling (the same pipeline with an untrained UNet);
- images per second of guided generation at the evaluated batch size.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffgen.generation.loading import load_pipeline_set, placement
from diffgen.generation.sampling import Request, generate
from diffgen.generation.variants import PipelineSet
from diffgen.metrics.clip_model import ClipModel
from diffgen.metrics.clip_score import clip_score_kernel
from diffgen.metrics.frechet import FeatureStats, fid
from diffgen.schemas.job import ComputeSpec, ControlNetSpec, JobSpec, ModelSpec, SamplerSpec
from lab.micro.models import AttributeJudge, new_unet, to_model_input
from lab.micro.outlines import PERTURBATIONS, perturbed_renders
from lab.micro.train import EVAL_SEED_OFFSET
from lab.micro.world import ATTRIBUTES, Scene, iou, mask_image, render, scene_for_seed, segment

FID_REAL_OFFSET = 1_000_000  # held-out real renders: the reference set, and the floor's second set
FID_FLOOR_OFFSET = 2_000_000
VALIDATION_OFFSET = 7_000_000  # prompts the default guidance is chosen on: neither training's nor the evaluation's
GUIDANCE_SWEEP = (1.0, 3.0, 5.0, 7.5, 10.0)
PARAPHRASES = "eval_paraphrases.jsonl"  # beside the pipeline's weights
PERTURBED_OFFSET = 4_000_000


@dataclass(frozen=True)
class EvalConfig:
    images: int = 1000  # a share near 0.8 measured on 1000 images is within about +-2.5 points (95 %)
    control_images: int = 300
    validation_images: int = 400
    fid_reference: int = 1000
    paraphrases: int | None = None  # the first this many prompts of the paraphrase set (None: all)
    steps: int = 20
    scheduler: str = "euler"
    guidance_scale: float = 3.0  # the best on validation prompts (not the evaluation's): see the model card
    batch_size: int = 8
    negative_prompt: str = ""


def eval_scenes(n: int, offset: int = 0) -> list[Scene]:
    return [scene_for_seed(EVAL_SEED_OFFSET + offset + i) for i in range(n)]


def eval_job_spec(folder: Path, config: EvalConfig, controlnet: Path | None = None) -> JobSpec:
    """The job the evaluation samples with, as `diffgen run` would (64x64, fp32, on the CPU)."""
    controlnets = [ControlNetSpec(name="mask", model=ModelSpec(id=str(controlnet)))] if controlnet else []
    return JobSpec(
        model=ModelSpec(id=str(folder)),
        sampler=SamplerSpec(
            scheduler=config.scheduler,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            negative_prompt=config.negative_prompt,
            width=64,
            height=64,
        ),  # fmt: skip
        compute=ComputeSpec(batch_size=config.batch_size, device="cpu", dtype="fp32"),
        controlnets=controlnets,
    )


def generate_images(pipes: PipelineSet, prompts: list[str], config: EvalConfig, guidance: float,
              controls: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], float]:  # fmt: skip
    """Images for `prompts` (the seed of each is its index; `controls`: one mask each) through
    diffgen's sampler, and the wall seconds generation took."""
    requests = [
        Request(prompt=p, negative_prompt=config.negative_prompt, seed=i, guidance_scale=guidance, steps=config.steps,
                width=64, height=64,
                control_images=(Image.fromarray(mask_image(controls[i])),) if controls is not None else ())
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    started = time.perf_counter()
    results = generate(pipes, requests, config.batch_size)
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if r.pixels is None]
    if failed:
        raise RuntimeError(f"{len(failed)} evaluation images failed: {failed[0]}")
    return [r.pixels for r in results], seconds


def judge_reads(judge: AttributeJudge, images: list[np.ndarray]) -> list[dict[str, str]]:
    """The judge's reading (attribute -> value) of each image."""
    predicted = []
    for start in range(0, len(images), 64):
        predicted += judge.predict(images[start : start + 64])
    return predicted


def accuracy_by_prompted(predicted: list[dict[str, str]], scenes: list[Scene], name: str) -> dict[str, float]:
    """For each prompted value of attribute `name`, the share of its images the judge (`predicted`)
    reads as that value."""
    return {
        value: float(np.mean([p[name] == value for p, s in zip(predicted, scenes) if getattr(s, name) == value]))
        for value in ATTRIBUTES[name]
        if any(getattr(s, name) == value for s in scenes)
    }


def accuracy_of(predicted: list[dict[str, str]], scenes: list[Scene]) -> dict[str, float]:
    hits = {name: np.mean([p[name] == getattr(s, name) for p, s in zip(predicted, scenes)]) for name in predicted[0]}
    both = np.mean([p["shape"] == s.shape and p["color"] == s.color for p, s in zip(predicted, scenes)])
    all_three = np.mean([p["shape"] == s.shape and p["color"] == s.color and p["position"] == s.position
                         for p, s in zip(predicted, scenes)])  # fmt: skip
    return {"shape_and_color": float(both), "shape_color_position": float(all_three),
            **{k: float(v) for k, v in hits.items()}}  # fmt: skip


def load_paraphrases(path: Path) -> list[dict]:
    """The paraphrase set: one JSON object a line, `prompt`, the attributes it names (`shape` and
    `color` always) and the `kinds` of paraphrase it is."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        missing = {"prompt", "shape", "color", "kinds"} - set(row)
        if missing:
            raise ValueError(f"{path}:{i}: missing {', '.join(sorted(missing))}")
        for name in set(row) & set(ATTRIBUTES):
            if row[name] not in ATTRIBUTES[name]:
                raise ValueError(f"{path}:{i}: {name} {row[name]!r} is not one of {', '.join(ATTRIBUTES[name])}")
    return rows


def paraphrase_accuracy(predicted: list[dict[str, str]], rows: list[dict]) -> dict:
    """Shape and color right over the paraphrase set, each named attribute over the prompts that
    name it, and shape and color right per kind of paraphrase."""
    def both(p: dict[str, str], r: dict) -> bool:
        return p["shape"] == r["shape"] and p["color"] == r["color"]

    named = {name: [p[name] == r[name] for p, r in zip(predicted, rows) if name in r] for name in ATTRIBUTES}
    kinds = sorted({k for r in rows for k in r["kinds"]})
    return {
        "prompts": len(rows),
        "shape_and_color": float(np.mean([both(p, r) for p, r in zip(predicted, rows)])),
        "named_attribute": {name: {"prompts": len(v), "right": float(np.mean(v))} for name, v in named.items() if v},
        "shape_and_color_by_kind": {
            kind: float(np.mean([both(p, r) for p, r in zip(predicted, rows) if kind in r["kinds"]])) for kind in kinds
        },
        "shape_by_prompted_shape": {
            shape: float(np.mean([p["shape"] == shape for p, r in zip(predicted, rows) if r["shape"] == shape]))
            for shape in ATTRIBUTES["shape"] if any(r["shape"] == shape for r in rows)
        },
    }  # fmt: skip


def judge_on_perturbed_renders(judge: AttributeJudge, scenes: list[Scene]) -> dict[str, dict[str, float]]:
    """The judge's accuracy on held-out real renders, per outline perturbation (none, blob, rounded
    corners, elastic warp), each with its shape's label: what it reads when an outline is imperfect."""
    out = {}
    for i, kind in enumerate(PERTURBATIONS):
        images, _ = perturbed_renders(scenes, np.random.default_rng([PERTURBED_OFFSET, i]), [kind] * len(scenes))
        pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        reads = judge_reads(judge, list(pixels))
        out[kind] = {**accuracy_of(reads, scenes), "shape_by_shape": accuracy_by_prompted(reads, scenes, "shape")}
    return out


def attribute_accuracy(judge: AttributeJudge, images: list[np.ndarray], scenes: list[Scene]) -> dict[str, float]:
    return accuracy_of(judge_reads(judge, images), scenes)


@torch.no_grad()
def vae_round_trip(vae, images: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """`images` (RGB uint8) encoded to the latent mean and decoded, and the round trip's PSNR in dB."""
    x = to_model_input(images)
    out = torch.cat([vae.decode(vae.encode(x[i : i + 64]).latent_dist.mean).sample for i in range(0, len(x), 64)])
    pixels = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    mse = float(np.mean((pixels.astype(np.float64) - np.stack(images).astype(np.float64)) ** 2))
    return list(pixels), round(10 * np.log10(255.0**2 / max(mse, 1e-12)), 2)


def _stats(clip: ClipModel, images: list[np.ndarray]) -> FeatureStats:
    return FeatureStats(clip.name, clip.resize, clip.dim).update(clip.image_embeddings(images))


def evaluate(models: Path, config: EvalConfig = EvalConfig()) -> dict:
    """Every measure above for the family under `models` (micro-sd, micro-controlnet, micro-clip,
    micro-judge)."""
    torch.manual_seed(0)
    judge = AttributeJudge.load(models / "micro-judge")
    clip = ClipModel(models / "micro-clip")
    where = placement(ComputeSpec(device="cpu"))
    pipes = load_pipeline_set(eval_job_spec(models / "micro-sd", config), where)

    scenes = eval_scenes(config.images)
    prompts = [s.caption() for s in scenes]
    generate_images(pipes, prompts[: config.batch_size], config, config.guidance_scale)  # warm-up
    guided, seconds = generate_images(pipes, prompts, config, config.guidance_scale)
    unguided, _ = generate_images(pipes, prompts, config, 1.0)
    validation = eval_scenes(config.validation_images, VALIDATION_OFFSET)
    sweep = {
        str(g): attribute_accuracy(judge, generate_images(pipes, [s.caption() for s in validation], config, g)[0],
                                   validation)["shape_and_color"]
        for g in GUIDANCE_SWEEP
    }  # fmt: skip

    real = [render(s)[0] for s in eval_scenes(config.fid_reference, FID_REAL_OFFSET)]
    floor_scenes = eval_scenes(config.images, FID_FLOOR_OFFSET)
    floor = [render(s)[0] for s in floor_scenes]
    round_trips, vae_psnr = vae_round_trip(pipes.base.vae, floor)
    reference = _stats(clip, real)
    torch.manual_seed(0)
    untrained_pipe = type(pipes.base)(**{**pipes.base.components, "unet": new_unet().eval()})
    untrained, _ = generate_images(PipelineSet(untrained_pipe), prompts, config, config.guidance_scale)

    image_emb = clip.image_embeddings(guided)
    text_emb = clip.text_embeddings(prompts)
    shuffled = np.roll(np.arange(len(prompts)), 1)
    matching = clip_score_kernel(image_emb, text_emb)
    mismatched = clip_score_kernel(image_emb, text_emb[shuffled])

    control_scenes = eval_scenes(config.control_images, 3_000_000)
    control_prompts = [s.caption(size=False, position=False) for s in control_scenes]
    masks = [render(s)[1] for s in control_scenes]
    free, _ = generate_images(pipes, control_prompts, config, config.guidance_scale)
    controlled_pipes = load_pipeline_set(eval_job_spec(models / "micro-sd", config, models / "micro-controlnet"), where)
    controlled, control_seconds = generate_images(
        controlled_pipes, control_prompts, config, config.guidance_scale, masks
    )
    iou_control = [iou(segment(img), m) for img, m in zip(controlled, masks)]
    iou_free = [iou(segment(img), m) for img, m in zip(free, masks)]

    paraphrase_rows = load_paraphrases(models / "micro-sd" / PARAPHRASES)[: config.paraphrases]
    paraphrased, _ = generate_images(pipes, [r["prompt"] for r in paraphrase_rows], config, config.guidance_scale)

    guided_reads = judge_reads(judge, guided)
    unguided_acc = attribute_accuracy(judge, unguided, scenes)
    guided_acc = accuracy_of(guided_reads, scenes)
    by_shape = accuracy_by_prompted(guided_reads, scenes, "shape")
    return {
        "config": asdict(config),
        "attribute_accuracy": {
            "guided": guided_acc,
            "unguided": unguided_acc,
            "guidance_gain_shape_color_position": guided_acc["shape_color_position"]
            - unguided_acc["shape_color_position"],
            "guided_shape_by_prompted_shape": by_shape,
            "guided_worst_shape": min(by_shape.values()),
            "guided_position_by_prompted_position": accuracy_by_prompted(guided_reads, scenes, "position"),
            "real_renders": attribute_accuracy(judge, floor, floor_scenes),
            # The same renders with imperfect outlines, each keeping its label (lab.micro.outlines).
            "real_renders_perturbed": judge_on_perturbed_renders(judge, floor_scenes),
            # The same renders through the VAE and back: the most the UNet's images can show.
            "vae_round_trips": attribute_accuracy(judge, round_trips, floor_scenes),
            # Shape and color right on other held-out prompts at each guidance scale: where the
            # default guidance (EvalConfig.guidance_scale, the example jobs') was chosen.
            "validation_guidance_sweep": sweep,
        },
        "paraphrases": {"file": f"micro-sd/{PARAPHRASES}", **paraphrase_accuracy(judge_reads(judge, paraphrased),
                                                                                 paraphrase_rows)},
        "vae_round_trip_psnr_db": vae_psnr,
        "controlnet_mask_iou": {
            "with_controlnet_mean": float(np.mean(iou_control)),
            "with_controlnet_median": float(np.median(iou_control)),
            "without_controlnet_mean": float(np.mean(iou_free)),
            "controlnet_attribute_accuracy": attribute_accuracy(judge, controlled, control_scenes),
        },
        "clip_score": {
            "backbone": clip.name,
            "matching_prompts_mean": float(np.mean(matching)),
            "shuffled_prompts_mean": float(np.mean(mismatched)),
            "matching_above_shuffled_share": float(np.mean(matching > mismatched)),
        },
        "fid": {
            "backbone": clip.name,
            "resize": clip.resize,
            "reference_real_renders": len(real),
            "images": config.images,
            "trained": fid(_stats(clip, guided), reference).value,
            "floor_real_vs_real": fid(_stats(clip, floor), reference).value,
            "ceiling_untrained_unet": fid(_stats(clip, untrained), reference).value,
        },
        "speed": {
            "images_per_s": round(len(guided) / seconds, 3),
            "seconds_per_image": round(seconds / len(guided), 4),
            "controlnet_seconds_per_image": round(control_seconds / len(controlled), 4),
            "torch_threads": torch.get_num_threads(),
        },
        "_images": {
            "guided": guided,
            "unguided": unguided,
            "controlled": controlled,
            "paraphrased": paraphrased,
            "paraphrase_prompts": [r["prompt"] for r in paraphrase_rows],
            "masks": masks,
            "prompts": prompts,
            "control_prompts": control_prompts,
        },  # fmt: skip
    }


TARGETS = {
    "position right (guided)": ("attribute_accuracy.guided.position", ">=", 0.80),
    "every shape right (guided; the worst prompted shape)": ("attribute_accuracy.guided_worst_shape", ">=", 0.85),
    "shape and color right at the default guidance": ("attribute_accuracy.guided.shape_and_color", ">=", 0.95),
    "guidance gain: shape, color and position right, guided minus unguided": (
        "attribute_accuracy.guidance_gain_shape_color_position", ">=", 0.10),
    "paraphrased prompts: shape and color right": ("paraphrases.shape_and_color", ">=", 0.85),
    "ControlNet mask IoU (mean)": ("controlnet_mask_iou.with_controlnet_mean", ">=", 0.80),
    "seconds per 64x64 image (guided, default steps)": ("speed.seconds_per_image", "<", 1.0),
}  # fmt: skip


def _lookup(result: dict, dotted: str) -> float:
    node = result
    for part in dotted.split("."):
        node = node[part]
    return float(node)


def check_targets(result: dict) -> dict[str, dict]:
    """Each target with its measured value and whether it is met (and by how much it is missed)."""
    out = {}
    for name, (path, op, target) in TARGETS.items():
        value = _lookup(result, path)
        met = value >= target if op == ">=" else value < target
        out[name] = {"measured": round(value, 4), "target": f"{op} {target}", "met": met,
                     "missed_by": None if met else round(abs(value - target), 4)}  # fmt: skip
    clip = result["clip_score"]
    out["matching CLIP score above shuffled"] = {
        "measured": f"{clip['matching_prompts_mean']:.2f} vs {clip['shuffled_prompts_mean']:.2f}",
        "target": "clearly higher",
        "met": clip["matching_prompts_mean"] > clip["shuffled_prompts_mean"] + 2.0,
        "missed_by": None,
    }
    return out
