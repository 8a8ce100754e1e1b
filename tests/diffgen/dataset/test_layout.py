"""The output layout is a contract: its names are fixed here, and spelled in no other product module."""

import ast

import pytest

from diffgen.dataset import layout
from tests.conftest import REPO


def test_the_names_other_tools_parse():
    rid = "ab12cd34ef56ab12cd34ef56"
    assert layout.image_key(rid) == f"images/ab/{rid}.png"
    shard = layout.index_shard(["r2", "r1"])
    assert shard == layout.index_shard(["r1", "r2"]) and shard.startswith("index/part-") and shard.endswith(".parquet")
    assert len(shard) == len("index/part-.parquet") + 20
    assert layout.rejects_file([3, 17]).startswith("rejects/part-")
    assert (layout.RUN_FILE, layout.REPORT_JSON, layout.REPORT_HTML) == ("run.json", "qc/report.json", "qc/report.html")
    assert layout.expectations_file("index") == "qc/expectations/index.json"
    assert (layout.webdataset_shard(3), layout.WEBDATASET_SHARDS) == ("shard-000003.tar", "webdataset/shards.parquet")
    assert layout.webdataset_shard(0, ("split", "val")) == "split=val/shard-000000.tar"
    assert (layout.METADATA_PARQUET, layout.split_metadata(2), layout.DATASET_CARD, layout.IMAGES_GLOB) == (
        "metadata.parquet", "metadata-2.parquet", "README.md", "images/*/*.png")
    assert layout.lease_file(7) == ".diffgen-lease-000000000007.json"
    assert layout.quarantined_index_shard("part-x.parquet") == "quarantine/index/part-x.parquet"


# Names that mean nothing but a place in an output (plain words like "images" or "qc" are also keys elsewhere).
OUTPUT_FILES = ("run.json", "shards.parquet", "report.json", "report.html", ".diffgen-lease-", "metadata.parquet",
                "metadata-")
OUTPUT_FOLDERS = ("images/", "index/", "rejects/", "qc/", "webdataset/", "quarantine/")


def _spells_an_output_name(value: str) -> bool:
    if " " in value or "\n" in value:  # prose: docstrings, messages
        return False
    return value.lstrip("/").startswith(OUTPUT_FOLDERS) or any(value.endswith(f) or value.startswith(f)
                                                             for f in OUTPUT_FILES)  # fmt: skip


@pytest.mark.parametrize("folder", ["diffgen", "pipelines", "jobs"])
def test_no_other_product_module_spells_an_output_name(folder):
    found = []
    for path in (REPO / folder).rglob("*.py"):
        if path == REPO / "diffgen" / "dataset" / "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _spells_an_output_name(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_the_scan_finds_a_spelled_name():
    assert _spells_an_output_name("run.json") and _spells_an_output_name("index/part-x.parquet")
    assert not _spells_an_output_name("images") and not _spells_an_output_name("see qc/report.html for more")
