"""What determines an image: the scheduler's options are part of a record's fingerprint when set."""

import pyarrow as pa

from diffgen.dataset.fingerprint import fingerprinted, job_inputs
from diffgen.dataset.records import expand
from diffgen.schemas.job import JobSpec


def _fingerprints(model, textual_inversions: list | None = None, **sampler) -> list[str]:
    spec = JobSpec.model_validate({"model": {"id": str(model)}, "sampler": {"scheduler": "euler", **sampler},
                                   "textual_inversions": textual_inversions or []})  # fmt: skip
    records = expand(pa.table({"id": ["a", "b"], "prompt": ["a cat", "a dog"]}), spec)
    return fingerprinted(records, spec).column("fingerprint").to_pylist()


def test_scheduler_options_change_every_fingerprint_and_unset_options_change_none(tiny_sd):
    plain = _fingerprints(tiny_sd)
    trailing = _fingerprints(tiny_sd, scheduler_options={"timestep_spacing": "trailing"})
    leading = _fingerprints(tiny_sd, scheduler_options={"timestep_spacing": "leading"})
    assert len({*plain, *trailing, *leading}) == 6
    assert _fingerprints(tiny_sd, scheduler_options={}) == plain
    # Outputs made before options existed keep their fingerprints: no key for unset options.
    spec = JobSpec.model_validate({"model": {"id": str(tiny_sd)}})
    assert "scheduler_options" not in job_inputs(spec)


def test_an_embedding_enters_the_fingerprint_by_its_token_and_file(tiny_sd, tiny_embedding, tmp_path):
    from lab.builders.tiny import build_tiny_embedding

    other = build_tiny_embedding(tiny_sd, tmp_path / "other.safetensors", seed=9)
    plain = _fingerprints(tiny_sd)
    one = _fingerprints(tiny_sd, textual_inversions=[{"path": str(tiny_embedding), "token": "<a>"}])
    renamed = _fingerprints(tiny_sd, textual_inversions=[{"path": str(tiny_embedding), "token": "<b>"}])
    refile = _fingerprints(tiny_sd, textual_inversions=[{"path": str(other), "token": "<a>"}])
    assert len({*plain, *one, *renamed, *refile}) == 8


def test_an_ip_adapter_and_its_image_enter_the_fingerprint(tiny_sd, tiny_ip_adapter):
    adapter = {"weights": str(tiny_ip_adapter / "ip-adapter.safetensors"),
               "image_encoder": str(tiny_ip_adapter / "image_encoder")}  # fmt: skip

    def fingerprints(scale: float, image: str) -> list[str]:
        spec = JobSpec.model_validate({"model": {"id": str(tiny_sd)}, "ip_adapters": [adapter | {"scale": scale}]})
        table = pa.table({"id": ["a"], "prompt": ["a cat"], "ip_adapter_image": [image]})
        return fingerprinted(expand(table, spec), spec).column("fingerprint").to_pylist()

    assert len({*fingerprints(1.0, "/a.png"), *fingerprints(0.5, "/a.png"), *fingerprints(1.0, "/b.png")}) == 3


def test_a_record_fingerprint_is_the_sha256_of_its_canonical_json_so_old_outputs_resume():
    import hashlib
    import json

    from diffgen.dataset.fingerprint import record_fingerprints

    rows = [
        {"prompt": "a cat", "negative_prompt": "", "seed": 7, "width": 64, "height": 64, "steps": 20,
         "guidance_scale": 7.5, "guidance_rescale": None, "strength": None, "init_image": None, "mask_image": None,
         "control": "masks/é.png", "id": "not a fingerprint field"},
        {"prompt": "ünïcode \"quoted\"", "negative_prompt": "blur", "seed": 2**62, "width": 8, "height": 16,
         "steps": 1, "guidance_scale": 1.0, "guidance_rescale": 0.7, "strength": 0.3, "init_image": "s3://b/i.png",
         "mask_image": "m.png", "control": None, "id": "x"},
    ]  # fmt: skip
    got = record_fingerprints(pa.Table.from_pylist(rows), "job-fp", ["control"]).to_pylist()
    # The canonical form every committed index was fingerprinted with: changing it makes every output "changed".
    expected = [
        hashlib.sha256(json.dumps(["job-fp", {k: v for k, v in r.items() if k != "id"}], sort_keys=True,
                                  separators=(",", ":"), default=str).encode()).hexdigest()
        for r in rows
    ]  # fmt: skip
    assert got == expected
