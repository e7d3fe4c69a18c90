"""A small detector pipeline: synthetic waveforms to peak properties, as in strax.

``raw_records`` (source)
    Per run, pulses of light seen by several channels: one fixed-length record of ADC samples
    (baseline, noise, pulse) per channel that saw photons. Deterministic per run and ``seed``.
``records``
    Baseline subtracted and gain corrected (photoelectrons per sample). The per-channel gains
    come from the run metadata (``calibration.gains``), so runs with different calibrations
    get different keys.
``peaks``
    Records close in time merged across channels: summed waveform, area, channels.
``peak_basics`` (kind ``peaks``)
    Time, end time, area, 50%-area width, number of channels, largest channel fraction.

Use it with :func:`run_document`, which writes what ``raw_records`` and ``records`` read from
the run metadata::

    fe = storage.open_frontend("./strata_data")
    fe.write_run_metadata("run_000", run_document("run_000"))
    ctx = Context(storage=[fe], register=PLUGINS)
    ctx.get_df("run_000", "peak_basics")
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

import numpy as np

from .dtypes import time_dt_fields, time_fields
from .options import Option
from .plugin import Plugin

__all__ = [
    "PLUGINS",
    "SIZES",
    "PeakBasics",
    "Peaks",
    "RawRecords",
    "Records",
    "run_document",
    "true_gains",
]

SIZES: dict[str, dict[str, float]] = {
    "small": {"n_partitions": 8, "pulse_rate": 2_000.0},
    "medium": {"n_partitions": 32, "pulse_rate": 5_000.0},
    "large": {"n_partitions": 128, "pulse_rate": 10_000.0},
}
"""Demo run sizes: partitions of 0.1 s per run and pulses per second."""

PARTITION_NS = 100_000_000
PRE_SAMPLES = 20


def true_gains(run_id: str, n_channels: int = 8, seed: int = 0) -> list[float]:
    """The simulated gains (ADC counts x samples per photoelectron) of a run's channels."""
    rng = np.random.default_rng([seed, zlib.crc32(run_id.encode()), 1])
    return [round(float(g), 3) for g in rng.uniform(8.0, 12.0, n_channels)]


def run_document(
    run_id: str,
    *,
    seed: int = 0,
    n_channels: int = 8,
    n_partitions: int = 8,
    pulse_rate: float = 2_000.0,
    start_ns: int = 1_700_000_000_000_000_000,
) -> dict[str, Any]:
    """The run metadata document the demo plugins read (start, duration, gains, rate)."""
    return {
        "start_ns": int(start_ns),
        "duration_ns": int(n_partitions) * PARTITION_NS,
        "calibration": {"gains": true_gains(run_id, n_channels, seed)},
        "daq": {"pulse_rate": float(pulse_rate), "seed": int(seed)},
        "tags": ["demo"],
    }


