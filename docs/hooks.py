"""MkDocs hooks for pyapp's documentation site (``mkdocs.yml`` → ``hooks:``).

What they do, at build time:

* **Benchmark tables.** A line ``<!-- bench: figure_a figure_b ... -->`` in a page
  becomes a table of those figures from the committed snapshot
  ``docs/measured/bench-results.json`` (written by ``python3 build.py bench
  --record``), with the date and machine of the run that measured each one.
  ``<!-- bench-machines -->`` becomes a table of the machines in the snapshot.
  A figure that no ``benchmarks/bench_*.py`` module produces any more (renamed or
  removed) is a warning, so ``mkdocs build --strict`` fails; a figure that exists
  but was never recorded shows "not recorded yet".
* **Browser examples.** The marker comment ``# pyapp: run-in-browser`` (or
  ``// pyapp: run-in-browser`` in JS) that
  ``tests/browser/test_doc_examples.py`` looks for is removed from what readers see.
* **Every public name is in the reference.** After the build, each name that
  ``public_names()`` lists must have an anchor in the rendered API pages;
  otherwise a warning (fails ``--strict``).
* **Local only.** A page that loads a script, style sheet or image from another
  origin is a warning: ``/docs`` is served offline next to the app.
* **New design notes show up.** A Markdown file at the top of ``docs/`` that
  the ``nav`` in ``mkdocs.yml`` does not list (a feature engineer's new note) is
  appended to the "Design notes" section, so adding a note never breaks the build.
* Sphinx roles left in docstrings (``:class:`X```) are shown as plain code, and
  reST's ``Example::`` as ``Example:``.
* Pygments' style sheet is written to ``site/css/pygments.css`` (syntax colours
  without the theme's CDN-hosted highlight.js).
"""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.plugins.pyapp")

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "docs" / "measured" / "bench-results.json"
BROWSER_MARKERS = ("# pyapp: run-in-browser", "// pyapp: run-in-browser")

_BENCH_RE = re.compile(r"^<!--\s*bench:\s*(?P<names>[\w\s]+?)\s*-->\s*$", re.M)
_MACHINES_RE = re.compile(r"^<!--\s*bench-machines\s*-->\s*$", re.M)
_ROLE_RE = re.compile(r":(?:class|meth|func|mod|attr|exc|data|obj|py:\w+):(<code>)~?")
_ID_RE = re.compile(r'id="(pyapp(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"')
_FOREIGN_RE = re.compile(r'<(?:script|img|iframe)\b[^>]*\bsrc="(https?:)?//|<link\b[^>]*\bhref="(https?:)?//')

_UNITS = [
    ("_msgs_per_s", "messages/s"), ("_cases_per_s", "cases/s"), ("_mib_per_s", "MiB/s"),
    ("_mbps", "MB/s"), ("_kbps", "kbit/s"), ("_ms_max", "ms"), ("_ms", "ms"), ("_us", "µs"),
    ("_kb", "KiB"), ("_fps", "frames/s"), ("_width", "px"), ("_ratio", "×"), ("_cases", "cases"),
]

_seen_ids: set[str] = set()


