"""Shared test data: strax-like records, deterministic per seed."""

from __future__ import annotations

import contextlib
import uuid

import numpy as np

STRAX_DTYPE = np.dtype(
    [
        ("time", "<i8"),
        ("length", "<i4"),
        ("dt", "<i2"),
        ("channel", "<i2"),
        ("area", "<f4"),
        ("data", "<f4", (110,)),
    ]
)

PARTITION_NS = 1_000_000


def make_records(n: int, start: int, end: int | None = None, seed: int = 0) -> np.ndarray:
    """``n`` sorted strax-like records inside ``[start, end)`` (waveforms: noise + a pulse)."""
    end = start + PARTITION_NS if end is None else end
    rng = np.random.default_rng(seed)
    x = np.zeros(n, dtype=STRAX_DTYPE)
    if n == 0:
        return x
    x["dt"] = 10
    x["length"] = rng.integers(20, 111, n)
    span = end - start - 110 * 10
    x["time"] = np.sort(start + rng.integers(0, max(1, span), n))
    x["channel"] = rng.integers(0, 250, n)
    wf = rng.normal(0, 1.5, (n, 110))
    wf += 40 * np.exp(-0.5 * ((np.arange(110) - 30) / 4.0) ** 2)
    wf = np.round(wf).astype(np.float32)
    wf[np.arange(110)[None, :] >= x["length"][:, None]] = 0
    x["data"] = wf
    x["area"] = wf.sum(axis=1)
    return x


def make_run(sizes: list[int], seed: int = 0) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Partitions of the given sizes, back to back, each ``PARTITION_NS`` long."""
    parts, intervals = [], []
    for i, n in enumerate(sizes):
        s, e = i * PARTITION_NS, (i + 1) * PARTITION_NS
        parts.append(make_records(n, s, e, seed=seed * 1000 + i))
        intervals.append((s, e))
    return parts, intervals


def lineage(data_type: str = "records", **options: object) -> dict:
    """A small lineage for ``data_type``."""
    return {data_type: ["Plugin", "0.1", dict(options)]}


LOCAL_URL_KINDS = ["path", "file_url", "memory"]


def local_url(kind: str, tmp_path, tag: str = "test") -> str:
    """A fresh root URL on this machine: a plain path, a ``file://`` URL, or ``memory://``."""
    if kind == "path":
        return str(tmp_path / "store")
    if kind == "file_url":
        return f"file://{tmp_path}/store"
    return f"memory://strata-{tag}-{uuid.uuid4().hex}"


@contextlib.contextmanager
def two_worker_client():
    """A client of a real two-process LocalCluster (one thread each, no dashboard)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


# -- the commit document (a key's zarr.json), edited the way a forger would ------------------
def commit_body(raw: bytes) -> dict:
    """The manifest inside a commit document (``attributes.strata``), without its checksum."""
    import json

    body = dict(json.loads(raw)["attributes"]["strata"])
    body.pop("checksum")
    return body


def reseal(raw: bytes, body: dict) -> bytes:
    """``raw`` (a commit document) with its manifest replaced by ``body`` and the checksum
    recomputed by the published rule: a forgery only the structure checks can catch.
    """
    import json

    from strata.storage.manifest import CHECKSUM_PLACEHOLDER, seal

    doc = json.loads(raw)
    doc["attributes"]["strata"] = {**body, "checksum": CHECKSUM_PLACEHOLDER}
    return seal(doc)


def edit_commit(raw: bytes, edit) -> bytes:
    """Apply ``edit`` to the manifest in a commit document and reseal it."""
    body = commit_body(raw)
    edit(body)
    return reseal(raw, body)


def legacy_manifest(raw: bytes, fmt: str = "strata.manifest.v2") -> bytes:
    """A ``manifest.json`` of format v2 (or v1: no digests) with the content of a v3 commit
    document, as strata before format v3 wrote it (positional rows, flat digests).
    """
    import json

    from strata.storage.manifest import PARTITION_COLUMNS, legacy_checksum

    b = commit_body(raw)
    d = dict(b)
    d["format"] = fmt
    d["dtype"] = [[f["name"], f["dtype"], f["shape"]] for f in b["dtype"]]
    cols = b["partitions"]
    d["partitions"] = [list(r) for r in zip(*(cols[c] for c in PARTITION_COLUMNS), strict=True)]
    segs = []
    for s in b["segments"]:
        s = dict(s)
        if fmt == "strata.manifest.v1":
            s.pop("chunks")
            s.pop("metadata")
        else:
            s["chunks"] = {
                f: [v for pair in zip(c["size"], c["crc32c"], strict=True) for v in pair]
                for f, c in s["chunks"].items()
            }
            s["metadata"] = {k: [v["size"], v["crc32c"]] for k, v in s["metadata"].items()}
        segs.append(s)
    d["segments"] = segs
    if fmt == "strata.manifest.v1":
        d.pop("attempt_metadata")
    else:
        d["partition_columns"] = PARTITION_COLUMNS
        am = b["attempt_metadata"]
        d["attempt_metadata"] = [am["size"], am["crc32c"]]
    d["checksum"] = legacy_checksum(d)
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()


def shard_parts(raw: bytes) -> tuple[list[bytes], int]:
    """The stored inner chunks of a shard object (Zarr v3 sharding, index at the end with a
    crc32c), read by its own index (empty entries left out), and the index's entries.
    """
    import google_crc32c

    body, crc = raw[:-4], raw[-4:]
    # the index is 16 bytes an entry; find its length from the entries that point inside
    for k in range(1, len(body) // 16 + 1):
        index = body[len(body) - 16 * k :]
        if google_crc32c.value(index).to_bytes(4, "little") == crc:
            entries = np.frombuffer(index, "<u8").reshape(k, 2)
            parts = [raw[int(o) : int(o) + int(s)] for o, s in entries if int(o) != 2**64 - 1]
            return parts, k
    raise ValueError("not a shard: no index with a matching crc32c at its end")


def make_shard(parts: list[bytes], entries: int) -> bytes:
    """A shard object of inner chunks ``parts`` with an index of ``entries`` entries that
    describes them exactly (what a careful forger writes: plain Zarr readers take it as is).
    """
    import google_crc32c

    index = np.full((entries, 2), 2**64 - 1, dtype="<u8")
    at = 0
    for i, p in enumerate(parts):
        index[i] = (at, len(p))
        at += len(p)
    raw = index.tobytes()
    return b"".join(parts) + raw + google_crc32c.value(raw).to_bytes(4, "little")
