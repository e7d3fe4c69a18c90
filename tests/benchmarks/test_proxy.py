"""The benchmark's latency proxy counts what passes through it, and passes it unchanged.

Real servers on 127.0.0.1: a threaded ``http.server`` upstream (for exact bodies, chunked
transfer, HTTP/1.0 answers and concurrency) and the session's moto S3 server (for what s3fs and
boto3 send). Nothing here is timed.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from latency_proxy import LatencyProxy, classify, counted, fetch_stats, reset_stats, waves

BARRIER_PARTIES = 3


class _Upstream(BaseHTTPRequestHandler):
    """Echoes what it got as JSON; ``/chunked`` answers chunked, ``/old`` as HTTP/1.0 with
    no length, ``/barrier`` waits until :data:`BARRIER_PARTIES` requests are in at once.
    """

    protocol_version = "HTTP/1.1"
    barrier: threading.Barrier
    seen: list[dict[str, Any]]

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                data = self.rfile.read(size + 2)[:size]
                if size == 0:
                    return out
                out += data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _answer(self) -> None:
        body = self._body()
        info = {
            "method": self.command,
            "path": self.path,
            "body": body.decode(),
            "expect": self.headers.get("Expect"),
        }
        type(self).seen.append(info)
        if self.path == "/barrier":
            type(self).barrier.wait(timeout=30)
        payload = json.dumps(info).encode()
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (payload[:5], payload[5:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path == "/old":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer


@pytest.fixture
def upstream() -> Iterator[tuple[str, type[_Upstream]]]:
    handler = type(
        "Handler", (_Upstream,), {"seen": [], "barrier": threading.Barrier(BARRIER_PARTIES)}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: tuple[str, type[_Upstream]]) -> Iterator[LatencyProxy]:
    with LatencyProxy(upstream[0], delay_ms=0) as p:
        yield p


def _conn(p: LatencyProxy) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", p.port, timeout=30)


def test_counts_requests_and_body_bytes_by_kind(proxy: LatencyProxy, upstream: Any) -> None:
    c = _conn(proxy)  # one keep-alive connection for all of them
    answers = {}
    for method, path, body in [
        ("PUT", "/bucket/a/c/0", b"x" * 1000),
        ("GET", "/bucket/a/c/0", None),
        ("HEAD", "/bucket/a/zarr.json", None),
        ("DELETE", "/bucket/a/c/0", None),
        ("GET", "/bucket?list-type=2&prefix=a/", None),
        ("POST", "/bucket?delete", b"<Delete/>"),
    ]:
        c.request(method, path, body=body)
        r = c.getresponse()
        answers[(method, path)] = r.read()
        assert r.status == 200
    c.close()
    got = json.loads(answers[("GET", "/bucket/a/c/0")])
    assert (got["method"], got["path"]) == ("GET", "/bucket/a/c/0")
    st = proxy.stats()
    assert st["requests"] == 6
    kinds = {k: v["requests"] for k, v in st["by_kind"].items()}
    assert kinds == {"PUT": 1, "GET": 1, "HEAD": 1, "DELETE": 1, "LIST": 1, "POST delete": 1}
    assert st["by_kind"]["PUT"]["bytes_up"] == 1000
    assert st["bytes_up"] == 1000 + len(b"<Delete/>")
    assert st["by_kind"]["GET"]["bytes_down"] == len(answers[("GET", "/bucket/a/c/0")])
    assert st["by_kind"]["HEAD"]["bytes_down"] == 0
    assert st["by_kind_and_object"]["PUT chunk"]["requests"] == 1
    assert st["by_kind_and_object"]["HEAD zarr.json"]["requests"] == 1
    assert st["status"] == {"200": 6}
    assert st["max_in_flight"] == 1
    assert len(st["log"]) == 6
    assert [s["method"] for s in upstream[1].seen] == [
        "PUT",
        "GET",
        "HEAD",
        "DELETE",
        "GET",
        "POST",
    ]


def test_chunked_bodies_and_http10_answers_pass_unchanged(
    proxy: LatencyProxy, upstream: Any
) -> None:
    c = _conn(proxy)
    c.request("PUT", "/b/k", body=iter([b"abc", b"defg"]), encode_chunked=True)
    r = c.getresponse()
    assert json.loads(r.read())["body"] == "abcdefg"
    c.request("GET", "/chunked")
    r = c.getresponse()
    chunked_body = r.read()
    assert json.loads(chunked_body)["path"] == "/chunked"
    c.request("GET", "/old")  # HTTP/1.0, no length: the proxy closes after it
    r = c.getresponse()
    old_body = r.read()
    assert json.loads(old_body)["path"] == "/old"
    c.close()
    st = proxy.stats()
    assert st["requests"] == 3
    assert st["bytes_up"] == 7
    assert st["bytes_down"] == len(json.dumps(upstream[1].seen[0]).encode()) + len(
        chunked_body
    ) + len(old_body)


def test_expect_continue_is_answered_by_the_proxy(proxy: LatencyProxy, upstream: Any) -> None:
    body = b"0123456789"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as s:
        s.sendall(
            b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = s.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body was sent
        s.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 200")
    seen = upstream[1].seen[-1]
    assert seen["body"] == "0123456789"
    assert seen["expect"] is None  # forwarded without it
    st = proxy.stats()
    assert st["continued"] == 1
    assert st["by_kind"]["PUT"]["bytes_up"] == 10


def test_counts_requests_in_flight(proxy: LatencyProxy) -> None:
    def one(_: int) -> int:
        c = _conn(proxy)
        c.request("GET", "/barrier")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    with ThreadPoolExecutor(BARRIER_PARTIES) as pool:
        statuses = list(pool.map(one, range(BARRIER_PARTIES)))
    assert statuses == [200] * BARRIER_PARTIES
    st = proxy.stats()
    assert st["max_in_flight"] == BARRIER_PARTIES  # the upstream held them all at once
    assert st["requests"] == BARRIER_PARTIES


def test_control_over_http(proxy: LatencyProxy) -> None:
    c = _conn(proxy)
    c.request("GET", "/x/y")
    c.getresponse().read()
    c.close()
    assert fetch_stats(proxy.endpoint)["requests"] == 1
    reset_stats(proxy.endpoint)
    assert fetch_stats(proxy.endpoint)["requests"] == 0  # control requests are not counted
    with counted(proxy.endpoint) as st:
        c = _conn(proxy)
        c.request("GET", "/x/z")
        c.getresponse().read()
        c.close()
    assert st["requests"] == 1
    assert st["log"][0]["path"] == "/x/z"


def test_s3_clients_through_the_proxy(s3_server: Any) -> None:
    import boto3
    import s3fs

    with LatencyProxy(f"127.0.0.1:{s3_server.port}", delay_ms=0) as p:
        bucket = s3_server.create_bucket()
        fs = s3fs.S3FileSystem(
            key="k", secret="s", endpoint_url=p.endpoint, use_listings_cache=False
        )
        p.reset()
        fs.pipe(f"{bucket}/x/c/0", b"a" * 3000)
        assert fs.cat_file(f"{bucket}/x/c/0", start=10, end=20) == b"a" * 10
        assert fs.ls(f"{bucket}/x/c") == [f"{bucket}/x/c/0"]
        st = p.stats()
        assert st["by_kind"]["PUT"] == {"requests": 1, "bytes_up": 3000, "bytes_down": 0}
        assert st["by_kind"]["GET range"]["bytes_down"] == 10
        assert st["by_kind"]["LIST"]["requests"] >= 1
        client = boto3.client(
            "s3",
            endpoint_url=p.endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )
        p.reset()
        assert client.get_object(Bucket=bucket, Key="x/c/0")["Body"].read() == b"a" * 3000
        client.head_object(Bucket=bucket, Key="x/c/0")
        client.delete_object(Bucket=bucket, Key="x/c/0")
        st = p.stats()
        kinds = {k: v["requests"] for k, v in st["by_kind"].items()}
        assert kinds == {"GET": 1, "HEAD": 1, "DELETE": 1}
        assert st["bytes_down"] == 3000


def test_classify() -> None:
    assert classify("GET", "/b?list-type=2&prefix=a/", {}) == ("LIST", "bucket")
    assert classify("GET", "/b/d/x/manifest.json", {}) == ("GET", "manifest")
    assert classify("PUT", "/b/d/x/f/zarr.json", {}) == ("PUT", "zarr.json")
    assert classify("GET", "/b/d/x/f/c/0/0", {"range": "bytes=0-1"}) == ("GET range", "chunk")
    assert classify("PUT", "/b/k?partNumber=1&uploadId=u", {}) == ("PUT part", "other")
    assert classify("POST", "/b/k?uploads", {}) == ("POST uploads", "other")
    assert classify("PUT", "/b/k", {"x-amz-copy-source": "/b/j"})[0] == "PUT copy"


def test_waves() -> None:
    def rec(start: float, end: float) -> dict[str, Any]:
        return {"start": start, "end": end, "kind": "GET", "object_class": "chunk"}

    log = [rec(0, 1), rec(0.5, 2), rec(3, 4), rec(3.5, 3.6), rec(5, 6)]
    w = waves(log)
    assert [x["requests"] for x in w] == [2, 2, 1]
    assert [x["start"] for x in w] == [0, 3, 5]
    assert [x["seconds"] for x in w] == [2, 1, 1]
    assert waves([]) == []


def test_round_trips_are_the_slope_over_the_delays() -> None:
    from bench_report import round_trip_slope, target_delay

    # 6 round trips: wall time grows by 6 x the delay; a disturbance of 10 ms on the +20 ms
    # timing moves the fitted slope by far less than it moves a two-point difference
    exact = [(0.0, 1.0), (0.02, 1.12), (0.08, 1.48)]
    assert round_trip_slope(exact) == pytest.approx(6.0)
    noisy = [(0.0, 1.0), (0.02, 1.13), (0.08, 1.48)]
    assert (1.13 - 1.0) / 0.02 == pytest.approx(6.5)
    assert abs(round_trip_slope(noisy) - 6.0) < 0.1
    assert round_trip_slope(exact[:2]) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="two different delays"):
        round_trip_slope([(0.02, 1.0), (0.02, 1.1)])
    with pytest.raises(ValueError, match="two different delays"):
        round_trip_slope([(0.0, 1.0)])
    assert target_delay([80, 0, 20]) == 20.0
    assert target_delay([20]) == 20.0
