"""Run selection (strax's ``scan_runs`` / ``select_runs`` / ``run_metadata``) and storage kinds.

The selection scenarios follow strax's ``tests/test_core.py::test_run_selection`` (three runs,
modes and tags) and ``test_filestore`` (a run appears in the availability of a target once it
is made); the storage-kind ones its ``tests/test_storage.py`` (the frontend nearest by storage
type goes first). They run on the directory catalog (local disk and ``memory://``) and on the
SQL catalog (SQLite; tests/sql/test_run_queries.py repeats the SQL side on PostgreSQL).
"""

from __future__ import annotations

import json
import pickle

import pytest

from strata.pipeline import Context
from strata.pipeline.errors import UnknownDataType
from strata.pipeline.runs import BASE_COLUMNS, run_metadata, scan_runs, select_runs
from strata.storage import DataKey, DataNotAvailable, open_frontend
from strata.storage.frontends.base import (
    STORAGE_KINDS,
    RunQuery,
    StorageFrontend,
    nearest_first,
    project,
    validate_field_path,
)
from strata.storage.frontends.directory import DirectoryFrontend, storage_kind_of_url
from strata.storage.frontends.sql import SQLFrontend
from tests.helpers import STRAX_DTYPE, local_url, make_run
from tests.pipeline import toys

MOCK_RUNDB = [  # strax's test_run_selection
    {"name": "0", "mode": "funny", "tags": [{"name": "bad"}]},
    {"name": "1", "mode": "nice", "tags": [{"name": "interesting"}, {"name": "bad"}]},
    {"name": "2", "mode": "nice", "tags": [{"name": "interesting"}]},
]


@pytest.fixture(params=["path", "memory", "sqlite"])
def make_frontend(request, tmp_path):
    def make(tag: str = "fe", **kwargs) -> StorageFrontend:
        if request.param == "sqlite":
            return SQLFrontend(f"sqlite:///{tmp_path / tag}.db", **kwargs)
        return DirectoryFrontend(local_url(request.param, tmp_path / tag, tag), **kwargs)

    return make


@pytest.fixture
def rundb(make_frontend):
    fe = make_frontend()
    fe.write_run_metadata_many({d["name"]: d for d in MOCK_RUNDB})
    return fe


def save(fe: StorageFrontend, key: DataKey) -> None:
    fe.saver(key, STRAX_DTYPE).save(*make_run([4])).compute()


# -- strax's scenario ---------------------------------------------------------------------------
def test_strax_run_selection(rundb):
    df = scan_runs([rundb])
    assert list(df.columns) == list(BASE_COLUMNS)
    assert len(df) == len(MOCK_RUNDB)
    assert list(df["run_id"]) == ["0", "1", "2"]
    assert list(df["tags"]) == ["bad", "interesting,bad", "interesting"]
    assert run_metadata([rundb], "0") == MOCK_RUNDB[0]
    assert run_metadata([rundb], "0", projection="name") == {"name": "0"}

    def n(**kw):
        return len(select_runs([rundb], **kw))

    assert n(run_mode="nice") == 2
    assert n(include_tags="interesting") == 2
    assert n(include_tags="interesting", exclude_tags="bad") == 1
    assert n(include_tags="interesting", run_mode="nice") == 2
    assert n(run_id="0") == 1
    assert n(run_id="*", exclude_tags="bad") == 1
    assert n() == 3


def test_patterns_fnmatch_and_re(rundb):
    def ids(**kw):
        return list(select_runs([rundb], **kw)["run_id"])

    assert ids(run_id=["0", "2"]) == ["0", "2"]
    assert ids(run_id="[!0]") == ["1", "2"]
    assert ids(run_mode="n*") == ["1", "2"]
    assert ids(run_mode="N*") == []  # case-sensitive
    assert ids(run_mode="n", pattern_type="re") == ["1", "2"]  # re.match: from the start
    assert ids(run_mode="ice", pattern_type="re") == []
    assert ids(include_tags="inter.*", pattern_type="re") == ["1", "2"]
    assert ids(exclude_tags=["bad", "interesting"]) == []
    with pytest.raises(ValueError, match="pattern_type"):
        select_runs([rundb], pattern_type="glob")
    with pytest.raises(ValueError, match=r"invalid regular expression '\['"):
        select_runs([rundb], run_id="[", pattern_type="re")
    with pytest.raises(TypeError, match="include_tags"):
        select_runs([rundb], include_tags=3)  # type: ignore[arg-type]


