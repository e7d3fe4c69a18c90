"""Context.scan_runs / select_runs / run_metadata: run selection with the context's own keys
(availability follows the context's lineage and fuzzy options)."""

from __future__ import annotations

from strata.pipeline import Context, demo


def _ctx(tmp_path) -> Context:
    ctx = Context(storage=[str(tmp_path / "s")], register=demo.PLUGINS)
    for run, mode in (("demo_000", "bg"), ("demo_001", "cal"), ("demo_002", "bg")):
        doc = demo.run_document(run)
        doc.update(mode=mode, tags=["good"] if run != "demo_002" else ["bad"])
        ctx.storage[0].write_run_metadata(run, doc)
    ctx.make("demo_000", "peaks")
    return ctx


def test_scan_and_select_use_the_contexts_keys(tmp_path):
    ctx = _ctx(tmp_path)
    df = ctx.scan_runs(fields="mode", check_available="peaks")
    assert list(df["run_id"]) == ["demo_000", "demo_001", "demo_002"]
    assert list(df["peaks_available"]) == [True, False, False]
    sel = ctx.select_runs(run_mode="bg", exclude_tags="bad")
    assert list(sel["run_id"]) == ["demo_000"]
    assert list(ctx.select_runs(available="peaks")["run_id"]) == ["demo_000"]
    # another configuration is another key: nothing of it is stored
    ctx.set_config({"gap_ns": 12_345})
    assert list(ctx.select_runs(available="peaks")["run_id"]) == []


def test_run_metadata_projection(tmp_path):
    ctx = _ctx(tmp_path)
    assert ctx.run_metadata("demo_001", projection="mode") == {"mode": "cal"}
    assert ctx.run_metadata(b"demo_001")["mode"] == "cal"
