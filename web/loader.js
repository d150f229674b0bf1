// pyapp page loader: start Pyodide from our own origin, install the pyapp wheel,
// hand control to Python (pyapp.browser.app), and expose the runtime as
// globalThis.pyodide for the console and tests. Nothing here loads from a CDN.
import { loadPyodide } from "./pyodide/pyodide.mjs";

const $ = (id) => document.getElementById(id);
const t0 = performance.now();
const timings = (globalThis.pyappTimings = {});

function progress(pct, text) {
  $("loading-progress").value = pct;
  $("loading-text").textContent = text;
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
globalThis.pyappShowError = showError;
$("error-close").addEventListener("click", () => { $("error").hidden = true; });
window.addEventListener("error", (ev) => showError(`Error: ${ev.message}`));
window.addEventListener("unhandledrejection", (ev) => showError(`Error: ${ev.reason?.message ?? ev.reason}`));

async function sha256Hex(buf) {
  if (!globalThis.crypto?.subtle) return null; // insecure context (plain http on a LAN address)
  const digest = await crypto.subtle.digest("SHA-256", buf);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function boot() {
  progress(5, "Downloading the Python runtime…");
  const manifestPromise = fetch("manifest.json", { cache: "no-cache" }).then((r) => {
    if (!r.ok) throw new Error(`manifest.json: HTTP ${r.status}`);
    return r.json();
  });
  const pyodide = await loadPyodide({ indexURL: new URL("pyodide/", location.href).href });
  timings.pyodide = performance.now() - t0;
  progress(70, "Installing pyapp…");
  const manifest = await manifestPromise;
  const resp = await fetch(manifest.wheel, { cache: "no-cache" });
  if (!resp.ok) throw new Error(`${manifest.wheel}: HTTP ${resp.status}`);
  const wheel = await resp.arrayBuffer();
  const digest = await sha256Hex(wheel);
  if (digest !== null && digest !== manifest.sha256) {
    throw new Error(`pyapp wheel is corrupt (sha256 ${digest}, expected ${manifest.sha256})`);
  }
  pyodide.unpackArchive(wheel, "wheel");
  progress(85, "Starting pyapp…");
  globalThis.pyodide = pyodide;
  const noApp = new URLSearchParams(location.search).has("noapp");
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
  progress(0, "Python failed to start.");
  showError(`pyapp failed to start: ${err.message ?? err}`);
  throw err;
});
