"""Network namespaces for tests: real separation by the kernel, nothing simulated.

A :class:`Lab` creates namespaces and veth links between them, runs processes
inside them (a server, coturn, a Chromium driven by Playwright over pipes) and
removes everything on :meth:`Lab.close`. Namespace names carry the caller's tag
(``pyapp-h6-a-1234``) and the addresses live only inside the namespaces the lab
creates: nothing is added to this machine's own namespace.

Example::

    with Lab("turn") as lab:
        t, a = lab.namespace("t"), lab.namespace("a")
        ta, at = lab.link(t, a)                # ta.ip in t, at.ip in a, one /24
        proc = t.popen(["sleep", "5"])
"""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browsers import CHROMIUM_ARGS, chromium_path

ROOT = Path(__file__).resolve().parent.parent


def ip(*args: str) -> str:
    """Run ``ip ARGS``; raise with its stderr on failure."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    probe = f"pyapp-probe-{os.getpid()}"
    try:
        ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"cannot create a network namespace here: {exc}"
    ip("netns", "del", probe)
    return None


def sweep(tag: str) -> list[str]:
    """Delete namespaces ``pyapp-<tag>-*`` left by runs whose process is gone (killed mid-test)."""
    removed = []
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = re.fullmatch(rf"pyapp-{re.escape(tag)}-\w+-(\d+)-\d+", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
    return removed


@dataclass
class Namespace:
    """One network namespace of a :class:`Lab`."""

    name: str
    lab: Lab

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, check=check)

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` inside the namespace; the lab stops it on close."""
        proc = subprocess.Popen([*self.prefix, *cmd], **kw)
        self.lab.processes.append(proc)
        return proc

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-q", "-w", f"{key}={value}")

    def chromium_launcher(self) -> str:
        """A launcher script that starts Chromium in this namespace (for ``executable_path``)."""
        chromium = chromium_path()
        if chromium is None:
            raise RuntimeError("no Chromium: run `python3 build.py test`, or set $CHROMIUM")
        script = self.lab.dir / f"chromium-in-{self.name}"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {chromium} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return str(script)

    def launch_chromium(self, playwright: Any, extra_args: list[str] | None = None) -> Any:
        """A headless Chromium whose network is this namespace's."""
        return playwright.chromium.launch(executable_path=self.chromium_launcher(),
                                          args=[*CHROMIUM_ARGS, *(extra_args or [])], headless=True)


@dataclass(frozen=True)
class End:
    """One end of a veth link."""

    ns: Namespace
    ifname: str
    ip: str


class Lab:
    """Namespaces, links and processes that :meth:`close` removes again."""

    def __init__(self, tag: str) -> None:
        if not re.fullmatch(r"[a-z0-9]{1,6}", tag):
            raise ValueError("tag: 1-6 lowercase letters/digits")
        self.tag = tag
        self.run_id = f"{os.getpid() % 10000}{random.randint(10, 99)}"
        sweep(tag)
        self.namespaces: list[Namespace] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"pyapp-netns-{tag}-"))
        self._links = 0
        # One random 10.x.y.0/16-ish block per lab; each link gets its own /24 in it.
        self._block = random.randint(100, 199)
        self._subnet = random.randint(0, 200)

    def namespace(self, role: str) -> Namespace:
        """A new namespace ``pyapp-<tag>-<role>-<run>`` with loopback up."""
        ns = Namespace(f"pyapp-{self.tag}-{role}-{os.getpid()}-{self.run_id}", self)
        ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ip("-n", ns.name, "link", "set", "lo", "up")
        return ns

    def link(self, left: Namespace, right: Namespace) -> tuple[End, End]:
        """A veth pair between two namespaces, ``10.B.S.1`` on the left, ``.2`` on the right."""
        self._links += 1
        net = f"10.{self._block}.{self._subnet + self._links}"
        names = (f"{self.tag[:3]}{self.run_id}l{self._links}"[:15],
                 f"{self.tag[:3]}{self.run_id}r{self._links}"[:15])
        ip("link", "add", names[0], "netns", left.name, "type", "veth",
           "peer", "name", names[1], "netns", right.name)
        ends = (End(left, names[0], f"{net}.1"), End(right, names[1], f"{net}.2"))
        for end in ends:
            ip("-n", end.ns.name, "addr", "add", f"{end.ip}/24", "dev", end.ifname)
            ip("-n", end.ns.name, "link", "set", end.ifname, "up")
        return ends

    def close(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            # Deleting a namespace deletes the veth ends inside it (and their peers).
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class NamespacedServer:
    """The real dev server (``python -m web.server``) inside a namespace, on all its addresses."""

    def __init__(self, ns: Namespace, *extra: str) -> None:
        from tests.conftest import ensure_static_fresh

        ensure_static_fresh()
        self.proc = ns.popen([sys.executable, "-m", "web.server", "--host", "0.0.0.0", "--port", "0",
                              "--no-tls", *extra],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"https?://[\d.]+:(\d+)/", line)
        if not match:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            self.proc.kill()
            raise RuntimeError(f"server did not start in {ns.name}: {line!r} {rest[-2000:]}")
        self.port = int(match.group(1))
        self.output: list[str] = [line]
        # Drain the log so a chatty server never blocks on a full pipe; kept for failure messages.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}"
