"""The Python API and the pre-flight commands (`validate`, `run --dry-run`)."""

import json
import logging

import pytest

from diffgen.jobs import api
from diffgen.jobs.cli import main
from tests.conftest import write_job, write_manifest


@pytest.fixture
def job(tmp_path, tiny_sd):
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"id": f"r{i}", "prompt": "p", "num_images": 3} for i in range(3)]
    )
    return write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(tmp_path / "out" / "run"))


def test_validate_and_dry_run_print_the_plan_and_write_nothing(job, tmp_path, capsys):
    for argv in (["validate", str(job)], ["run", str(job), "--dry-run"]):
        assert main(argv) == api.EXIT_OK
        described = json.loads(capsys.readouterr().out)
        assert described["images_expected"] == 9 and described["batches"] == 5  # batch_size 2
        assert described["images_to_generate"] == 9 and described["actors"] == 1
        estimate = described["estimate"]  # tiny-sd at 32x32, 4 steps, guidance on: in diffgen/throughput.yaml
        assert estimate["available"] and estimate["images_estimated"] == 9 and estimate["wall_time_s"] > 0
    assert not (tmp_path / "out").exists()


def test_an_unmeasured_kind_of_image_gets_no_estimate_until_calibrated(job, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="diffgen")
    argv = ["validate", str(job), "--set", "sampler.width=48"]
    assert main(argv) == api.EXIT_OK
    estimate = json.loads(capsys.readouterr().out)["estimate"]
    assert not estimate["available"] and estimate["message"] == (
        "no estimate: no throughput measured for model=tiny-sd family=sd device=cpu size=48x32 steps=4 cfg=on "
        "controlnets=0; run with --calibrate"
    )
    assert "estimate: no estimate" in caplog.text
    assert main(["run", str(job), "--dry-run", "--set", "sampler.width=48", "--calibrate"]) == api.EXIT_OK
    estimate = json.loads(capsys.readouterr().out)["estimate"]
    assert estimate["available"] and estimate["images_estimated"] == 9
    assert estimate["calibration"]["width"] == 48 and estimate["calibration"]["seconds_per_image"] > 0
    assert main(["run", str(job), "--calibrate"]) == api.EXIT_INVALID  # calibration goes with a dry run
    assert not (tmp_path / "out").exists()


def test_validate_fails_with_the_input_exit_code(job, capsys):
    assert main(["validate", str(job), "--set", "sampler.steps=0"]) == api.EXIT_INVALID
    assert main(["validate", str(job), "--manifest", "/no/such/manifest.parquet"]) == api.EXIT_INVALID


def test_api_raises_typed_errors(job):
    with pytest.raises(api.InvalidInputError, match="sampler.steps"):
        api.run(job, overrides=["sampler.steps=0"])
    with pytest.raises(api.InvalidInputError, match="cannot read the manifest"):
        api.plan(job, manifest="/no/such/manifest.parquet")


def test_api_run_returns_the_counts_of_run_json(ray_cluster, job, tmp_path):
    result = api.run(job, overrides=["sampler.steps=2"])
    assert result.exit_code == api.EXIT_OK and result.status == "complete"
    on_disk = json.loads((tmp_path / "out" / "run" / "run.json").read_text())
    assert on_disk["counts"] == result.counts.model_dump() and result.counts.images_written == 9


def test_verify_command_reports_a_flipped_byte(tmp_path, capsys):
    import numpy as np

    from diffgen.provenance import watermark
    from diffgen.provenance.png import encode_png
    from diffgen.provenance.record import png_text_chunks
    from tests.diffgen.provenance.sample_record import sample_record

    record = sample_record()
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    marked = watermark.embed(pixels, bytes.fromhex(record.watermark_payload))
    good = tmp_path / "good.png"
    good.write_bytes(encode_png(marked, png_text_chunks(record)))
    assert main(["verify", str(good)]) == api.EXIT_OK
    assert "OK" in capsys.readouterr().out
    data = bytearray(good.read_bytes())
    data[-200] ^= 0xFF
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    assert main(["verify", str(good), str(bad)]) == api.EXIT_FAILED


@pytest.mark.parametrize(
    "status,lost,require_full,code",
    [
        ("complete", 0, False, api.EXIT_OK),
        ("complete", 0, True, api.EXIT_OK),
        ("partial", 1, False, api.EXIT_OK),  # within max_lost_fraction after replacement: met its policy
        ("partial", 1, True, api.EXIT_PARTIAL),  # require_full / --strict
        ("failed", 9, False, api.EXIT_FAILED),
        ("failed", 9, True, api.EXIT_FAILED),
    ],
)
def test_exit_code_follows_the_run_summary(status, lost, require_full, code):
    """One rule from run.json's summary to the exit code (the replacement tests check it on real runs)."""
    from datetime import UTC, datetime

    from diffgen.schemas.run import RunCounts, RunSummary

    counts = RunCounts(manifest_rows=10, invalid_rows=0, images_expected=10, images_written=10 - lost, rejected=lost,
                       failed=0, unfilled={"clip_score": lost} if lost else {})  # fmt: skip
    met = status == "complete" or (status == "partial" and not require_full)
    now = datetime.now(UTC)
    summary = RunSummary(run_id="r", status=status, met_policy=met, manifest="m", output="o", job={},
                         counts=counts, started_at=now, finished_at=now, wall_time_s=1.0, images_per_second=1.0,
                         versions={})  # fmt: skip
    assert api.exit_code_of(summary) == code
