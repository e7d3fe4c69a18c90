"""Comparisons of stored data for the cluster tests."""

from __future__ import annotations

from pathlib import Path

from strata.storage import DataKey, DirectoryFrontend


def attempt_dirs(root: Path, key: DataKey) -> list[Path]:
    """The attempt directories under ``key`` (committed or not) in a local store."""
    d = root / "data" / key.run_id / key.name
    return sorted(p for p in d.glob("a*") if p.is_dir()) if d.exists() else []


def stored_files(fe: DirectoryFrontend, key: DataKey) -> dict[str, bytes]:
    """Every file of the committed attempt of ``key``, by relative path, except the attempt
    group's own ``zarr.json`` (whose attributes name the attempt). A committed attempt holds no
    lease (the "not committed" marker)."""
    m = fe.get_metadata(key)
    root = Path(fe.url) / "data" / key.run_id / key.name / m.attempt
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert "zarr.json" in files and "strata.lease" not in files
    del files["zarr.json"]
    return files


def assert_same_stored_data(a: DirectoryFrontend, b: DirectoryFrontend, key: DataKey) -> None:
    """``key`` is stored in ``a`` and ``b`` with the same partition table, segments, codecs
    and byte-identical chunk and array metadata files."""
    ma, mb = a.get_metadata(key), b.get_metadata(key)
    assert ma.partitions == mb.partitions
    assert ma.segments == mb.segments
    assert ma.arrays == mb.arrays
    assert ma.dtype == mb.dtype
    assert ma.metadata == mb.metadata
    fa, fb = stored_files(a, key), stored_files(b, key)
    extra, missing = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    assert not extra and not missing, f"files only in {a!r}: {extra}; only in {b!r}: {missing}"
    differ = [name for name in fa if fa[name] != fb[name]]
    assert not differ, f"{len(differ)} stored files differ, e.g. {differ[:3]}"
    assert len(fa) > 1
