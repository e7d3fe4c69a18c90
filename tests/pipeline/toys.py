"""Small plugins whose results are easy to compute with numpy in the tests.

``CALLS`` counts ``compute`` calls per plugin class (threaded scheduler only).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, ClassVar

import numpy as np

from strata.pipeline import Option, Plugin, SaveWhen, time_fields

CALLS: Counter[str] = Counter()
_LOCK = threading.Lock()

VALUE_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float64)])


def count(plugin: Plugin) -> None:
    with _LOCK:
        CALLS[type(plugin).__name__] += 1


def ticks_numpy(start: int, end: int, n: int, offset: float = 0.0) -> np.ndarray:
    """What Ticks computes for one partition."""
    step = (end - start) // n
    out = np.zeros(n, dtype=VALUE_DTYPE)
    out["time"] = start + np.arange(n) * step
    out["endtime"] = out["time"] + 1
    out["value"] = np.sin(out["time"] / 7.0) * 10 + offset
    return out


class Ticks(Plugin):
    """Source: ``n_per_partition`` rows per partition of ``partition_ns``."""

    provides = "ticks"
    version = "1"
    dtype = np.dtype(
        [
            (("Start time [ns]", "time"), np.int64),
            (("End time [ns]", "endtime"), np.int64),
            (("A wiggly value", "value"), np.float64),
        ]
    )
    n_per_partition = Option(default=5, type=int, help="rows per partition")
    partition_ns = Option(default=100, type=int, help="partition length")
    n_partitions = Option(default=4, type=int, help="partitions per run")
    offset = Option(default=0.0, type=float, help="added to every value")

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        p = self.partition_ns
        return [(i * p, (i + 1) * p) for i in range(self.n_partitions)]

    def compute(self, start: int, end: int) -> np.ndarray:
        count(self)
        return ticks_numpy(start, end, self.n_per_partition, self.offset)


class Doubled(Plugin):
    """``ticks`` times ``factor``; ``verbose`` is untracked."""

    provides = "doubled"
    depends_on = "ticks"
    version = "1"
    dtype = VALUE_DTYPE
    factor = Option(default=2.0, type=float, help="multiplier")
    verbose = Option(default=False, type=bool, track=False, help="does not change the data")

    def compute(self, ticks: np.ndarray, start: int, end: int) -> np.ndarray:
        count(self)
        out = ticks.copy()
        out["value"] = ticks["value"] * self.factor
        return out


class TickInfo(Plugin):
    """One row per tick (kind ``ticks``): parity of the row's time step."""

    provides = "tick_info"
    depends_on = "ticks"
    data_kind = "ticks"
    version = "1"
    dtype = np.dtype([*time_fields(), (("Is the value positive", "positive"), np.bool_)])

    def compute(self, ticks: np.ndarray, start: int, end: int) -> np.ndarray:
        count(self)
        out = np.zeros(len(ticks), dtype=self.dtype_of("tick_info"))
        out["time"] = ticks["time"]
        out["endtime"] = ticks["endtime"]
        out["positive"] = ticks["value"] > 0
        return out


class Coarse(Plugin):
    """Source with partitions twice as long as Ticks' (and a different row spacing)."""

    provides = "coarse"
    version = "1"
    dtype = VALUE_DTYPE
    coarse_ns = Option(default=200, type=int)
    n_partitions = Option(default=4, type=int, help="partitions per run of Ticks")
    partition_ns = Option(default=100, type=int, help="partition length of Ticks")

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        end = self.n_partitions * self.partition_ns
        return [(s, min(s + self.coarse_ns, end)) for s in range(0, end, self.coarse_ns)]

    def compute(self, start: int, end: int) -> np.ndarray:
        count(self)
        return ticks_numpy(start, end, 3)


class Combined(Plugin):
    """One row per partition: how many ticks and coarse rows it received, and their span."""

    provides = "combined"
    depends_on = ("ticks", "coarse")
    version = "1"
    dtype = np.dtype(
        [
            ("time", np.int64),
            ("endtime", np.int64),
            ("n_ticks", np.int64),
            ("n_coarse", np.int64),
            ("first_tick", np.int64),
            ("last_tick", np.int64),
        ]
    )

    def compute(self, ticks: np.ndarray, coarse: np.ndarray, start: int, end: int) -> np.ndarray:
        count(self)
        out = np.zeros(1, dtype=self.dtype_of("combined"))
        out["time"], out["endtime"] = start, end
        out["n_ticks"], out["n_coarse"] = len(ticks), len(coarse)
        out["first_tick"] = ticks["time"].min() if len(ticks) else -1
        out["last_tick"] = ticks["time"].max() if len(ticks) else -1
        return out


class Split(Plugin):
    """Two outputs: ticks with value below and at or above ``threshold``."""

    provides = ("low", "high")
    depends_on = "ticks"
    version = "1"
    dtype: ClassVar[dict[str, Any]] = {"low": VALUE_DTYPE, "high": VALUE_DTYPE}
    threshold = Option(default=0.0, type=float)

    def compute(self, ticks: np.ndarray, start: int, end: int) -> dict[str, np.ndarray]:
        count(self)
        low = ticks["value"] < self.threshold
        return {"low": ticks[low], "high": ticks[~low]}


