"""The sans-I/O security core: identities, handshake, envelopes, replay windows.

Modules:

* :mod:`~pyapp.core.security.interface` -- the async ``Crypto`` Protocol (WebCrypto / oracle).
* :mod:`~pyapp.core.security.identity` -- PeerId, trust-on-first-use, identity export.
* :mod:`~pyapp.core.security.fingerprint` -- DTLS fingerprints from SDP (sha-256/384/512).
* :mod:`~pyapp.core.security.reasons` -- why an authentication failed (``AuthReason``).
* :mod:`~pyapp.core.security.transcript` -- the signed transcript.
* :mod:`~pyapp.core.security.handshake` -- the HELLO/AUTH state machine.
* :mod:`~pyapp.core.security.keys` -- the HKDF key schedule.
* :mod:`~pyapp.core.security.envelope` -- AES-256-GCM envelopes, rekeying.
* :mod:`~pyapp.core.security.replay` -- strict and sliding-window anti-replay.

Example::

    from pyapp.core.security import PeerId, SignatureAlgorithm

    print(PeerId.from_public_key(SignatureAlgorithm.ED25519, bytes(32)))
"""

from pyapp.core.security.envelope import RekeyPolicy, SecureChannel
from pyapp.core.security.fingerprint import Fingerprint, HashFunction, remote_fingerprints
from pyapp.core.security.handshake import Handshake, HandshakeComplete, HandshakeFailed
from pyapp.core.security.identity import KnownPeers, PeerId, TrustStatus
from pyapp.core.security.interface import Crypto, KeyAgreementAlgorithm, SignatureAlgorithm
from pyapp.core.security.keys import Role, SessionKeys
from pyapp.core.security.reasons import AuthReason, describe

__all__ = [
    "AuthReason",
    "Crypto",
    "Fingerprint",
    "Handshake",
    "HashFunction",
    "HandshakeComplete",
    "HandshakeFailed",
    "KeyAgreementAlgorithm",
    "KnownPeers",
    "PeerId",
    "RekeyPolicy",
    "Role",
    "SecureChannel",
    "SessionKeys",
    "SignatureAlgorithm",
    "TrustStatus",
    "describe",
    "remote_fingerprints",
]
