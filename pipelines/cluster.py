"""Joining a Ray cluster: the one named by RAY_ADDRESS (Ray's own convention), else a local one."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def connect() -> None:
    """Reuse the connected cluster, join RAY_ADDRESS's, or start a local one on loopback."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    # A laptop/CI run: no token file under $HOME, no dashboard, nothing bound beyond loopback.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)
    log.info("started a local Ray cluster with %s", ray.cluster_resources())
