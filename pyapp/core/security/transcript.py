"""The handshake transcript: what both peers sign.

It binds, in a canonical order by role (offerer first), everything that
identifies the session:

* a domain-separation label and the protocol version;
* both DTLS certificates' fingerprints -- for each certificate the set its
  *verifier* read from its remote SDP
  (:func:`~pyapp.core.security.fingerprint.remote_fingerprints`), which the
  holder confirmed against its own SDP. If a signaling server swapped the SDP
  to put itself in the middle, the two sides' transcripts differ and no
  signature verifies (the libp2p WebRTC spec does the same by putting both
  fingerprints in the Noise prologue);
* per side: role, identity algorithm, identity public key, 32-byte nonce,
  ephemeral key-agreement algorithm and public key.

Byte layout (every multi-byte integer big-endian; see docs/security.md)::

    transcript = "pyapp-webrtc-handshake" || 0x00 || version (1 byte, 2)
                 || field(0x01, offerer fingerprints) || field(0x02, answerer fingerprints)
                 || field(0x10, 0x00)  field(0x11, alg)  field(0x12, identity key)
                 || field(0x13, nonce) field(0x14, ecdh alg) field(0x15, ephemeral key)
                 || field(0x20, 0x01)  field(0x21, alg)  ... field(0x25, ...)  (answerer)
    fingerprints = count (1 byte) || count x (hash code (1 sha-256, 2 sha-384,
                   3 sha-512) || digest (32/48/64)), sorted by hash code
    field(tag, value) = tag (1 byte) || len(value) (2 bytes) || value
    transcript_hash = SHA-256(transcript)
    signed by role R = "pyapp-webrtc-auth" || 0x00 || version || R || transcript_hash

The builder is public (:meth:`Transcript.fields` + :func:`encode_fields`) so
that tests can build variants -- e.g. one without the fingerprints, to show
what the binding buys.

Example::

    from pyapp.core.security.fingerprint import Fingerprint, HashFunction, encode_fingerprints
    from pyapp.core.security.transcript import encode_fields

    fp = Fingerprint(HashFunction.SHA256, bytes(32))
    assert encode_fields([(0x01, encode_fingerprints([fp]))])[-34:] == b"\\x01\\x01" + bytes(32)
"""

from __future__ import annotations

from dataclasses import dataclass

from pyapp.core.security.fingerprint import Fingerprint, encode_fingerprints
from pyapp.core.security.interface import KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role

__all__ = [
    "AUTH_LABEL",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "TRANSCRIPT_LABEL",
    "SideParams",
    "Transcript",
    "auth_signature_input",
    "encode_fields",
]

PROTOCOL_VERSION = 2
TRANSCRIPT_LABEL = b"pyapp-webrtc-handshake"
AUTH_LABEL = b"pyapp-webrtc-auth"
NONCE_SIZE = 32

TAG_OFFERER_FINGERPRINT = 0x01
TAG_ANSWERER_FINGERPRINT = 0x02


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
    fingerprints: tuple[Fingerprint, ...]
    """This side's DTLS certificate fingerprints, as its verifier read them."""


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
            (TAG_OFFERER_FINGERPRINT, encode_fingerprints(self.offerer.fingerprints)),
            (TAG_ANSWERER_FINGERPRINT, encode_fingerprints(self.answerer.fingerprints)),
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
