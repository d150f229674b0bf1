// pyapp page loader: start Pyodide from our own origin, install the pyapp wheel,
// hand control to Python (pyapp.browser.app), and expose the runtime as
// globalThis.pyodide for the console and tests. Nothing here loads from a CDN.
//
// Fast path: `python3 build.py build` makes a memory snapshot of a Pyodide heap with
// every pyapp module imported (manifest.json `snapshot`). Restoring it skips CPython's
// start-up and pyapp's imports. Pyodide's snapshot API is private and a snapshot fits
// only the exact runtime build and wheel it was made from, so the loader checks what
// the manifest says it was made from, its size, its header and its SHA-256; on any
// mismatch or restore error it starts Python normally and says why on the console.
// `?nosnapshot=1` forces the normal start.
//
// Everything is fetched at once (runtime, standard library, snapshot, wheel); the
// loading bar shows the bytes received against the sizes in the manifest, then the
// start-up steps. pyappStartup records what happened (snapshot used or why not, the
// progress values shown) for the console, tests and benchmarks.
import { loadPyodide } from "./pyodide/pyodide.mjs";

const $ = (id) => document.getElementById(id);
const t0 = performance.now();
const timings = (globalThis.pyappTimings = {});
const startup = (globalThis.pyappStartup = { snapshot: "none", notes: [], progress: [] });
const params = new URLSearchParams(location.search);
const realFetch = globalThis.fetch.bind(globalThis);
const MB = (n) => (n / 1e6).toFixed(1);

let shown = -1;
function progress(pct, text) {
  const value = Math.max(shown, Math.min(100, Math.round(pct))); // never moves backwards
  if (value !== shown) {
    shown = value;
    $("loading-progress").value = value;
    startup.progress.push([Math.round(performance.now() - t0), value]);
  }
  if (text !== undefined) $("loading-text").textContent = text;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
globalThis.pyappShowError = showError;
$("error-close").addEventListener("click", () => { $("error").hidden = true; });
window.addEventListener("error", (ev) => showError(`Error: ${ev.message}`));
window.addEventListener("unhandledrejection", (ev) => showError(`Error: ${ev.reason?.message ?? ev.reason}`));

function note(text) {
  startup.notes.push(text);
  console.warn(`pyapp: ${text}`);
}

async function sha256Hex(buf) {
  if (!globalThis.crypto?.subtle) return null; // insecure context (plain http on a LAN address)
  const digest = await crypto.subtle.digest("SHA-256", buf);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Bytes received so far, against the total the manifest announces (0-80 % of the bar).
class Downloads {
  constructor(total) { this.total = Math.max(1, total); this.received = 0; }
  add(n) {
    this.received += n;
    const share = Math.min(1, this.received / this.total);
    progress(80 * share, `Downloading the Python runtime… ${MB(this.received)} of ${MB(this.total)} MB`);
  }
  // Count a response Pyodide reads itself: read a clone (a tee of the body), so
  // Pyodide still gets the original (streaming wasm compilation keeps working).
  async watch(response) {
    if (!response.ok || !response.body) return;
    const reader = response.clone().body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      this.add(value.byteLength);
    }
  }
}

// Fetch `url` into one buffer of exactly `size` bytes, counting as it arrives.
async function fetchExactly(url, size, downloads) {
  const resp = await realFetch(url, { cache: "no-cache" });
  if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
  const out = new Uint8Array(size);
  let offset = 0;
  const reader = resp.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (offset + value.byteLength > size) {
      await reader.cancel();
      throw new Error(`${url} is longer than the ${size} bytes the manifest announces`);
    }
    out.set(value, offset);
    offset += value.byteLength;
    downloads.add(value.byteLength);
  }
  if (offset !== size) throw new Error(`${url} is ${offset} bytes, the manifest announces ${size}`);
  return out;
}

async function fetchWheel(manifest, downloads) {
  const wheel = await fetchExactly(manifest.wheel, manifest.wheel_size, downloads);
  const digest = await sha256Hex(wheel);
  if (digest !== null && digest !== manifest.sha256) {
    throw new Error(`pyapp wheel is corrupt (sha256 ${digest}, expected ${manifest.sha256})`);
  }
  return wheel;
}

// Pyodide's snapshot header: a magic number, offsets, then the 256-bit BUILD_ID as
// eight 32-bit words (pyodide/src/js/snapshot.ts). Reading it ourselves lets a
// mismatch fall back before the runtime is touched.
const SNAPSHOT_MAGIC = 1886286592;
function snapshotBuildId(bytes) {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, 12);
  if (words[0] !== SNAPSHOT_MAGIC) return null;
  return Array.from(words.subarray(4, 12), (w) => w.toString(16).padStart(8, "0")).join("");
}

