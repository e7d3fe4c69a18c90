"""Per-partition work (issue 13): pieces made, listed, loaded and merged into the full key.

The scenarios of strax's ``test_per_chunk_storage`` (tests/test_core.py) and
``test_superrun_chunk_number`` (tests/test_superruns.py), in strata's API: ``make(...,
partitions=)`` for strax's ``chunk_number=``, ``merge_partitions`` for
``merge_per_chunk_storage``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from strata.pipeline import Context, InvalidRequest
from strata.pipeline.cli import main
from strata.pipeline.lineage import PARTITIONS_OPTION, piece_lineage, without_piece
from strata.storage import DataCorrupted, DataKey, DirectoryFrontend
from tests.pipeline import toys

RUN = "r1"


@pytest.fixture
def ctx(frontend):
    return Context(storage=[frontend], register=[*toys.TOYS, toys.Broken, toys.NeverSaved])


def _reference(tmp_path, target="doubled", **kwargs):
    """``target`` made from scratch in a store of its own: data and partition table."""
    ref = Context(storage=[DirectoryFrontend(str(tmp_path / "ref"))], register=toys.TOYS, **kwargs)
    ref.make(RUN, target)
    m = ref.get_metadata(RUN, target)
    return ref.get_array(RUN, target), [(p.start, p.end, p.rows) for p in m.partitions]


def _table(ctx, target="doubled"):
    return [(p.start, p.end, p.rows) for p in ctx.get_metadata(RUN, target).partitions]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_piece_has_its_own_key_whose_lineage_says_what_it_holds(ctx, frontend, calls):
    ctx.make(RUN, "doubled", partitions=[0, 2])
    assert calls == {"Ticks": 2, "Doubled": 2}  # only those partitions are computed
    assert not ctx.is_stored(RUN, "doubled")
    assert not ctx.is_stored(RUN, "ticks")  # ALWAYS-saved dependencies are pieces too
    full = ctx.key_for(RUN, "doubled")
    pieces = ctx.stored_pieces(RUN, "doubled")
    assert len(pieces) == 1 and not pieces["full"][0]
    assert pieces["partitions"][0] == [0, 2]
    assert pieces["spans"][0] == [[0, 100], [200, 300]]
    assert pieces["rows"][0] == 10
    (entry,) = [e for e in frontend.list(RUN) if e.key.data_type == "doubled"]
    assert entry.key != full
    lineage = entry.key.lineage
    assert lineage["doubled"][2][PARTITIONS_OPTION] == [[0, 100], [200, 300]]
    assert PARTITIONS_OPTION not in lineage["ticks"][2]  # what it is made from: the full key's
    assert without_piece(lineage, "doubled") == full.lineage
    m = frontend.get_metadata(entry.key)
    assert m.metadata["partitions"] == [[0, 100], [200, 300]]
    assert m.metadata["piece_of"] == str(full)
    assert [(p.start, p.end) for p in m.partitions] == [(0, 100), (200, 300)]
    ticks = ctx.stored_pieces(RUN, "ticks")
    assert ticks["partitions"].tolist() == [[0, 2]]


def test_per_chunk_storage_then_merge_as_strax(ctx, frontend, calls, tmp_path):
    # strax: make(run, "peaks", chunk_number={"records": [i]}) for each chunk, then
    # merge_per_chunk_storage; a partial merge does not store the full key
    ctx.make(RUN, "ticks")
    n = len(ctx.get_metadata(RUN, "ticks").partitions)
    assert n == 4
    for i in range(n):
        ctx.make(RUN, "doubled", partitions=[i])
    assert not ctx.is_stored(RUN, "doubled")
    assert calls["Ticks"] == 4 and calls["Doubled"] == 4
    pieces = ctx.stored_pieces(RUN, "doubled")
    assert sorted(pieces["partitions"].tolist()) == [[0], [1], [2], [3]]
    half = [k for k, p in zip(pieces["key"], pieces["partitions"], strict=True) if p[0] < 2]
    with pytest.raises(InvalidRequest, match=r"partition\(s\) \[2, 3\] \(\[200, 400\)\)"):
        ctx.merge_partitions(RUN, "doubled", pieces=half)
    assert not ctx.is_stored(RUN, "doubled")
    calls.clear()
    m = ctx.merge_partitions(RUN, "doubled")
    assert calls == {}  # nothing recomputed
    assert ctx.is_stored(RUN, "doubled")
    assert m.key == ctx.key_for(RUN, "doubled")
    assert sorted(p["key"] for p in m.metadata["merged_from"]) == sorted(pieces["key"])
    assert m.metadata["plugin"] == "Doubled"
    with pytest.raises(ValueError, match="already stored"):
        ctx.merge_partitions(RUN, "doubled")
    # loading reads the full key, equal to a from-scratch make (data and partitions)
    data, table = _reference(tmp_path)
    calls.clear()
    got = ctx.get_array(RUN, "doubled")
    assert calls == {}
    assert got.dtype == data.dtype and got.tobytes() == data.tobytes()
    assert _table(ctx) == table
    assert len(ctx.stored_pieces(RUN, "doubled")) == 5  # the pieces are kept, and the full key


def test_make_skips_partitions_already_held_by_pieces(ctx, calls, tmp_path):
    ctx.make(RUN, "doubled", partitions=[0, 1])
    calls.clear()
    ctx.make(RUN, "doubled", partitions=[1, 2])  # 1 is stored: only 2 is made
    assert calls == {"Ticks": 1, "Doubled": 1}
    ctx.make(RUN, "doubled", partitions=[0, 2])  # all stored: nothing to do
    assert calls == {"Ticks": 1, "Doubled": 1}
    cover = ctx.partition_coverage(RUN, "doubled")
    assert cover["stored"].tolist() == [True, True, True, False]
    assert cover["start"].tolist() == [0, 100, 200, 300]
    assert cover["pieces"][3] == []
    with pytest.raises(InvalidRequest, match=r"partition\(s\) \[3\] \(\[300, 400\)\).*make"):
        ctx.merge_partitions(RUN, "doubled")
    ctx.make(RUN, "doubled", partitions=[(300, 400)])
    ctx.merge_partitions(RUN, "doubled")
    data, table = _reference(tmp_path)
    assert ctx.get_array(RUN, "doubled").tobytes() == data.tobytes()
    assert _table(ctx) == table


def test_time_range_make_saves_the_partitions_it_overlaps(ctx, frontend, calls):
    ctx.make(RUN, "doubled", time_range=(150, 250))
    assert calls == {"Ticks": 2, "Doubled": 2}
    assert ctx.stored_pieces(RUN, "doubled")["partitions"].tolist() == [[1, 2]]
    # a time_range read still never saves (a difference from strax that is kept)
    before = len(frontend.list(RUN))
    arr = ctx.get_array(RUN, "doubled", time_range=(300, 350))
    assert len(frontend.list(RUN)) == before
    assert ((arr["time"] >= 300) & (arr["time"] < 350)).all()


def test_loading_partitions_reads_the_full_key_or_pieces(ctx, calls):
    ctx.make(RUN, "doubled")
    full = ctx.get_array(RUN, "doubled")
    calls.clear()
    ctx.make(RUN, "doubled", partitions=[1, 2])  # the full key holds them: nothing to do
    assert calls == {}
    assert ctx.stored_pieces(RUN, "doubled")["full"].tolist() == [True]
    one = ctx.get_array(RUN, "doubled", partitions=[1])
    assert calls == {}
    assert one.tobytes() == full[(full["time"] >= 100) & (full["time"] < 200)].tobytes()
    df = ctx.get_df(RUN, "doubled", partitions=[(200, 400)])
    assert df["time"].tolist() == full["time"][full["time"] >= 200].tolist()
    lazy = ctx.get_dask(RUN, "doubled", partitions=[0, 3]).compute()
    assert lazy.tobytes() == np.concatenate([full[:5], full[15:]]).tobytes()
    assert calls == {}


def test_loading_partitions_from_pieces_computes_only_what_no_piece_holds(ctx, frontend, calls):
    ctx.make(RUN, "doubled", partitions=[0])
    calls.clear()
    two = ctx.get_array(RUN, "doubled", partitions=[0, 1])
    assert calls == {"Ticks": 1, "Doubled": 1}  # partition 1 only
    assert two["time"].tolist() == [t for t in range(0, 200, 20)]
    assert sorted(ctx.stored_pieces(RUN, "doubled")["partitions"].tolist()) == [[0], [1]]
    calls.clear()
    again = ctx.get_array(RUN, "doubled", partitions=[0, 1])
    assert calls == {}
    assert again.tobytes() == two.tobytes()


def test_dependencies_are_read_from_their_pieces(ctx, calls):
    ctx.make(RUN, "ticks", partitions=[0, 1])
    calls.clear()
    ctx.make(RUN, "doubled", partitions=[0, 1])
    assert calls == {"Doubled": 2}
    ctx.make(RUN, "doubled", partitions=[1, 2])
    assert calls == {"Doubled": 3, "Ticks": 1}


def test_a_plugins_other_outputs_are_saved_as_pieces_too(ctx, calls):
    ctx.make(RUN, "low", partitions=[3])
    assert calls == {"Ticks": 1, "Split": 1}
    assert ctx.stored_pieces(RUN, "high")["partitions"].tolist() == [[3]]
    assert ctx.stored_pieces(RUN, "low")["partitions"].tolist() == [[3]]


def test_a_never_saved_target_is_computed_for_those_partitions_only(ctx, calls):
    ctx.make(RUN, "never_saved", partitions=[2])
    assert calls == {"Ticks": 1, "NeverSaved": 1}
    assert len(ctx.stored_pieces(RUN, "never_saved")) == 0
    assert ctx.stored_pieces(RUN, "ticks")["partitions"].tolist() == [[2]]


def test_a_failed_piece_commits_nothing(frontend):
    ctx = Context(storage=[frontend], register=[toys.Ticks, toys.Broken])
    ctx.set_config({"how": "raise", "bad_partition": 2})
    with pytest.raises(RuntimeError, match="plugin bug"):
        ctx.make(RUN, "broken", partitions=[1, 2])
    assert len(ctx.stored_pieces(RUN, "broken")) == 0
    ctx.make(RUN, "broken", partitions=[1])
    assert ctx.stored_pieces(RUN, "broken")["partitions"].tolist() == [[1]]


def test_two_pieces_never_touch_each_others_objects(ctx, frontend, tmp_path):
    root = tmp_path / "store" / "data" / RUN
    ctx.make(RUN, "doubled", partitions=[0])
    first = _files(root)
    ctx.make(RUN, "doubled", partitions=[1])
    after = _files(root)
    assert {k: after[k] for k in first} == first  # nothing of the first piece changed
    new_dirs = {k.split("/")[0] for k in set(after) - set(first)}
    assert new_dirs and not new_dirs & {k.split("/")[0] for k in first}


def test_overlapping_pieces_are_refused_unless_chosen(tmp_path, calls):
    a = DirectoryFrontend(str(tmp_path / "a"))
    b = DirectoryFrontend(str(tmp_path / "b"))
    Context(storage=[a], register=toys.TOYS).make(RUN, "doubled", partitions=[0, 1])
    Context(storage=[a], register=toys.TOYS).make(RUN, "doubled", partitions=[2, 3])
    Context(storage=[b], register=toys.TOYS).make(RUN, "doubled", partitions=[1, 2])
    ctx = Context(storage=[a, b], register=toys.TOYS)
    with pytest.raises(InvalidRequest, match=r"overlap: partition 1 \[100, 200\)"):
        ctx.merge_partitions(RUN, "doubled")
    assert not ctx.is_stored(RUN, "doubled")
    pieces = ctx.stored_pieces(RUN, "doubled")
    chosen = [k for k, p in zip(pieces["key"], pieces["partitions"], strict=True) if p != [1, 2]]
    calls.clear()
    ctx.merge_partitions(RUN, "doubled", pieces=chosen)
    assert calls == {}
    assert a.is_stored(ctx.key_for(RUN, "doubled")) and b.is_stored(ctx.key_for(RUN, "doubled"))
    data, table = _reference(tmp_path)
    assert ctx.get_array(RUN, "doubled").tobytes() == data.tobytes()
    assert _table(ctx) == table
    with pytest.raises(InvalidRequest, match="not a stored piece"):
        Context(storage=[str(tmp_path / "c")], register=toys.TOYS).merge_partitions(
            RUN, "doubled", pieces=["r1-doubled-nosuchpiece"]
        )


@pytest.mark.parametrize(
    ("partitions", "message"),
    [
        ([4], r"index 4 is out of range: the run has 4 partitions \(0 to 3\)"),
        ([-1], "index -1 is out of range"),
        ([2, 1], r"must be sorted.*1 comes after 2"),
        ([1, 1], "no item repeated"),
        ([(0, 200), 1], "overlapping"),
        ([True], "indices or \\(start, end\\) intervals"),
        (["0"], "indices or \\(start, end\\) intervals"),
        ([], "is empty"),
        ([(50, 150)], r"\(50, 150\) cuts partition 0 \[0, 100\).*e.g. \(0, 150\)"),
        ([(200, 100)], "empty or reversed"),
        ([(1000, 2000)], "holds no partition"),
    ],
)
def test_bad_partitions_are_clear_errors_and_store_nothing(ctx, frontend, partitions, message):
    ctx.make(RUN, "ticks", partitions=[0])
    before = _files(Path(frontend.url))
    with pytest.raises(InvalidRequest, match=message):
        ctx.make(RUN, "doubled", partitions=partitions)
    with pytest.raises(InvalidRequest, match=message):
        ctx.get_array(RUN, "doubled", partitions=partitions)
    assert _files(Path(frontend.url)) == before


def test_other_bad_requests(ctx):
    with pytest.raises(InvalidRequest, match="not both"):
        ctx.make(RUN, "doubled", partitions=[0], time_range=(0, 10))
    with pytest.raises(InvalidRequest, match="empty or reversed"):
        ctx.make(RUN, "doubled", time_range=(10, 0))
    with pytest.raises(InvalidRequest, match="overlaps no partition"):
        ctx.make(RUN, "doubled", time_range=(5000, 6000))
    with pytest.raises(InvalidRequest, match="superrun"):
        ctx.make("_super", "doubled", partitions=[0])  # strax: test_superrun_chunk_number
    with pytest.raises(InvalidRequest, match="superrun"):
        ctx.merge_partitions("_super", "doubled")


def test_dependencies_with_different_partitioning(ctx, calls, tmp_path):
    # combined depends on ticks (4 x 100 ns) and coarse (2 x 200 ns): its partitions are
    # (0, 200) and (200, 400), so a selection must hold whole ones
    with pytest.raises(InvalidRequest, match="ambiguous: its source plugins partition"):
        ctx.make(RUN, "combined", partitions=[1])
    with pytest.raises(InvalidRequest, match=r"\(100, 200\) cuts partition 0 \[0, 200\)"):
        ctx.make(RUN, "combined", partitions=[(100, 200)])
    assert len(ctx.stored_pieces(RUN, "combined")) == 0
    ctx.make(RUN, "combined", partitions=[(0, 200)])
    assert calls == {"Ticks": 2, "Coarse": 1, "Combined": 1}
    ctx.make(RUN, "combined", partitions=[(200, 400)])
    ctx.merge_partitions(RUN, "combined")
    data, table = _reference(tmp_path, "combined")
    assert ctx.get_array(RUN, "combined").tobytes() == data.tobytes()
    assert _table(ctx, "combined") == table


@pytest.mark.parametrize(
    ("spans", "stored", "message"),
    [
        ([(0, 100)], (100, 200), r"its lineage says it holds \[\(0, 100\)\]"),
        ([(50, 150)], (50, 150), r"holds partition \[50, 150\), which is not"),
        ("x", (0, 100), "not sorted \\[start, end\\] spans"),
    ],
)
def test_a_piece_that_is_not_what_its_lineage_says_is_corrupted(
    ctx, frontend, spans, stored, message
):
    full = ctx.key_for(RUN, "doubled")
    lineage = piece_lineage(full.lineage, "doubled", [(0, 100)])
    lineage["doubled"][2][PARTITIONS_OPTION] = spans
    forged = DataKey(RUN, "doubled", lineage)
    with frontend.saver(forged, toys.VALUE_DTYPE) as saver:
        saver.save_partition(toys.ticks_numpy(*stored, 5), *stored)
    with pytest.raises(DataCorrupted, match=message):
        ctx.merge_partitions(RUN, "doubled")
    with pytest.raises(DataCorrupted, match=str(forged)):
        ctx.get_array(RUN, "doubled", partitions=[0])
    assert not ctx.is_stored(RUN, "doubled")


def test_a_fuzzy_match_never_loads_a_piece_as_the_whole(frontend, calls):
    Context(storage=[frontend], register=toys.TOYS).make(RUN, "doubled", partitions=[0])
    fuzzy = Context(storage=[frontend], register=toys.TOYS, fuzzy_for=["doubled"])
    assert not fuzzy.is_stored(RUN, "doubled")
    assert len(fuzzy.get_array(RUN, "doubled")) == 20


def test_cli_make_partitions(tmp_path):
    store = str(tmp_path / "s")
    runner = CliRunner()
    args = ["make", RUN, "doubled", "-p", "tests.pipeline.toys:TOYS", "-s", store]
    r = runner.invoke(main, [*args, "--partitions", "0,200:400"])
    assert r.exit_code == 0, r.output
    assert "3 of 4 partitions stored" in r.output
    r = runner.invoke(main, [*args, "--partitions", "x"])
    assert r.exit_code != 0
    assert "neither a partition index" in r.output
    ctx = Context(storage=[store], register=toys.TOYS)
    assert ctx.stored_pieces(RUN, "doubled")["partitions"].tolist() == [[0, 2, 3]]


@pytest.mark.slow
def test_pieces_on_a_multi_process_cluster(frontend, tmp_path):
    from tests.helpers import two_worker_client

    with two_worker_client() as client:
        ctx = Context(storage=[frontend], register=toys.TOYS, client=client)
        ctx.make(RUN, "doubled", partitions=[0, 1])
        ctx.make(RUN, "doubled", partitions=[2, 3])
        ctx.merge_partitions(RUN, "doubled")
        got = ctx.get_array(RUN, "doubled")
    data, table = _reference(tmp_path)
    assert got.tobytes() == data.tobytes()
    assert _table(ctx) == table


def test_several_runs_in_one_partition_make(ctx, calls):
    ctx.make(["r1", "r2"], "doubled", partitions=[3])
    assert calls == {"Ticks": 2, "Doubled": 2}
    for run in ("r1", "r2"):
        assert ctx.stored_pieces(run, "doubled")["spans"].tolist() == [[[300, 400]]]
