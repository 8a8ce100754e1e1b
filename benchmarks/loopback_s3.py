"""An S3 server on 127.0.0.1 (moto's, as the tests use) for the pipeline-s3 variant."""

from __future__ import annotations

import logging
import os
import uuid


def start_s3() -> object:
    """Starts the server and points this process's (and so Ray's workers') AWS settings at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="benchmark",
        AWS_SECRET_ACCESS_KEY="benchmark",
        AWS_DEFAULT_REGION="us-east-1",
    )
    return server


def s3_output() -> str:
    """A fresh bucket's output URI."""
    import fsspec

    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/out"
