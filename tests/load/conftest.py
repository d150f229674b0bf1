"""The real signaling server process, for the load tests (loopback only, bounded).

Clients connect from many loopback addresses (127.x.y.z), so per-address limits
are exercised as a real deployment would see separate hosts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "load: the real server process under abuse (loopback, bounded)")


class RealServer:
    """``python -m web.server`` on a free loopback port, with extra flags.

    Its output is read all along (a thread keeps the last lines): a server whose
    log pipe filled up would block in a write, which no load test or benchmark
    should mistake for the server being slow. ``cpus`` pins it to those CPUs.
    """

    def __init__(self, *flags: str, host: str = "127.0.0.1", tls: bool = False,
                 cpus: set[int] | None = None) -> None:
        cmd = [sys.executable, "-m", "web.server", "--host", host, "--port", "0",
               "--tls" if tls else "--no-tls", *flags]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        if cpus:
            os.sched_setaffinity(self.proc.pid, cpus)  # before it starts any thread
        assert self.proc.stdout is not None
        seen = []
        match = None
        while match is None and len(seen) < 20:  # log lines may come before the URL
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = re.search(r"serving on (https?)://[\d.]+:(\d+)/", line)
        if match is None:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {''.join(seen)[-2000:]!r}")
        self.port = int(match.group(2))
        self.url = f"{match.group(1)}://{host}:{self.port}"
        self._output: deque[str] = deque(seen, maxlen=400)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._output.append(line)

    def stop(self) -> str:
        """Stop it; returns the last lines it printed (for failure messages)."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return "".join(self._output)


@pytest.fixture(scope="module")
def real_server() -> Iterator[RealServer]:
    # A small queue makes the slow reader overflow after a few hundred KB, not MBs;
    # every other limit is the default (a close may take 2 s: enough on a busy machine).
    server = RealServer("--queue-bytes", "262144")
    yield server
    server.stop()
