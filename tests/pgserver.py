"""A real PostgreSQL server of the tests' own: initdb in a temp dir, a free
loopback port, trust auth; and fresh databases on it."""

import glob
import itertools
import os
import shutil
import subprocess
import tempfile

from capshard.broker import free_port
from capshard.paths import REPO_ROOT


def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not found:
        subprocess.run(["sh", os.path.join(REPO_ROOT, "tools", "setup", "postgresql.sh")], check=True)
        return _pg_bin()
    return os.path.dirname(found[-1])


class PgServer:
    """initdb + pg_ctl as the postgres user when we are root (the server
    refuses to run as root)."""

    def __init__(self):
        self.bin = _pg_bin()
        self.dir = tempfile.mkdtemp(prefix="capshard-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args):
        subprocess.run(self.as_user + [os.path.join(self.bin, args[0]), *args[1:]], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def start(self):
        self._run("initdb", "-D", self.data, "-U", "capshard", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.resume()
        return self

    def resume(self):
        """Start the server on its data directory (again, after halt())."""
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "server.log"),
                  "-w", "-t", "30", "start")

    def halt(self):
        """Stop the server at once, keeping its data: every connection drops."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def url(self, db="postgres"):
        return f"postgresql://capshard@127.0.0.1:{self.port}/{db}"

    def stop(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_db_names = itertools.count(1)


def fresh_db(server):
    import psycopg
    name = f"fleet_{os.getpid()}_{next(_db_names)}"
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url(name)