# --------------------------------------------------------------------------- public names

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def public_names(root: Path = ROOT) -> dict[str, list[str]]:
    """Module → the names the API reference must show.

    Everything in a module's ``__all__``; for ``pyapp.browser.*`` modules also
    every top-level class and function whose name has no leading underscore
    (the page API is used from the console and JS, not only through imports).
    """
    out: dict[str, list[str]] = {}
    for path in sorted((root / "pyapp").rglob("*.py")):
        module = _module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names: list[str] = []
        for node in tree.body:
            if not isinstance(node, (ast.Assign, ast.AnnAssign)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                value = node.value
                if isinstance(value, (ast.List, ast.Tuple)):
                    names += [e.value for e in value.elts
                              if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if module.startswith("pyapp.browser"):
            for node in tree.body:
                if (isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                        and not node.name.startswith("_") and node.name not in names):
                    names.append(node.name)
        if names:
            out[module] = names
    return out


# --------------------------------------------------------------------------- bench tables

def _unit(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def _format(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _load_snapshot() -> dict[str, Any]:
    if not SNAPSHOT.exists():
        return {"runs": {}}
    data: dict[str, Any] = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    return data


def _produced_figures() -> str:
    """Source text of every benchmark module (a figure name must appear in one of them)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "benchmarks").glob("bench_*.py")))


def _machine_label(machine: dict[str, Any]) -> str:
    return (f"{machine.get('nproc', '?')} cores, {machine.get('cpu_model', '?')}; "
            f"Chromium {machine.get('chromium', '?')}")


def _produced(name: str, sources: str) -> bool:
    """Whether a benchmark module's source names this figure: literally, or via an f-string."""
    if f'"{name}"' in sources:
        return True
    for template in re.findall(r'\bf"([^"]*\{[^"]*)"', sources):
        pattern = "".join(r"\w+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]*\})", template))
        if re.fullmatch(pattern, name):
            return True
    return False


def bench_table(names: list[str], snapshot: dict[str, Any], sources: str, page: str) -> str:
    rows = ["| figure | value | unit | measured by | recorded |", "|---|---:|---|---|---|"]
    for name in names:
        if not _produced(name, sources):
            log.warning("%s: benchmark figure %r is produced by no benchmarks/bench_*.py module",
                        page, name)
        found = None
        for module, run in sorted(snapshot.get("runs", {}).items()):
            if name in run.get("figures", {}):
                found = (module, run)
        if found is None:
            rows.append(f"| `{name}` | not recorded yet | {_unit(name)} | "
                        f"`python3 build.py bench --record` | — |")
            continue
        module, run = found
        rows.append(f"| `{name}` | {_format(float(run['figures'][name]))} | {_unit(name)} | "
                    f"`benchmarks/{module}.py` | {run.get('recorded', '?')} |")
    return "\n".join(rows)


def machines_table(snapshot: dict[str, Any]) -> str:
    rows = ["| module | recorded | cores | CPU | Chromium | Pyodide |", "|---|---|---:|---|---|---|"]
    for module, run in sorted(snapshot.get("runs", {}).items()):
        m = run.get("machine", {})
        rows.append(f"| `{module}` | {run.get('recorded', '?')} | {m.get('nproc', '?')} | "
                    f"{m.get('cpu_model', '?')} | {m.get('chromium', '?')} | {m.get('pyodide', '?')} |")
    if len(rows) == 2:
        rows.append("| — | nothing recorded yet: `python3 build.py bench --record` | | | | |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- mkdocs events

def _listed(nav: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(nav, str):
        found.add(nav)
    elif isinstance(nav, dict):
        for value in nav.values():
            found |= _listed(value)
    elif isinstance(nav, list):
        for item in nav:
            found |= _listed(item)
    return found


def on_config(config: Any) -> Any:
    nav = config.get("nav")
    if not nav:
        return config
    listed = _listed(nav)
    notes = next((item["Design notes"] for item in nav
                  if isinstance(item, dict) and "Design notes" in item), None)
    if notes is None:
        return config
    docs_dir = Path(config["docs_dir"])
    for page in sorted(docs_dir.glob("*.md")):
        if page.name not in listed:
            title = page.read_text(encoding="utf-8").partition("\n")[0].lstrip("# ").strip()
            notes.append({title or page.stem: page.name})
            log.info("design note %s added to the nav", page.name)
    return config


def on_pre_build(config: Any) -> None:
    _seen_ids.clear()


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!--" in markdown:
        snapshot = _load_snapshot()
        sources = _produced_figures()
        src = page.file.src_uri
        markdown = _BENCH_RE.sub(lambda m: bench_table(m.group("names").split(), snapshot, sources, src),
                                 markdown)
        markdown = _MACHINES_RE.sub(lambda m: machines_table(snapshot), markdown)
    if any(marker in markdown for marker in BROWSER_MARKERS):
        markdown = "\n".join(line for line in markdown.split("\n") if line.strip() not in BROWSER_MARKERS)
    return markdown


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    html = _ROLE_RE.sub(r"\1", html)
    html = html.replace("::</p>", ":</p>")   # reST's "Example::" before a literal block
    if page.file.src_uri.startswith("api/"):
        _seen_ids.update(_ID_RE.findall(html))
    return html


def on_post_page(output: str, page: Any, config: Any) -> str:
    match = _FOREIGN_RE.search(output)
    if match:
        log.warning("%s loads something from another origin: %s", page.file.src_uri,
                    output[match.start():match.start() + 120])
    return output


def on_post_build(config: Any) -> None:
    from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

    css = Path(config["site_dir"]) / "css" / "pygments.css"
    css.parent.mkdir(parents=True, exist_ok=True)
    css.write_text(HtmlFormatter(style="friendly").get_style_defs(".highlight"), encoding="utf-8")

    missing = [f"{module}.{name}" for module, names in public_names().items() for name in names
               if f"{module}.{name}" not in _seen_ids]
    if missing:
        log.warning("public names missing from the API reference (docs/api/*.md): %s",
                    ", ".join(missing))
