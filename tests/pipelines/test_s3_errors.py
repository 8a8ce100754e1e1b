"""Fault injection on real parts: the S3 endpoint answers 503 SlowDown / 500 InternalError for a while
in the middle of a run's writes; botocore's adaptive retries carry every write through.

A small reverse proxy on loopback sits in front of moto's S3 server. The run goes through
`diffgen run` in its own process with its own local Ray, whose workers inherit the proxy as
`AWS_ENDPOINT_URL` (the session cluster's workers were started with moto's address).
"""

import hashlib
import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
import pytest

from diffgen.dataset import storage
from tests.conftest import write_job, write_manifest

REPO = Path(__file__).resolve().parents[2]
_ERRORS = (
    (503, "SlowDown", "Please reduce your request rate."),
    (500, "InternalError", "We encountered an internal error. Please try again."),
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class ErrorWindowProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream`; from the first PUT of an image under `prefix` on, answers
    every request under `prefix` with an S3 error (alternately 503 SlowDown and 500 InternalError)
    for `window_s` seconds, and in any case until `min_errors` have been served."""

    daemon_threads = True

    def __init__(self, upstream: str, prefix: str, window_s: float, min_errors: int):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = urlsplit(upstream).netloc
        self.prefix, self.window_s, self.min_errors = prefix, window_s, min_errors
        self.opened_at: float | None = None
        self.errors: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.forwarded: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def error_for(self, method: str, path: str) -> tuple[int, str, str] | None:
        if not path.startswith(self.prefix):
            return None
        with self.lock:
            now = time.monotonic()
            if self.opened_at is None and method == "PUT" and "/images/" in path:
                self.opened_at = now
            n = sum(self.errors.values())
            if self.opened_at is None or (now - self.opened_at > self.window_s and n >= self.min_errors):
                key = f"{method} image" if "/images/" in path else method
                self.forwarded[key] = self.forwarded.get(key, 0) + 1
                return None
            error = _ERRORS[n % len(_ERRORS)]
            self.errors[method] = self.errors.get(method, 0) + 1
            self.statuses[error[0]] = self.statuses.get(error[0], 0) + 1
            return error


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as botocore uses them
    server: ErrorWindowProxy

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers up to the blank line
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        error = self.server.error_for(self.command, urlsplit(self.path).path)
        if error is not None:
            status, code, message = error
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                   f"<RequestId>diffgen-test</RequestId></Error>").encode()  # fmt: skip
            self._reply(status, [("Content-Type", "application/xml")], xml)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "expect"}
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            self._reply(response.status, response.getheaders(), data)
        finally:
            upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.mark.slow  # starts Ray in its own processes
def test_a_window_of_s3_errors_during_writes_loses_no_image(tmp_path, tiny_sd, s3_bucket, s3_server):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "num_images": 2} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    output = f"{s3_bucket}/runs/errors"
    job = write_job(tmp_path / "job.yaml", tiny_sd, manifest=str(manifest), output=output)
    proxy = ErrorWindowProxy(s3_server, prefix=f"/{s3_bucket.removeprefix('s3://')}/runs/", window_s=3.0, min_errors=3)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "diffgen.jobs.cli", "run", str(job)], check=False, cwd=REPO, capture_output=True, text=True,
            env={**env, "AWS_ENDPOINT_URL": proxy.endpoint}, timeout=300,
        )  # fmt: skip
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert result.returncode == 0, result.stderr[-4000:]
    # The errors really reached the run's writes, and the run went on through the proxy after the window.
    assert proxy.errors.get("PUT", 0) >= 1 and sum(proxy.errors.values()) >= 3, proxy.errors
    assert proxy.statuses.get(503, 0) >= 1 and proxy.statuses.get(500, 0) >= 1, proxy.statuses
    assert proxy.forwarded.get("PUT image", 0) >= 8, proxy.forwarded  # every image went through, after all

    # Read back directly from moto, past the proxy.
    summary = json.loads(storage.read_bytes(f"{output}/run.json"))
    c = summary["counts"]
    assert summary["status"] == "complete"
    assert (c["images_expected"], c["images_written"], c["rejected"], c["failed"]) == (8, 8, 0, 0)
    index = storage.read_parquet_folder(f"{output}/index")
    pairs = sorted(zip(index.column("id").to_pylist(), index.column("sample_index").to_pylist()))
    assert pairs == sorted((f"row-{i}", j) for i in range(4) for j in range(2))
    assert index.num_rows == len(set(index.column("record_id").to_pylist())) == 8
    for uri, sha in zip(index.column("image_uri").to_pylist(), index.column("sha256").to_pylist()):
        assert hashlib.sha256(storage.read_bytes(uri)).hexdigest() == sha
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    images = fs.find(f"{output.removeprefix('s3://')}/images")
    assert sorted(f"s3://{p}" for p in images) == sorted(index.column("image_uri").to_pylist())
