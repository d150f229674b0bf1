"""This browser profile's identity and its known-peers store, kept in IndexedDB.

* :func:`load_identity` returns the profile's long-term signing key, creating
  it on first use (Ed25519 where WebCrypto has it, else ECDSA P-256). The
  private key is a non-extractable ``CryptoKey`` stored as is in IndexedDB (a
  ``CryptoKey`` is structured-cloneable), so it survives reloads and script
  code -- including this module -- can use it but never read it.
* :func:`export_identity` / :func:`import_identity` move an identity between
  profiles in the core's ``pyapp-identity`` JSON format. Only an identity
  *created* exportable (``load_identity(exportable=True)`` on first use, or
  :func:`new_identity`) can be exported; WebCrypto cannot make a key
  extractable later.
* :class:`TrustStore` is the :class:`~pyapp.core.security.identity.KnownPeers`
  trust-on-first-use store, pins and allow-list, persisted in the same
  database (:meth:`TrustStore.save` after every change; ``authenticate`` does
  it for you).

Database ``pyapp-security`` (version 1), object store ``kv``; keys
``identity`` (``{alg, publicKey: Uint8Array, privateKey: CryptoKey,
extractable}``) and ``known-peers`` (the store's JSON text).

Example (in the page)::

    from pyapp.browser.identity import load_identity, TrustStore
    me = await load_identity()
    print("my PeerId:", me.peer_id)
    trust = await TrustStore.load()
    trust.peers.pin("bob", PeerId.parse("abcd-efgh-ijkl-mnop-qrst-uvwx"))
    await trust.save()
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import js
from pyodide.ffi import JsException, to_js

from pyapp.browser._ffi import is_null, js_object, translate_js_error
from pyapp.browser.crypto import WebCrypto, default_crypto, detect_algorithms
from pyapp.core.security import identity as core_identity
from pyapp.core.security.identity import IdentityFormatError, KnownPeers, PeerId
from pyapp.core.security.interface import SignatureAlgorithm, SigningKey
from pyapp.exceptions import UnsupportedFeatureError

__all__ = [
    "CURRENT",
    "DB_NAME",
    "Identity",
    "TrustStore",
    "delete_identity",
    "export_identity",
    "import_identity",
    "load_and_show_identity",
    "load_identity",
    "new_identity",
    "show_identity",
]

DB_NAME = "pyapp-security"
STORE = "kv"
IDENTITY_KEY = "identity"
KNOWN_PEERS_KEY = "known-peers"

_JS_IDB = """
const open = (name, store) => new Promise((resolve, reject) => {
  const r = indexedDB.open(name, 1);
  r.onupgradeneeded = () => r.result.createObjectStore(store);
  r.onsuccess = () => resolve(r.result);
  r.onerror = () => reject(r.error);
  r.onblocked = () => reject(new DOMException("database upgrade blocked", "InvalidStateError"));
});
const run = async (name, store, mode, fn) => {
  const db = await open(name, store);
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(store, mode);
      const req = fn(tx.objectStore(store));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new DOMException("transaction aborted", "AbortError"));
    });
  } finally { db.close(); }
};
return {
  get: (name, store, key) => run(name, store, "readonly", (s) => s.get(key)),
  put: (name, store, key, value) => run(name, store, "readwrite", (s) => s.put(value, key)),
  remove: (name, store, key) => run(name, store, "readwrite", (s) => s.delete(key)),
};
"""

_IDB: Any = None

CURRENT: Identity | None = None
"""The identity the page app loaded (set by :func:`load_and_show_identity`)."""


def _idb() -> Any:
    global _IDB
    if _IDB is None:
        if is_null(getattr(js.globalThis, "indexedDB", None)):
            raise UnsupportedFeatureError("IndexedDB is not available in this context")
        _IDB = js.Function.new(_JS_IDB)()
    return _IDB


async def _get(key: str, db: str) -> Any:
    try:
        value = await _idb().get(db, STORE, key)
    except JsException as exc:
        raise translate_js_error(exc) from None
    return None if is_null(value) else value


async def _put(key: str, value: Any, db: str) -> None:
    try:
        await _idb().put(db, STORE, key, value)
    except JsException as exc:
        raise translate_js_error(exc) from None


async def _delete(key: str, db: str) -> None:
    try:
        await _idb().remove(db, STORE, key)
    except JsException as exc:
        raise translate_js_error(exc) from None


@dataclass(frozen=True)
class Identity:
    """A long-term identity: the signing key and its PeerId."""

    key: SigningKey
    """The key pair (private half: a ``CryptoKey`` handle)."""

    @property
    def alg(self) -> SignatureAlgorithm:
        """Ed25519 or ECDSA P-256 (sent in the handshake's HELLO)."""
        return self.key.alg

    @property
    def public_key(self) -> bytes:
        """Raw public key bytes."""
        return self.key.public_key

    @property
    def peer_id(self) -> PeerId:
        """The printable hash of the public key (``str()`` gives the dashed form)."""
        return PeerId.from_public_key(self.key.alg, self.key.public_key)

    @property
    def exportable(self) -> bool:
        """Whether :func:`export_identity` can export it."""
        return self.key.extractable


async def _store_identity(identity: Identity, db: str) -> None:
    record = js_object({
        "alg": core_identity.alg_name(identity.alg),
        "extractable": identity.exportable,
    })
    record.publicKey = to_js(identity.public_key)
    record.privateKey = identity.key.handle
    await _put(IDENTITY_KEY, record, db)


async def new_identity(
    *, exportable: bool = False, alg: SignatureAlgorithm | None = None,
    crypto: WebCrypto | None = None,
) -> Identity:
    """A fresh identity (not stored). ``alg`` defaults to the best the browser has."""
    crypto = crypto or default_crypto()
    if alg is None:
        alg, _ = await detect_algorithms()
    return Identity(await core_identity.create_identity(crypto, alg, exportable=exportable))


async def load_identity(*, exportable: bool = False, db: str = DB_NAME) -> Identity:
    """This profile's identity from IndexedDB, created (and stored) on first use.

    ``exportable`` only matters when the identity is created now.
    """
    record = await _get(IDENTITY_KEY, db)
    if record is not None:
        try:
            alg = core_identity.alg_from_name(str(record.alg))
            public = bytes(record.publicKey.to_bytes())
            handle = record.privateKey
            extractable = bool(record.extractable)
        except (AttributeError, JsException) as exc:
            raise IdentityFormatError(f"stored identity is damaged: {exc}") from None
        if is_null(handle):
            raise IdentityFormatError("stored identity has no private key")
        return Identity(SigningKey(alg, public, handle, extractable))
    identity = await new_identity(exportable=exportable)
    await _store_identity(identity, db)
    return identity


async def delete_identity(db: str = DB_NAME) -> None:
    """Forget this profile's identity (the next :func:`load_identity` makes a new one)."""
    await _delete(IDENTITY_KEY, db)


async def export_identity(identity: Identity) -> dict[str, Any]:
    """The identity as a JSON-able ``pyapp-identity`` dict (see the core's format).

    Raises LocalProtocolError for an identity created non-extractable.
    """
    return await core_identity.export_identity(default_crypto(), identity.key)


async def import_identity(
    data: dict[str, Any] | str, *, store: bool = True, exportable: bool = False,
    db: str = DB_NAME,
) -> Identity:
    """Load an exported identity (dict or its JSON text); by default it becomes this profile's.

    The key halves are checked against each other and the PeerId; the imported
    private key is non-extractable unless ``exportable``.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            raise IdentityFormatError("identity is not valid JSON") from None
    if not isinstance(data, dict):
        raise IdentityFormatError("identity must be a JSON object")
    key = await core_identity.import_identity(default_crypto(), data, extractable=exportable)
    identity = Identity(key)
    if store:
        await _store_identity(identity, db)
    return identity


class TrustStore:
    """A :class:`KnownPeers` persisted in IndexedDB.

    Use ``store.peers`` (the core object: ``pin``, ``allow``, ``check``,
    ``accept_change`` ...) and ``await store.save()`` after changing it.
    """

    def __init__(self, peers: KnownPeers | None = None, db: str = DB_NAME) -> None:
        self.peers = peers if peers is not None else KnownPeers()
        self.db = db

    @classmethod
    async def load(cls, db: str = DB_NAME) -> TrustStore:
        """The stored store, or an empty one (``IdentityFormatError`` if the stored one is damaged)."""
        text = await _get(KNOWN_PEERS_KEY, db)
        if text is None:
            return cls(None, db)
        try:
            data = json.loads(str(text))
        except ValueError:
            raise IdentityFormatError("stored known-peers store is not JSON") from None
        return cls(KnownPeers.from_dict(data), db)

    async def save(self) -> None:
        """Write the store to IndexedDB."""
        await _put(KNOWN_PEERS_KEY, json.dumps(self.peers.to_dict()), self.db)


def show_identity(identity: Identity, element_id: str = "identity") -> None:
    """Show the PeerId in the page's ``#identity`` pill (no-op on pages without one)."""
    el = js.document.getElementById(element_id)
    if is_null(el):
        return
    el.textContent = str(identity.peer_id)
    el.title = f"Your PeerId ({core_identity.alg_name(identity.alg)})"
    el.dataset.peerId = identity.peer_id.value


async def load_and_show_identity() -> Identity | None:
    """For the app's ``start()``: load (or create) the identity and show it; errors are shown, not raised."""
    try:
        identity = await load_identity()
    except Exception as exc:
        js.console.error(f"pyapp: could not load the identity: {exc}")
        el = js.document.getElementById("identity")
        if not is_null(el):
            el.textContent = "no identity (WebCrypto/IndexedDB unavailable)"
        return None
    show_identity(identity)
    global CURRENT
    CURRENT = identity
    return identity
