"""`diffgen submit` against a real Ray head with its dashboard (the Job API) on loopback."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from diffgen.dataset import storage
from diffgen.jobs import api, submit
from diffgen.jobs.cli import main
from diffgen.schemas.job import load_job_spec
from tests.conftest import write_job, write_manifest

REPO = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _session_pids(sid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getsid(int(name)) == sid:
                    found.append(int(name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` in its own session, temp dir and ports, so it never meets the session's
    local Ray; teardown kills exactly that session's processes. Yields the Job API address."""
    temp_dir = tempfile.mkdtemp(prefix="dg-head-", dir="/tmp")  # short: Ray's socket paths have a length limit
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics = _free_ports(7)
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        # Single-node mode: the node advertises 127.0.0.1 instead of the machine's external address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # the jobs' `python`
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        f"{venv_bin}/ray", "start", "--head", "--block", "--disable-usage-stats", "--num-cpus", "2",
        "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
        "--temp-dir", temp_dir, "--port", str(gcs), "--dashboard-port", str(dashboard),
        "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
        "--metrics-export-port", str(metrics),
    ]  # fmt: skip
    log_path = Path(temp_dir) / "head.log"
    with log_path.open("wb") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield address
    finally:
        for pid in _session_pids(head.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "diffgen.jobs.cli", "submit", *args], check=False, capture_output=True, text=True, env=env, cwd=REPO,
        timeout=300,
    )  # fmt: skip


@pytest.mark.slow  # a Ray job: driver start-up, imports and actors on the 2 cores
def test_submit_wait_runs_the_job_on_the_cluster_and_returns_its_exit_code(ray_head, tmp_path, tiny_sd):
    write_manifest(
        tmp_path / "m.parquet", [{"id": f"row-{i}", "prompt": f"prompt {i}", "split": "val"} for i in range(2)]
    )
    # Relative paths in the YAML resolve against its folder here; the cluster gets them resolved.
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest="m.parquet", output="out")
    result = _submit(str(job), "--address", ray_head, "--set", "sampler.steps=2", "--wait")
    assert result.returncode == api.EXIT_OK, result.stdout[-3000:] + result.stderr[-3000:]
    job_id = result.stdout.splitlines()[0]
    assert job_id.startswith("raysubmit_")
    out = tmp_path / "out"
    summary = json.loads((out / "run.json").read_text())
    assert summary["status"] == "complete" and summary["job"]["sampler"]["steps"] == 2
    assert summary["manifest"] == str(tmp_path / "m.parquet")  # not the copy inside Ray's package
    assert summary["counts"]["images_written"] == 2 and f'"run_id": "{summary["run_id"]}"' in result.stdout
    index = storage.read_parquet_folder(str(out / "index"))
    assert index.num_rows == 2 and set(index.column("split").to_pylist()) == {"val"}
    assert len(list((out / "images").rglob("*.png"))) == 2


@pytest.mark.slow  # a Ray job: driver start-up, imports and actors on the 2 cores
def test_invalid_manifest_exits_2_through_the_cluster_and_an_id_runs_once(ray_head, tmp_path, tiny_sd):
    from ray.job_submission import JobSubmissionClient

    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "ok"}, {"id": "a", "prompt": "x"}])
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(tmp_path / "out"))
    sid = f"diffgen-test-{os.getpid()}"
    started = time.monotonic()
    queued = _submit(str(job), "--address", ray_head, "--submission-id", sid)
    assert queued.returncode == api.EXIT_OK, queued.stderr[-3000:]
    assert queued.stdout.strip() == sid and time.monotonic() - started < 60
    client = JobSubmissionClient(ray_head)
    jobs_before = len(client.list_jobs())
    # The same submission again (an orchestrator's retry): follows the first run, starts none.
    again = _submit(str(job), "--address", ray_head, "--submission-id", sid, "--wait")
    assert again.returncode == api.EXIT_INVALID, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already submitted" in again.stderr
    assert "row(s) invalid" in again.stdout and "duplicate" in again.stdout
    assert len(client.list_jobs()) == jobs_before and client.get_job_info(sid).driver_exit_code == api.EXIT_INVALID
    other = _submit(str(job), "--address", ray_head, "--submission-id", sid, "--set", "sampler.steps=3")
    assert other.returncode == api.EXIT_INVALID and "already names a different job" in other.stderr
    assert len(client.list_jobs()) == jobs_before
    assert not (tmp_path / "out").exists()