class RawRecords(Plugin):
    """Synthetic detector waveforms: one record per channel that saw photons of a pulse."""

    provides = "raw_records"
    version = "0.1.0"

    n_channels = Option(default=8, type=int, help="number of channels")
    record_length = Option(default=110, type=int, help="samples per record")
    sample_ns = Option(default=10, type=int, help="sample width [ns]")
    partition_ns = Option(default=PARTITION_NS, type=int, help="partition length [ns]")
    run_start = Option(type=int, from_run="start_ns", help="run start [ns since epoch]")
    run_duration = Option(type=int, from_run="duration_ns", help="run length [ns]")
    pulse_rate = Option(type=float, from_run="daq.pulse_rate", help="pulses per second")
    seed = Option(default=0, type=int, help="random seed of the simulation")
    baseline_adc = Option(default=200, type=int, help="baseline [ADC counts]")
    noise_adc = Option(default=1.5, type=float, help="baseline noise RMS [ADC counts]")

    def infer_dtype(self) -> Any:
        """Time fields, channel and ``record_length`` int16 samples."""
        return [
            *time_dt_fields(),
            (("Channel number", "channel"), np.int16),
            (("Waveform [ADC counts]", "data"), np.int16, self.record_length),
        ]

    def partitions(self, run_id: str) -> list[tuple[int, int]]:
        """Consecutive partitions of ``partition_ns`` covering the run."""
        edges = list(range(self.run_start, self.run_start + self.run_duration, self.partition_ns))
        return [(s, min(s + self.partition_ns, self.run_start + self.run_duration)) for s in edges]

    def _shapes(self) -> np.ndarray:
        x = np.arange(self.record_length, dtype=np.float64)
        shapes = []
        for centre, sigma in ((PRE_SAMPLES + 4, 2.5), (PRE_SAMPLES + 40, 10.0)):
            s = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
            shapes.append(s / s.sum())
        return np.array(shapes)

    def compute(self, start: int, end: int) -> np.ndarray:
        """Simulate the pulses of ``[start, end)``."""
        dtype = self.dtype_of("raw_records")
        assert self.run_id is not None, "RawRecords needs a run_id"
        rng = np.random.default_rng(
            [self.seed, zlib.crc32(self.run_id.encode()), start - self.run_start]
        )
        dt, length = self.sample_ns, self.record_length
        lo = start + PRE_SAMPLES * dt
        hi = end - (length - PRE_SAMPLES) * dt
        n_pulses = rng.poisson(self.pulse_rate * max(0, hi - lo) / 1e9) if hi > lo else 0
        # Two populations, like scintillation (small, narrow) and ionisation (large, wide).
        kind = (rng.random(n_pulses) < 0.4).astype(np.int64)
        mean_pe = np.where(kind == 1, rng.lognormal(np.log(400.0), 0.6, n_pulses), 0.0)
        mean_pe = np.where(kind == 0, rng.gamma(4.0, 6.0, n_pulses), mean_pe)
        photons = rng.poisson(mean_pe)
        t_pulse = np.sort(rng.integers(lo, hi, n_pulses)) if n_pulses else np.zeros(0, np.int64)
        t_pulse = t_pulse - (t_pulse - start) % dt  # align to the sample grid
        p = rng.dirichlet(np.full(self.n_channels, 2.0), n_pulses) if n_pulses else None
        per_channel = (
            rng.multinomial(photons, p) if p is not None else np.zeros((0, self.n_channels), int)
        )
        pulse_idx, channel = np.nonzero(per_channel)
        n = len(pulse_idx)
        out = np.zeros(n, dtype=dtype)
        out["time"] = t_pulse[pulse_idx] - PRE_SAMPLES * dt
        out["length"] = length
        out["dt"] = dt
        out["channel"] = channel
        gains = np.asarray(true_gains(self.run_id, self.n_channels, self.seed))
        amp = per_channel[pulse_idx, channel] * gains[channel]
        wave = amp[:, None] * self._shapes()[kind[pulse_idx]]
        wave += self.baseline_adc + rng.normal(0.0, self.noise_adc, (n, length))
        out["data"] = np.round(wave).astype(np.int16)
        return out[np.argsort(out["time"], kind="stable")]


class Records(Plugin):
    """Baseline-subtracted, gain-corrected records in photoelectrons per sample."""

    provides = "records"
    depends_on = "raw_records"
    version = "0.1.0"

    gains = Option(
        type=list, from_run="calibration.gains", help="per-channel gains [ADC x samples / PE]"
    )
    baseline_samples = Option(default=16, type=int, help="leading samples used for the baseline")
    # An option of RawRecords too: one config value sets both, so the dtypes agree.
    record_length = Option(default=110, type=int, help="samples per record")

    def infer_dtype(self) -> Any:
        """Time fields, channel, area, baseline and the corrected waveform."""
        return [
            *time_dt_fields(),
            (("Channel number", "channel"), np.int16),
            (("Record area [PE]", "area"), np.float32),
            (("Baseline [ADC counts]", "baseline"), np.float32),
            (("Waveform [PE / sample]", "data"), np.float32, self.record_length),
        ]

    def compute(self, raw_records: np.ndarray, start: int, end: int) -> np.ndarray:
        """Subtract the baseline and divide by the channel's gain."""
        out = np.zeros(len(raw_records), dtype=self.dtype_of("records"))
        for name in ("time", "length", "dt", "channel"):
            out[name] = raw_records[name]
        gains = np.asarray(self.gains, dtype=np.float64)
        channels = raw_records["channel"].astype(np.int64)
        if len(channels) and channels.max() >= len(gains):
            raise ValueError(
                f"run {self.run_id!r}: channel {channels.max()} has no gain "
                f"(only {len(gains)} gains in the calibration)"
            )
        data = raw_records["data"].astype(np.float64)
        baseline = data[:, : self.baseline_samples].mean(axis=1) if len(data) else np.zeros(0)
        pe = (data - baseline[:, None]) / gains[channels][:, None]
        out["baseline"] = baseline
        out["data"] = pe
        out["area"] = pe.sum(axis=1)
        return out


