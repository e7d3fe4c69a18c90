"""Run queries on the SQL catalog (SQLite and a real PostgreSQL server): evaluated in the
database, and giving exactly what the same query evaluated in Python over every document gives.
"""

from __future__ import annotations

import fnmatch
import random
import re

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from strata.storage import DataKey
from strata.storage.frontends.base import RunQuery, StorageFrontend
from strata.storage.frontends.sql import SQLFrontend, fnmatch_to_regex
from tests.helpers import STRAX_DTYPE, make_run


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fe(db_url, tmp_path):
    return SQLFrontend(db_url, data_url=str(tmp_path / "data"))


DOCS = {
    "run_000": {"mode": "nice", "tags": [{"name": "bad"}], "calib": {"gain": 1.5}},
    "run_001": {"mode": "nice", "tags": [{"name": "interesting"}, {"name": "bad"}]},
    "run_002": {"mode": "funny", "tags": ["interesting", "_blinded"], "calib": {"gain": [1, 2]}},
    "run_003": {"mode": ["nice", "kr83m"], "tags": ["x-ray", "a.b", "star*", "q?"]},
    "run_004": {"mode": 5, "tags": [{"name": 3}, 4, None, {"nom": "x"}], "calib": None},
    "run_005": {"tags": {"name": "not a list"}, "mode": ["", "line\nbreak"]},
    "run_006": {"mode": "UPPER", "tags": ["Bad", "_", "__double"]},
    "superrun.a": {"mode": [], "tags": []},
    "run_1x": {"calib": {"gain": {"deep": True}}, "tags": ["[brackets]", "back\\slash"]},
}

QUERIES = [
    RunQuery(),
    RunQuery(run_id="run_00?"),
    RunQuery(run_id=["run_00[0-2]", "super*"]),
    RunQuery(run_id="run_[!0]*"),
    RunQuery(run_id="run_[z-a]*"),  # an empty range: matches nothing
    RunQuery(run_id="run_[!z-a]*"),
    RunQuery(run_id="run_00[-1]"),
    RunQuery(run_id="run_00[3-]"),
    RunQuery(run_id="run_00["),  # an unclosed bracket is a literal '['
    RunQuery(run_mode="nice"),
    RunQuery(run_mode=["funny", "kr*"]),
    RunQuery(run_mode=""),
    RunQuery(run_mode="*"),
    RunQuery(run_mode="line?break"),
    RunQuery(run_mode="upper"),
    RunQuery(include_tags="interesting"),
    RunQuery(include_tags="interesting", exclude_tags="bad"),
    RunQuery(include_tags="blinded"),
    RunQuery(include_tags="blinded", ignore_underscore=False),
    RunQuery(include_tags="_*"),
    RunQuery(include_tags="_double"),
    RunQuery(include_tags="x-ray"),
    RunQuery(include_tags="a.b"),
    RunQuery(include_tags="star[*]"),
    RunQuery(include_tags="q[?]"),
    RunQuery(include_tags="[[]brackets]"),
    RunQuery(include_tags="back\\slash"),
    RunQuery(include_tags="*", exclude_tags=["bad", "Bad"]),
    RunQuery(exclude_tags="*"),
    RunQuery(run_mode="n", pattern_type="re"),
    RunQuery(run_mode="n.c|fun", pattern_type="re"),
    RunQuery(include_tags=r"\w+-\w+", pattern_type="re"),
    RunQuery(include_tags=r"(?:inter)", pattern_type="re"),
    RunQuery(include_tags=r"a\.b$", pattern_type="re"),
    RunQuery(include_tags=r"\bbad", pattern_type="re"),  # \b: evaluated in Python on PG
    RunQuery(include_tags=r"(?P<n>bad)", pattern_type="re"),
    RunQuery(run_id=r"run_\d{3}$", exclude_tags="^b", pattern_type="re"),
    RunQuery(fields=["calib.gain", "calib", "calib.gain.deep", "mode", "missing"]),
    RunQuery(run_mode="nice", fields=["tags"]),
]