def test_tags_underscores_modes_and_fields(make_frontend):
    fe = make_frontend()
    fe.write_run_metadata_many(
        {
            "a": {"tags": ["_blinded", "kr83m"], "mode": ["nice", "calib"], "gain": {"pmt": 2.5}},
            "b": {"tags": [{"name": "unblinded"}, 7, {"name": 8}], "mode": 3},
            "c": {"tags": "notalist", "gain": {"pmt": None}},
        }
    )

    def ids(**kw):
        return list(select_runs([fe], **kw)["run_id"])

    assert ids(include_tags="blinded") == ["a"]  # _blinded counts as blinded
    assert ids(include_tags="blinded", ignore_underscore=False) == []
    assert ids(include_tags="_blinded", ignore_underscore=False) == ["a"]
    assert ids(include_tags="*blinded") == ["a", "b"]
    assert ids(include_tags="*") == ["a", "b"]  # c's tags are not a list: no tags
    assert ids(run_mode="calib") == ["a"]  # any of a list of modes
    assert ids(run_mode="") == ["b", "c"]  # no string mode: mode ""
    df = scan_runs([fe], fields=["gain.pmt", "gain", "nothing.here"])
    assert list(df.columns) == [*BASE_COLUMNS, "gain.pmt", "gain", "nothing.here"]
    assert list(df["mode"]) == ["nice,calib", "", ""]
    assert list(df["tags"]) == ["_blinded,kr83m", "unblinded", ""]
    assert list(df["gain.pmt"]) == [2.5, None, None]
    assert list(df["gain"]) == [{"pmt": 2.5}, None, {"pmt": None}]
    assert list(df["nothing.here"]) == [None, None, None]
    with pytest.raises(ValueError, match=r"invalid run document field 'a\.\.b'"):
        scan_runs([fe], fields=["a..b"])


def test_projection_is_nested_like_mongodb():
    doc = {"a": {"b": 1, "c": 2}, "d": 3, "e": [1]}
    assert project(doc, ["a.b", "d", "x.y", "e.0"]) == {"a": {"b": 1}, "d": 3}
    assert project(doc, ["a", "a.b"]) == {"a": {"b": 1, "c": 2}}
    for bad in ("", "a.", 'a"b', "a\\b", 3):
        with pytest.raises(ValueError, match="invalid run document field"):
            validate_field_path(bad)


def test_runs_with_data_but_no_document(make_frontend):
    fe = make_frontend()
    fe.write_run_metadata("documented", {"mode": "nice", "tags": ["good"]})
    save(fe, DataKey("data_only", "records", {"records": ["R", "1", {}]}))
    df = scan_runs([fe])
    assert list(df["run_id"]) == ["data_only", "documented"]
    assert list(df["has_metadata"]) == [False, True]
    assert list(select_runs([fe], run_mode="*")["run_id"]) == ["data_only", "documented"]
    assert list(select_runs([fe], include_tags="*")["run_id"]) == ["documented"]
    assert list(select_runs([fe], exclude_tags="good")["run_id"]) == ["data_only"]
    with pytest.raises(DataNotAvailable, match="data_only"):
        run_metadata([fe], "data_only")


def test_damaged_document_is_skipped_and_named(tmp_path):
    fe = DirectoryFrontend(str(tmp_path / "d"))
    fe.write_run_metadata_many({"good": {"tags": ["x"]}, "bad": {"tags": ["x"]}})
    (tmp_path / "d" / "runs" / "bad.json").write_text('{"tags": ["x"')
    df = select_runs([fe], include_tags="x")
    assert list(df["run_id"]) == ["good"]
    assert len(fe.skipped) == 1 and "'bad'" in fe.skipped[0]


# -- several frontends --------------------------------------------------------------------------
def test_a_run_is_shown_once_from_the_first_frontend_with_its_document(make_frontend):
    first, second = make_frontend("first"), make_frontend("second")
    first.write_run_metadata("shared", {"tags": ["bad"], "where": "first"})
    second.write_run_metadata("shared", {"tags": [], "where": "second"})
    second.write_run_metadata("only_second", {"where": "second"})
    save(first, DataKey("doc_in_second", "records", {"records": ["R", "1", {}]}))
    second.write_run_metadata("doc_in_second", {"where": "second"})
    save(second, DataKey("data_only", "records", {"records": ["R", "1", {}]}))

    df = scan_runs([first, second], fields="where")
    assert list(df["run_id"]) == ["data_only", "doc_in_second", "only_second", "shared"]
    assert list(df["where"]) == [None, "second", "second", "first"]
    assert list(df["has_metadata"]) == [False, True, True, True]
    # the filter sees the document that wins, not the second frontend's copy
    assert "shared" not in list(select_runs([first, second], exclude_tags="bad")["run_id"])
    assert run_metadata([second, first], "shared")["where"] == "second"


