"""Airflow DAG: validate a diffgen job, submit it to a Ray cluster and wait for it.

Copy this file into the DAGs folder. The tasks run the `diffgen` CLI, so the Airflow workers need
diffgen installed (`pip install .` plus `ray[default]` of the pinned version, as infra/Dockerfile
does), or swap the operator for a KubernetesPodOperator running the diffgen image with the same
commands and the same handling of their exit codes. Credentials come from the workers' environment,
never from this file: AWS_* for the manifest check, RAY_AUTH_MODE/RAY_AUTH_TOKEN for a cluster with
token auth (KubeRay's authOptions).

1. validate: job spec, manifest, model folder and output, before any cluster time is spent
             (exit 2 on bad input). It reads the model's model_index.json, so the worker must see
             the model path of the job spec (mount the model store there, or run in a pod that does)
2. submit:   `diffgen submit --wait` sends the run to the cluster's Jobs API and exits with the
             run's own code

Each step's exit code (jobs/cli.py) decides whether Airflow may retry it, which BashOperator cannot
express, so a PythonOperator runs the command (`run_step`) and raises accordingly:

  0    the run met its policy (complete, or partial within policy.max_lost_fraction)  success
  1    infrastructure: cluster, storage, model runtime                                AirflowException: retried
  2    invalid input: job spec, manifest, model folder, output                        AirflowFailException: no retry
  3    partial under policy.require_full (--strict)                                   AirflowFailException: no retry
  4    failed: lost more images than policy.max_lost_fraction allows                  AirflowFailException: no retry
  else not diffgen's (a signal, the OOM killer)                                       AirflowException: retried

A retry could not change 2, 3 or 4: the input is the same, and a re-run into the same output resumes,
so the slots already settled (written, or out of attempts) are not made again and it ends as before.
After a 1 it redoes only what the failed attempt left unsettled. The job file, manifest and output are
DAG params, overridable per run ("Trigger DAG w/ config"); they reach the commands as environment
variables, never pasted into the shell text.

Without Airflow this module still imports and exposes the commands (`COMMANDS`) and `run_step`, which
then raises stand-ins for Airflow's two exceptions, so CI checks them.
"""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import UTC, datetime, timedelta
from itertools import pairwise

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
except ImportError:
    try:  # Airflow 2
        from airflow import DAG
        from airflow.operators.python import PythonOperator
    except ImportError:  # no Airflow at all
        DAG = PythonOperator = None

try:  # the same classes in Airflow 2 and 3
    from airflow.exceptions import AirflowException, AirflowFailException
except ImportError:

    class AirflowException(RuntimeError):
        """Stands in for Airflow's: the task fails and is retried."""

    class AirflowFailException(AirflowException):
        """Stands in for Airflow's: the task fails without a retry."""


log = logging.getLogger(__name__)

# The head's dashboard: KubeRay names the service <cluster>-head-svc (infra/kuberay/raycluster.yaml).
RAY_ADDRESS = "http://diffgen-head-svc.ray.svc.cluster.local:8265"

PARAMS = {
    "job": "/opt/airflow/diffgen/nightly.yaml",
    "manifest": "s3://diffgen-data/manifests/nightly.parquet",
    "output": "s3://diffgen-data/datasets/nightly",
}

# Jinja-rendered by Airflow (op_kwargs is a templated field); each night writes to its own dated output.
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

# diffgen's exit codes (jobs/cli.py); a retry gives the same result for the FINAL ones.
EXIT_MEANINGS = {
    0: "the run met its policy",
    1: "infrastructure failure (cluster, storage or model runtime)",
    2: "invalid input: the job spec, manifest, model folder or output was rejected",
    3: "partial: slots were left without an image under policy.require_full (--strict)",
    4: "failed: the run lost more images than policy.max_lost_fraction allows",
}
FINAL = frozenset({2, 3, 4})


def failure(step: str, code: int) -> AirflowException | None:
    """The exception a step that exited with `code` raises; None for 0. 2, 3 and 4 fail the task for
    good; 1 and anything that is not diffgen's (a negative code is the signal that killed the shell)
    may be transient, so Airflow retries them."""
    if code == 0:
        return None
    if code in EXIT_MEANINGS:
        meaning = EXIT_MEANINGS[code]
    elif code < 0:
        meaning = f"killed by signal {-code}"
    else:
        meaning = "not a diffgen exit code (killed by a signal or the OOM killer?)"
    if code in FINAL:
        return AirflowFailException(f"{step} exited {code}, {meaning}; not retried: a retry ends the same way")
    return AirflowException(f"{step} exited {code}, {meaning}; Airflow may retry it")


def run_step(step: str, command: str, env: dict[str, str]) -> None:
    """Run a step's shell command with `env` added to the worker's environment, its output in the task
    log; raise what `failure` gives for its exit code."""
    with subprocess.Popen(
        ["bash", "-c", command], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace",
    ) as process:  # fmt: skip
        for line in process.stdout:
            log.info("%s", line.rstrip("\n"))
    error = failure(step, process.returncode)
    if error is not None:
        raise error


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
        default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},  # taken only after an exit 1
        tags=["diffgen"],
    ) as dag:
        tasks = [
            PythonOperator(
                task_id=task_id,
                python_callable=run_step,
                op_kwargs={"step": task_id, "command": command, "env": ENV},
            )
            for task_id, command in COMMANDS
        ]
        for upstream, downstream in pairwise(tasks):
            upstream >> downstream
