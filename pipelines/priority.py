"""CPU priority of the actors around generation.

Ray starts every worker process, generation actors included, at niceness 15, below its own
processes and the driver. QC and writer actors raise theirs further (`compute.helper_niceness`,
19 by default): where a node's cores are all busy, the generators get them first, and the
helpers, which need a few percent of generation's CPU, take what is left.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def lower_cpu_priority(niceness: int | None) -> int | None:
    """Raise this process's niceness to `niceness` (never lower it: that needs privileges); the niceness
    it runs at, or None where the platform has none (or `niceness` is None)."""
    if niceness is None or not hasattr(os, "nice"):
        return None
    current = os.nice(0)
    if niceness > current:
        current = os.nice(niceness - current)
    elif niceness < current:
        log.info("helper_niceness %d is below this process's %d; keeping %d", niceness, current, current)
    return current
