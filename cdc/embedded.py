"""Throwaway local PostgreSQL clusters, for the test harness and ``pgcast demo``.

``initdb`` into a temporary directory, a free port, ``wal_level=logical``, the unix socket in the
same directory. When run as root the server runs as an unprivileged OS user (``postgres`` by
default), since ``initdb`` refuses root. Binaries come from ``PGCAST_PG_BINDIR``, ``pg_config
--bindir``, ``/usr/lib/postgresql/*/bin`` or the ``pgserver`` wheel (``pgcast[embedded]``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from cdc.errors import ConfigurationError

__all__ = ["Cluster", "find_bindir", "free_port", "throwaway_cluster"]

_DEFAULT_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "track_commit_timestamp": "on",
    "max_connections": "300",
    "listen_addresses": "'127.0.0.1'",
}


def _has_initdb(path: Path) -> bool:
    return (path / "initdb").is_file() and (path / "pg_ctl").is_file()


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``.

    Raises:
        ConfigurationError: no PostgreSQL server binaries were found.
    """
    env = os.environ.get("PGCAST_PG_BINDIR")
    if env:
        if _has_initdb(Path(env)):
            return Path(env)
        raise ConfigurationError(f"PGCAST_PG_BINDIR={env} has no initdb/pg_ctl")
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and _has_initdb(candidate):
            return candidate

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if _has_initdb(Path(path)):
            return Path(path)
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-not-found,unused-ignore]

        candidate = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if _has_initdb(candidate):
            return candidate
    raise ConfigurationError(
        "no PostgreSQL server binaries found: install the server (e.g. `apt-get install "
        "postgresql`) or `pip install 'pgcast[embedded]'`, or set PGCAST_PG_BINDIR"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """A PostgreSQL cluster in ``base``, owned by this process; :meth:`destroy` removes it."""

    def __init__(
        self,
        base: Path,
        *,
        bindir: Path | None = None,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        os_user: str = "postgres",
    ) -> None:
        self.base = base
        self.bindir = bindir or find_bindir()
        self.port = port or free_port()
        self.datadir = base / "data"
        self.socket_dir = base
        self.logfile = base / "postgres.log"
        self._settings = {**_DEFAULT_SETTINGS, **(settings or {})}
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(os_user)
            except KeyError:
                raise ConfigurationError(
                    f"running as root, but there is no OS user {os_user!r} to run PostgreSQL as:"
                    f" create one (`useradd --system {os_user}`)"
                ) from None
            self._user = os_user

    # -- lifecycle -------------------------------------------------------------------------
    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
            cwd=self.base,
        )
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip()}\n{log}")

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chmod(self.base, 0o755)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        lines = [f"port = {self.port}", f"unix_socket_directories = '{self.socket_dir}'"]
        lines += [f"{key} = {value}" for key, value in self._settings.items()]
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# pgcast throwaway cluster\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop (``fast``, or ``immediate`` to simulate a crash) and start again."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server if it runs and remove every file of the cluster."""
        if (self.datadir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # -- connecting --------------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` over the cluster's unix socket (user ``postgres``)."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"


@contextlib.contextmanager
def throwaway_cluster(
    settings: Mapping[str, str] | None = None, prefix: str = "pgcast-pg-"
) -> Iterator[Cluster]:
    """Start a fresh cluster in a temporary directory; stop and remove it on exit."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix=prefix)), settings=settings)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
