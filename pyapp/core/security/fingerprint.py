"""DTLS certificate fingerprints from SDP (RFC 8122), and which one a side binds.

An SDP names its DTLS certificate with one or more ``a=fingerprint:<hash>
<hex pairs>`` lines (session- or media-level). Peers differ: Chromium and
Firefox offer one ``sha-256`` line; aiortc offers three (``sha-256``,
``sha-384``, ``sha-512``), and Chromium keeps only the last of those in
``remoteDescription.sdp``. So:

* :func:`sdp_fingerprints` reads every sha-256/384/512 line (our own, local
  SDP: other hash functions are skipped).
* :func:`remote_fingerprints` is what a *verifier* binds for the peer's
  certificate: **every** line of its remote SDP, in canonical order. It is
  strict: a line with any other hash function (md5, sha-1, sha-224 ...) is
  refused with ``unsupported_fingerprint_algorithm``, and two different digests
  under one hash with ``protocol_violation``.

Why every line and not the strongest one (RFC 8122 section 5's choice): Firefox
153 accepts a DTLS certificate that matches *any one* of several lines (measured
in ``tests/interop``: with aiortc's sha-512 line wrong, or its sha-256 line
wrong, it still connects). A relay that put its own certificate under one hash
and the real peer's under another would pass DTLS while a verifier that bound
only one line bound the real peer -- and both transcripts would agree. Binding
the whole set makes the real peer see the relay's line among "its" fingerprints
and refuse (``fingerprint_mismatch``); refusing lines we cannot check closes the
same hole for hashes we do not compute.

What both sides bind (see :mod:`pyapp.core.security.handshake`): for each
certificate, the set its *verifier* read from its remote SDP. The verifier tells
the holder in HELLO; the holder checks that each one is a line of its own local
SDP (:func:`matches_own`). So both transcripts hold the same fingerprints
whatever subset of lines each browser kept (Chromium keeps only the last of
aiortc's three).

Example::

    from pyapp.core.security.fingerprint import HashFunction, remote_fingerprints

    sdp = "v=0\\r\\n" + "".join(
        f"a=fingerprint:{h.sdp_name} " + ":".join(["ab"] * h.digest_size) + "\\r\\n"
        for h in reversed(HashFunction))
    fps = remote_fingerprints(sdp)
    assert [fp.hash for fp in fps] == list(HashFunction)  # canonical order
    assert fps[2].digest == bytes([0xAB]) * 64 and str(fps[2]).startswith("sha-512 AB:AB")
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyapp.core.security.reasons import AuthReason, auth_error

__all__ = [
    "Fingerprint",
    "HashFunction",
    "certificate_fingerprint",
    "encode_fingerprints",
    "matches_own",
    "remote_fingerprints",
    "sdp_fingerprints",
]


class HashFunction(enum.IntEnum):
    """The hash functions accepted for DTLS fingerprints; the value is the wire code."""

    SHA256 = 1
    SHA384 = 2
    SHA512 = 3

    @property
    def sdp_name(self) -> str:
        """The RFC 8122 textual name (``"sha-256"``)."""
        return {1: "sha-256", 2: "sha-384", 3: "sha-512"}[self.value]

    @property
    def digest_size(self) -> int:
        """Digest length in bytes."""
        return {1: 32, 2: 48, 3: 64}[self.value]

    @classmethod
    def from_sdp_name(cls, name: str) -> HashFunction | None:
        """The function for an SDP name (any case), or ``None`` if not accepted."""
        return _BY_NAME.get(name.strip().lower())


_BY_NAME = {h.sdp_name: h for h in HashFunction}

# RFC 8122 section 5: "a=fingerprint:" hash-func SP fingerprint. Be lenient
# about case and whitespace; browsers differ in both.
_LINE = re.compile(r"^\s*a\s*=\s*fingerprint\s*:\s*(\S+)\s+(.*?)\s*$", re.IGNORECASE)
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Fingerprint:
    """One certificate fingerprint: a hash function and its digest."""

    hash: HashFunction
    """The hash function."""
    digest: bytes
    """The digest of the DER certificate (``hash.digest_size`` bytes)."""

    def __post_init__(self) -> None:
        if len(self.digest) != self.hash.digest_size:
            raise ValueError(f"a {self.hash.sdp_name} digest has {self.hash.digest_size} bytes")

    @classmethod
    def parse(cls, hash_name: str, text: str) -> Fingerprint:
        """From SDP text: ``("sha-256", "AB:CD:...")``; errors are ``AuthenticationError``."""
        func = HashFunction.from_sdp_name(hash_name)
        if func is None:
            raise auth_error(AuthReason.UNSUPPORTED_FINGERPRINT_ALGORITHM, f"hash {hash_name!r}")
        parts = [p.strip() for p in text.strip().split(":")]
        if len(parts) != func.digest_size or any(len(p) != 2 or not _HEX.issuperset(p) for p in parts):
            raise auth_error(AuthReason.PROTOCOL_VIOLATION, f"malformed {func.sdp_name} fingerprint")
        return cls(func, bytes(int(p, 16) for p in parts))

    def encode(self) -> bytes:
        """Wire and transcript form: hash code (1 byte) || digest."""
        return bytes([self.hash]) + self.digest

    def hex(self) -> str:
        """The SDP form of the digest: uppercase hex pairs joined by colons."""
        return ":".join(f"{b:02X}" for b in self.digest)

    def __str__(self) -> str:
        return f"{self.hash.sdp_name} {self.hex()}"


def sdp_fingerprints(sdp: str) -> list[Fingerprint]:
    """Every sha-256/384/512 fingerprint in an SDP, deduplicated, in order of appearance.

    ``AuthenticationError``: ``protocol_violation`` if there is no fingerprint
    line or an accepted one is malformed; ``unsupported_fingerprint_algorithm``
    if every line uses another hash function.
    """
    found: list[Fingerprint] = []
    others: list[str] = []
    for line in sdp.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        if HashFunction.from_sdp_name(m.group(1)) is None:
            others.append(m.group(1).lower())
            continue
        fp = Fingerprint.parse(m.group(1), m.group(2))
        if fp not in found:
            found.append(fp)
    if not found:
        if others:
            raise auth_error(AuthReason.UNSUPPORTED_FINGERPRINT_ALGORITHM,
                             "the SDP offers only " + ", ".join(sorted(set(others))))
        raise auth_error(AuthReason.PROTOCOL_VIOLATION, "the SDP has no a=fingerprint line")
    return found


def remote_fingerprints(sdp: str) -> tuple[Fingerprint, ...]:
    """Every fingerprint of the peer's certificate in our remote SDP, in canonical order.

    ``AuthenticationError``: ``unsupported_fingerprint_algorithm`` if any line
    uses a hash function other than sha-256/384/512 (the browser may have
    verified DTLS against a line we cannot check), ``protocol_violation`` if two
    lines give different digests under one hash, or there is no line at all.
    """
    others = sorted({m.group(1).lower() for m in map(_LINE.match, sdp.splitlines())
                     if m and HashFunction.from_sdp_name(m.group(1)) is None})
    if others:
        raise auth_error(AuthReason.UNSUPPORTED_FINGERPRINT_ALGORITHM,
                         "the remote SDP names the certificate under " + ", ".join(others)
                         + ", which we cannot check")
    fps = sdp_fingerprints(sdp)
    by_hash: dict[HashFunction, Fingerprint] = {}
    for fp in fps:
        if by_hash.setdefault(fp.hash, fp) != fp:
            raise auth_error(AuthReason.PROTOCOL_VIOLATION,
                             f"the SDP names two different {fp.hash.sdp_name} certificates")
    return tuple(by_hash[h] for h in sorted(by_hash))


def encode_fingerprints(fps: Iterable[Fingerprint]) -> bytes:
    """Wire and transcript form of a set: count (1 byte) || each ``Fingerprint.encode()``."""
    items = sorted(fps, key=lambda fp: (fp.hash, fp.digest))
    return bytes([len(items)]) + b"".join(fp.encode() for fp in items)


def matches_own(claimed: Fingerprint, own: Iterable[Fingerprint]) -> bool:
    """Whether the peer's view of our certificate is one of our own SDP's fingerprints."""
    return claimed in set(own)


def certificate_fingerprint(der: bytes, func: HashFunction = HashFunction.SHA256) -> Fingerprint:
    """The fingerprint of a DER certificate (e.g. getStats' ``base64Certificate``)."""
    return Fingerprint(func, hashlib.new(func.sdp_name.replace("-", ""), der).digest())
