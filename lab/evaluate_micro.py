"""Evaluate the micro model family: `python -m lab.evaluate_micro [--models models]`.

Generates a fixed set of held-out prompts and control masks with the family under --models, measures
attribute accuracy (independent judge), ControlNet mask IoU, matching vs shuffled CLIP score, FID in
the micro CLIP space (with its floor and ceiling) and images/s, and writes
--models/micro-sd/evaluation.json, sample grids, and the model card (--models/micro-sd/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lab.micro.card import model_card
from lab.micro.evaluate import EvalConfig, check_targets, evaluate
from lab.micro.world import mask_image


def grid(images: list[np.ndarray], columns: int, scale: int = 2) -> Image.Image:
    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images), columns)]
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.evaluate_micro", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="models", help="the folder holding micro-sd/, micro-controlnet/, ...")
    parser.add_argument("--images", type=int, default=EvalConfig.images)
    parser.add_argument("--control-images", type=int, default=EvalConfig.control_images)
    parser.add_argument("--steps", type=int, default=EvalConfig.steps)
    parser.add_argument("--guidance", type=float, default=EvalConfig.guidance_scale)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core; 1 on a machine busy with other work)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    models = Path(args.models)
    config = replace(EvalConfig(), images=args.images, control_images=args.control_images, steps=args.steps,
                     guidance_scale=args.guidance)  # fmt: skip
    result = evaluate(models, config)
    shown = result.pop("_images")
    result["targets"] = check_targets(result)
    result["evaluated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "device": "cpu"}
    sd = models / "micro-sd"
    (sd / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    grid(shown["guided"][:32], 8).save(sd / "samples.png", optimize=True)
    pairs = [img for m, g in zip(shown["masks"][:16], shown["controlled"][:16]) for img in (mask_image(m), g)]
    grid(pairs, 8).save(models / "micro-controlnet" / "samples.png", optimize=True)
    (sd / "prompts.txt").write_text("\n".join(shown["prompts"][:32]) + "\n")
    # 32 paraphrased prompts spread evenly over the set (it is written template by template).
    picked = np.linspace(0, len(shown["paraphrased"]) - 1, min(32, len(shown["paraphrased"]))).astype(int)
    grid([shown["paraphrased"][i] for i in picked], 8).save(sd / "samples_paraphrases.png", optimize=True)
    (sd / "prompts_paraphrases.txt").write_text("\n".join(shown["paraphrase_prompts"][i] for i in picked) + "\n")
    training = json.loads((sd / "training.json").read_text()) if (sd / "training.json").is_file() else None
    (sd / "README.md").write_text(model_card(models, training, result))
    print(json.dumps({"targets": result["targets"], "fid": result["fid"], "speed": result["speed"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
