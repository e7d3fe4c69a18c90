"""A latency-adding HTTP/1.1 proxy that counts what passes through it (for the S3 benchmark).

:class:`LatencyProxy` listens on 127.0.0.1 and forwards every request to one upstream HTTP
server (moto's S3 in the benchmark). Before the first byte of each response it waits a fixed
delay, as a network round trip would; bytes pass through unchanged otherwise. It answers
``Expect: 100-continue`` itself, after the same delay (as S3 does: a PUT that asks first costs
two round trips), and forwards the request without that header.

It counts, per request kind (``GET``, ``GET range``, ``LIST``, ``HEAD``, ``PUT``, ``DELETE``,
``POST delete``, ...), requests and body bytes each way, and the most requests in flight at
once (from the request's first byte to the response's last), and keeps a log of every request
(kind, object class, status, bytes, start, first byte and end times).

Control requests, neither counted nor delayed: ``GET /__proxy__/stats`` (JSON, see
:meth:`LatencyProxy.stats`), ``POST /__proxy__/reset`` and ``PUT /__proxy__/delay?ms=N``.

Run as a script, it proxies one upstream until interrupted::

    python tests/benchmarks/latency_proxy.py --upstream 127.0.0.1:5000 --delay-ms 20
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "LatencyProxy",
    "RequestRecord",
    "classify",
    "counted",
    "fetch_stats",
    "reset_stats",
    "waves",
]

CONTROL_PREFIX = "/__proxy__/"
_PIPE = 1 << 20  # bytes per read when streaming a body
_BUFFER = 1 << 20  # stream buffer limit (and longest head)


@dataclass
class RequestRecord:
    """One proxied request.

    Attributes
    ----------
    kind
        What the request does (see :func:`classify`).
    object_class
        What it touches: ``zarr.json``, ``manifest``, ``chunk``, ``json``, ``bucket`` or
        ``other`` (from the last path component).
    method, path, status
        Request method, path (no query) and response status.
    bytes_up, bytes_down
        Body bytes of the request and of the response.
    start, first_byte, end
        Seconds (``time.perf_counter``) when the request's head arrived, when the response's
        first byte was sent and when its last byte was sent.
    continued
        The request asked ``Expect: 100-continue`` (the proxy answered it after the delay).

    """

    kind: str
    object_class: str
    method: str
    path: str
    status: int
    bytes_up: int
    bytes_down: int
    start: float
    first_byte: float
    end: float
    continued: bool = False


def classify(method: str, target: str, headers: dict[str, str]) -> tuple[str, str]:
    """``(kind, object class)`` of a request from its method, target and (lower-case) headers.

    >>> classify("GET", "/b?list-type=2&prefix=x/", {})
    ('LIST', 'bucket')
    >>> classify("GET", "/b/x/c/0/0", {"range": "bytes=0-9"})
    ('GET range', 'chunk')
    """
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    path = parts.path
    segments = [s for s in path.split("/") if s]
    name = segments[-1] if segments else ""
    kind = method
    if method == "GET" and len(segments) <= 1:  # path style: /bucket?list-type=2&prefix=...
        kind = "LIST"
    elif method == "GET" and "range" in headers:
        kind = "GET range"
    if method == "PUT" and "x-amz-copy-source" in headers:
        kind = "PUT copy"
    if method == "PUT" and "partNumber" in query:
        kind = "PUT part"
    if method == "POST":
        for sub in ("delete", "uploads", "uploadId"):
            if sub in query:
                kind = f"POST {sub}"
                break
    if len(segments) <= 1:
        cls = "bucket"
    elif name == "zarr.json":
        cls = "zarr.json"
    elif name.startswith("manifest") or "manifests" in segments:
        cls = "manifest"
    elif name.endswith(".json"):
        cls = "json"
    elif "c" in segments[1:-1] or "chunks" in segments or name.isdigit():
        cls = "chunk"
    else:
        cls = "other"
    return kind, cls


class _Stats:
    """Counters of one proxy (guarded by a lock: the control API reads them from any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.records: list[RequestRecord] = []
            self.in_flight = 0
            self.max_in_flight = 0
            self.since = time.perf_counter()

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, record: RequestRecord | None) -> None:
        with self.lock:
            self.in_flight -= 1
            if record is not None:
                self.records.append(record)
            self.lock.notify_all()

    def snapshot(self, delay_s: float, settle_s: float = 2.0) -> dict[str, Any]:
        with self.lock:
            # a client can read the last byte of a response before its record is appended:
            # wait (bounded) for the requests in flight to be recorded
            self.lock.wait_for(lambda: self.in_flight <= 0, timeout=settle_s)
            records = list(self.records)
            max_in_flight = self.max_in_flight
            since = self.since
        return summarize(records, max_in_flight, delay_s, since)


