"""WebCrypto (``crypto.subtle``) implementation of the security core's ``Crypto`` Protocol.

Every method wraps one or two WebCrypto promises. Keys stay ``CryptoKey``
objects inside the browser (non-extractable unless asked otherwise); Python
holds them as opaque handles in :class:`~pyapp.core.security.interface.SigningKey`,
:class:`~pyapp.core.security.interface.EcdhKeyPair` and
:class:`~pyapp.core.security.interface.AeadKey`. The byte formats are exactly
the ones :mod:`pyapp.core.security.interface` specifies (raw public keys, P1363
ECDSA signatures, ``ciphertext || tag`` from AES-GCM), so envelopes and
signatures made here open and verify in CPython with the ``cryptography``
oracle and the other way round.

The hot calls (AES-GCM seal/open, HKDF) go through small JS helpers made once
with ``Function`` so that one Python→JS call does the whole operation (no
per-call option-object building across the FFI).

``crypto.subtle`` only exists in a secure context (https, or http on
localhost); without it :class:`WebCrypto` raises
:class:`~pyapp.exceptions.UnsupportedFeatureError`.

Example (in the page)::

    from pyapp.browser.crypto import WebCrypto, detect_algorithms
    crypto = WebCrypto()
    sig_alg, ecdh_alg = await detect_algorithms()     # Ed25519/X25519 where supported
    key = await crypto.generate_signing_key(sig_alg)
    assert await crypto.verify(key.alg, key.public_key, await crypto.sign(key, b"hi"), b"hi")
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import js
from pyodide.ffi import to_js

from pyapp.browser._ffi import await_js, call_js, is_null, js_object, to_js_bytes
from pyapp.core.security.interface import (
    AEAD_KEY_SIZE,
    AEAD_NONCE_SIZE,
    AeadKey,
    EcdhKeyPair,
    InvalidKeyError,
    KeyAgreementAlgorithm,
    SignatureAlgorithm,
    SigningKey,
)
from pyapp.exceptions import LocalProtocolError, UnsupportedFeatureError

__all__ = ["WebCrypto", "default_crypto", "detect_algorithms", "subtle"]

_JS_HELPERS = """
const s = crypto.subtle;
const u8 = (b) => new Uint8Array(b);
const tagFailed = (e) => { if (e && e.name === "OperationError") return null; throw e; };
return {
  seal: async (key, iv, pt, aad) =>
    u8(await s.encrypt({name: "AES-GCM", iv, additionalData: aad, tagLength: 128}, key, pt)),
  open: async (key, iv, ct, aad) => {
    try {
      return u8(await s.decrypt({name: "AES-GCM", iv, additionalData: aad, tagLength: 128}, key, ct));
    } catch (e) {
      if (e && e.name === "OperationError") return null;   // tag mismatch: no plaintext
      throw e;
    }
  },
  // Batches (see aead_seal_many). Three Python buffers come as PyProxies and are
  // read through views of the wasm heap: meta = per item iv (12) || aad, lens =
  // per item (aad length, data length), blob = the items' data back to back.
  // encrypt/decrypt copy their inputs before they return (WebCrypto spec: "get a
  // copy of the bytes"), so the views are released as soon as every call of the
  // batch has started. Resolves to the outputs (null where a tag did not verify).
  // Measured in Chromium: one view of a joined blob costs less than a view per
  // item (getBuffer and a proxy each), and returning the outputs as they come
  // less than packing them into one buffer here (a zeroed allocation and a copy).
  aeadMany: (decrypt, keys, meta, lens, blob) => {
    const m = meta.getBuffer("u8"), l = lens.getBuffer("u32"), b = blob.getBuffer("u8"), jobs = [];
    const op = decrypt ? (a, k, d) => s.decrypt(a, k, d).catch(tagFailed) : (a, k, d) => s.encrypt(a, k, d);
    try {
      const md = m.data, ld = l.data, bd = b.data;
      for (let i = 0, off = 0, at = 0; i < keys.length; i++) {
        const na = ld[2 * i], nd = ld[2 * i + 1];
        const iv = md.subarray(off, off + 12), aad = md.subarray(off + 12, off + 12 + na);
        off += 12 + na;
        jobs.push(op({name: "AES-GCM", iv, additionalData: aad, tagLength: 128}, keys[i], bd.subarray(at, at + nd)));
        at += nd;
      }
    } finally { m.release(); l.release(); b.release(); }
    return Promise.all(jobs);
  },
  hkdf: async (ikm, salt, info, bits) => {
    const k = await s.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
    return u8(await s.deriveBits({name: "HKDF", hash: "SHA-256", salt, info}, k, bits));
  },
  aesKey: (raw) => s.importKey("raw", raw, {name: "AES-GCM"}, false, ["encrypt", "decrypt"]),
  digest: async (data) => u8(await s.digest("SHA-256", data)),
  rawPublic: async (key) => u8(await s.exportKey("raw", key)),
  sign: async (alg, key, data) => u8(await s.sign(alg, key, data)),
  verify: async (alg, imp, pub, sig, data) => {
    let key;
    try { key = await s.importKey("raw", pub, imp, false, ["verify"]); }
    catch (e) { return false; }                            // a malformed key never verifies
    try { return await s.verify(alg, key, sig, data); } catch (e) { return false; }
  },
  derive: async (alg, priv, pub) => {
    let key;
    try { key = await s.importKey("raw", pub, alg, false, []); }
    catch (e) { return "bad key: " + e.name; }
    try { return u8(await s.deriveBits({name: alg.name, public: key}, priv, 256)); }
    catch (e) { return "derive failed: " + e.name; }
  },
  pkcs8: async (key) => u8(await s.exportKey("pkcs8", key)),
  importPkcs8: async (der, alg, extractable, usages) => {
    try { return await s.importKey("pkcs8", der, alg, extractable, usages); }
    catch (e) { return "import failed: " + e.name; }
  },
  probe: async (alg, usages) => {
    try { await s.generateKey(alg, false, usages); return true; } catch (e) { return false; }
  },
};
"""

_HELPERS: Any = None

Buffer = bytes | bytearray | memoryview


def _contiguous(data: Buffer) -> Buffer:
    """``data`` as one run of bytes JS can view (a strided memoryview is copied)."""
    if isinstance(data, memoryview):
        if not data.c_contiguous:
            return data.tobytes()
        if data.format != "B":
            return data.cast("B")
    return data


def subtle() -> Any:
    """``crypto.subtle``; raises UnsupportedFeatureError outside a secure context."""
    c = getattr(js.globalThis, "crypto", None)
    s = None if is_null(c) else getattr(c, "subtle", None)
    if is_null(s):
        raise UnsupportedFeatureError(
            "crypto.subtle is missing: WebCrypto needs a secure context (https or localhost)"
        )
    return s


def _helpers() -> Any:
    global _HELPERS
    if _HELPERS is None:
        subtle()
        _HELPERS = js.Function.new(_JS_HELPERS)()
    return _HELPERS


def _sig_params(alg: SignatureAlgorithm) -> dict[str, Any]:
    if alg is SignatureAlgorithm.ED25519:
        return {"name": "Ed25519"}
    return {"name": "ECDSA", "namedCurve": "P-256", "hash": "SHA-256"}


def _ecdh_params(alg: KeyAgreementAlgorithm) -> dict[str, Any]:
    if alg is KeyAgreementAlgorithm.X25519:
        return {"name": "X25519"}
    return {"name": "ECDH", "namedCurve": "P-256"}


_DETECTED: tuple[SignatureAlgorithm, KeyAgreementAlgorithm] | None = None


async def detect_algorithms() -> tuple[SignatureAlgorithm, KeyAgreementAlgorithm]:
    """The best identity and key-agreement algorithms this browser's WebCrypto has.

    Ed25519 / X25519 where ``generateKey`` accepts them, else ECDSA / ECDH
    P-256 (every WebCrypto has those). Probed once per page and cached.
    """
    global _DETECTED
    if _DETECTED is None:
        h = _helpers()
        ed = bool(await await_js(h.probe(js_object({"name": "Ed25519"}), to_js(["sign", "verify"]))))
        x = bool(await await_js(h.probe(js_object({"name": "X25519"}), to_js(["deriveBits"]))))
        _DETECTED = (
            SignatureAlgorithm.ED25519 if ed else SignatureAlgorithm.ECDSA_P256,
            KeyAgreementAlgorithm.X25519 if x else KeyAgreementAlgorithm.ECDH_P256,
        )
    return _DETECTED


class WebCrypto:
    """:class:`~pyapp.core.security.interface.Crypto` over ``crypto.subtle``."""

    def __init__(self) -> None:
        self._h = _helpers()
        self._js_crypto = js.globalThis.crypto
        self._sig_alg = {a: js_object(_sig_params(a)) for a in SignatureAlgorithm}
        self._sig_import = {
            SignatureAlgorithm.ED25519: js_object({"name": "Ed25519"}),
            SignatureAlgorithm.ECDSA_P256: js_object({"name": "ECDSA", "namedCurve": "P-256"}),
        }
        self._ecdh_alg = {a: js_object(_ecdh_params(a)) for a in KeyAgreementAlgorithm}

    async def random_bytes(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:  # getRandomValues fills at most 65536 bytes per call
            chunk = js.Uint8Array.new(min(n - len(out), 65536))
            self._js_crypto.getRandomValues(chunk)
            out += chunk.to_bytes()
        return bytes(out)

    async def sha256(self, data: bytes) -> bytes:
        return bytes((await await_js(self._h.digest(to_js_bytes(data)))).to_bytes())

    async def hkdf_sha256(self, ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
        if not 0 < length <= 255 * 32:
            raise LocalProtocolError("HKDF-SHA-256 output is 1..8160 bytes")
        # WebCrypto wants whole bits; derive whole bytes and trim (HKDF output is a prefix).
        out = await await_js(self._h.hkdf(to_js_bytes(ikm), to_js_bytes(salt), to_js_bytes(info), length * 8))
        return bytes(out.to_bytes())

    async def import_aead_key(self, key: bytes) -> AeadKey:
        if len(key) != AEAD_KEY_SIZE:
            raise LocalProtocolError("AES-256-GCM keys are 32 bytes")
        return AeadKey(await await_js(self._h.aesKey(to_js_bytes(key))))

    async def aead_seal(self, key: AeadKey, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(nonce) != AEAD_NONCE_SIZE:
            raise LocalProtocolError("AES-GCM nonces are 12 bytes")
        out = await await_js(self._h.seal(key.handle, to_js_bytes(nonce), to_js_bytes(plaintext), to_js_bytes(aad)))
        return bytes(out.to_bytes())

    async def aead_open(
        self, key: AeadKey, nonce: bytes, sealed: bytes, aad: bytes
    ) -> bytes | None:
        if len(nonce) != AEAD_NONCE_SIZE:
            raise LocalProtocolError("AES-GCM nonces are 12 bytes")
        out = await await_js(self._h.open(key.handle, to_js_bytes(nonce), to_js_bytes(sealed), to_js_bytes(aad)))
        return None if is_null(out) else bytes(out.to_bytes())

    async def aead_seal_many(
        self, items: Sequence[tuple[AeadKey, bytes, Buffer, bytes, bytes]]
    ) -> list[bytes]:
        """Seal several messages with one JS call: ``(key, nonce, plaintext, aad, prefix)`` each.

        Returns ``prefix || ciphertext || tag`` per item, in order (the prefix is
        an envelope header). Not part of the core Protocol:
        :class:`~pyapp.browser.secure.EncryptedChannel` uses it to pay one
        event-loop turn per batch instead of one per message.

        The plaintexts cross the FFI as one view of their Python bytes, joined
        (WebCrypto copies its input when called), and every encrypt of the batch
        starts at once: no ``to_js`` copy of a plaintext, no JS array built item
        by item.
        """
        sealed = await self._aead_many(False, [(k, n, p, a) for k, n, p, a, _prefix in items])
        return [prefix + ct.to_bytes() for (_k, _n, _p, _a, prefix), ct in zip(items, sealed, strict=True)]

    async def aead_open_many(
        self, items: Sequence[tuple[AeadKey, bytes, Buffer, bytes]]
    ) -> list[bytes | None]:
        """Open several ``(key, nonce, sealed, aad)`` with one JS call; ``None`` where the tag fails.

        Like :meth:`aead_seal_many`: one view in, every decrypt started at once.
        """
        return [None if is_null(pt) else pt.to_bytes() for pt in await self._aead_many(True, items)]

    async def _aead_many(self, decrypt: bool, items: Sequence[tuple[AeadKey, bytes, Buffer, bytes]]) -> Any:
        if not items:
            return []
        meta, lens, keys, data = bytearray(), array("I"), [], []
        for key, nonce, buf, aad in items:
            if len(nonce) != AEAD_NONCE_SIZE:
                raise LocalProtocolError("AES-GCM nonces are 12 bytes")
            buf = _contiguous(buf)
            meta += nonce
            meta += aad
            lens.append(len(aad))
            lens.append(buf.nbytes if isinstance(buf, memoryview) else len(buf))
            keys.append(key.handle)
            data.append(buf)
        blob = data[0] if len(data) == 1 else b"".join(data)
        return await await_js(call_js(self._h.aeadMany, decrypt, to_js(keys), meta, lens, blob))

    async def generate_signing_key(
        self, alg: SignatureAlgorithm, *, extractable: bool = False
    ) -> SigningKey:
        pair = await await_js(
            subtle().generateKey(self._sig_alg[alg], extractable, to_js(["sign", "verify"]))
        )
        public = bytes((await await_js(self._h.rawPublic(pair.publicKey))).to_bytes())
        return SigningKey(alg, public, pair.privateKey, extractable)

    async def sign(self, key: SigningKey, data: bytes) -> bytes:
        out = await await_js(self._h.sign(self._sig_alg[key.alg], key.handle, to_js_bytes(data)))
        return bytes(out.to_bytes())

    async def verify(
        self, alg: SignatureAlgorithm, public_key: bytes, signature: bytes, data: bytes
    ) -> bool:
        if len(signature) != 64:
            return False
        ok = await await_js(
            self._h.verify(
                self._sig_alg[alg], self._sig_import[alg], to_js_bytes(public_key), to_js_bytes(signature), to_js_bytes(data)
            )
        )
        return bool(ok)

    async def export_private_key(self, key: SigningKey) -> bytes:
        if not key.extractable:
            raise LocalProtocolError("key was created non-extractable")
        return bytes((await await_js(self._h.pkcs8(key.handle))).to_bytes())

    async def import_signing_key(
        self, alg: SignatureAlgorithm, pkcs8: bytes, public_key: bytes, *, extractable: bool = False
    ) -> SigningKey:
        handle = await await_js(
            self._h.importPkcs8(to_js_bytes(pkcs8), self._sig_import[alg], extractable, to_js(["sign"]))
        )
        if isinstance(handle, str):
            raise InvalidKeyError(f"private key does not parse ({handle})")
        return SigningKey(alg, public_key, handle, extractable)

    async def generate_ecdh_key(self, alg: KeyAgreementAlgorithm) -> EcdhKeyPair:
        pair = await await_js(subtle().generateKey(self._ecdh_alg[alg], False, to_js(["deriveBits"])))
        public = bytes((await await_js(self._h.rawPublic(pair.publicKey))).to_bytes())
        return EcdhKeyPair(alg, public, pair.privateKey)

    async def ecdh_derive(self, key: EcdhKeyPair, peer_public_key: bytes) -> bytes:
        expected = 32 if key.alg is KeyAgreementAlgorithm.X25519 else 65
        if len(peer_public_key) != expected:
            raise InvalidKeyError("peer key-agreement public key has the wrong length")
        out = await await_js(self._h.derive(self._ecdh_alg[key.alg], key.handle, to_js_bytes(peer_public_key)))
        if isinstance(out, str):
            raise InvalidKeyError(f"invalid peer key-agreement public key ({out})")
        secret = bytes(out.to_bytes())
        if secret == bytes(32):  # X25519 small-order point (RFC 7748 section 6.1)
            raise InvalidKeyError("all-zero shared secret")
        return secret


_DEFAULT: WebCrypto | None = None


def default_crypto() -> WebCrypto:
    """One :class:`WebCrypto` per page (it caches JS option objects)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = WebCrypto()
    return _DEFAULT
