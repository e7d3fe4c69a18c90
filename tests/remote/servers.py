"""Real servers for the remote-storage tests: an S3 server (moto) and OpenSSH ``sshd``.

Both listen on 127.0.0.1 on free ports, run as child processes and are stopped by pid.

- :class:`S3Server` runs moto's S3 (and IAM) backends in a child process (this file, run as a
  script), behind a WSGI middleware that counts every request the server receives; the count
  is read and reset over HTTP at ``/__requests__`` (those requests are not counted).
- :class:`SSHServer` runs ``sshd -D -e -f <config>`` with a generated host key and client key;
  the only account that can log in is the current user, with the client key.

Run as a script (``python servers.py s3``), this module is the S3 server process: it binds a
free port and prints it on its first line of output.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

START_TIMEOUT = 60.0
SSHD = os.environ.get("STRATA_TEST_SSHD", "/usr/sbin/sshd")
ACCESS_KEY = "AKIASTRATATESTING000"
SECRET_KEY = "strata-test-secret-NOT-A-REAL-ONE"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(
    predicate: Callable[[], bool],
    what: str,
    timeout: float = START_TIMEOUT,
    proc: subprocess.Popen[Any] | None = None,
) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` s or when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the server process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout} s")
        time.sleep(0.02)  # a polling interval, not a synchronisation


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    """Stop a child by its pid: SIGTERM, then SIGKILL if it does not exit."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


