"""`python -m lab.make_tiny_model FOLDER [--controlnet CN_FOLDER]`: write the tiny random-weight Stable
Diffusion pipeline (and optionally a ControlNet that fits it) that the examples and tests load from
disk; nothing is downloaded. An existing pipeline folder is kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab.builders.tiny import build_tiny_controlnet, build_tiny_sd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.make_tiny_model", description=__doc__)
    parser.add_argument("folder")
    parser.add_argument("--controlnet", help="also write a tiny ControlNet for it here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (Path(args.folder) / "model_index.json").is_file():
        build_tiny_sd(args.folder, seed=args.seed)
    print(args.folder)
    if args.controlnet:
        print(build_tiny_controlnet(args.folder, args.controlnet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
