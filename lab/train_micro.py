"""Train the micro model family from scratch: `python -m lab.train_micro [--out models]`.

Resumable: run it again after an interruption and every component continues from its last
checkpoint under --work; finished components are kept. `--scale 0.01` trains 1 % of the steps (a
smoke run). The family lands in --out as micro-sd/, micro-controlnet/, micro-clip/ and micro-judge/,
and what training measured in --out/micro-sd/training.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from lab.micro.train import COMPONENTS, TrainConfig, train_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.train_micro", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="models", help="where the trained family is written (default: models)")
    parser.add_argument("--work", default="out/micro-train", help="checkpoints and the latent cache")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every component's steps by this")
    parser.add_argument("--steps", nargs="+", default=[], metavar="NAME=N", help="set a component's steps")
    parser.add_argument("--only", nargs="+", choices=COMPONENTS, default=list(COMPONENTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads on the CPU (default: every core; 1 on a machine busy with other work, "
                             "where threads spinning at OpenMP barriers cost ten times the work itself)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    base = TrainConfig(seed=args.seed, device=args.device)
    steps = {k: max(1, round(v * args.scale)) for k, v in base.steps.items()}
    for item in args.steps:
        name, _, value = item.partition("=")
        if name not in steps or not value.isdigit():
            parser.error(f"--steps {item}: expected NAME=N with NAME one of {', '.join(steps)}")
        steps[name] = int(value)
    config = replace(base, steps=steps)
    started = time.monotonic()
    report = train_all(config, Path(args.work), Path(args.out), only=tuple(args.only))
    summary = {
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        },  # fmt: skip
        "config": asdict(config),
        "components": report,
        "total_training_seconds": round(sum((r or {}).get("seconds", 0.0) for r in report.values()), 1),
        "this_call_wall_seconds": round(time.monotonic() - started, 1),
    }
    path = Path(args.out) / "micro-sd" / "training.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("components", "total_training_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
