"""Whether the cluster can hold the run's actors, checked before any is requested.

Ray keeps an actor that no node can hold pending forever, and Ray Data waits on it without an
error: a GPU job on a CPU-only cluster, or `cpus_per_actor: 3` on a 2-core node, would hang. The
pre-flight packs the run's actors (generation, QC, writers) onto the nodes it can see (this
machine, for a run that will start a local cluster) and refuses a job that cannot fit; a run on
a remote cluster asks Ray's autoscaler for the bundles and waits at most
`compute.resource_wait_s` for nodes that can hold them, then fails naming what is missing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import ray

from diffgen.pipelines.write import WRITER_CPUS, writer_count
from diffgen.schemas.job import JobSpec

log = logging.getLogger(__name__)

POLL_S = 2.0


class ClusterTooSmallError(RuntimeError):
    """No placement of the run's actors fits the cluster's nodes; the message says which actor and why."""


@dataclass(frozen=True)
class Demand:
    role: str
    resources: dict[str, float]
    count: int


def demands(spec: JobSpec) -> list[Demand]:
    """The actors a run starts and what each reserves in Ray (zero-resource actors fit anywhere)."""
    compute = spec.compute
    generation = {"CPU": compute.cpus_per_actor, "GPU": compute.gpus_per_actor}
    found = [Demand("generation actor", generation, compute.num_actors)]
    if spec.qc.enabled and compute.gpus_per_actor > 0:
        found.append(Demand("QC actor", {"GPU": 0.25}, 1))
    found.append(Demand("writer actor", {"CPU": WRITER_CPUS}, writer_count(compute)))
    return [Demand(d.role, {k: v for k, v in d.resources.items() if v > 0}, d.count) for d in found]


def shortfall(wanted: list[Demand], nodes: list[dict[str, float]]) -> str | None:
    """Why `wanted` cannot be placed on `nodes` (first fit, largest demands first), or None when it can."""
    free = [dict(n) for n in nodes]
    order = sorted(wanted, key=lambda d: (d.resources.get("GPU", 0), d.resources.get("CPU", 0)), reverse=True)
    for demand in order:
        for k in range(demand.count):
            node = next((n for n in free if all(n.get(r, 0) + 1e-9 >= v for r, v in demand.resources.items())), None)
            if node is None:
                need = ", ".join(f"{r} {v:g}" for r, v in sorted(demand.resources.items()))
                have = "; ".join(_describe(n) for n in nodes) or "no nodes"
                return (f"compute: the cluster cannot hold {demand.role} {k + 1} of {demand.count} "
                        f"(each needs {need}); its nodes have {have}")  # fmt: skip
            for r, v in demand.resources.items():
                node[r] -= v
    return None


def _describe(node: dict[str, float]) -> str:
    return ", ".join(f"{r} {node.get(r, 0):g}" for r in ("CPU", "GPU"))


def local_node() -> dict[str, float]:
    """What a local Ray cluster started on this machine would have."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def cluster_nodes() -> list[dict[str, float]]:
    """The total resources of every live node of the connected cluster."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def visible_nodes() -> list[dict[str, float]] | None:
    """The nodes a run would use, as far as the pre-flight can see without joining a cluster: the
    connected cluster's, or this machine for a run that starts a local one; None for a remote one."""
    if ray.is_initialized():
        return cluster_nodes()
    if os.environ.get("RAY_ADDRESS"):
        return None
    return [local_node()]


def wait_for_resources(spec: JobSpec, timeout_s: float) -> None:
    """Return once the connected cluster can hold the run's actors; `ClusterTooSmallError` after `timeout_s`."""
    wanted = demands(spec)
    why = shortfall(wanted, cluster_nodes())
    if why is None:
        return
    bundles = [d.resources for d in wanted for _ in range(d.count) if d.resources]
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)  # an autoscaling cluster adds nodes for them; others ignore it
    except Exception as e:  # noqa: BLE001 - a cluster without an autoscaler
        log.debug("no autoscaler to ask for %s: %s", bundles, e)
    log.warning("%s; waiting up to %g s for nodes (compute.resource_wait_s)", why, timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        why = shortfall(wanted, cluster_nodes())
        if why is None:
            return
    raise ClusterTooSmallError(f"{why}; waited {timeout_s:g} s (compute.resource_wait_s) for nodes that fit")