class Gained(Plugin):
    """``ticks`` times a per-run gain from the run metadata."""

    provides = "gained"
    depends_on = "ticks"
    version = "1"
    dtype = VALUE_DTYPE
    gain = Option(type=float, from_run="calibration.gain", help="per-run gain")

    def compute(self, ticks: np.ndarray, start: int, end: int) -> np.ndarray:
        count(self)
        out = ticks.copy()
        out["value"] *= self.gain
        return out


class NeverSaved(Doubled):
    provides = "never_saved"
    save_when = SaveWhen.NEVER


class TargetSaved(Doubled):
    provides = "target_saved"
    save_when = SaveWhen.TARGET


class ExplicitSaved(Doubled):
    provides = "explicit_saved"
    save_when = SaveWhen.EXPLICIT


class OnTopOfTarget(Doubled):
    """Depends on target_saved, to see that an intermediate TARGET type is not saved."""

    provides = "on_top"
    depends_on = "target_saved"

    def compute(self, target_saved: np.ndarray, start: int, end: int) -> np.ndarray:
        return super().compute(ticks=target_saved, start=start, end=end)


class Broken(Plugin):
    """Returns bad data in partition ``bad_partition`` (kind chosen by ``how``)."""

    provides = "broken"
    depends_on = "ticks"
    version = "1"
    dtype = VALUE_DTYPE
    how = Option(default="dtype", type=str)
    bad_partition = Option(default=2, type=int)

    def compute(self, ticks: np.ndarray, start: int, end: int) -> Any:
        out = ticks.copy()
        if start // 100 != self.bad_partition:
            return out
        if self.how == "dtype":
            return out.astype([("time", np.int64), ("endtime", np.int64), ("value", np.float32)])
        if self.how == "bounds":
            out["endtime"][-1] = end + 5
            return out
        if self.how == "unsorted":
            return out[::-1]
        if self.how == "raise":
            raise RuntimeError("plugin bug")
        return list(out)


TOYS: list[type[Plugin]] = [Ticks, Doubled, TickInfo, Coarse, Combined, Split, Gained]


# -- superruns (issue 13) ---------------------------------------------------------------------
class Pulses(Plugin):
    """Source placed in time by the run document's ``t0``, so that runs do not overlap."""

    provides = "pulses"
    version = "1"
    dtype = VALUE_DTYPE
    t0 = Option(type=int, from_run="t0", help="start of the run [ns]")
    n_partitions = Option(default=3, type=int)
    partition_ns = Option(default=100, type=int)
    n_per_partition = Option(default=4, type=int)

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        p = self.partition_ns
        return [(self.t0 + i * p, self.t0 + (i + 1) * p) for i in range(self.n_partitions)]

    def compute(self, start: int, end: int) -> np.ndarray:
        count(self)
        return ticks_numpy(start, end, self.n_per_partition)


class PulseArea(Plugin):
    """``pulses`` times three; does not allow superruns (a superrun's is the concatenation)."""

    provides = "pulse_area"
    depends_on = "pulses"
    version = "1"
    dtype = VALUE_DTYPE

    def compute(self, pulses: np.ndarray, start: int, end: int) -> np.ndarray:
        count(self)
        out = pulses.copy()
        out["value"] = pulses["value"] * 3
        return out


RUN_TAGGED_DTYPE = np.dtype([*VALUE_DTYPE.descr, ("run_len", np.int64)])


class RunTagged(Plugin):
    """Allows superruns: computed from the superrun's inputs, it records the length of the
    run id it was computed for (so a superrun's own result differs from its subruns')."""

    provides = "run_tagged"
    depends_on = ("pulses", "pulse_area")
    version = "1"
    dtype = RUN_TAGGED_DTYPE
    allow_superrun = True

    def compute(
        self, pulses: np.ndarray, pulse_area: np.ndarray, start: int, end: int
    ) -> np.ndarray:
        count(self)
        out = np.zeros(len(pulses), dtype=RUN_TAGGED_DTYPE)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["value"] = pulse_area["value"] - pulses["value"]
        out["run_len"] = len(self.run_id or "")
        return out


class ExplicitTagged(RunTagged):
    provides = "explicit_tagged"
    save_when = SaveWhen.EXPLICIT


class FailsFor(Plugin):
    """Raises in compute for runs whose run document says ``fail: true``."""

    provides = "fails_for"
    depends_on = "ticks"
    version = "1"
    dtype = VALUE_DTYPE
    fail = Option(type=bool, from_run="fail")

    def compute(self, ticks: np.ndarray, start: int, end: int) -> np.ndarray:
        if self.fail:
            raise RuntimeError(f"run {self.run_id} is bad")
        return ticks


class AutoTicks(Ticks):
    """Ticks with an automatic version (``version = None``)."""

    provides = "auto_ticks"
    version = None


SUPER: list[type[Plugin]] = [Pulses, PulseArea, RunTagged, ExplicitTagged]