async function fetchSnapshot(manifest, downloads) {
  const meta = manifest.snapshot;
  if (meta.wheel_sha256 !== manifest.sha256) throw new Error("it was made from another pyapp wheel");
  if (meta.runtime_sha256 !== manifest.runtime?.sha256) throw new Error("it was made from another Pyodide runtime");
  const bytes = await fetchExactly(meta.file, meta.size, downloads);
  const buildId = snapshotBuildId(bytes);
  if (buildId === null) throw new Error("it has no snapshot header");
  if (buildId !== meta.build_id || buildId !== manifest.runtime.build_id) {
    throw new Error(`it was made by Pyodide build ${buildId.slice(0, 12)}…, this runtime is ${String(manifest.runtime.build_id).slice(0, 12)}…`);
  }
  const digest = await sha256Hex(bytes);
  if (digest !== null && digest !== meta.sha256) throw new Error(`it is corrupt (sha256 ${digest.slice(0, 12)}…)`);
  return bytes;
}

async function startPython(manifest, indexURL, downloads) {
  const useSnapshot = manifest.snapshot && !params.has("nosnapshot");
  if (!useSnapshot) {
    startup.snapshot = params.has("nosnapshot") ? "disabled (?nosnapshot)" : "none in manifest";
    return loadPyodide({ indexURL });
  }
  const snapshot = fetchSnapshot(manifest, downloads);
  snapshot.catch(() => {}); // awaited by loadPyodide; this only marks it handled early
  try {
    const pyodide = await loadPyodide({ indexURL, _loadSnapshot: snapshot });
    // The restored heap must be the one we asked for: pyapp imported.
    if (!pyodide.runPython("import sys\n'pyapp.browser.app' in sys.modules")) {
      throw new Error("the restored runtime has no pyapp.browser.app");
    }
    if (pyodide._api?.config) delete pyodide._api.config._loadSnapshot; // let the 30 MB go
    startup.snapshot = "used";
    return pyodide;
  } catch (err) {
    startup.snapshot = `fallback: ${err?.message ?? err}`;
    note(`the memory snapshot was not used (${err?.message ?? err}); starting Python normally`);
    return loadPyodide({ indexURL });
  }
}

async function boot() {
  progress(0, "Downloading the Python runtime…");
  const resp = await realFetch("manifest.json", { cache: "no-cache" });
  if (!resp.ok) throw new Error(`manifest.json: HTTP ${resp.status}`);
  const manifest = await resp.json();
  const indexURL = new URL(manifest.pyodide ?? "pyodide/", location.href).href;
  const sizes = manifest.runtime?.sizes ?? {};
  const counted = ["pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json"];
  const withSnapshot = manifest.snapshot && !params.has("nosnapshot");
  const downloads = new Downloads(counted.reduce((sum, name) => sum + (sizes[name] ?? 0), 0)
    + (manifest.wheel_size ?? 0) + (withSnapshot ? manifest.snapshot.size : 0));
  // Pyodide fetches the runtime files itself: watch those responses while it starts.
  globalThis.fetch = function (input, init) {
    const request = realFetch(input, init);
    const url = String(input?.url ?? input);
    if (url.startsWith(indexURL)) request.then((r) => downloads.watch(r)).catch((e) => console.debug("pyapp: progress", e));
    return request;
  };
  let pyodide;
  const wheel = fetchWheel(manifest, downloads); // in parallel with the runtime
  wheel.catch(() => {}); // awaited below; this only marks it handled early
  try {
    pyodide = await startPython(manifest, indexURL, downloads);
  } finally {
    globalThis.fetch = realFetch;
  }
  timings.pyodide = performance.now() - t0;
  progress(85, "Installing pyapp…");
  pyodide.unpackArchive(await wheel, "wheel");
  timings.wheel = performance.now() - t0;
  progress(92, "Starting pyapp…");
  globalThis.pyodide = pyodide;
  const noApp = params.has("noapp");
  await pyodide.runPythonAsync(`
import pyapp.browser.app as _app
await _app.start(auto=${noApp ? "False" : "True"})
`);
  timings.ready = performance.now() - t0;
  progress(100, "Ready");
  $("loading").hidden = true;
  $("app").hidden = false;
  return pyodide;
}

globalThis.pyappReady = boot().catch((err) => {
  console.error(err);
  $("loading-text").textContent = "Python failed to start.";
  showError(`pyapp failed to start: ${err.message ?? err}`);
  throw err;
});
