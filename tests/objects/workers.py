"""Functions run in separate processes by the object-store tests (importable under spawn)."""

from __future__ import annotations

import os
import tempfile
import traceback

from strata.storage import ZarrBackend
from tests.objects.models import Measurement, SimulationResult


def make_ancillary(root: str, name: str, size: int = 1000) -> str:
    d = tempfile.mkdtemp(prefix=f"{name}-", dir=root)
    with open(os.path.join(d, "payload.bin"), "wb") as f:
        f.write(name.encode().ljust(size, b"."))
    os.makedirs(os.path.join(d, "sub"))
    with open(os.path.join(d, "sub", "note.txt"), "w") as f:
        f.write(name)
    return d


def store_at_once(url, options, scratch, worker, barrier, results) -> None:
    """Store own objects, objects every worker stores identically, and a replaceable one."""
    try:
        backend = ZarrBackend(url, storage_options=options)
        barrier.wait()
        keys = {}
        for i in range(6):
            m = Measurement(run_id=f"r{worker}", name=f"m{i}", value=i)
            keys[f"own{i}"] = backend.store_object(m, make_ancillary(scratch, f"w{worker}_{i}"))
        for i in range(4):
            m = Measurement(run_id="shared", name=f"s{i}", value=i)
            keys[f"shared{i}"] = backend.store_object(m, make_ancillary(scratch, f"s{worker}_{i}"))
        sim = SimulationResult(substance="water", temperature=300, samples=worker + 1)
        keys["sim"] = backend.store_object(sim)
        results.put((worker, keys, None))
    except BaseException:
        results.put((worker, {}, traceback.format_exc()))


def store_until_killed(url, options, scratch, conn) -> None:
    """Store objects with 1 MB of ancillary data in a loop, reporting each; never stops."""
    backend = ZarrBackend(url, storage_options=options)
    i = 0
    while True:
        anc = make_ancillary(scratch, f"c{i}", size=1_000_000)
        backend.store_object(Measurement(run_id="crash", name=f"n{i}", value=i), anc)
        conn.send(i)
        i += 1