# -- availability ---------------------------------------------------------------------------------
def test_availability_columns_with_a_context(make_frontend):
    fe = make_frontend()
    fe.write_run_metadata_many(
        {
            "r1": {"calibration": {"gain": 2.0}, "tags": ["a"]},
            "r2": {"calibration": {"gain": 3.0}, "tags": ["a"]},
            "r3": {"tags": ["a"]},  # no gain: gained has no key for it
        }
    )
    ctx = Context(storage=[fe], register=[toys.Ticks, toys.Doubled, toys.Gained])
    assert list(
        scan_runs([fe], check_available="ticks", key_for=ctx.key_for)["ticks_available"]
    ) == [
        False,
        False,
        False,
    ]
    ctx.make("r2", "ticks")  # strax's test_filestore: made, then listed as available
    ctx.make("r1", "gained")
    df = scan_runs([fe], check_available=["ticks", "gained"], key_for=ctx.key_for)
    assert list(df["ticks_available"]) == [True, True, False]
    assert list(df["gained_available"]) == [True, False, False]
    picked = select_runs([fe], available=["ticks", "gained"], key_for=ctx.key_for)
    assert list(picked["run_id"]) == ["r1"]
    assert list(picked.columns)[-2:] == ["ticks_available", "gained_available"]
    # again on the table: existing availability columns are reused, others looked up
    again = select_runs(df, available="doubled", storage=[fe], key_for=ctx.key_for)
    assert again.empty
    assert list(select_runs(df, available="ticks")["run_id"]) == ["r1", "r2"]
    with pytest.raises(UnknownDataType):
        scan_runs([fe], check_available="nope", key_for=ctx.key_for)
    with pytest.raises(ValueError, match="key_for"):
        select_runs([fe], available="ticks")
    with pytest.raises(ValueError, match="storage="):
        select_runs(df, available="doubled", key_for=ctx.key_for)
    with pytest.raises(ValueError, match="fields="):
        select_runs(df, fields="tags")


def test_availability_in_a_second_frontend_and_fuzzy(make_frontend):
    first, second = make_frontend("first"), make_frontend("second")
    first.write_run_metadata_many({"r1": {}, "r2": {}})
    ctx = Context(storage=[second], register=[toys.Ticks], config={"offset": 1.0})
    ctx.make("r2", "ticks")
    plain = Context(storage=[first, second], register=[toys.Ticks])
    df = scan_runs([first, second], check_available="ticks", key_for=plain.key_for)
    assert list(df["ticks_available"]) == [False, False]  # other lineage
    df = scan_runs(
        [first, second],
        check_available="ticks",
        key_for=plain.key_for,
        fuzzy_for_options=["offset"],
    )
    assert list(df["ticks_available"]) == [False, True]


# -- storage kinds --------------------------------------------------------------------------------
def test_storage_kind_defaults(tmp_path):
    assert list(STORAGE_KINDS) == ["memory", "local", "online", "compressed", "remote", "tape"]
    assert DirectoryFrontend(str(tmp_path / "a")).storage_kind == "local"
    assert DirectoryFrontend(f"file://{tmp_path}/b").storage_kind == "local"
    assert open_frontend("memory://kinds-test").storage_kind == "memory"
    assert SQLFrontend(f"sqlite:///{tmp_path}/c.db").storage_kind == "online"
    assert SQLFrontend.storage_kind == "online" and StorageFrontend.storage_kind == "local"
    for url in ("s3://bucket/x", "ssh://host/path", "gcs://b/x"):
        assert storage_kind_of_url(url) == "remote"


def test_storage_kind_override_validation_and_identity(tmp_path):
    fe = open_frontend(str(tmp_path / "a"), storage_kind="tape")
    assert (fe.storage_kind, fe.distance) == ("tape", 10)
    clone = pickle.loads(pickle.dumps(fe))
    assert clone.storage_kind == "tape" and clone == fe
    assert fe != DirectoryFrontend(str(tmp_path / "a"))
    assert DirectoryFrontend(str(tmp_path / "a")) == DirectoryFrontend(
        str(tmp_path / "a"), storage_kind="local"
    )
    sql = SQLFrontend(f"sqlite:///{tmp_path}/c.db", storage_kind="local")
    assert pickle.loads(pickle.dumps(sql)).storage_kind == "local"
    with pytest.raises(ValueError, match=r"invalid storage kind 'far'.*'memory', 'local'"):
        DirectoryFrontend(str(tmp_path / "b"), storage_kind="far")
    with pytest.raises(ValueError, match="invalid storage kind 4"):
        fe.storage_kind = 4  # type: ignore[assignment]
    assert fe.storage_kind == "tape"
    fe.storage_kind = "remote"  # strax's `sf.storage_type = ...`
    assert fe.distance == 4
    with pytest.raises(ValueError, match="invalid storage kind 'slow'"):

        class Slow(DirectoryFrontend):
            storage_kind = "slow"


def test_nearest_first_keeps_list_order_for_ties(tmp_path):
    """strax's test_close_goes_first: far (tape), close (local), intermediate (remote)."""
    far = DirectoryFrontend(str(tmp_path / "far"), storage_kind="tape")
    close = DirectoryFrontend(str(tmp_path / "close"))
    middle = DirectoryFrontend(str(tmp_path / "middle"), storage_kind="remote")
    also_local = DirectoryFrontend(str(tmp_path / "also"))
    assert nearest_first([far, close, middle, also_local]) == [close, also_local, middle, far]
    assert nearest_first([far, also_local, middle, close]) == [also_local, close, middle, far]


def test_run_query_is_plain_data():
    q = RunQuery(run_id="a*", include_tags=["x", "y"], fields=["f", "f"])
    assert q.run_id == ("a*",) and q.include_tags == ("x", "y") and q.fields == ("f",)
    assert q == RunQuery(run_id=("a*",), include_tags=("x", "y"), fields=("f",))
    assert RunQuery().filters is False and q.filters is True
    json.dumps(q.__dict__)  # travels as JSON