# -- S3 ------------------------------------------------------------------------------------
class S3Server:
    """moto's S3 in a child process on 127.0.0.1, counting the requests it receives."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = ""

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        """Start the server and wait until it answers."""
        fd, self.log_path = tempfile.mkstemp(prefix="strata-moto-", suffix=".log")
        os.close(fd)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "s3"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        poll(lambda: bool(box), "moto server start", proc=self.proc)
        self.port = int(box[0])
        poll(self._answers, "moto server answers", proc=self.proc)
        return self

    def _answers(self) -> bool:
        try:
            self.requests()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Stop the server process (by pid)."""
        _stop(self.proc)
        if self.log_path and os.path.exists(self.log_path):
            os.unlink(self.log_path)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request counter ------------------------------------------------------------------
    def requests(self) -> list[str]:
        """``"METHOD /path?query"`` of every request since the last :meth:`clear_requests`."""
        with urllib.request.urlopen(f"{self.endpoint}/__requests__", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def clear_requests(self) -> None:
        """Reset the request counter."""
        req = urllib.request.Request(f"{self.endpoint}/__requests__", method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    # -- clients and options --------------------------------------------------------------
    def client(self, service: str = "s3", key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
        """A boto3 client of this server (for test setup, not for the code under test)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its name."""
        name = name or f"strata-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_options(self, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> dict[str, Any]:
        """s3fs options for this server (no ``region_name``: moto's bucket creation trap)."""
        return {"key": key, "secret": secret, "endpoint_url": self.endpoint}

    def enable_auth(self) -> None:
        """From now on, require valid IAM credentials and permissions (moto's auth mode).

        moto keeps this switch in process-global state: use it on a server of its own.
        """
        req = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would hide the value
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def create_user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """An IAM user with an inline ``policy``; returns its ``(access key, secret)``."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return k["AccessKeyId"], k["SecretAccessKey"]


def _fix_moto_signature_check() -> None:
    """Make moto's auth mode verify signatures of requests whose query values hold ``/``.

    moto recomputes the SigV4 signature from the query string as the web framework hands it
    over (``prefix=a/b``), while clients sign it percent-encoded (``prefix=a%2Fb``), so every
    listing below a prefix fails with SignatureDoesNotMatch. This re-encodes the query as
    SigV4 prescribes before moto signs it. (It fixes the fake server, not code under test.)
    """
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    from moto.iam import access_control as ac

    original = ac.IAMRequestBase._create_aws_request

    def create_aws_request(self: Any) -> Any:
        request = original(self)
        parts = urlsplit(request.url)
        if parts.query:
            pairs = (p.partition("=") for p in parts.query.split("&"))
            query = "&".join(
                f"{quote(unquote(k), safe='-_.~')}={quote(unquote(v), safe='-_.~')}"
                for k, _, v in pairs
            )
            request.url = urlunsplit(parts._replace(query=query))
        return request

    ac.IAMRequestBase._create_aws_request = create_aws_request


def _serve_s3() -> None:
    """Body of the S3 server process: moto behind a request-counting middleware."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    _fix_moto_signature_check()
    app = DomainDispatcherApplication(create_backend_app)
    log: list[str] = []
    lock = threading.Lock()

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path == "/__requests__":
            with lock:
                body = json.dumps(log).encode()
                if method == "DELETE":
                    log.clear()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        query = environ.get("QUERY_STRING", "")
        with lock:
            log.append(f"{method} {path}{'?' + query if query else ''}")
        return app(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=Quiet)
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


# -- SSH -----------------------------------------------------------------------------------
class SSHServer:
    """OpenSSH ``sshd`` on 127.0.0.1: generated host and client keys, key login only.

    Parameters
    ----------
    workdir
        Where keys, configuration and logs go (a fresh temporary directory by default).
    passphrase
        Protect the client key with this passphrase.
    sftp_readonly
        Serve SFTP read-only (``internal-sftp -R``): every write is refused with "permission
        denied", even for root.

    """

    def __init__(
        self, workdir: str | None = None, passphrase: str = "", sftp_readonly: bool = False
    ) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="strata-sshd-"))
        self.passphrase = passphrase
        self.sftp_readonly = sftp_readonly
        self.user = getpass.getuser()
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_key"
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"

    @staticmethod
    def available() -> bool:
        """Whether sshd and ssh-keygen are installed."""
        return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None

    def _keygen(self, path: Path, passphrase: str = "") -> None:
        # an encrypted key in PKCS#8 (ECDSA): OpenSSH-format encryption would need bcrypt
        kind = ["-t", "ecdsa", "-m", "PKCS8"] if passphrase else ["-t", "ed25519"]
        subprocess.run(
            ["ssh-keygen", "-q", *kind, "-N", passphrase, "-C", "strata-test", "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> SSHServer:
        """Generate keys and configuration, start sshd, and wait until it speaks SSH."""
        if not self.available():
            raise RuntimeError(f"{SSHD} is missing: run .ci/install-system.sh")
        self._keygen(self.host_key)
        self._keygen(self.client_key, self.passphrase)
        (self.dir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        if os.geteuid() == 0:
            # sshd running as root insists on its privilege-separation directory
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _ in range(5):  # the free port may be taken between probing and binding
            self.port = free_port()
            self._write_config()
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            try:
                poll(self._speaks_ssh, "sshd start", proc=self.proc)
                break
            except RuntimeError:
                continue
        else:
            raise RuntimeError(f"sshd did not start; log:\n{self.log.read_text()}")
        pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        return self

    def _write_config(self) -> None:
        d = self.dir
        (d / "sshd_config").write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers {self.user}
Subsystem sftp internal-sftp{" -R" if self.sftp_readonly else ""}
MaxSessions 64
MaxStartups 64:30:128
LogLevel ERROR
"""
        )

    def _speaks_ssh(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def drop_connections(self) -> int:
        """Kill the session processes of this sshd (by pid): clients see their connections
        drop, while the server keeps accepting new ones. Returns how many were killed.
        """
        import psutil

        assert self.proc is not None
        sessions = psutil.Process(self.proc.pid).children(recursive=True)
        for p in sessions:
            os.kill(p.pid, signal.SIGKILL)
        return len(sessions)

    def stop(self) -> None:
        """Stop sshd (by pid) and remove the keys and configuration."""
        _stop(self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SSHServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str) -> str:
        """``ssh://user@127.0.0.1:port/<path>`` (``path`` absolute)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}/{path.lstrip('/')}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """sshfs/asyncssh options: the client key, and the host key to verify against."""
        opts: dict[str, Any] = {
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "config": [],  # do not read the developer's ~/.ssh/config in tests
        }
        if self.passphrase:
            opts["passphrase"] = self.passphrase
        return {**opts, **extra}


def blackhole() -> tuple[socket.socket, int]:
    """A listening socket that accepts connections (kernel backlog) and never answers.

    Returns the socket (close it when done) and its port.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, int(s.getsockname()[1])


if __name__ == "__main__":
    if sys.argv[1:] == ["s3"]:
        _serve_s3()
    else:
        sys.exit(f"usage: {sys.argv[0]} s3")
