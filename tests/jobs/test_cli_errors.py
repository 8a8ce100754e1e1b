"""Bad input and broken infrastructure give one clear line and the right exit code, never a traceback.

Exit 2 means retrying cannot help (the input is wrong); exit 1 means the infrastructure failed.
"""

import logging
import os
import socket
import subprocess
import sys

import pytest

from diffgen.jobs.api import EXIT_INFRA, EXIT_INVALID, EXIT_OK
from tests.conftest import REPO, write_job, write_manifest


def _diffgen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real command in its own process: what an orchestrator sees on stderr."""
    return subprocess.run(
        [sys.executable, "-m", "diffgen.jobs.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO, timeout=300,
    )  # fmt: skip


@pytest.fixture
def cli(caplog):
    """`cli(*args)`: the same `diffgen` command in this process (seconds faster), its log records as stderr lines."""
    from diffgen.jobs.cli import main

    def call(*args: str) -> subprocess.CompletedProcess:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            code = main(list(args))
        stderr = "\n".join(f"- {r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records)
        return subprocess.CompletedProcess(list(args), code, "", stderr)

    return call


def _one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    """One error logged, no traceback; the message (with the lines that list its problems) says `expected`."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if " ERROR " in line]
    assert len(errors) == 1, result.stderr[-3000:]
    message = "\n".join(lines[errors[0]:])
    for text in expected:
        assert text in message, message


@pytest.fixture
def job(tmp_path, tiny_sd):
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    return write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest))


def test_a_binary_job_file(tmp_path):
    (tmp_path / "job.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    result = _diffgen("validate", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "job.yaml: not a YAML job spec (not UTF-8 text")


def test_an_output_of_an_unknown_protocol(job, cli):
    result = cli("validate", str(job), "--output", "foo://x/out")
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "foo://x/out: unknown protocol 'foo://'")


def test_an_output_under_proc(job, cli):
    result = cli("validate", str(job), "--output", "/proc/diffgen-out")
    assert result.returncode == EXIT_INFRA
    _one_clear_line(result, "output /proc/diffgen-out is not writable")


def test_an_unreachable_ftp_input_image(tmp_path, tiny_sd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat",
                                                        "init_image": f"ftp://127.0.0.1:{port}/a.png"}])  # fmt: skip
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest))
    result = _diffgen("validate", str(job), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INFRA
    _one_clear_line(result, f"input images: cannot reach ftp://127.0.0.1:{port}/a.png", "ConnectionRefusedError")


def test_a_fifo_input_image_and_one_too_large_are_named_in_the_preflight(tmp_path, tiny_sd, cli):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "big.png").write_bytes(b"\0" * 2048)
    rows = [{"id": "a", "prompt": "a cat", "init_image": str(tmp_path / "pipe.png")},
            {"id": "b", "prompt": "a dog", "init_image": str(tmp_path / "big.png")}]  # fmt: skip
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(write_manifest(tmp_path / "m.parquet", rows)),
                    policy={"max_input_bytes": 1024})  # fmt: skip
    result = cli("validate", str(job), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "2 of 2 input image(s) cannot be used", "pipe.png (row id='a'): not a regular file",
                    "big.png (row id='b'): 2048 bytes is above policy.max_input_bytes=1024")  # fmt: skip


def test_inputs_outside_the_input_roots_are_refused_by_name(tmp_path, tiny_sd, cli):
    (tmp_path / "inputs").mkdir()
    rows = [{"id": "a", "prompt": "a cat", "init_image": "/etc/passwd"},
            {"id": "b", "prompt": "a dog", "init_image": str(tmp_path / "inputs" / ".." / "m.parquet")}]  # fmt: skip
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(write_manifest(tmp_path / "m.parquet", rows)),
                    policy={"input_roots": ["inputs"]})  # fmt: skip
    result = cli("validate", str(job), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "2 of 2 input image(s) lie outside policy.input_roots", "/etc/passwd (row id='a')")


def test_a_run_asking_for_more_than_max_images(tmp_path, tiny_sd, cli):
    rows = [{"id": f"r{i}", "prompt": "a cat", "num_images": 10_000} for i in range(100)]
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(write_manifest(tmp_path / "m.parquet", rows)),
                    policy={"max_images_per_row": 10_000, "max_images": 100_000})  # fmt: skip
    result = cli("validate", str(job), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "the manifest asks for 1000000 images, above policy.max_images=100000")


def test_a_nan_guidance_scale_is_named_as_not_a_number(tmp_path, tiny_sd, cli):
    rows = [{"id": "a", "prompt": "a cat", "guidance_scale": float("nan")}]
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(write_manifest(tmp_path / "m.parquet", rows)))
    result = cli("validate", str(job), "--output", str(tmp_path / "out"))
    assert result.returncode == EXIT_INVALID
    assert "row 0 (id='a'): guidance_scale: Input should be a finite number" in result.stderr
    assert "less than or equal to 100" not in result.stderr
    result = cli("validate", str(job), "--output", str(tmp_path / "out"), "--set", "sampler.guidance_scale=.nan")
    assert result.returncode == EXIT_INVALID
    _one_clear_line(result, "sampler.guidance_scale: Input should be a finite number")


def test_validate_still_passes_a_good_job(job, tmp_path, cli):
    assert cli("validate", str(job), "--output", str(tmp_path / "out")).returncode == EXIT_OK


def test_a_storage_failure_during_the_run_is_one_line_and_exit_1(ray_cluster, tmp_path, tiny_sd, caplog):
    """The output's images/ is a file: every write fails inside a writer actor; the run reports the
    original error in one line, not Ray's nested remote tracebacks."""
    import logging

    from diffgen.jobs.cli import main

    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest))
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").write_text("not a folder")
    with caplog.at_level(logging.ERROR, logger="diffgen"):
        assert main(["run", str(job), "--output", str(out)]) == EXIT_INFRA
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "diffgen"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(("NotADirectoryError: ", "FileExistsError: ")) and "images" in errors[0], errors[0]


def test_a_truncated_index_shard_is_named_and_quarantine_recovers(ray_cluster, tmp_path, tiny_sd, caplog):
    import logging

    from diffgen.jobs.cli import main

    rows = [{"id": f"r{i}", "prompt": "a cat", "seed": i} for i in range(3)]
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(write_manifest(tmp_path / "m.parquet", rows)),
                    output=str(tmp_path / "out"))  # fmt: skip
    assert main(["run", str(job)]) == EXIT_OK
    shard = next((tmp_path / "out" / "index").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level(logging.ERROR):
        assert main(["run", str(job)]) == EXIT_INVALID
        assert main(["validate", str(job)]) == EXIT_INVALID
    assert f"{shard} (" in caplog.text and "--quarantine-corrupt-index" in caplog.text
    assert main(["run", str(job), "--quarantine-corrupt-index"]) == EXIT_OK
    assert (tmp_path / "out" / "quarantine" / "index" / shard.name).exists()
    from diffgen.dataset.index import read_index

    index = read_index(str(tmp_path / "out"))
    assert sorted(index.column("id").to_pylist()) == ["r0", "r1", "r2"]
    assert set(index.column("status").to_pylist()) == {"written"}
