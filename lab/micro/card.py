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
    cpu = sum((r or {}).get("cpu_seconds") or 0.0 for r in training["components"].values()) / 60
    rows += ["", f"Total training time: {minutes:.1f} min on {machine['cpus']} {machine['device'].upper()} cores "
             f"({machine['platform']}), trained {training['trained_at']}; "
             f"{cpu:.1f} CPU-minutes for the components that recorded them. Wall time depends on what else "
             "the machine runs (see the README for a quiet machine's figure)."]  # fmt: skip
    return rows


def _limits(evaluation: dict) -> list[str]:
    """What the evaluation shows the model gets wrong: every missed target, from its numbers."""
    acc = evaluation["attribute_accuracy"]
    lines = []
    for name, t in evaluation["targets"].items():
        if not t["met"]:
            lines.append(f"- {name}: {t['measured']} (target {t['target']}, missed by {t['missed_by']}).")
    positions = acc.get("guided_position_by_prompted_position") or {}
    weak = {k: v for k, v in positions.items() if v < 0.8}
    if weak:
        lines.append("- Positions drawn right in under 80 % of their prompts: "
                     + ", ".join(f"{k} {v:.1%}" for k, v in weak.items()) + ".")  # fmt: skip
    return lines or ["- None found by the evaluation."]


PENALTY_NAMES = {"position": "wrong position", "shape": "wrong shape", "circle_square": "circle and square swapped",
                 "color": "wrong color", "no_caption": "no caption"}


def _by(values: dict[str, float]) -> str:
    return ", ".join(f"{k}: {v:.3f}" for k, v in values.items())


def _probe_rows(training: dict | None) -> list[str]:
    """The UNet's probe (lab.micro.probe) from training.json: loss per noise level and how much a
    wrong word raises it."""
    probe = ((training or {}).get("components", {}).get("unet") or {}).get("probe")
    if not probe:
        return []
    levels = probe["levels"]
    rows = [
        f"Loss of the UNet on {probe['scenes']} held-out scenes at each noise level (t), with the right caption, "
        "and how much one wrong word raises it (whole latent; `training.json` also has the cells on the shape):",
        "",
        "| t | " + " | ".join(str(t) for t in levels) + " |",
        "|---|" + "---|" * len(levels),
        "| loss | " + " | ".join(f"{v:.4f}" for v in probe["loss"]) + " |",
        *(f"| {PENALTY_NAMES.get(k, k)} | " + " | ".join(f"{v:+.4f}" for v in vals) + " |"
          for k, vals in probe["penalty"].items()),
        "",
    ]  # fmt: skip
    return rows


def model_card(models: Path, training: dict | None, evaluation: dict) -> str:
    para = evaluation.get("paraphrases")
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
        "and background phrases may be left out (it then picks them). Training captions also vary the wording "
        '(`lab/micro/captions.py`): synonyms ("big", "little", "middle", "upper left", "disc", "box", "grey", '
        '"violet"), other word orders ("a triangle in red", "top left: ..."), leading phrases ("an image of", '
        '"draw"), commas and stops, and random letter strings at random places, so an unknown word reads as '
        "noise. Words:",
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
        "The CLIP is trained contrastively with hard negatives: half of each batch comes in groups of scenes "
        "that differ in one attribute only (mostly position or shape), so its captions must be told apart by "
        "that word. The VAE's reconstruction loss weighs the pixels near the shape 10x (the shape is 5-11 % "
        "of a scene). The UNet (four levels down to 2x2, cross-attention on the three lowest, FiLM timestep "
        "embedding) predicts the velocity (v-prediction, zero terminal SNR) on VAE latents, with the latent "
        "cells on the shape weighted more, an EMA of its weights and an empty caption 10 % of the time for "
        "classifier-free guidance. Its first 400 steps are a layout warm-up: canonical captions naming every "
        "attribute and only the noisiest timesteps (t >= 900), where the latent shows almost nothing and the "
        "caption alone says where the shape goes; without it the UNet read the place from the noisy latent "
        "and never attended to the position words (wrong-position penalty 0.0000 after 1500 steps). After it, "
        "30 % of its timesteps come from t >= 900 and the rest from all of them; its text encoder starts "
        "as the micro CLIP's text tower and is trained along with it. The ControlNet starts from the UNet's "
        "encoder and is trained with the UNet frozen. The judge sees real renders only, blurred, noised and "
        "with perturbed outlines (blobs, rounded corners, elastic warps; `lab/micro/outlines.py`).",
        "",
        *_training_rows(training),
        "",
        *_probe_rows(training),
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
        f"| shape, color and position right, guided / unguided | {acc['guided']['shape_color_position']:.3f} / "
        f"{acc['unguided']['shape_color_position']:.3f} |",
        f"| shape / color / size / position / background right (guided) | {acc['guided']['shape']:.3f} / "
        f"{acc['guided']['color']:.3f} / {acc['guided']['size']:.3f} / {acc['guided']['position']:.3f} / "
        f"{acc['guided']['background']:.3f} |",
        f"| shape right, by prompted shape (guided) | {_by(acc['guided_shape_by_prompted_shape'])} |",
        f"| position right, by prompted position (guided) | {_by(acc['guided_position_by_prompted_position'])} |",
        *([f"| paraphrased prompts ({para['prompts']}, `{para['file']}`): shape and color right | "
           f"{para['shape_and_color']:.3f} |",
           f"| paraphrased prompts, shape and color right by kind | {_by(para['shape_and_color_by_kind'])} |",
           "| paraphrased prompts, each named attribute right | "
           + ", ".join(f"{k}: {v['right']:.3f} of {v['prompts']}" for k, v in para["named_attribute"].items()) + " |"]
          if para else []),
        "| shape and color right on validation prompts, by guidance scale | "
        + ", ".join(f"{g}: {v:.3f}" for g, v in acc["validation_guidance_sweep"].items()) + " |",
        f"| the judge on held-out real renders (shape and color) | {acc['real_renders']['shape_and_color']:.3f} |",
        *([f"| the judge on the same renders with perturbed outlines (shape right) | "
           + ", ".join(f"{k}: {v['shape']:.3f}" for k, v in acc["real_renders_perturbed"].items()) + " |"]
          if "real_renders_perturbed" in acc else []),
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
        *_limits(evaluation),
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
