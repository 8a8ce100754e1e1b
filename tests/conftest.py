"""Shared fixtures: tiny real models on disk and one local Ray cluster per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# The repository's root: models/, examples/ and the code the subprocess tests run.
REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts Ray (through the session cluster) is `slow`: `pytest -m "not slow"` is the
    edit-test loop's tier. Tests that start Ray in a subprocess or train carry the mark themselves."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion 1.x pipeline folder with random weights, loaded like a real checkpoint."""
    from lab.builders.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ControlNet for `tiny_sd`, its output layers random (not zero) so that it visibly conditions."""
    from lab.builders.tiny import build_tiny_controlnet

    return build_tiny_controlnet(tiny_sd, tmp_path_factory.mktemp("models") / "tiny-sd-controlnet")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP folder with random weights (QC's CLIP score and FID backbone), loaded like a checkpoint."""
    from lab.builders.tiny_clip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_lora(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter for `tiny_sd` (adapter name 'style'), made with peft and saved as diffusers does."""
    from lab.builders.tiny import build_tiny_lora

    return build_tiny_lora(tiny_sd, tmp_path_factory.mktemp("loras") / "style.safetensors", seed=2)


@pytest.fixture(scope="session")
def tiny_lcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LCM-distilled-style SD 1.x folder: a UNet with a guidance embedding and an LCMScheduler config."""
    from lab.builders.tiny import build_tiny_lcm

    return build_tiny_lcm(tmp_path_factory.mktemp("models") / "tiny-lcm")


@pytest.fixture(scope="session")
def tiny_embedding(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-vector textual-inversion embedding for `tiny_sd`, token `<tiny-concept>`."""
    from lab.builders.tiny import build_tiny_embedding

    return build_tiny_embedding(tiny_sd, tmp_path_factory.mktemp("embeddings") / "tiny-concept.safetensors")


@pytest.fixture(scope="session")
def tiny_ip_adapter(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IP-Adapter folder for `tiny_sd`: `ip-adapter.safetensors` and a tiny CLIP vision encoder in `image_encoder/`."""
    from lab.builders.tiny import build_tiny_ip_adapter

    return build_tiny_ip_adapter(tiny_sd, tmp_path_factory.mktemp("models") / "tiny-ip-adapter")


@pytest.fixture(scope="session")
def tiny_family(tiny_sd: Path, tiny_controlnet: Path, tmp_path_factory: pytest.TempPathFactory):
    """`tiny_family(name)` -> (pipeline folder, ControlNet folder) for 'sd', 'sdxl', 'sd3' or 'flux', built once."""
    from lab.builders import tiny as tiny_models

    builders = {
        "sdxl": tiny_models.build_tiny_sdxl,
        "sd3": tiny_models.build_tiny_sd3,
        "flux": tiny_models.build_tiny_flux,
    }
    built = {"sd": (tiny_sd, tiny_controlnet)}

    def get(name: str) -> tuple[Path, Path]:
        if name not in built:
            root = tmp_path_factory.mktemp("models")
            pipeline = builders[name](root / f"tiny-{name}")
            built[name] = (pipeline, tiny_models.build_tiny_controlnet(pipeline, root / f"tiny-{name}-controlnet"))
        return built[name]

    return get


# A recognisable fake secret: tests search every written byte for it.
FAKE_SECRET = "diffgen-fake-secret-6f1d2c"


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback: a real HTTP endpoint that s3fs, pyarrow and boto3 talk to.

    Endpoint and credentials go into the environment (the standard AWS variables) before Ray
    starts, so Ray workers inherit them exactly as on a configured cluster node.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="AKIADIFFGENTEST",
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket per test: `s3://<name>`."""
    import uuid

    import fsspec

    name = f"diffgen-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One local Ray for the whole session, on loopback; yields its GCS address for subprocesses."""
    import ray

    ctx = ray.init(
        num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def write_manifest(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_job(path: Path, model: Path, **sections) -> Path:
    """A small job YAML for the tiny model; keyword sections override the defaults."""
    import yaml

    job = {
        "run_id": "test",
        "model": {"id": str(model)},
        "sampler": {"scheduler": "euler", "steps": 4, "guidance_scale": 3.0, "width": 32, "height": 32},
        "compute": {"num_actors": 1, "batch_size": 2},
        "provenance": {"allow_unwatermarked": True},  # 32 px is below the watermark's 64
        "seed": 7,
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            job.setdefault(key, {}).update(value)
        else:
            job[key] = value
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.fixture
def http_server():
    """A real HTTP server on loopback: /ok.png answers (a 10x6 red PNG), /down.png answers 503 (a store
    that is down), /missing.png 404, /slow.png stalls for 3 s."""
    import http.server
    import io
    import threading
    import time

    from PIL import Image

    sink = io.BytesIO()
    Image.new("RGB", (10, 6), (255, 0, 0)).save(sink, format="PNG")
    body = sink.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, send_body: bool):
            if self.path == "/down.png":
                self.send_response(503)
                self.end_headers()
                return
            if self.path == "/slow.png":
                time.sleep(3)
            if self.path == "/missing.png":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802 - the stdlib's name
            self._answer(False)

        def do_GET(self):  # noqa: N802
            self._answer(True)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
