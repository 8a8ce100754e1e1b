"""The benchmarks' runner: modules that import without side effects, the variant registry and the questions
that cover it, the command lines, the steady-rate method, and the committed results files still read."""

import json
import subprocess
import sys

import pytest

from benchmarks import gpu, overhead, pipeline, scaling, stage_profile
from benchmarks.machine import machine_slug
from benchmarks.measurement import steady_rate
from benchmarks.ratios import RATIOS, TARGETS, ratios
from benchmarks.results import result_document
from benchmarks.runner import check_arguments, cpu_parser
from benchmarks.table import table
from benchmarks.variants import CPU_VARIANT_NAMES, GPU_VARIANTS, cpu_variants
from tests.conftest import REPO

_IMPORT_EVERY_MODULE = """
import importlib, os, pkgutil, sys
env, path = dict(os.environ), list(sys.path)
import benchmarks
names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))
for name in names:
    importlib.import_module("benchmarks." + name)
changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
early = [m for m in ("huggingface_hub", "transformers", "diffusers", "ray", "cv2") if m in sys.modules]
print(names, changed, sys.path == path, early, sep="\\n")
"""


def test_importing_every_module_changes_neither_sys_path_nor_the_environment():
    # In a fresh process: this one has already imported the stack and set the conftest's variables.
    result = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_MODULE], cwd=REPO, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    names, changed, same_path, early = result.stdout.strip().splitlines()[-4:]
    for module in ("pipeline", "overhead", "scaling", "stage_profile", "gpu", "runner", "watermark_robustness"):
        assert f"'{module}'" in names
    assert changed == "[]"
    assert same_path == "True"
    # Libraries that read the environment when imported load only after prepare_environment().
    assert early == "[]"


def test_the_questions_cover_every_cpu_variant_in_the_registry_order():
    assert pipeline.EVERY_CPU_QUESTION.variants == CPU_VARIANT_NAMES
    assert pipeline.EVERY_CPU_QUESTION.profile
    for question in pipeline.QUESTIONS:
        assert tuple(v.name for v in cpu_variants(question.variants)) == question.variants
    assert stage_profile.QUESTION.variants == () and stage_profile.QUESTION.profile
    assert [v.name for v in GPU_VARIANTS] == ["bare", "pipeline"]


def test_every_ratio_names_registered_variants_and_every_target_a_ratio():
    for name, (num, den, _) in RATIOS.items():
        assert num in CPU_VARIANT_NAMES and den in CPU_VARIANT_NAMES, name
    assert set(TARGETS) <= set(RATIOS)


def test_an_unknown_variant_is_refused_naming_the_choices(capsys):
    with pytest.raises(ValueError, match="Unknown variant 'nope'. Choose from: bare, bare-1t"):
        cpu_variants(["nope"])
    with pytest.raises(SystemExit) as exit_:
        overhead.main(["--variants", "actors-2x1"])  # a scaling variant, not an overhead one
    assert exit_.value.code == 2
    assert "Unknown variant 'actors-2x1'. Choose from: bare, bare-1t, pipeline" in capsys.readouterr().err


def test_command_lines():
    parser = cpu_parser(pipeline.EVERY_CPU_QUESTION, "all")
    args = parser.parse_args(["--quick", "--repeats", "2", "--variants", "pipeline", "bare"])
    check_arguments(parser, args, pipeline.EVERY_CPU_QUESTION.variants)
    assert (args.quick, args.repeats, args.variants, args.job.name) == (True, 2, ["pipeline", "bare"], "job.yaml")
    # The session runs them in the registry's order, whatever the command line's.
    assert [v.name for v in cpu_variants(args.variants)] == ["bare", "pipeline"]
    with pytest.raises(SystemExit):
        check_arguments(parser, parser.parse_args(["--images", "3"]), ())
    # The stage profile runs once and has no variants: neither option exists there.
    profile = cpu_parser(stage_profile.QUESTION, "profile")
    assert profile.parse_args([]).repeats == 1
    with pytest.raises(SystemExit):
        profile.parse_args(["--variants", "bare"])
    assert scaling.QUESTION.result_name == "scaling"


