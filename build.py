#!/usr/bin/env python3
"""pyapp's one entry point: install, build, serve, test, benchmark.

    python3 build.py serve [--host H] [--port P] [--tls | --no-tls] [--cert C --key K]
                           [--turn-url URL ... --turn-secret S --turn-ttl N | --turn-local]
    python3 build.py test [pytest args ...]
    python3 build.py build          # only (re)build static/
    python3 build.py bench          # browser benchmarks -> bench-results.json
    python3 build.py fuzz [N]       # multiplexer fuzzing, N cases (default 1,000,000)
    python3 build.py docs           # build the documentation site into site/

This file uses only the standard library until it has made `.venv/`; it then
re-runs itself inside that virtual environment with the pinned requirements
installed. Everything it installs is pinned: requirements/*.txt (PyPI) and
package-lock.json (npm).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
STATIC = ROOT / "static"
WEB = ROOT / "web"
PYODIDE_NPM = ROOT / "node_modules" / "pyodide"
# The Pyodide core files the page needs; nothing else from the npm package is served.
PYODIDE_FILES = [
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
]
WEB_FILES = ["index.html", "loader.js", "style.css", "dashboard.js", "bench-bare.html"]
REQUIREMENTS = {"serve": ROOT / "requirements" / "serve.txt", "test": ROOT / "requirements" / "test.txt"}


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install(*packages: str) -> bool:
    """Install Debian packages when we are root; return whether it worked."""
    if not is_root() or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", *packages], env=env)
    except subprocess.CalledProcessError as exc:
        log(f"apt-get install {' '.join(packages)} failed: {exc}")
        return False
    return True


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- venv

def _requirement_files(stage: str) -> list[Path]:
    files = [REQUIREMENTS["serve"]]
    if stage == "test":
        files.append(REQUIREMENTS["test"])
    return files


def ensure_venv(stage: str) -> None:
    """Create .venv and install the pinned requirements for `stage` (serve or test)."""
    if not VENV_PY.exists():
        log("creating .venv")
        run([sys.executable, "-m", "venv", str(VENV)])
    files = _requirement_files(stage)
    stamp = VENV / f".pyapp-{stage}.sha256"
    want = _digest(*files)
    if stamp.exists() and stamp.read_text() == want:
        return
    run([str(VENV_PY), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-r", str(files[-1])])
    stamp.write_text(want)


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def reexec_in_venv(stage: str) -> None:
    ensure_venv(stage)
    if not in_venv():
        os.execv(str(VENV_PY), [str(VENV_PY), str(ROOT / "build.py"), *sys.argv[1:]])


# --------------------------------------------------------------------------- npm

def ensure_node() -> None:
    if shutil.which("npm"):
        return
    log("npm not found; installing Debian's nodejs and npm")
    if not apt_install("nodejs", "npm") or not shutil.which("npm"):
        sys.exit("npm is needed to install the Pyodide runtime (package-lock.json); install Node.js")


def ensure_npm_packages() -> None:
    stamp = ROOT / "node_modules" / ".pyapp-lock.sha256"
    want = _digest(ROOT / "package-lock.json")
    if stamp.exists() and stamp.read_text() == want and (PYODIDE_NPM / "pyodide.mjs").exists():
        return
    ensure_node()
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT)
    stamp.write_text(want)


# --------------------------------------------------------------------------- static

def build_wheel(dest: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "-q",
         "--no-deps", "--no-build-isolation", "-w", str(dest), str(ROOT)])
    wheels = sorted(dest.glob("pyapp-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected one pyapp wheel in {dest}, found {wheels}")
    return wheels[0]


# A memory snapshot of the Pyodide heap with every pyapp module imported, made at build
# time by Node (which ships with npm, needed for the runtime anyway) from the exact runtime
# files and wheel the page gets. The page restores it instead of booting CPython and
# importing pyapp. Pyodide's snapshot API is private (`_makeSnapshot`, `makeMemorySnapshot`,
# `_loadSnapshot`) and a snapshot only fits the build that made it, so the manifest records
# what it was made from and the loader falls back to a normal start when anything differs.
SNAPSHOT_MAKER = r"""
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [indexURL, wheelPath, out] = process.argv.slice(1);
const check = `
import sys, pyapp.browser.app
assert "pyapp.browser.app" in sys.modules
len(sys.modules)`;
try {
  const { loadPyodide } = await import(pathToFileURL(indexURL + "pyodide.mjs").href);
  const raw = readFileSync(wheelPath);
  const py = await loadPyodide({ indexURL, _makeSnapshot: true });
  py.unpackArchive(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength), "wheel");
  const modules = py.runPython(`
import gc, importlib, pkgutil, pyapp
for _m in pkgutil.walk_packages(pyapp.__path__, "pyapp."):
    importlib.import_module(_m.name)
del _m
gc.collect()
${check}`);
  const heap = py._module.HEAP8.length;
  const snapshot = py.makeMemorySnapshot();
  // Verify: a fresh runtime restored from it imports the app (and it fits the heap, pyodide#6254).
  const restored = await loadPyodide({ indexURL, _loadSnapshot: snapshot });
  const again = restored.runPython(check);
  if (again !== modules) throw new Error(`restored snapshot has ${again} modules, expected ${modules}`);
  writeFileSync(out, snapshot);
  console.log(JSON.stringify({ modules, heap, size: snapshot.length }));
} catch (err) {
  // One short line (a Python traceback's last line); exitCode, not exit(), so it is flushed.
  const lines = String(err?.message ?? err).split("\n").filter((l) => l.trim());
  process.stderr.write(`${lines[lines.length - 1] ?? err}\n`);
  process.exitCode = 1;
}
"""
RUNTIME_FILES = ["pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip"]


def runtime_facts(runtime: Path) -> dict[str, object]:
    """What identifies the served Pyodide build: a digest of its files and its BUILD_ID."""
    match = re.search(r'BUILD_ID:"([0-9a-f]{64})"', (runtime / "pyodide.mjs").read_text())
    return {
        "sha256": _digest(*(runtime / name for name in RUNTIME_FILES)),
        "build_id": match.group(1) if match else None,
        "sizes": {name: (runtime / name).stat().st_size for name in PYODIDE_FILES},
    }


def build_snapshot(runtime: Path, facts: dict[str, object], wheel: Path, wheel_hash: str) -> dict[str, object] | None:
    """Make (or reuse) static/snapshots/<key>/pyapp.snapshot; None when it cannot be made."""
    node = shutil.which("node")
    if os.environ.get("PYAPP_NO_SNAPSHOT") or node is None or not facts.get("build_id"):
        log("memory snapshot skipped (PYAPP_NO_SNAPSHOT set, no node, or no BUILD_ID): pages start normally")
        return None
    maker_hash = hashlib.sha256(SNAPSHOT_MAKER.encode()).hexdigest()
    key = hashlib.sha256(f"{facts['sha256']}|{wheel_hash}|{maker_hash}".encode()).hexdigest()[:16]
    snapshots = STATIC / "snapshots"
    folder = snapshots / key
    target, meta_file = folder / "pyapp.snapshot", folder / "snapshot.json"
    if not (target.exists() and meta_file.exists()):
        staging = snapshots / f".build-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            out = subprocess.run(
                [node, "--input-type=module", "-e", SNAPSHOT_MAKER, "--", f"{runtime}/",
                 str(wheel), str(staging / "pyapp.snapshot")],
                check=True, capture_output=True, text=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            reason = (getattr(exc, "stderr", "") or "").strip() or str(exc)
            log(f"memory snapshot failed, pages will start normally: {reason[-300:]}")
            shutil.rmtree(staging, ignore_errors=True)
            return None
        made = json.loads(out.stdout.strip().splitlines()[-1])
        data = (staging / "pyapp.snapshot").read_bytes()
        meta = {
            "file": f"snapshots/{key}/pyapp.snapshot",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "heap": made["heap"],
            "modules": made["modules"],
            "wheel_sha256": wheel_hash,
            "runtime_sha256": facts["sha256"],
            "build_id": facts["build_id"],
        }
        # Precompressed copy: the server sends it to browsers that accept gzip (most of
        # the heap is zeros: ~31 MB -> ~7 MB on the wire).
        import gzip

        (staging / "pyapp.snapshot.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        (staging / "snapshot.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.replace(staging, folder)
        except OSError:  # another build made the same snapshot first
            shutil.rmtree(staging, ignore_errors=True)
        log(f"memory snapshot made ({made['modules']} modules, {len(data) / 1e6:.1f} MB)")
    else:
        log(f"memory snapshot up to date ({folder.name})")
    olds = sorted((d for d in snapshots.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in olds[3:]:
        shutil.rmtree(old, ignore_errors=True)
    meta = json.loads(meta_file.read_text())
    return meta if isinstance(meta, dict) else None


def build_static() -> None:
    """Build static/: the Pyodide runtime, the pyapp wheel and the page shell."""
    ensure_npm_packages()
    STATIC.mkdir(exist_ok=True)
    runtime = STATIC / "pyodide"
    runtime.mkdir(exist_ok=True)
    for name in PYODIDE_FILES:
        src, dst = PYODIDE_NPM / name, runtime / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)
    for extra in ("node_modules/uplot/dist/uPlot.iife.min.js", "node_modules/uplot/dist/uPlot.min.css"):
        src = ROOT / extra
        if src.exists():
            (STATIC / "vendor").mkdir(exist_ok=True)
            shutil.copy2(src, STATIC / "vendor" / src.name)
    # Content-addressed wheel folder + atomic manifest swap: a page loading while
    # static/ is rebuilt sees either the old pair or the new one, never a mix.
    wheels = STATIC / "wheels"
    wheels.mkdir(exist_ok=True)
    staging = wheels / f".build-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    built = build_wheel(staging)
    wheel_hash = hashlib.sha256(built.read_bytes()).hexdigest()
    folder = wheels / wheel_hash[:16]
    if not (folder / built.name).exists():
        folder.mkdir(exist_ok=True)
        os.replace(built, folder / built.name)
    shutil.rmtree(staging, ignore_errors=True)
    for name in WEB_FILES:
        src = WEB / name
        if src.exists():
            tmp = STATIC / f".{name}.tmp{os.getpid()}"
            shutil.copy2(src, tmp)
            os.replace(tmp, STATIC / name)
    facts = runtime_facts(runtime)
    snapshot = build_snapshot(runtime, facts, folder / built.name, wheel_hash)
    manifest = {
        "wheel": f"wheels/{folder.name}/{built.name}",
        "sha256": wheel_hash,
        "wheel_size": (folder / built.name).stat().st_size,
        "pyodide": "pyodide/",
        "runtime": facts,
        "snapshot": snapshot,
    }
    tmp = STATIC / f".manifest.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, STATIC / "manifest.json")
    # Keep the newest few wheel folders (pages still loading may want the previous one).
    olds = sorted((d for d in wheels.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in olds[3:]:
        shutil.rmtree(old, ignore_errors=True)
    log(f"static/ built (wheel {built.name}, sha256 {wheel_hash[:12]})")


# --------------------------------------------------------------------------- browsers

def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(candidate).exists():
            return candidate
    cache = Path.home() / ".cache" / "ms-playwright"
    for exe in sorted(cache.glob("chromium-*/chrome-linux*/chrome"), reverse=True):
        return str(exe)
    return None


def find_firefox() -> str | None:
    env = os.environ.get("FIREFOX")
    if env and Path(env).exists():
        return env
    for candidate in ("/usr/bin/firefox-esr", "/usr/bin/firefox"):
        if Path(candidate).exists():
            return candidate
    return None


def ensure_browsers() -> None:
    missing = []
    if find_chromium() is None:
        missing += ["chromium"]
    if find_firefox() is None:
        missing += ["firefox-esr"]
    if shutil.which("ip") is None:
        missing += ["iproute2"]  # the blip test's network namespaces
    if shutil.which("turnserver") is None:
        missing += ["coturn"]  # the TURN relay tests start their own coturn
    if shutil.which("redis-server") is None:
        missing += ["redis-server"]  # the multi-instance tests start their own redis-server
    if missing:
        log(f"installing {', '.join(missing)} (playwright install cannot download browsers here)")
        apt_install(*missing)
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no Chromium found: set $CHROMIUM, or install Debian's chromium as root")
    os.environ["CHROMIUM"] = chromium
    firefox = find_firefox()
    if firefox:
        os.environ["FIREFOX"] = firefox
    log(f"chromium: {chromium}; firefox: {firefox or 'not found (Firefox tests will be skipped)'}")


# --------------------------------------------------------------------------- commands

def cmd_build(_: list[str]) -> int:
    reexec_in_venv("serve")
    build_static()
    return 0


def cmd_serve(args: list[str]) -> int:
    reexec_in_venv("serve")
    if "--turn-local" in args and shutil.which("turnserver") is None:
        log("--turn-local: installing Debian's coturn")
        if not apt_install("coturn"):
            sys.exit("--turn-local needs coturn: run as root, or `apt-get install coturn`")
    build_static()
    if (ROOT / "docs").exists() and _docs_available():
        try:
            build_docs(strict=False)
        except subprocess.CalledProcessError as exc:
            log(f"docs build failed ({exc}); serving the app without /docs")
    sys.path.insert(0, str(ROOT))
    from web.server import main as serve_main

    return serve_main(args)


def _docs_available() -> bool:
    return (ROOT / "mkdocs.yml").exists()


def build_docs(strict: bool = True) -> None:
    cmd = [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(ROOT / "site")]
    if strict:
        cmd.append("--strict")
    run(cmd, cwd=ROOT)


def cmd_docs(_: list[str]) -> int:
    reexec_in_venv("test")
    build_docs(strict=True)
    return 0


def cmd_test(args: list[str]) -> int:
    reexec_in_venv("test")
    ensure_browsers()
    build_static()
    # Every prerequisite was installed above: a test that cannot run must fail, not skip.
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYAPP_FULL_SUITE="1")
    steps: list[tuple[str, list[str]]] = [
        ("ruff", [sys.executable, "-m", "ruff", "check", "pyapp", "tests", "web", "benchmarks", "build.py"]),
        ("mypy", [sys.executable, "-m", "mypy"]),
    ]
    if _docs_available():
        steps.append(("docs", [sys.executable, "-m", "mkdocs", "build", "--quiet", "--strict",
                                "--site-dir", str(ROOT / "site")]))
    failed = []
    if not args:  # static checks only on a full run; `test -k foo` goes straight to pytest
        for name, cmd in steps:
            log(f"$ {' '.join(cmd[2:])}")
            if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
                failed.append(name)
    pytest_cmd = [sys.executable, "-m", "pytest", *args]
    log("$ " + " ".join(pytest_cmd[2:]))
    rc = subprocess.run(pytest_cmd, cwd=ROOT, env=env).returncode
    if failed:
        log(f"static checks failed: {', '.join(failed)}")
        return 1
    return rc


def cmd_bench(args: list[str]) -> int:
    reexec_in_venv("test")
    ensure_browsers()
    build_static()
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), *args], cwd=ROOT).returncode


def cmd_fuzz(args: list[str]) -> int:
    reexec_in_venv("test")
    cases = args[0] if args else "1000000"
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_mux.py"), cases], cwd=ROOT).returncode


COMMANDS = {
    "build": cmd_build,
    "serve": cmd_serve,
    "test": cmd_test,
    "bench": cmd_bench,
    "fuzz": cmd_fuzz,
    "docs": cmd_docs,
}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    os.chdir(ROOT)
    return COMMANDS[argv[1]](argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