def summarize(
    records: list[RequestRecord], max_in_flight: int, delay_s: float, since: float
) -> dict[str, Any]:
    """The stats document of :meth:`LatencyProxy.stats` from its parts."""
    by_kind: dict[str, dict[str, int]] = {}
    by_class: dict[str, dict[str, int]] = {}
    status: dict[str, int] = {}
    for r in records:
        for table, key in ((by_kind, r.kind), (by_class, f"{r.kind} {r.object_class}")):
            row = table.setdefault(key, {"requests": 0, "bytes_up": 0, "bytes_down": 0})
            row["requests"] += 1
            row["bytes_up"] += r.bytes_up
            row["bytes_down"] += r.bytes_down
        status[str(r.status)] = status.get(str(r.status), 0) + 1
    busy = _busy_seconds(records)
    log = [asdict(r) for r in records]
    return {
        "delay_ms": round(delay_s * 1000, 3),
        "requests": len(records),
        "bytes_up": sum(r.bytes_up for r in records),
        "bytes_down": sum(r.bytes_down for r in records),
        "continued": sum(r.continued for r in records),
        "max_in_flight": max_in_flight,
        "mean_in_flight_while_busy": (
            sum(r.end - r.start for r in records) / busy if busy > 0 else 0.0
        ),
        "busy_seconds": busy,
        "waves": len(waves(log)),
        "seconds_since_reset": time.perf_counter() - since,
        "by_kind": dict(sorted(by_kind.items())),
        "by_kind_and_object": dict(sorted(by_class.items())),
        "status": dict(sorted(status.items())),
        "log": log,
    }