def test_a_bad_job_spec_fails_here_before_the_cluster_is_contacted(tmp_path, tiny_sd, caplog):
    write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "p"}])
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest="m.parquet", output=str(tmp_path / "o"))
    (dead_port,) = _free_ports(1)
    started = time.monotonic()
    argv = ["submit", str(job), "--address", f"http://127.0.0.1:{dead_port}", "--wait"]
    assert main([*argv, "--set", "sampler.scheduler=heun"]) == api.EXIT_INVALID
    assert time.monotonic() - started < 10 and "sampler.scheduler" in caplog.text
    assert main(argv) == api.EXIT_INFRA  # a good spec gets as far as the address
    assert "cannot reach the Ray job server" in caplog.text


def test_the_staged_job_is_the_validated_one(tmp_path, tiny_sd):
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "p"}])
    job = write_job(tmp_path / "nightly.yaml", tiny_sd, manifest="m.parquet", output="out")
    job.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(job.read_text()).items() if k != "run_id"}))
    expected = load_job_spec(job, overrides=["sampler.steps=9"])
    with submit.staged(submit.prepare(job, overrides=["sampler.steps=9"])) as prepared:
        staged = prepared.staging
        assert sorted(p.name for p in (staged / "job").iterdir()) == ["m.parquet", "nightly.yaml"]
        assert prepared.entrypoint == (
            f"python -m diffgen.jobs.generate nightly.yaml --manifest m.parquet --output {tmp_path / 'out'}"
        )
        assert yaml.safe_load((staged / "job" / "nightly.yaml").read_text())["run_id"] == "nightly"
        cwd = os.getcwd()
        os.chdir(staged / "job")  # as the cluster resolves it: the working_dir is the staging folder
        try:
            again = load_job_spec("nightly.yaml", manifest="m.parquet", output=str(tmp_path / "out"))
        finally:
            os.chdir(cwd)
        # The cluster reads the shipped copy; run.json and provenance name the manifest as submitted.
        assert again.manifest_source == str(manifest)
        assert again.model_copy(update={"manifest": str(manifest), "manifest_source": None}) == expected
        (code,) = prepared.runtime_env["py_modules"]
        assert Path(code).name == "diffgen" and (Path(code) / "generation" / "loading.py").is_file()
        assert {p.name for p in Path(code).iterdir()} >= {"schemas", "pipelines", "jobs", "dataset", "__init__.py"}
        assert not (Path(code) / "lab").exists() and not any(Path(code).rglob("__pycache__"))
    assert not staged.exists()


def test_image_mode_passes_the_command_line_through(tmp_path, tiny_sd):
    job = write_job(tmp_path / "job.yaml", tiny_sd)
    prepared = submit.prepare(
        job, manifest="s3://b/m.parquet", output="s3://b/out", overrides=["seed=3"], image="reg/diffgen:0.1.0"
    )
    assert prepared.runtime_env == {"image_uri": "reg/diffgen:0.1.0"} and prepared.staging is None
    assert prepared.entrypoint == (
        f"python -m diffgen.jobs.generate {job} --manifest s3://b/m.parquet --output s3://b/out --set seed=3"
    )
    assert prepared.metadata["diffgen_output"] == "s3://b/out"
    with pytest.raises(api.InvalidInputError, match="seed"):
        submit.prepare(job, manifest="s3://b/m.parquet", output="s3://b/out", overrides=["seed=-1"], image="x")


def test_a_manifest_with_relative_image_paths_is_not_uploaded_alone(tmp_path, tiny_sd):
    write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "p", "init_image": "images/a.png"}])
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest="m.parquet", output="out")
    with pytest.raises(api.InvalidInputError, match="init_image names 'images/a.png'"):
        submit.prepare(job)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("SUCCEEDED", 0, 0),
        ("FAILED", 1, 1),
        ("FAILED", 2, 2),
        ("FAILED", 3, 3),
        ("FAILED", 4, 4),
        ("FAILED", None, 1),
        ("FAILED", -9, 1),
        ("STOPPED", None, 1),
    ],
)
def test_exit_code_is_the_entrypoints(status, code, expected):
    from ray.job_submission import JobDetails, JobStatus

    info = JobDetails(type="SUBMISSION", job_id="j", submission_id="s", entrypoint="e", status=JobStatus(status),
                      driver_exit_code=code)  # fmt: skip
    assert submit.exit_code(info) == expected