class Peaks(Plugin):
    """Records overlapping in time (within ``gap_ns``) merged across channels."""

    provides = "peaks"
    depends_on = "records"
    version = "0.1.0"

    gap_ns = Option(default=200, type=int, help="records closer than this join one peak [ns]")
    peak_samples = Option(default=200, type=int, help="samples of the summed waveform")
    n_channels = Option(default=8, type=int, help="number of channels")

    def infer_dtype(self) -> Any:
        """Time fields, sample width, area, channels, per-channel area and summed waveform."""
        return [
            *time_fields(),
            (("Width of one waveform sample [ns]", "dt"), np.int32),
            (("Peak area [PE]", "area"), np.float32),
            (("Number of channels that saw the peak", "n_channels"), np.int16),
            (("Area per channel [PE]", "area_per_channel"), np.float32, self.n_channels),
            (("Summed waveform [PE / sample]", "data"), np.float32, self.peak_samples),
        ]

    def compute(self, records: np.ndarray, start: int, end: int) -> np.ndarray:
        """Cluster records in time and sum them per peak."""
        dtype = self.dtype_of("peaks")
        if len(records) == 0:
            return np.zeros(0, dtype=dtype)
        t = records["time"]
        dt0 = records["dt"].astype(np.int64)
        et = t + records["length"].astype(np.int64) * dt0
        reach = np.maximum.accumulate(et)
        new = np.ones(len(t), dtype=bool)
        new[1:] = t[1:] > reach[:-1] + self.gap_ns
        ids = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        n = len(first)
        out = np.zeros(n, dtype=dtype)
        out["time"] = t[first]
        out["endtime"] = np.maximum.reduceat(et, first)
        out["area"] = np.bincount(ids, weights=records["area"], minlength=n)
        ch = records["channel"].astype(np.int64)
        nc = self.n_channels
        apc = np.bincount(ids * nc + ch, weights=records["area"], minlength=n * nc)
        out["area_per_channel"] = apc.reshape(n, nc)
        hit = np.zeros((n, self.n_channels), dtype=bool)
        hit[ids, ch] = True
        out["n_channels"] = hit.sum(axis=1)
        # Summed waveform, downsampled by an integer factor so the whole peak fits.
        step = int(dt0[0])
        span = (out["endtime"] - out["time"]) // step
        factor = np.maximum(1, -(-span // self.peak_samples))
        out["dt"] = factor * step
        length = records["data"].shape[1]
        sample = (t - out["time"][ids])[:, None] // step + np.arange(length)[None, :]
        col = np.minimum(sample // factor[ids][:, None], self.peak_samples - 1)
        flat = (ids[:, None] * self.peak_samples + col).ravel()
        wave = np.bincount(flat, weights=records["data"].ravel(), minlength=n * self.peak_samples)
        out["data"] = wave.reshape(n, self.peak_samples)
        return out


class PeakBasics(Plugin):
    """Basic peak properties: time, area, 50%-area width, channel count."""

    provides = "peak_basics"
    depends_on = "peaks"
    data_kind = "peaks"
    version = "0.1.0"

    dtype: ClassVar[list[Any]] = [
        *time_fields(),
        (("Peak area [PE]", "area"), np.float32),
        (("Width containing the central 50% of the area [ns]", "width"), np.float32),
        (("Number of channels that saw the peak", "n_channels"), np.int16),
        (("Fraction of the area in the largest channel", "max_channel_fraction"), np.float32),
    ]

    def compute(self, peaks: np.ndarray, start: int, end: int) -> np.ndarray:
        """Summarise each peak."""
        out = np.zeros(len(peaks), dtype=self.dtype_of("peak_basics"))
        for name in ("time", "endtime", "area", "n_channels"):
            out[name] = peaks[name]
        if len(peaks) == 0:
            return out
        wave = peaks["data"].astype(np.float64)
        cum = np.cumsum(wave, axis=1)
        total = cum[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(total > 0, cum / total, 0.0)
        i25 = np.argmax(frac >= 0.25, axis=1)
        i75 = np.argmax(frac >= 0.75, axis=1)
        out["width"] = (i75 - i25) * peaks["dt"]
        area = peaks["area"].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["max_channel_fraction"] = np.where(
                area > 0, peaks["area_per_channel"].max(axis=1) / area, 0.0
            )
        return out


PLUGINS: list[type[Plugin]] = [RawRecords, Records, Peaks, PeakBasics]
"""The demo plugins, ready for ``Context(register=PLUGINS)``."""
