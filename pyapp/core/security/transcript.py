"""The handshake transcript, and the SDP fingerprint parser that feeds it.

The transcript is what both peers sign. It binds, in a canonical order by
role (offerer first), everything that identifies the session:

* a domain-separation label and the protocol version;
* both DTLS certificate fingerprints, as each side sees them in the SDP
  (``a=fingerprint:sha-256 ...``) -- so if a signaling server swapped the SDP
  to put itself in the middle, the two sides' transcripts differ and no
  signature verifies (the libp2p WebRTC spec does the same by putting both
  fingerprints in the Noise prologue);
* per side: role, identity algorithm, identity public key, 32-byte nonce,
  ephemeral key-agreement algorithm and public key.

Byte layout (every multi-byte integer big-endian; see docs/security.md)::

    transcript = "pyapp-webrtc-handshake" || 0x00 || version (1 byte)
                 || field(0x01, offerer DTLS fingerprint, 32 bytes)
                 || field(0x02, answerer DTLS fingerprint, 32 bytes)
                 || field(0x10, 0x00)  field(0x11, alg)  field(0x12, identity key)
                 || field(0x13, nonce) field(0x14, ecdh alg) field(0x15, ephemeral key)
                 || field(0x20, 0x01)  field(0x21, alg)  ... field(0x25, ...)  (answerer)
    field(tag, value) = tag (1 byte) || len(value) (2 bytes) || value
    transcript_hash = SHA-256(transcript)
    signed by role R = "pyapp-webrtc-auth" || 0x00 || version || R || transcript_hash

The builder is public (:meth:`Transcript.fields` + :func:`encode_fields`) so
that tests can build variants -- e.g. one without the fingerprints, to show
what the binding buys.

Example::

    from pyapp.core.security.transcript import parse_sdp_fingerprint, format_fingerprint

    sdp = "v=0\\r\\na=fingerprint:SHA-256 " + ":".join(["ab"] * 32) + "\\r\\n"
    fp = parse_sdp_fingerprint(sdp)
    assert fp == bytes([0xAB] * 32) and format_fingerprint(fp).startswith("AB:AB")
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role
from pyapp.exceptions import RemoteProtocolError

__all__ = [
    "AUTH_LABEL",
    "FINGERPRINT_SIZE",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "TRANSCRIPT_LABEL",
    "SideParams",
    "Transcript",
    "auth_signature_input",
    "encode_fields",
    "format_fingerprint",
    "parse_fingerprint",
    "parse_sdp_fingerprint",
]

PROTOCOL_VERSION = 1
TRANSCRIPT_LABEL = b"pyapp-webrtc-handshake"
AUTH_LABEL = b"pyapp-webrtc-auth"
FINGERPRINT_SIZE = 32
NONCE_SIZE = 32

TAG_OFFERER_FINGERPRINT = 0x01
TAG_ANSWERER_FINGERPRINT = 0x02

# RFC 8122 section 5: "a=fingerprint:" hash-func SP fingerprint. Be lenient
# about case and whitespace; browsers differ in both.
_FINGERPRINT_LINE = re.compile(r"^\s*a\s*=\s*fingerprint\s*:\s*(\S+)\s+(.*?)\s*$", re.IGNORECASE)


def parse_fingerprint(text: str) -> bytes:
    """Parse ``"AB:CD:..."`` (any case, optional spaces) into 32 bytes."""
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) != FINGERPRINT_SIZE or any(
        len(p) != 2 or any(c not in "0123456789abcdefABCDEF" for c in p) for p in parts
    ):
        raise RemoteProtocolError("malformed sha-256 fingerprint")
    return bytes(int(p, 16) for p in parts)


def format_fingerprint(fp: bytes) -> str:
    """The SDP form: uppercase hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in fp)


def parse_sdp_fingerprint(sdp: str) -> bytes:
    """The sha-256 DTLS fingerprint of an SDP blob (session- or media-level).

    Other hash functions are skipped; repeated identical sha-256 lines (one
    per m-section) are fine; two *different* sha-256 fingerprints are refused
    because the transcript could not say which certificate is in use.
    """
    found: set[bytes] = set()
    for line in sdp.splitlines():
        m = _FINGERPRINT_LINE.match(line)
        if m and m.group(1).lower() == "sha-256":
            found.add(parse_fingerprint(m.group(2)))
    if not found:
        raise RemoteProtocolError("no sha-256 fingerprint in SDP")
    if len(found) > 1:
        raise RemoteProtocolError("conflicting sha-256 fingerprints in SDP")
    return found.pop()


@dataclass(frozen=True)
class SideParams:
    """One side's contribution to the transcript."""

    role: Role
    """Offerer or answerer."""
    alg: SignatureAlgorithm
    """Identity algorithm."""
    public_key: bytes
    """Identity public key (raw)."""
    nonce: bytes
    """Fresh 32-byte nonce."""
    ephemeral_alg: KeyAgreementAlgorithm
    """Key-agreement group."""
    ephemeral_public_key: bytes
    """Ephemeral public key (raw)."""
    fingerprint: bytes
    """This side's DTLS certificate fingerprint, as the transcript builder sees it."""


def encode_fields(fields: list[tuple[int, bytes]], version: int = PROTOCOL_VERSION) -> bytes:
    """Serialise tagged fields behind the label and version."""
    out = bytearray(TRANSCRIPT_LABEL + b"\x00" + bytes([version]))
    for tag, value in fields:
        out += bytes([tag]) + len(value).to_bytes(2, "big") + value
    return bytes(out)


@dataclass(frozen=True)
class Transcript:
    """Both sides' parameters, ordered by role."""

    offerer: SideParams
    """The offerer's side."""
    answerer: SideParams
    """The answerer's side."""
    version: int = PROTOCOL_VERSION
    """Protocol version (bound into the bytes)."""

    @classmethod
    def of(cls, a: SideParams, b: SideParams) -> Transcript:
        """Order two sides canonically (offerer first), whichever is local."""
        return cls(a, b) if a.role is Role.OFFERER else cls(b, a)

    def fields(self) -> list[tuple[int, bytes]]:
        """The tagged fields, in transcript order."""
        out = [
            (TAG_OFFERER_FINGERPRINT, self.offerer.fingerprint),
            (TAG_ANSWERER_FINGERPRINT, self.answerer.fingerprint),
        ]
        for base, side in ((0x10, self.offerer), (0x20, self.answerer)):
            out += [
                (base + 0, bytes([side.role])),
                (base + 1, bytes([side.alg])),
                (base + 2, side.public_key),
                (base + 3, side.nonce),
                (base + 4, bytes([side.ephemeral_alg])),
                (base + 5, side.ephemeral_public_key),
            ]
        return out

    def encode(self) -> bytes:
        """The exact bytes that are hashed."""
        return encode_fields(self.fields(), self.version)


def auth_signature_input(
    role: Role, transcript_hash: bytes, version: int = PROTOCOL_VERSION
) -> bytes:
    """What ``role`` signs: the role is inside, so an offerer's AUTH cannot pass as the answerer's."""
    return AUTH_LABEL + b"\x00" + bytes([version, role]) + transcript_hash
