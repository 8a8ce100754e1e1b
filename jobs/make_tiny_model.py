"""`python -m jobs.make_tiny_model FOLDER`: write the tiny random-weight Stable Diffusion pipeline
that the example job and the tests load from disk (nothing is downloaded)."""

from __future__ import annotations

import argparse
import sys

from diffgen.tiny_models import build_tiny_sd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_tiny_model", description=__doc__)
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_sd(args.folder, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