def python_answer(fe: StorageFrontend, query: RunQuery):
    """The query evaluated in Python over every document (the base class's way)."""
    return StorageFrontend._query_runs(fe, query)


@pytest.fixture
def filled(fe):
    fe.write_run_metadata_many(DOCS)
    key = DataKey("data_only", "records", {"records": ["R", "1", {}]})
    fe.saver(key, STRAX_DTYPE).save(*make_run([3])).compute()
    return fe


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
def test_sql_gives_what_python_gives(filled, query):
    got = filled.query_runs(query)
    assert got == python_answer(filled, query)
    assert filled.skipped == []


def test_the_query_runs_in_the_database(filled):
    """One statement selects and projects; no statement reads the documents whole."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(filled.engine, "before_cursor_execute", record)
    try:
        got = filled.query_runs(RunQuery(include_tags="inter*", fields=["calib.gain"]))
    finally:
        sa.event.remove(filled.engine, "before_cursor_execute", record)
    assert [r.run_id for r in got] == ["run_001", "run_002"]
    assert [r.fields["calib.gain"] for r in got] == [None, [1, 2]]
    main = [s for s in statements if s.startswith("SELECT r.run_id")]  # selects and projects
    assert len(main) == 1 and "strata_run_tags" in main[0]
    assert ("GLOB" in main[0]) if filled.dialect == "sqlite" else ("~" in main[0])
    whole = re.compile(r"SELECT\s+\S*run_id,\s+\S*doc\s+FROM", re.IGNORECASE)
    assert not any(whole.search(s) for s in statements)
    assert len([s for s in statements if s.startswith("SELECT")]) == 2  # runs, data only


def test_damaged_documents_are_skipped_and_named(filled):
    with filled.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE strata_runs SET doc = '[1, 2]' WHERE run_id = 'run_000'")
    got = filled.query_runs(RunQuery(run_mode="nice"))  # JSON, not an object: still in SQL
    assert [r.run_id for r in got] == ["run_001", "run_003"]
    assert len(filled.skipped) == 1 and "'run_000'" in filled.skipped[0]
    with filled.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE strata_runs SET doc = '{\"tags\": [' WHERE run_id = 'run_001'")
    for query in (RunQuery(run_mode="nice"), RunQuery(include_tags="*", fields=["calib"])):
        got = filled.query_runs(query)
        assert "run_000" not in [r.run_id for r in got]
        assert "run_001" not in [r.run_id for r in got]
        assert len(filled.skipped) == 2
        assert any("'run_000'" in s for s in filled.skipped)
        assert any("'run_001'" in s for s in filled.skipped)
        assert got == python_answer(filled, query)


def test_invalid_run_ids_in_the_catalog_are_skipped(filled):
    with filled.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO strata_runs (run_id, doc, updated_at) VALUES ('../etc', '{}', 'now')"
        )
    got = filled.query_runs(RunQuery())
    assert "../etc" not in [r.run_id for r in got]
    assert len(got) == len(DOCS) + 1  # and data_only
    assert any("'../etc'" in s for s in filled.skipped)


def test_many_documents_in_one_transaction(fe):
    statements: list[tuple[str, bool]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "strata_runs" in statement:
            statements.append((statement.split()[0].upper(), executemany))

    sa.event.listen(fe.engine, "before_cursor_execute", record)
    try:
        fe.write_run_metadata_many({f"r{i}": {"i": i} for i in range(50)})
    finally:
        sa.event.remove(fe.engine, "before_cursor_execute", record)
    assert statements == [("INSERT", True)]
    fe.write_run_metadata_many({"r1": {"i": "again"}})
    assert fe.run_metadata("r1") == {"i": "again"}
    assert fe.run_metadata("r2", projection=["i"]) == {"i": 2}
    assert len(fe.query_runs()) == 50


def test_which_stored_answers_from_the_index(fe, tmp_path):
    keys = [DataKey(f"r{i}", "records", {"records": ["R", "1", {}]}) for i in range(3)]
    for k in keys[:2]:
        fe.saver(k, STRAX_DTYPE).save(*make_run([2])).compute()
    assert fe.which_stored(keys) == [True, True, False]
    assert fe.which_stored(keys, fuzzy_for=("records",)) == [True, True, False]
    other = SQLFrontend(fe.db_url, data_url=str(tmp_path / "data"), take_only=("peaks",))
    assert other.which_stored(keys) == [False, False, False]  # take_only applies
    # the catalog is trusted, as by list(): no manifest is read
    fe.backends["data"].fs.rm(fe.backends["data"].path("data"), recursive=True)
    assert fe.which_stored(keys) == [True, True, False]
    assert fe.find_several(keys) == [None, None, None]  # find verifies locations


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.text(alphabet="ab-!^[]*?\\.\n_", max_size=8),
    value=st.text(alphabet="ab-!^[]*?\\.\n_", max_size=6),
)
def test_fnmatch_translation_matches_fnmatch(pattern, value):
    regex = fnmatch_to_regex(pattern)
    expected = fnmatch.fnmatchcase(value, pattern)
    if regex is None:
        assert not expected
        return
    assert regex.startswith("^") and regex.endswith("$")
    assert (re.fullmatch(regex[1:-1], value, re.DOTALL) is not None) == expected


@pytest.mark.slow
def test_fnmatch_translation_in_postgresql(postgres_url, tmp_path):
    fe = SQLFrontend(postgres_url, data_url=str(tmp_path / "data"))
    rng = random.Random(13)
    alphabet = "ab-!^[]*?\\.\n_"
    pairs = []
    while len(pairs) < 2000:
        p = "".join(rng.choice(alphabet) for _ in range(rng.randrange(8)))
        v = "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
        if fnmatch_to_regex(p) is not None:
            pairs.append((p, v))
    with fe.engine.connect() as conn:
        got = [
            conn.execute(sa.text("SELECT :v ~ :r"), {"v": v, "r": fnmatch_to_regex(p)}).scalar()
            for p, v in pairs
        ]
    assert got == [fnmatch.fnmatchcase(v, p) for p, v in pairs]


def as_version_1(fe: SQLFrontend) -> None:
    """Make ``fe``'s catalog what schema version 1 was: no run label tables."""
    with fe.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE strata_run_tags")
        conn.exec_driver_sql("DROP TABLE strata_run_modes")
        conn.exec_driver_sql("UPDATE strata_info SET value = '1' WHERE name = 'schema_version'")


def test_a_version_1_catalog_is_read_as_it_is_and_migrated_when_writable(filled, tmp_path):
    query = RunQuery(include_tags="interesting", exclude_tags="bad", fields=["calib.gain"])
    expected = filled.query_runs(query)
    as_version_1(filled)
    data = str(tmp_path / "data")
    readonly = SQLFrontend(filled.db_url, data_url=data, readonly=True)
    assert readonly.schema_version == 1
    assert readonly.query_runs(query) == expected  # evaluated in Python
    writable = SQLFrontend(filled.db_url, data_url=data)
    assert writable.schema_version == 2
    assert writable.query_runs(query) == expected
    assert SQLFrontend(filled.db_url, data_url=data).schema_version == 2  # once


def test_rebuild_run_index_after_editing_documents_by_hand(filled):
    with filled.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE strata_runs SET doc = '{\"tags\": [\"edited\"]}' WHERE run_id = 'run_006'"
        )
    query = RunQuery(include_tags="edited")
    assert filled.query_runs(query) == []  # the labels are written with the document
    assert filled.rebuild_run_index() == len(DOCS)
    assert [r.run_id for r in filled.query_runs(query)] == ["run_006"]
    assert filled.query_runs(query) == python_answer(filled, query)
