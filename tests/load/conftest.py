"""The real signaling server process, for the load tests (loopback only, bounded).

Clients connect from many loopback addresses (127.x.y.z), so per-address limits
are exercised as a real deployment would see separate hosts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "load: the real server process under abuse (loopback, bounded)")


class RealServer:
    """``python -m web.server`` on a free loopback port, with extra flags."""

    def __init__(self, *flags: str, host: str = "127.0.0.1", tls: bool = False) -> None:
        cmd = [sys.executable, "-m", "web.server", "--host", host, "--port", "0",
               "--tls" if tls else "--no-tls", *flags]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
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

    def stop(self) -> str:
        """Stop it; returns what it printed (for failure messages)."""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


@pytest.fixture(scope="module")
def real_server() -> Iterator[RealServer]:
    # A small queue makes the slow reader overflow after a few hundred KB, not MBs;
    # every other limit is the default (a close may take 2 s: enough on a busy machine).
    server = RealServer("--queue-bytes", "262144")
    yield server
    server.stop()
