"""Run by test_node_loss.py in its own process (one Ray per process): a simulated 3-node cluster with
fake GPUs, one GPU node removed mid-run and a replacement added, as an autoscaler would."""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from diffgen.dataset.index import read_index
from diffgen.pipelines.generate import run
from diffgen.schemas.job import load_job_spec


def main(job: str, out: str) -> None:
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "_system_config": {"health_check_period_ms": 500,
                                                          "health_check_failure_threshold": 3}},
    )  # fmt: skip
    workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address)
    removed = {}

    def kill_one_node():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(Path(out, "index").glob("*.parquet")):
            time.sleep(0.2)
        removed["rows_before"] = read_index(out).num_rows if read_index(out) is not None else 0
        cluster.remove_node(workers[0], allow_graceful=False)
        cluster.add_node(num_cpus=1, num_gpus=1)

    threading.Thread(target=kill_one_node, daemon=True).start()
    summary = run(load_job_spec(job))
    index = read_index(out)
    print("RESULT " + json.dumps({"counts": summary.counts.model_dump(), "rows": index.num_rows,
                      "unique": len(set(index.column("record_id").to_pylist())), **removed}))  # fmt: skip
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
