"""`python -m lab.make_real_size_model {sd15,sdxl} FOLDER [--device cuda] [--clip-bpe FILE]`: write a
Stable Diffusion 1.5 or SDXL base pipeline with the published architecture and random weights
(see `lab.builders.real_size`), for measuring throughput without downloading a checkpoint. Nothing is
downloaded; an existing pipeline folder is kept. Sizes on disk in fp16: SD 1.5 ~2.1 GB, SDXL ~6.9 GB.
Initialising on the CPU takes minutes and ~4x the fp16 size in memory; --device cuda takes seconds."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from diffgen.generation.loading import DTYPES
from lab.builders.real_size import ARCHITECTURES, build_real_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.make_real_size_model", description=__doc__)
    parser.add_argument("architecture", choices=sorted(ARCHITECTURES))
    parser.add_argument("folder")
    parser.add_argument("--device", default="cpu", help="where to initialise the weights: cpu (default) or cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="stored weight type (default fp16)")
    parser.add_argument(
        "--clip-bpe",
        help="CLIP's bpe_simple_vocab_16e6.txt.gz for the real tokenizer; without it a stand-in with CLIP's "
        "49,408 ids and special tokens is written",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    folder = Path(args.folder)
    if (folder / "model_index.json").is_file():
        logging.info("%s already holds a pipeline; kept", folder)
    else:
        build_real_size(
            args.architecture, folder, seed=args.seed, device=args.device, dtype=DTYPES[args.dtype], bpe=args.clip_bpe
        )
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
