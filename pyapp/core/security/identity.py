"""Peer identities: PeerId, trust-on-first-use, identity export/import.

A peer's identity is a long-lived signature key (Ed25519 or ECDSA P-256). Its
**PeerId** is a short, printable hash of the public key::

    PeerId = base32(SHA-256(alg_byte || raw_public_key)[:15])   # 120 bits
    printed lowercase, no padding, in six dash-separated groups of four:
    "abcd-efgh-ijkl-mnop-qrst-uvwx"

:class:`KnownPeers` is the sans-I/O trust store (the page persists its
``to_dict()`` in IndexedDB or localStorage): the first sight of a peer is
recorded; a contact name (e.g. the platform user name) that shows up with a
different key is reported loudly as ``IDENTITY_CHANGED``; an optional
allow-list restricts who may connect at all. Nothing is recorded until a
handshake has verified the peer's signature.

Export: a WebCrypto private key created non-extractable can never be
exported. An identity meant to be backed up or moved must be *created*
exportable (``create_identity(..., exportable=True)``); the export is a
JSON-able dict (see :func:`export_identity`) holding the PKCS#8 private key.
Importing it again can (and by default does) produce a non-extractable key.

Example::

    import asyncio
    from pyapp.core.security.identity import KnownPeers, PeerId, TrustStatus
    from pyapp.core.security.interface import SignatureAlgorithm

    alg, pub = SignatureAlgorithm.ED25519, bytes(32)
    pid = PeerId.from_public_key(alg, pub)
    peers = KnownPeers()
    assert peers.record(alg, pub, contact="alice", now=0.0).status is TrustStatus.FIRST_SEEN
    assert peers.record(alg, pub, contact="alice", now=1.0).status is TrustStatus.KNOWN
    other = peers.check(alg, b"\\x01" * 32, contact="alice")
    assert other.status is TrustStatus.IDENTITY_CHANGED and other.previous == pid
    assert KnownPeers.from_dict(peers.to_dict()).check(alg, pub, contact="alice").ok
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyapp.core.security.interface import (
    Crypto,
    InvalidKeyError,
    SignatureAlgorithm,
    SigningKey,
    signature_public_key_size,
)
from pyapp.exceptions import IdentityFormatError, LocalProtocolError

__all__ = [
    "IDENTITY_FORMAT",
    "IdentityFormatError",
    "KnownPeers",
    "PeerId",
    "PeerRecord",
    "TrustResult",
    "TrustStatus",
    "alg_from_name",
    "alg_name",
    "create_identity",
    "export_identity",
    "import_identity",
]

PEER_ID_BYTES = 15
IDENTITY_FORMAT = "pyapp-identity"
_ALG_NAMES = {SignatureAlgorithm.ED25519: "ed25519", SignatureAlgorithm.ECDSA_P256: "ecdsa-p256"}
_B32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def alg_name(alg: SignatureAlgorithm) -> str:
    """The stable text name used in JSON (``"ed25519"`` / ``"ecdsa-p256"``)."""
    return _ALG_NAMES[alg]


def alg_from_name(name: object) -> SignatureAlgorithm:
    """Inverse of :func:`alg_name`; ``IdentityFormatError`` for anything else."""
    for alg, text in _ALG_NAMES.items():
        if name == text:
            return alg
    raise IdentityFormatError(f"unknown signature algorithm {name!r}")


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: object) -> bytes:
    if not isinstance(text, str):
        raise IdentityFormatError("expected a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise IdentityFormatError("invalid base64url") from None


@dataclass(frozen=True, order=True)
class PeerId:
    """A printable fingerprint of a peer's identity key (24 base32 characters)."""

    value: str
    """Canonical form: 24 lowercase base32 characters, no dashes."""

    def __post_init__(self) -> None:
        if len(self.value) != 24 or not set(self.value) <= _B32:
            raise IdentityFormatError(f"not a PeerId: {self.value!r}")

    @classmethod
    def from_public_key(cls, alg: SignatureAlgorithm, public_key: bytes) -> PeerId:
        """Hash a raw public key into its PeerId."""
        digest = hashlib.sha256(bytes([alg]) + public_key).digest()[:PEER_ID_BYTES]
        return cls(base64.b32encode(digest).decode("ascii").lower())

    @classmethod
    def parse(cls, text: str) -> PeerId:
        """Parse user input: case, dashes and whitespace are ignored."""
        return cls("".join(ch for ch in text.lower() if ch not in "- \t\r\n"))

    def __str__(self) -> str:
        return "-".join(self.value[i : i + 4] for i in range(0, 24, 4))


