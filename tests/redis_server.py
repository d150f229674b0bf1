"""A throwaway redis-server (Debian's) on a free loopback port, and server instances using it.

Example::

    with RedisServer() as r:
        print(r.url)          # redis://127.0.0.1:<port>/0
        inst = Instance(r.url, ttl=2.0)
        print(inst.url)       # http://127.0.0.1:<port>
        inst.kill()           # SIGKILL
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server --port N --save '' --appendonly no``, stopped (and its dir removed) on exit."""

    def __init__(self, port: int | None = None) -> None:
        """``port``: reuse one (to restart a server that was stopped); default a free one."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (python3 build.py test installs it)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.TemporaryDirectory(prefix="pyapp-redis-")
        self.log = Path(self.dir.name) / "redis.log"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir.name, "--logfile", str(self.log), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = self.log.read_text() if self.log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {out[-500:]}")
            time.sleep(0.05)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (inline protocol) and return the raw first reply chunk."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.stop()


class Instance(ServerProcess):
    """A server process (``--redis URL`` unless ``redis_url`` is None); a thread drains its log.

    ServerProcess reads only its first line; a server that logs more would fill the pipe
    and block. ``log`` keeps the lines for a failing test to show.
    """

    def __init__(self, redis_url: str | None, *extra: str, ttl: float = 2.0) -> None:
        flags = ("--redis", redis_url, "--presence-ttl", str(ttl)) if redis_url else ()
        super().__init__(*flags, *extra)
        self.log: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip())

    def kill(self) -> None:
        """SIGKILL: no cleanup, nothing told to Redis."""
        self.proc.kill()
        self.proc.wait(5)
