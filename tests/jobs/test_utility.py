"""`diffgen utility`: the score of an output on a labelled real set, and every bad real set refused by
name with exit 2 before any image is embedded."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from diffgen.dataset import storage
from diffgen.jobs import api
from diffgen.jobs.cli import main
from diffgen.schemas.utility import UtilityReport

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}


def _image(color: tuple[int, int, int], seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(color) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def output(tmp_path, tiny_clip) -> str:
    """A written output by hand: images, one index shard with a `label` column, run.json's QC settings."""
    out = tmp_path / "out"
    rows = []
    for label, color in COLORS.items():
        for i in range(12):
            rid = f"{label}{i:02d}".ljust(24, "0")
            uri = str(out / "images" / rid[:2] / f"{rid}.png")
            storage.write_bytes(uri, _png(_image(color, 100 + i)))
            rows.append({"record_id": rid, "image_uri": uri, "status": "written", "label": label})
    rows.append({"record_id": "x" * 24, "image_uri": None, "status": "rejected", "label": "red"})
    (out / "index").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), out / "index" / "part-a.parquet")
    qc = {"enabled": True, "clip_model": str(tiny_clip)}
    (out / "run.json").write_text(json.dumps({"job": {"qc": qc}}))
    return str(out)


def _real(root, counts: dict[str, int], size: int = 32):
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{i}.png").write_bytes(_png(_image(COLORS.get(label, (0, 0, 0)), i, size)))
    return str(root)


def test_scores_an_output_and_writes_utility_json(output, tmp_path, capsys):
    real = _real(tmp_path / "real", {"red": 10, "green": 10, "blue": 10, "purple": 3})
    code = main(["utility", output, "--real", real, "--set", "qc.utility.few_shot=2", "--set",
                 "qc.utility.resamples=200"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = UtilityReport.model_validate_json(storage.read_bytes(storage.join(output, "qc", "utility.json")))
    assert printed["ratio"]["value"] == report.ratio.value
    assert report.classes == ["blue", "green", "red"] and report.real_only == ["purple"]
    assert report.synthetic_images == {"blue": 12, "green": 12, "red": 12}  # the rejected row is not sampled
    assert report.backbone.startswith("clip:tiny-clip@") and report.test_images == {"blue": 5, "green": 5, "red": 5}
    assert any("purple" in w for w in report.warnings)
    # Well separated colours: the probes name them all, whatever the random CLIP.
    assert {p.name: p.accuracy.value for p in report.probes}["synthetic"] > 0.9


def test_the_python_api_returns_the_report(output, tmp_path):
    real = _real(tmp_path / "real", {"red": 4, "green": 4})
    report = api.utility(output, real=real, overrides=["qc.utility.resamples=100", "qc.utility.few_shot=1"])
    assert report.classes == ["green", "red"] and report.synthetic_only == ["blue"]


def _refused(args: list[str], caplog) -> str:
    assert main(["utility", *args]) == 2
    return caplog.text


def test_bad_real_sets_exit_2_naming_what_is_wrong(output, tmp_path, caplog):
    one = _real(tmp_path / "one", {"red": 4})
    assert "holds 1 class(es)" in _refused([output, "--real", one], caplog)
    apart = _real(tmp_path / "apart", {"cyan": 3, "black": 3})
    assert "labels do not overlap" in _refused([output, "--real", apart], caplog)
    small = _real(tmp_path / "small", {"red": 3, "green": 1})
    assert "'green' (1)" in _refused([output, "--real", small], caplog)
    broken = _real(tmp_path / "broken", {"red": 3, "green": 3})
    (tmp_path / "broken" / "green" / "9.png").write_bytes(b"not a png")
    assert "green/9.png cannot be read" in _refused([output, "--real", broken], caplog)
    table = pa.table({"image": [_png(_image(COLORS["red"], 0))], "shape": ["red"]})
    pq.write_table(table, tmp_path / "real.parquet")
    assert "has no column 'label'" in _refused([output, "--real", str(tmp_path / "real.parquet")], caplog)
    assert "qc.utility.real" in _refused([output], caplog)
    assert "has no column 'kind'" in _refused([output, "--real", one, "--label-column", "kind"], caplog)


def test_mixed_sizes_are_a_named_warning(output, tmp_path):
    real = _real(tmp_path / "real", {"red": 4, "green": 4})
    (tmp_path / "real" / "red" / "big.png").write_bytes(_png(_image(COLORS["red"], 9, size=48)))
    report = api.utility(output, real=real, overrides=["qc.utility.resamples=100", "qc.utility.few_shot=1"])
    assert any("mixed image sizes" in w and "big.png is 48x48" in w for w in report.warnings)