class TrustStatus(enum.Enum):
    """Outcome of checking a peer against :class:`KnownPeers`."""

    FIRST_SEEN = "first seen"
    KNOWN = "known"
    IDENTITY_CHANGED = "identity changed"
    NOT_ALLOWED = "not allowed"


@dataclass(frozen=True)
class TrustResult:
    """What :meth:`KnownPeers.check` concluded."""

    status: TrustStatus
    """The verdict."""
    peer_id: PeerId
    """The presented key's PeerId."""
    previous: PeerId | None = None
    """For ``IDENTITY_CHANGED``: the PeerId previously bound to the contact."""

    @property
    def ok(self) -> bool:
        """True for ``FIRST_SEEN`` and ``KNOWN``."""
        return self.status in (TrustStatus.FIRST_SEEN, TrustStatus.KNOWN)


@dataclass
class PeerRecord:
    """A peer whose key we have verified at least once."""

    peer_id: PeerId
    """Hash of the key."""
    alg: SignatureAlgorithm
    """Its algorithm."""
    public_key: bytes
    """Its raw public key."""
    first_seen: float
    """``now`` of the first verified handshake."""
    last_seen: float
    """``now`` of the latest verified handshake."""


class KnownPeers:
    """Trust-on-first-use store, pins and allow-list; JSON-able via :meth:`to_dict`."""

    def __init__(self, allow: Iterable[PeerId] | None = None) -> None:
        self.peers: dict[PeerId, PeerRecord] = {}
        self.contacts: dict[str, PeerId] = {}
        self.allow: set[PeerId] | None = set(allow) if allow is not None else None

    def pin(self, contact: str, peer_id: PeerId) -> None:
        """Bind ``contact`` to ``peer_id`` ahead of time (e.g. from a QR code)."""
        self.contacts[contact] = peer_id

    def accept_change(self, contact: str, peer_id: PeerId) -> None:
        """The user acknowledged an ``IDENTITY_CHANGED`` warning: rebind the contact."""
        self.contacts[contact] = peer_id

    def forget(self, peer_id: PeerId) -> None:
        """Drop a peer and every contact bound to it."""
        self.peers.pop(peer_id, None)
        for name in [n for n, p in self.contacts.items() if p == peer_id]:
            del self.contacts[name]

    def check(
        self, alg: SignatureAlgorithm, public_key: bytes, *, contact: str | None = None
    ) -> TrustResult:
        """Judge a (verified) key without changing the store."""
        pid = PeerId.from_public_key(alg, public_key)
        if self.allow is not None and pid not in self.allow:
            return TrustResult(TrustStatus.NOT_ALLOWED, pid)
        rec = self.peers.get(pid)
        if rec is not None and (rec.alg, rec.public_key) != (alg, public_key):
            # Same 120-bit PeerId, different key: a deliberate collision.
            return TrustResult(TrustStatus.IDENTITY_CHANGED, pid, previous=pid)
        bound = self.contacts.get(contact) if contact is not None else None
        if bound is not None and bound != pid:
            return TrustResult(TrustStatus.IDENTITY_CHANGED, pid, previous=bound)
        known = rec is not None or bound == pid
        return TrustResult(TrustStatus.KNOWN if known else TrustStatus.FIRST_SEEN, pid)

    def record(
        self, alg: SignatureAlgorithm, public_key: bytes, *, contact: str | None = None, now: float
    ) -> TrustResult:
        """:meth:`check`, and if the result is ok remember the key (and contact binding)."""
        result = self.check(alg, public_key, contact=contact)
        if result.ok:
            rec = self.peers.get(result.peer_id)
            if rec is None:
                self.peers[result.peer_id] = PeerRecord(result.peer_id, alg, public_key, now, now)
            else:
                rec.last_seen = now
            if contact is not None:
                self.contacts[contact] = result.peer_id
        return result

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot (format ``pyapp-known-peers`` version 1)."""
        return {
            "format": "pyapp-known-peers",
            "version": 1,
            "peers": [
                {
                    "peer_id": r.peer_id.value,
                    "alg": alg_name(r.alg),
                    "public_key": _b64e(r.public_key),
                    "first_seen": r.first_seen,
                    "last_seen": r.last_seen,
                }
                for r in sorted(self.peers.values(), key=lambda r: r.peer_id)
            ],
            "contacts": {name: pid.value for name, pid in sorted(self.contacts.items())},
            "allow": None if self.allow is None else sorted(p.value for p in self.allow),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnownPeers:
        """Rebuild from :meth:`to_dict` output; ``IdentityFormatError`` if inconsistent."""
        if data.get("format") != "pyapp-known-peers" or data.get("version") != 1:
            raise IdentityFormatError("not a pyapp-known-peers v1 document")
        try:
            allow = data.get("allow")
            store = cls(None if allow is None else [PeerId(v) for v in allow])
            for item in data["peers"]:
                alg = alg_from_name(item["alg"])
                pub = _b64d(item["public_key"])
                pid = PeerId(item["peer_id"])
                if PeerId.from_public_key(alg, pub) != pid:
                    raise IdentityFormatError(f"stored key does not hash to {pid}")
                store.peers[pid] = PeerRecord(
                    pid, alg, pub, float(item["first_seen"]), float(item["last_seen"])
                )
            for name, value in data["contacts"].items():
                store.contacts[str(name)] = PeerId(value)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, IdentityFormatError):
                raise
            raise IdentityFormatError(f"malformed known-peers document: {exc!r}") from None
        return store


async def create_identity(
    crypto: Crypto,
    alg: SignatureAlgorithm = SignatureAlgorithm.ED25519,
    *,
    exportable: bool = False,
) -> SigningKey:
    """A new identity key. Choose ``exportable=True`` now if it must ever be backed up."""
    return await crypto.generate_signing_key(alg, extractable=exportable)


async def export_identity(crypto: Crypto, key: SigningKey) -> dict[str, Any]:
    """The identity as a JSON-able dict::

        {"format": "pyapp-identity", "version": 1,
         "alg": "ed25519" | "ecdsa-p256",
         "public_key": base64url(raw public key),
         "private_key_pkcs8": base64url(PKCS#8 DER),
         "peer_id": "abcd-efgh-..."}

    Treat the result like a password. ``LocalProtocolError`` if the key was
    created non-extractable.
    """
    if not key.extractable:
        raise LocalProtocolError("identity was created non-extractable and cannot be exported")
    return {
        "format": IDENTITY_FORMAT,
        "version": 1,
        "alg": alg_name(key.alg),
        "public_key": _b64e(key.public_key),
        "private_key_pkcs8": _b64e(await crypto.export_private_key(key)),
        "peer_id": str(PeerId.from_public_key(key.alg, key.public_key)),
    }


async def import_identity(
    crypto: Crypto, data: Mapping[str, Any], *, extractable: bool = False
) -> SigningKey:
    """Load an :func:`export_identity` dict; checks the PeerId and that the key halves match."""
    if data.get("format") != IDENTITY_FORMAT or data.get("version") != 1:
        raise IdentityFormatError("not a pyapp-identity v1 document")
    alg = alg_from_name(data.get("alg"))
    public_key = _b64d(data.get("public_key"))
    if len(public_key) != signature_public_key_size(alg):
        raise IdentityFormatError("public key has the wrong length")
    pid = PeerId.from_public_key(alg, public_key)
    if "peer_id" in data and PeerId.parse(str(data["peer_id"])) != pid:
        raise IdentityFormatError("peer_id does not match the public key")
    try:
        key = await crypto.import_signing_key(
            alg, _b64d(data.get("private_key_pkcs8")), public_key, extractable=extractable
        )
    except InvalidKeyError as exc:
        raise IdentityFormatError(exc.reason) from None
    probe = b"pyapp identity import self-test"
    if not await crypto.verify(alg, public_key, await crypto.sign(key, probe), probe):
        raise IdentityFormatError("private key does not match the public key")
    return key
