"""A second live run into the same output is refused naming the holder; validate shows it; a finished run
leaves no lease behind."""

import pytest

from diffgen.dataset.lease import acquire_lease
from diffgen.jobs.api import EXIT_INFRA, InfrastructureError, plan, run
from tests.conftest import write_job, write_manifest


def test_a_live_lease_refuses_a_second_run_and_validate_names_it(ray_cluster, tmp_path, tiny_sd):
    manifest = write_manifest(tmp_path / "m.parquet", [{"id": "a", "prompt": "a cat"}])
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=str(out))
    other = acquire_lease(str(out), "nightly-7", heartbeat_s=0.5, stale_s=30)
    try:
        described = plan(job)
        assert described["leased_by"].startswith("run 'nightly-7' (host ")
        with pytest.raises(InfrastructureError) as err:
            run(job)
        assert err.value.exit_code == EXIT_INFRA
        assert f"output {out} is in use by run 'nightly-7'" in str(err.value)
        assert not (out / "run.json").exists() and not (out / "index").exists()
    finally:
        other.release()
    assert plan(job)["leased_by"] is None
    assert run(job).status == "complete"
    assert not list(out.glob(".diffgen-lease-*"))  # released at the end
