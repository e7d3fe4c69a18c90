"""A real PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` in a temporary directory,
listening on 127.0.0.1 on a free port, stopped by pid.

PostgreSQL refuses to run as root. When the tests run as root, the server runs as the
unprivileged user ``strata_pg`` (created with ``useradd`` if missing; ``nobody`` if that is not
possible). The binaries are looked up on ``PATH``, with ``pg_config --bindir`` and in
``/usr/lib/postgresql/<version>/bin``; without them the tests that need a server are skipped
(``apt-get install postgresql``), or fail if ``STRATA_REQUIRE_POSTGRES=1``.

Use from any test module::

    from tests.sql.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import psutil
import pytest

logger = logging.getLogger(__name__)

PG_USER = "strata_pg"


def find_bindir() -> str | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        d = out.stdout.strip()
        if d and os.path.exists(os.path.join(d, "initdb")):
            return d

    def version(path: str) -> float:
        try:
            return float(path.split("/")[-2])
        except ValueError:
            return 0.0

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root, else ``None``."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ],
            capture_output=True,
            check=False,
        )
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(PG_USER)
    return pwd.getpwnam("nobody")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; :meth:`stop` removes it."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.user = _server_user()
        self.dir = tempfile.mkdtemp(prefix="strata-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.port = 0
        self.pid: int | None = None
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        with open(os.path.join(self.dir, "commands.log"), "a") as out:
            res = subprocess.run(
                [os.path.join(self.bindir, args[0]), *args[1:]],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,  # never a pipe: pg_ctl's server child would keep it open
                stderr=subprocess.STDOUT,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                check=False,
                text=True,
                **kwargs,  # type: ignore[arg-type]
            )
        if res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({res.returncode}):\n{self._logs()}")
        return res

    def _logs(self) -> str:
        out = []
        for name in ("commands.log", "server.log"):
            with contextlib.suppress(OSError), open(os.path.join(self.dir, name)) as f:
                out.append(f.read()[-4000:])
        return "\n".join(out)

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; returns when it accepts connections."""
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(3):  # a free port can be taken between probe and bind
            self.port = _free_port()
            opts = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                self._run(
                    "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", opts, "start"
                )
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        logger.info("PostgreSQL pid %d on 127.0.0.1:%d", self.pid, self.port)
        return self

    def url(self, dbname: str = "postgres") -> str:
        """A SQLAlchemy URL of database ``dbname`` (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database` (closing its connections)."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown by pid, wait for the postmaster to exit, remove the directory."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(self.pid).wait(timeout=60)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session."""
    bindir = find_bindir()
    if bindir is None:
        msg = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("STRATA_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    from strata.storage.frontends.sql import _ENGINES, _ENGINES_LOCK

    url = postgres_server.create_database()
    yield url
    with _ENGINES_LOCK:  # close this process's pooled connections to it first
        for k in [k for k in _ENGINES if k[0].endswith(url.rsplit("/", 1)[1])]:
            _ENGINES.pop(k).dispose()
    postgres_server.drop_database(url)