def waves(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests of ``log`` in waves: a wave ends when no request is in flight.

    Each wave: ``start`` and ``seconds`` (relative to the first request), ``requests`` and
    ``kinds`` (``{"PUT chunk": n, ...}``). Between two waves the client computed or waited
    for something that was not S3.
    """
    out: list[dict[str, Any]] = []
    if not log:
        return out
    recs = sorted(log, key=lambda r: r["start"])
    t0 = recs[0]["start"]
    end = -math.inf
    for r in recs:
        if r["start"] > end:
            out.append({"start": r["start"] - t0, "end": r["end"] - t0, "requests": 0, "kinds": {}})
        w = out[-1]
        key = f"{r['kind']} {r['object_class']}"
        w["kinds"][key] = w["kinds"].get(key, 0) + 1
        w["requests"] += 1
        w["end"] = max(w["end"], r["end"] - t0)
        end = max(end, r["end"])
    for w in out:
        w["seconds"] = w.pop("end") - w["start"]
    return out


def _busy_seconds(records: list[RequestRecord]) -> float:
    """Seconds during which at least one request was in flight."""
    total, cur_start, cur_end = 0.0, None, 0.0
    for r in sorted(records, key=lambda r: r.start):
        if cur_start is None or r.start > cur_end:
            if cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = r.start, r.end
        else:
            cur_end = max(cur_end, r.end)
    if cur_start is not None:
        total += cur_end - cur_start
    return total


class _Head:
    """A parsed HTTP head: start line, headers (original order and case), lower-case lookup."""

    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.items: list[tuple[str, str]] = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            self.items.append((name.strip(), value.strip()))
        self.lower = {k.lower(): v for k, v in self.items}

    def encode(self, start: str | None = None, drop: tuple[str, ...] = ()) -> bytes:
        lines = [start or self.start]
        lines += [f"{k}: {v}" for k, v in self.items if k.lower() not in drop]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise ConnectionError("connection closed inside an HTTP head") from e
        return None
    except asyncio.LimitOverrunError as e:
        raise ConnectionError("HTTP head too long") from e


async def _pipe_body(
    head: _Head,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter | None,
    *,
    until_eof: bool = False,
) -> int:
    """Copy the body that follows ``head`` from ``reader`` to ``writer``; returns its bytes.

    Content-Length and chunked bodies are copied as they are; ``until_eof``: a response
    without either, whose body ends when the connection does.
    """
    n = 0
    if "chunked" in head.lower.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if writer is not None:
                writer.write(size_line)
            data = await reader.readexactly(size + 2)  # the chunk and its CRLF
            n += size
            if writer is not None:
                writer.write(data)
                await writer.drain()
            if size == 0:
                if data != b"\r\n":  # trailers: copy up to the empty line
                    rest = await reader.readuntil(b"\r\n\r\n")
                    if writer is not None:
                        writer.write(rest)
                break
        return n
    if "content-length" in head.lower:
        remaining = int(head.lower["content-length"])
        while remaining:
            data = await reader.read(min(_PIPE, remaining))
            if not data:
                raise ConnectionError("connection closed inside an HTTP body")
            remaining -= len(data)
            n += len(data)
            if writer is not None:
                writer.write(data)
                await writer.drain()
        return n
    if until_eof:
        while data := await reader.read(_PIPE):
            n += len(data)
            if writer is not None:
                writer.write(data)
                await writer.drain()
    return n


class LatencyProxy:
    """An HTTP/1.1 proxy to one upstream server that delays the first byte of every response.

    Parameters
    ----------
    upstream
        ``"host:port"`` of the server to forward to.
    delay_ms
        Milliseconds to wait before the first byte of each response (and before answering
        ``Expect: 100-continue``).
    host, port
        Where to listen (port 0: a free one; see :attr:`port` after :meth:`start`).

    Notes
    -----
    Each client connection gets its own upstream connection, opened on its first request and
    again after the upstream closes one (moto answers HTTP/1.0 and closes). Responses are sent
    to the client as HTTP/1.1 with keep-alive when their length is known, so clients keep
    their connections as they would with S3; a request's round trip is the delay plus the
    upstream's own time.

    """

    def __init__(
        self, upstream: str, delay_ms: float = 0.0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        up_host, _, up_port = upstream.rpartition(":")
        self.upstream = (up_host or "127.0.0.1", int(up_port))
        self.delay_s = delay_ms / 1000.0
        self.host = host
        self.port = port
        self._stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the proxy."""
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LatencyProxy:
        """Start listening (an event loop in a daemon thread); returns ``self``."""
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("latency proxy did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"latency proxy failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, self.host, self.port, limit=_BUFFER)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counters -----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters since the last reset.

        Keys: ``requests``, ``bytes_up``, ``bytes_down`` (body bytes), ``continued``
        (requests that asked ``Expect: 100-continue``), ``max_in_flight``,
        ``mean_in_flight_while_busy``, ``busy_seconds``, ``by_kind`` and
        ``by_kind_and_object`` (``{name: {requests, bytes_up, bytes_down}}``), ``status``
        (requests per status code), ``log`` (every :class:`RequestRecord` as a dict) and
        ``delay_ms``.
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            return self._stats.snapshot(self.delay_s, settle_s=0.0)
        return self._stats.snapshot(self.delay_s)

    def reset(self) -> None:
        """Forget every counted request (requests in flight are counted when they end)."""
        self._stats.reset()

    def set_delay(self, delay_ms: float) -> None:
        """Change the delay for responses from now on."""
        self.delay_s = delay_ms / 1000.0

    # -- the proxy ----------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                raw = await _read_head(reader)
                if raw is None:
                    break
                start = time.perf_counter()
                head = _Head(raw)
                method, _, rest = head.start.partition(" ")
                target = rest.rpartition(" ")[0]
                if target.startswith(CONTROL_PREFIX):
                    await _pipe_body(head, reader, None)
                    await self._control(method, target, writer)
                    await writer.drain()
                    continue
                self._stats.begin()
                record: RequestRecord | None = None
                try:
                    record, up, keep = await self._forward(
                        head, method, target, start, reader, writer, up
                    )
                finally:
                    self._stats.end(record)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # a client or upstream that went away: nothing to answer
        finally:
            for w in (writer, up[1] if up else None):
                if w is not None:
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()

    async def _forward(
        self,
        head: _Head,
        method: str,
        target: str,
        start: float,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[RequestRecord, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        kind, cls = classify(method, target, head.lower)
        continued = head.lower.get("expect", "").lower() == "100-continue"
        if continued:  # S3 answers "continue" after a round trip; the body follows it
            await asyncio.sleep(self.delay_s)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if up is None or up[0].at_eof():
            if up is not None:
                up[1].close()
            up = await asyncio.open_connection(*self.upstream, limit=_BUFFER)
        up_reader, up_writer = up
        up_writer.write(head.encode(drop=("expect",)))
        bytes_up = await _pipe_body(head, reader, up_writer)
        await up_writer.drain()
        while True:  # skip interim (1xx) responses of the upstream
            raw = await _read_head(up_reader)
            if raw is None:
                raise ConnectionError("upstream closed before answering")
            resp = _Head(raw)
            status = int(resp.start.split(" ")[1])
            if status >= 200:
                break
        await asyncio.sleep(self.delay_s)
        first_byte = time.perf_counter()
        bodiless = method == "HEAD" or status in (204, 304)
        known = (
            bodiless
            or "content-length" in resp.lower
            or "chunked" in resp.lower.get("transfer-encoding", "")
        )
        version, _, reason = resp.start.partition(" ")
        if known:  # keep the client's connection open, as S3 would
            writer.write(resp.encode(start=f"HTTP/1.1 {reason}", drop=("connection",)))
        else:
            writer.write(resp.encode(drop=("connection",))[:-2] + b"Connection: close\r\n\r\n")
        bytes_down = 0 if bodiless else await _pipe_body(resp, up_reader, writer, until_eof=True)
        await writer.drain()
        up_keeps = version == "HTTP/1.1" and resp.lower.get("connection", "").lower() != "close"
        if not up_keeps or not known:
            up_writer.close()
            up = None
        client_keeps = head.lower.get("connection", "").lower() != "close"
        record = RequestRecord(
            kind=kind,
            object_class=cls,
            method=method,
            path=urlsplit(target).path,
            status=status,
            bytes_up=bytes_up,
            bytes_down=bytes_down,
            start=start,
            first_byte=first_byte,
            end=time.perf_counter(),
            continued=continued,
        )
        return record, up, known and client_keeps

    async def _control(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(target)
        what = parts.path[len(CONTROL_PREFIX) :]
        status, body = "200 OK", b"{}"
        if what == "stats" and method == "GET":
            # requests of the client that asks may still be ending on this loop: let them
            deadline = time.perf_counter() + 2.0
            while self._stats.in_flight > 0 and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)
            body = json.dumps(self._stats.snapshot(self.delay_s, settle_s=0.0)).encode()
        elif what == "reset" and method == "POST":
            self.reset()
        elif what == "delay" and method == "PUT":
            ms = parse_qs(parts.query).get("ms", [""])[0]
            try:
                self.set_delay(float(ms))
            except ValueError:
                status, body = "400 Bad Request", json.dumps({"error": f"bad ms={ms!r}"}).encode()
        else:
            status = "404 Not Found"
            body = json.dumps({"error": f"no control {method} {what!r}"}).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


def _control_request(endpoint: str, what: str, method: str) -> bytes:
    import urllib.request

    req = urllib.request.Request(f"{endpoint}{CONTROL_PREFIX}{what}", method=method)
    with urllib.request.urlopen(req, timeout=30) as r:
        return bytes(r.read())


def fetch_stats(endpoint: str) -> dict[str, Any]:
    """The stats of the proxy at ``endpoint`` (from another process): see ``stats()``."""
    result: dict[str, Any] = json.loads(_control_request(endpoint, "stats", "GET"))
    return result


def reset_stats(endpoint: str) -> None:
    """Reset the counters of the proxy at ``endpoint`` (from another process)."""
    _control_request(endpoint, "reset", "POST")


@contextlib.contextmanager
def counted(endpoint: str) -> Iterator[dict[str, Any]]:
    """Reset the proxy's counters, run the block, and fill the yielded dict with its stats."""
    out: dict[str, Any] = {}
    reset_stats(endpoint)
    try:
        yield out
    finally:
        out.update(fetch_stats(endpoint))


def _main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="host:port to forward to")
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    proxy = LatencyProxy(args.upstream, args.delay_ms, port=args.port).start()
    print(proxy.endpoint, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()


if __name__ == "__main__":
    _main()
