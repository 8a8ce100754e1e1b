"""The micro model family's model card (micro-sd/README.md), written from what training and the
evaluation job measured; nothing in it is typed by hand."""

from __future__ import annotations

from pathlib import Path

from lab.micro.world import ATTRIBUTES

FOLDERS = {
    "micro-sd": "VAE (factor 4), CLIP text encoder + tokenizer, UNet, Euler scheduler",
    "micro-controlnet": "ControlNet on the shape's mask (white on black)",
    "micro-clip": "contrastive image-text model: CLIP score and the FID backbone",
    "micro-judge": "attribute classifier trained on real renders only (the evaluation's judge)",
}


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 1e6


def _training_rows(training: dict | None) -> list[str]:
    if not training:
        return ["(no training.json beside the weights)"]
    rows = ["| component | steps | batch | lr | seconds | final loss |", "|---|---|---|---|---|---|"]
    for name, r in training["components"].items():
        if r:
            rows.append(f"| {name} | {r['steps']} | {r['batch']} | {r['lr']} | {r['seconds']} | {r['final_loss']} |")
    machine = training["machine"]
    minutes = training["total_training_seconds"] / 60
    rows += ["", f"Total training time: {minutes:.1f} min on {machine['cpus']} {machine['device'].upper()} cores "
             f"({machine['platform']}), trained {training['trained_at']}."]  # fmt: skip
    return rows


def _limits(acc: dict) -> list[str]:
    """What the evaluation shows the model gets wrong, from its numbers."""
    guided = acc["guided"]
    chance = 1 / len(ATTRIBUTES["position"])
    lines = []
    if guided["position"] < 2 * chance:
        lines.append(
            f"- Position: the prompted position is found in {guided['position']:.1%} of images (chance: "
            f"{chance:.1%}). The model ignores position words; the starting noise places the shape."
        )
    by_shape = acc.get("guided_shape_by_prompted_shape") or {}
    if by_shape:
        worst = min(by_shape, key=by_shape.get)
        lines.append(
            f"- Shapes: a prompted {worst} is drawn as one in {by_shape[worst]:.1%} of images (other shapes: "
            + ", ".join(f"{k} {v:.1%}" for k, v in by_shape.items() if k != worst) + ")."
        )
    unguided = acc["unguided"]
    if guided["shape_and_color"] < unguided["shape_and_color"] + 0.1:
        lines.append(
            f"- Guidance: shape and color are right in {guided['shape_and_color']:.1%} of images with guidance and "
            f"{unguided['shape_and_color']:.1%} at guidance 1. Color ({unguided['color']:.1%}) and background "
            f"({unguided['background']:.1%}) already follow the prompt without guidance, and guidance does not "
            "fix the shapes the model misdraws."
        )
    return lines or ["- None found by the evaluation."]


