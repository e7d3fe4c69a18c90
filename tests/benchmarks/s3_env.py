"""The benchmark's S3: a moto server on 127.0.0.1 behind one :class:`LatencyProxy` per delay.

:class:`BenchS3` starts moto's S3 as a child process (this file run as a script: moto's WSGI
app on werkzeug, threaded, HTTP/1.1 keep-alive) on a free port, stopped by pid, and a proxy
per delay in this process (event loops in daemon threads: the benchmark's
main process only waits for its case processes, so the proxies have a core to themselves as
much as anything here). Case processes reach S3 through ``endpoint(delay)``; setup and
measurement of stored bytes (creating, listing and deleting buckets) go to moto directly and
are not counted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

from latency_proxy import LatencyProxy

__all__ = ["ACCESS_KEY", "SECRET_KEY", "BenchS3", "bucket_usage", "s3_client"]

ACCESS_KEY = "AKIASTRATABENCH00000"
SECRET_KEY = "strata-bench-secret-NOT-A-REAL-ONE"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of ``endpoint`` (for setup and measurement, not for the cases)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(max_pool_connections=16, retries={"max_attempts": 3}),
    )


def bucket_usage(endpoint: str, bucket: str, prefix: str = "") -> tuple[int, int]:
    """(bytes, objects) stored in ``bucket`` under ``prefix`` (listing moto directly)."""
    client = s3_client(endpoint)
    size = count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            size += int(obj["Size"])
            count += 1
    return size, count


class BenchS3:
    """moto's S3 in a child process and a latency proxy in front of it for each delay.

    Parameters
    ----------
    delays_ms
        The delays (milliseconds before each response's first byte) to serve, one proxy each.

    """

    def __init__(self, delays_ms: Sequence[float] = (0.0, 20.0)) -> None:
        self.delays_ms = tuple(float(d) for d in delays_ms)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxies: dict[float, LatencyProxy] = {}
        self._log: Any = None

    @property
    def moto_endpoint(self) -> str:
        """moto's own endpoint (not delayed, not counted)."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, delay_ms: float) -> str:
        """The endpoint of the proxy adding ``delay_ms``."""
        return self.proxies[float(delay_ms)].endpoint

    def storage_options(self, delay_ms: float) -> dict[str, Any]:
        """s3fs options for the proxy adding ``delay_ms`` (no ``region_name``: moto's trap)."""
        return {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": self.endpoint(delay_ms)}

    def start(self) -> BenchS3:
        """Start moto and the proxies; wait until moto answers."""
        self._log = tempfile.TemporaryFile(prefix="strata-bench-moto-")
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "serve", str(self.port)],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
            )
            if self._wait_answers():
                break
            self._stop_moto()
        else:
            raise RuntimeError(f"moto server did not start: {self._log_text()}")
        for d in self.delays_ms:
            self.proxies[d] = LatencyProxy(f"127.0.0.1:{self.port}", d).start()
        return self

    def _wait_answers(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.moto_endpoint}/", timeout=5) as r:
                    r.read()
                return True
            except OSError:
                time.sleep(0.05)  # a polling interval, not a synchronisation
        return False

    def _log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return str(self._log.read()[-2000:].decode(errors="replace"))

    def _stop_moto(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        """Stop the proxies and the moto process (by pid)."""
        for p in self.proxies.values():
            p.stop()
        self.proxies.clear()
        self._stop_moto()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> BenchS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- buckets ------------------------------------------------------------------------------
    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (directly at moto) and return it."""
        s3_client(self.moto_endpoint).create_bucket(Bucket=name)
        return name

    def delete_bucket(self, name: str) -> None:
        """Delete bucket ``name`` and everything in it (frees moto's memory)."""
        client = s3_client(self.moto_endpoint)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=name, Delete={"Objects": keys[i : i + 1000]})
        client.delete_bucket(Bucket=name)


def _fix_complete_multipart(app: Any) -> Any:
    """WSGI middleware: moto names the root of its CompleteMultipartUpload answer
    ``CompleteMultipartUploadResponse``; S3's is ``CompleteMultipartUploadResult``, and Arrow's
    S3 client takes any other root for an error embedded in a 200 answer (so every multipart
    upload of pyarrow fails). This fixes the fake server, not a client under test.
    """
    wrong, right = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("REQUEST_METHOD") != "POST" or "uploadId=" not in environ.get(
            "QUERY_STRING", ""
        ):
            return app(environ, start_response)
        box: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            box["status"], box["headers"] = status, headers
            return lambda data: None

        body = b"".join(app(environ, capture)).replace(wrong, right)
        headers = [(k, v) for k, v in box["headers"] if k.lower() != "content-length"]
        start_response(box["status"], [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return wrapped


def _serve(port: int) -> None:
    """Body of the moto process: moto's S3 on 127.0.0.1:``port`` until SIGTERM."""
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the proxy keeps its upstream connections

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    app = _fix_complete_multipart(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(json.dumps({"port": port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        _serve(int(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve PORT")
