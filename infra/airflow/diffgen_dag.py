"""Airflow DAG: validate a diffgen job, submit it to a Ray cluster and wait for it.

Copy this file into the DAGs folder. The tasks run the `diffgen` CLI, so the Airflow workers need
diffgen installed (`pip install .` plus `ray[default]` of the pinned version, as infra/Dockerfile
does), or swap BashOperator for a KubernetesPodOperator running the diffgen image with the same
commands. Credentials come from the workers' environment, never from this file: AWS_* for the
manifest check, RAY_AUTH_MODE/RAY_AUTH_TOKEN for a cluster with token auth (KubeRay's authOptions).

1. validate: job spec, manifest, model folder and output, before any cluster time is spent
             (exit 2 on bad input). It reads the model's model_index.json, so the worker must see
             the model path of the job spec (mount the model store there, or run in a pod that does)
2. submit:   `diffgen submit --wait` sends the run to the cluster's Jobs API and returns its exit
             code (0 complete, 1 infrastructure, 2 invalid input, 3 partial)

A retry of `submit` re-runs on the same output, which skips what is already committed, so it only
redoes the failed or missing images. The job file, manifest and output are DAG params, overridable
per run ("Trigger DAG w/ config"); they reach the commands as environment variables, never pasted
into the shell text.

Without Airflow this module still imports and exposes the commands (`COMMANDS`), so CI checks them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:
    try:  # Airflow 2
        from airflow import DAG
        from airflow.operators.bash import BashOperator
    except ImportError:  # no Airflow at all
        DAG = BashOperator = None

# The head's dashboard: KubeRay names the service <cluster>-head-svc (infra/kuberay/raycluster.yaml).
RAY_ADDRESS = "http://diffgen-head-svc.ray.svc.cluster.local:8265"

PARAMS = {
    "job": "/opt/airflow/diffgen/nightly.yaml",
    "manifest": "s3://diffgen-data/manifests/nightly.parquet",
    "output": "s3://diffgen-data/datasets/nightly",
}

# Jinja-rendered by Airflow; each night writes to its own dated output.
ENV = {
    "DIFFGEN_JOB": "{{ params.job }}",
    "DIFFGEN_MANIFEST": "{{ params.manifest }}",
    "DIFFGEN_OUTPUT": "{{ params.output }}/{{ ds }}",
    "DIFFGEN_RAY_ADDRESS": RAY_ADDRESS,
}

# (task id, shell command), in the order they run.
COMMANDS: list[tuple[str, str]] = [
    ("validate", 'diffgen validate "$DIFFGEN_JOB" --manifest "$DIFFGEN_MANIFEST"'),
    (
        "submit",
        (
            'diffgen submit "$DIFFGEN_JOB" --address "$DIFFGEN_RAY_ADDRESS"'
            ' --manifest "$DIFFGEN_MANIFEST" --output "$DIFFGEN_OUTPUT" --wait'
        ),
    ),
]

dag = None
if DAG is not None:
    with DAG(
        dag_id="diffgen",
        description="Validate and run a diffgen job on a Ray cluster",
        schedule="0 2 * * *",
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,  # two runs at once would share the cluster and maybe the output
        params=PARAMS,
        default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
        tags=["diffgen"],
    ) as dag:
        tasks = [
            BashOperator(task_id=task_id, bash_command=command, env=ENV, append_env=True)
            for task_id, command in COMMANDS
        ]
        for upstream, downstream in pairwise(tasks):
            upstream >> downstream