def model_card(models: Path, training: dict | None, evaluation: dict) -> str:
    acc, iou, clip, fid, speed = (evaluation[k] for k in ("attribute_accuracy", "controlnet_mask_iou", "clip_score",
                                                           "fid", "speed"))  # fmt: skip
    config = evaluation["config"]
    sizes = {name: _size_mb(models / name) for name in FOLDERS}
    target_rows = [
        f"| {name} | {t['measured']} | {t['target']} | {'met' if t['met'] else 'missed by ' + str(t['missed_by'])} |"
        for name, t in evaluation["targets"].items()
    ]
    vocabulary = "\n".join(f"- **{name}**: {', '.join(values)}" for name, values in ATTRIBUTES.items())
    lines = [
        "# micro-sd: the embedded default model",
        "",
        "A Stable Diffusion 1.x-architecture family trained from scratch on the micro world "
        "(`lab/micro/world.py`): one coloured shape on a plain background, 64x64. It loads through "
        "exactly the code that loads Stable Diffusion (`StableDiffusionPipeline`, `ControlNetModel`, "
        "`CLIPModel` folders), needs no download, and draws what it is asked inside its world.",
        "",
        "| folder | what | safetensors MB |",
        "|---|---|---|",
        *(f"| `{name}/` | {what} | {sizes[name]:.1f} |" for name, what in FOLDERS.items()),
        "",
        f"In all {sum(sizes.values()):.1f} MB.",
        "",
        "## What it knows",
        "",
        'Prompts of the form "a small red triangle at the top left on a blue background"; the size, position '
        "and background phrases may be left out (it then picks them). Words:",
        "",
        vocabulary,
        "",
        "Any other text still tokenizes (byte-level fallback) and generates, but the model has never seen it: "
        "it draws some scene of its world. It was trained at 64x64 only; diffgen refuses other sizes for it "
        "unless the job sets `sampler.allow_untrained_size: true`.",
        "",
        "## Training",
        "",
        "Scenes are rendered on the fly from seeds (the evaluation's seeds are never used in training). "
        "The VAE's reconstruction loss weighs the pixels near the shape 10x (the shape is 5-11 % of a scene). "
        "The UNet predicts the velocity (v-prediction, zero terminal SNR) on VAE latents, with an EMA of its "
        "weights and an empty caption 10 % of the time for classifier-free guidance; its text encoder starts "
        "as the micro CLIP's text tower and is trained along with it. The ControlNet starts from the UNet's "
        "encoder and is trained with the UNet frozen. The judge sees real renders only, blurred and noised.",
        "",
        *_training_rows(training),
        "",
        "## Evaluation (`python -m lab.evaluate_micro`)",
        "",
        f"{config['images']} held-out prompts, {config['steps']} {config['scheduler']} steps, guidance "
        f"{config['guidance_scale']}, batch {config['batch_size']}, generated through diffgen's own loader "
        "and sampler.",
        "",
        "| target | measured | target | result |",
        "|---|---|---|---|",
        *target_rows,
        "",
        "| measure | value |",
        "|---|---|",
        f"| shape and color right, guided / unguided | {acc['guided']['shape_and_color']:.3f} / "
        f"{acc['unguided']['shape_and_color']:.3f} |",
        f"| shape / color / size / position / background right (guided) | {acc['guided']['shape']:.3f} / "
        f"{acc['guided']['color']:.3f} / {acc['guided']['size']:.3f} / {acc['guided']['position']:.3f} / "
        f"{acc['guided']['background']:.3f} |",
        "| shape right, by prompted shape (guided) | "
        + ", ".join(f"{k}: {v:.3f}" for k, v in acc["guided_shape_by_prompted_shape"].items()) + " |",
        "| shape and color right on validation prompts, by guidance scale | "
        + ", ".join(f"{g}: {v:.3f}" for g, v in acc["validation_guidance_sweep"].items()) + " |",
        f"| the judge on held-out real renders (shape and color) | {acc['real_renders']['shape_and_color']:.3f} |",
        f"| the judge on the same renders through the VAE and back; their PSNR | "
        f"{acc['vae_round_trips']['shape_and_color']:.3f}; {evaluation['vae_round_trip_psnr_db']:.1f} dB |",
        f"| ControlNet mask IoU mean / median; same prompts without it | {iou['with_controlnet_mean']:.3f} / "
        f"{iou['with_controlnet_median']:.3f}; {iou['without_controlnet_mean']:.3f} |",
        f"| CLIP score, matching / shuffled prompts | {clip['matching_prompts_mean']:.2f} / "
        f"{clip['shuffled_prompts_mean']:.2f} (matching higher for {clip['matching_above_shuffled_share']:.0%}) |",
        f"| FID (micro CLIP space, vs {fid['reference_real_renders']} real renders): trained / floor (real vs real) "
        f"/ ceiling (untrained UNet) | {fid['trained']:.2f} / {fid['floor_real_vs_real']:.2f} / "
        f"{fid['ceiling_untrained_unet']:.2f} |",
        f"| images/s (guided, batch {config['batch_size']}, {speed['torch_threads']} threads) | "
        f"{speed['images_per_s']:.2f} ({speed['seconds_per_image']:.3f} s/image; with ControlNet "
        f"{speed['controlnet_seconds_per_image']:.3f} s/image) |",
        "",
        f"FID backbone: `{fid['backbone']}`, resize `{fid['resize']}`. Evaluated {evaluation['evaluated_at']}.",
        "",
        "## Limits",
        "",
        *_limits(acc),
        "",
        "![samples](samples.png)",
        "",
        "The first 32 held-out prompts are in `prompts.txt`, in grid order; `../micro-controlnet/samples.png` "
        "shows control masks beside the images drawn from them.",
        "",
        "Reproduce: `python -m lab.train_micro` (resumable; `--scale 0.01` for a smoke run), then "
        "`python -m lab.evaluate_micro`.",
        "",
    ]
    return "\n".join(lines)