@pytest.mark.skipif(gpu.cuda_missing() is None, reason="CUDA is here: the GPU mode would run")
def test_the_gpu_mode_refuses_to_run_without_cuda(capsys):
    assert pipeline.main(["--gpu"]) == 2
    assert gpu.main([]) == 2
    assert "--gpu needs CUDA" in capsys.readouterr().err


def test_steady_rate_is_the_slope_over_the_second_half():
    even = [(float(t), 4) for t in range(10)]  # 4 images a second
    rate, window, first_half = steady_rate(even)
    assert rate == pytest.approx(4.0) and first_half == pytest.approx(4.0)
    assert window == pytest.approx(5.0)  # from the stamp that completes half the images (t=4 -> 20 of 40) to t=9
    # A backlog drained early: 8 images a second in the first half, 2 in the second.
    drained = [(t * 0.5, 4) for t in range(6)] + [(2.5 + 2 * t, 4) for t in range(1, 6)]
    rate, _, first_half = steady_rate(drained)
    assert rate == pytest.approx(2.0) and first_half > 1.3 * rate
    assert steady_rate([(0.0, 4), (1.0, 4)]) == (None, 0.0, None)


def test_ratios_with_their_targets():
    variants = {
        "pipeline": {"steady_images_per_s": 3.0, "e2e_images_per_s": 1.0},
        "bare": {"steady_images_per_s": 4.0, "e2e_images_per_s": 2.0},
        "no-qc": {"steady_images_per_s": None, "e2e_images_per_s": 1.0},
    }
    found = ratios(variants)
    assert set(found) == {"pipeline_over_bare", "qc_on_over_off"}  # ratios of variants that ran
    assert found["pipeline_over_bare"] == {"of": "pipeline / bare", "says": RATIOS["pipeline_over_bare"][2],
                                           "steady": 0.75, "e2e": 0.5, "target": 0.9, "passed": False}  # fmt: skip
    assert found["qc_on_over_off"]["steady"] is None and found["qc_on_over_off"]["passed"] is None


def test_machine_slug():
    assert machine_slug({"cpu_model": "AMD EPYC Processor", "logical_cores": 2}, gpu=False) == "amd-epyc-2c"
    assert machine_slug({"gpu": {"name": "NVIDIA H100 80GB HBM3"}}, gpu=True) == "nvidia-h100-80gb-hbm3"


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks" / "results").glob("pipeline-*.json")), ids=lambda p: p.name)
def test_the_committed_results_files_keep_their_format(path):
    committed = json.loads(path.read_text())
    fields = dict.fromkeys(("benchmark", "mode", "quick", "command", "started", "machine", "versions", "models"))
    assert list(result_document(**fields, wall_s=0.0)) == list(committed)
    assert "| pipeline_over_bare (pipeline / bare) |" in table(committed)


@pytest.mark.slow  # loads the model and generates 8 images on one thread
def test_the_stage_profile_writes_its_results(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.stage_profile", "--quick", "--out", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    assert written["command"] == f"python -m benchmarks.stage_profile --quick --out {out}"
    block = written["models"]["cpu"]
    assert (block["variants"], block["ratios"]) == ({}, {})
    profile = block["stage_profile"]
    assert profile["images"] == 8
    for key in ("watermark_on", "watermark_off"):
        assert set(profile[key]) == {"generate_s_per_image", "qc_s_per_image", "write_s_per_image"}
        assert profile[key]["generate_s_per_image"] > 0


def test_the_utility_cost_manifest_has_every_shape_in_any_prefix_and_distinct_ids(tmp_path):
    import pyarrow.parquet as pq

    from benchmarks.utility import cost_manifest, model_identity

    rows = pq.read_table(cost_manifest(1000, tmp_path / "m.parquet")).to_pylist()
    assert sum(r["num_images"] for r in rows) == 1000 and len({r["id"] for r in rows}) == len(rows)
    assert {r["label"] for r in rows[:4]} == {"circle", "square", "star", "triangle"}
    assert sum(r["num_images"] for r in pq.read_table(cost_manifest(18, tmp_path / "s.parquet")).to_pylist()) == 18
    identity = model_identity()
    assert identity["folder"] == "models/micro-sd" and len(identity["unet_sha256_16"]) == 16
