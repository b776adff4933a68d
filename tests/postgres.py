"""A real PostgreSQL server for tests: Debian's binaries, a temp data dir, loopback only.

PostgreSQL refuses to run as root, and tests run as root here and in CI: the server then
runs as the ``postgres`` system user (created by Debian's package) or ``nobody``, owning
its temp dir. Trust authentication is safe only because it listens on 127.0.0.1 alone.
``scripts/system-packages.sh`` installs the package.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    port: int
    user: str = "autocompress"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database on this server; returns its URL."""
        import psycopg2

        name = f"test_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                      dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        connection.close()
        return self.url(name)


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (pg_config's answer, else the newest Debian one)."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name), reverse=True)
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).is_file() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> tuple[str | None, int, int]:
    """(user to switch to or None, uid, gid) for the server's files."""
    if os.geteuid() != 0:
        return None, os.getuid(), os.getgid()
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return name, entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and neither the postgres nor the nobody user exists")


def _as(user: str | None, *cmd) -> list[str]:
    return ["runuser", "-u", user, "--", *map(str, cmd)] if user else list(map(str, cmd))


class Running:
    """Start on enter, stop (immediately) and delete on exit."""

    def __init__(self, binaries: Path):
        self.binaries = binaries
        self.base = Path(tempfile.mkdtemp(prefix="autocompress-pg-"))
        self.user, uid, gid = _server_user()
        os.chown(self.base, uid, gid)
        self.data = self.base / "data"
        self.server = Server(_free_port())

    def __enter__(self) -> Server:
        run = lambda *cmd: subprocess.run(_as(self.user, *cmd), check=True, cwd=self.base,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            run(self.binaries / "initdb", "-D", self.data, "-U", self.server.user,
                "--auth=trust", "--no-sync", "-E", "UTF8")
            options = (f"-c listen_addresses=127.0.0.1 -p {self.server.port} "
                       f"-c unix_socket_directories={self.base} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            run(self.binaries / "pg_ctl", "-D", self.data, "-l", self.base / "server.log",
                "-o", options, "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as err:
            log = self.base / "server.log"
            detail = log.read_text()[-2000:] if log.exists() else err.stderr.decode()[-2000:]
            self.__exit__()
            raise RuntimeError(f"PostgreSQL did not start: {detail}") from None
        return self.server

    def __exit__(self, *exc) -> None:
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():   # SIGQUIT = immediate shutdown (pg_ctl -w polls once a second)
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
                end = time.time() + 30
                while time.time() < end and pid_file.exists():
                    time.sleep(0.05)
            except ProcessLookupError:   # it had died: only its files are left
                pass
        shutil.rmtree(self.base, ignore_errors=True)
