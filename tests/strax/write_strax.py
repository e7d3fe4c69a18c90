"""Write a strax ``DataDirectory`` with the real strax (2.2.3), for the strax-data tests
(what it writes: :mod:`tests.strax.spec`).

Run as ``python -m tests.strax.write_strax OUT_DIR`` (the tests' fixture does, in a subprocess,
so the test process never imports strax). Writes into ``OUT_DIR``:

- ``data/``: the strax ``DataDirectory``. Run ``r1``: ``records_<compressor>`` for each of
  strax's compressors (blosc, zstd, lz4, bz2; 4 chunks, one of them empty, a 2-d field, field
  titles, a bool field), ``sums`` computed from ``records_zstd`` (a two-entry lineage), and
  ``broken``, whose save strax ended with an exception. Run ``r2``: ``records_blosc`` with
  another ``gain``. Run metadata for ``r1`` (with a date, as strax writes it through bson).
- ``expected/<folder>.npy``: what strax's own ``get_array`` returns for each key.
- ``expected.json``: each key's folder and strax lineage (as strax's metadata has it), and
  ``strax.deterministic_hash`` of every lineage of :mod:`tests.strax.lineages`.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import strax

from tests.strax.lineages import CASES
from tests.strax.spec import (
    CHUNK_NS,
    COMPRESSORS,
    OPTIONS,
    R2_GAIN,
    RECORDS_VERSION,
    ROWS,
    SUMS_SCALE,
    SUMS_VERSION,
)

RECORD_DTYPE = [
    (("Start time since unix epoch [ns]", "time"), np.int64),
    (("Exclusive end time since unix epoch [ns]", "endtime"), np.int64),
    (("Channel number", "channel"), np.int16),
    (("Integral [PE]", "area"), np.float32),
    (("Waveform samples", "data"), np.float32, (4, 3)),
    (("Saturated", "flag"), np.bool_),
]


def make_records(chunk_i: int, gain: float, seed: int) -> np.ndarray:
    """The records of one chunk: sorted times inside ``[chunk_i, chunk_i + 1) * CHUNK_NS``."""
    rng = np.random.default_rng(seed * 100 + chunk_i)
    n = ROWS[chunk_i]
    r = np.zeros(n, dtype=strax.to_numpy_dtype(RECORD_DTYPE))
    start = chunk_i * CHUNK_NS
    r["time"] = np.sort(start + rng.integers(0, CHUNK_NS - 20, n))
    r["endtime"] = r["time"] + rng.integers(1, 20, n)
    r["channel"] = rng.integers(0, 250, n)
    r["data"] = rng.normal(0, 1, (n, 4, 3)).astype(np.float32) * gain
    r["area"] = r["data"].sum(axis=(1, 2))
    r["flag"] = rng.random(n) > 0.5
    return r


@strax.takes_config(
    strax.Option("gain", default=OPTIONS["gain"], type=float, help="an integral float"),
    strax.Option("seed", default=OPTIONS["seed"], type=int, help="random seed"),
    strax.Option("label", default=OPTIONS["label"], type=str, help="a non-ASCII string"),
    strax.Option("weights", default=OPTIONS["weights"], help="a dict option"),
    strax.Option("channels", default=OPTIONS["channels"], type=tuple, help="a tuple option"),
    strax.Option("verbose", default=False, track=False, help="untracked"),
)
class RecordsBase(strax.Plugin):
    """A source of ``len(ROWS)`` chunks, saved as produced (no rechunking)."""

    __version__ = RECORDS_VERSION
    depends_on = ()
    provides = "records_base"
    dtype = RECORD_DTYPE
    rechunk_on_save = False

    def source_finished(self) -> bool:
        return True

    def is_ready(self, chunk_i: int) -> bool:
        return chunk_i < len(ROWS)

    def compute(self, chunk_i: int) -> Any:
        data = make_records(chunk_i, self.config["gain"], self.config["seed"])
        start = chunk_i * CHUNK_NS
        return self.chunk(start=start, end=start + CHUNK_NS, data=data)


PLUGINS: list[type[strax.Plugin]] = []
for _c in COMPRESSORS:
    PLUGINS.append(
        type(
            f"Records{_c.capitalize()}",
            (RecordsBase,),
            {"provides": f"records_{_c}", "data_kind": f"records_{_c}", "compressor": _c},
        )
    )


@strax.takes_config(strax.Option("scale", default=SUMS_SCALE, type=float, help="multiplier"))
class Sums(strax.Plugin):
    """Per record of ``records_zstd``: its area times ``scale``."""

    __version__ = SUMS_VERSION
    depends_on = "records_zstd"
    provides = "sums"
    data_kind = "records_zstd"
    compressor = "bz2"
    rechunk_on_save = False
    dtype = [*strax.time_fields, (("Scaled area", "scaled"), np.float64)]

    def compute(self, records_zstd: np.ndarray) -> np.ndarray:
        out = np.zeros(len(records_zstd), dtype=self.dtype)
        out["time"] = records_zstd["time"]
        out["endtime"] = records_zstd["endtime"]
        out["scaled"] = records_zstd["area"].astype(np.float64) * self.config["scale"]
        return out


class Broken(RecordsBase):
    """Fails in its second chunk: strax records the exception in the metadata it saves."""

    provides = "broken"
    data_kind = "broken"

    def compute(self, chunk_i: int) -> Any:
        if chunk_i == 1:
            raise RuntimeError("broken on purpose")
        return super().compute(chunk_i)


def main(out: Path) -> None:
    data = out / "data"
    (out / "expected").mkdir(parents=True)
    st = strax.Context(
        storage=[strax.DataDirectory(str(data))],
        register=[*PLUGINS, Sums, Broken],
        allow_multiprocess=False,
    )
    st.storage[0].write_run_metadata(
        "r1",
        {
            "start": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            "end": datetime.datetime(2026, 1, 2, 4, 4, 5, tzinfo=datetime.UTC),
            "mode": "background",
            "tags": [{"name": "good"}],
            "calibration": {"gain": 2.0, "lifetime_us": 650.5},
        },
    )
    keys: dict[str, Any] = {}

    def save(ctx: Any, run_id: str, target: str) -> None:
        ctx.make(run_id, target)
        key = ctx.key_for(run_id, target)
        folder = str(key)
        arr = ctx.get_array(run_id, target, progress_bar=False)
        np.save(out / "expected" / f"{folder}.npy", arr, allow_pickle=False)
        md = ctx.get_metadata(run_id, target)
        keys[folder] = {"run_id": run_id, "data_type": target, "lineage": md["lineage"]}

    for c in COMPRESSORS:
        save(st, "r1", f"records_{c}")
    save(st, "r1", "sums")
    save(st.new_context(config={"gain": R2_GAIN}), "r2", "records_blosc")
    try:
        st.make("r1", "broken")
    except RuntimeError:
        pass
    broken = str(st.key_for("r1", "broken"))
    hashes = [strax.deterministic_hash(c) for c in CASES]
    doc = {"keys": keys, "broken": broken, "hashes": hashes, "strax_version": strax.__version__}
    (out / "expected.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
