"""`python -m diffgen.jobs.generate JOB.yaml [--manifest URI] [--output URI] [--set k=v]`: the entry point
for `ray job submit` and orchestrators; the same as `diffgen run`."""

from __future__ import annotations

import argparse
import sys

from diffgen.jobs.cli import add_log_level_arguments, add_run_arguments, configure_logging, run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffgen.jobs.generate", description=__doc__)
    add_run_arguments(parser)
    add_log_level_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.log_level)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
