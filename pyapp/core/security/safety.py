"""Safety codes: a short code two people read aloud to check they see the same keys.

Like Signal's safety numbers. Each side of a conversation is shown the same
code, made of two halves, one per identity key:

    half(key) = 4 groups of 5 digits from an iterated SHA-512 of that key
    code      = the two halves, the smaller one first  -> 8 groups of 5 digits

Alice's page computes it from (Alice's key, the key the peer proved); Bob's
from (Bob's key, the key *his* peer proved). With no man in the middle those
are the same two keys, so the codes match. A relay that passed both
handshakes did so with keys of its own, so at least one half differs on each
side. Because each half depends on one key only, forging a match means
finding a key whose half equals a given half (a second preimage of ~66 bits,
each try costing :data:`ITERATIONS` SHA-512 rounds), not a birthday collision
between two codes.

Derivation (version 1), for the identity algorithm byte ``alg`` (1 Ed25519,
2 ECDSA P-256) and raw public key ``key``::

    h = SHA-512("pyapp-safety-code" || 0x00 || 0x01 || alg || key)
    repeat ITERATIONS - 1 times:  h = SHA-512(h || alg || key)
    group i (i = 0..3) = int.from_bytes(h[5*i : 5*i+5], "big") % 100000, as 5 digits

Example::

    from pyapp.core.security.interface import SignatureAlgorithm
    from pyapp.core.security.safety import safety_code

    ed = SignatureAlgorithm.ED25519
    alice, bob = bytes(32), bytes([1] * 32)
    code = safety_code(ed, alice, ed, bob)
    assert code == safety_code(ed, bob, ed, alice)     # the same on both sides
    assert len(code.groups) == 8 and all(len(g) == 5 and g.isdigit() for g in code.groups)
    assert str(code).count(" ") == 7
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyapp.core.security.interface import SignatureAlgorithm, signature_public_key_size
from pyapp.exceptions import InvalidArgumentError

__all__ = ["GROUPS_PER_KEY", "ITERATIONS", "SafetyCode", "identity_digits", "safety_code"]

ITERATIONS = 5200
"""SHA-512 rounds per half (Signal's figure): slows a search for a matching key."""
GROUPS_PER_KEY = 4
"""Five-digit groups per identity key; the code has twice as many."""
_PREFIX = b"pyapp-safety-code\x00\x01"


def identity_digits(alg: SignatureAlgorithm, public_key: bytes) -> tuple[str, ...]:
    """One key's half of the code: :data:`GROUPS_PER_KEY` groups of 5 digits."""
    if not isinstance(alg, SignatureAlgorithm):
        raise InvalidArgumentError(f"alg must be a SignatureAlgorithm, got {alg!r}")
    key = bytes(public_key)
    if len(key) != signature_public_key_size(alg):
        raise InvalidArgumentError(
            f"public_key must be {signature_public_key_size(alg)} bytes for {alg.name}, "
            f"got {len(key)}")
    tail = bytes([alg]) + key
    digest = hashlib.sha512(_PREFIX + tail).digest()
    for _ in range(ITERATIONS - 1):
        digest = hashlib.sha512(digest + tail).digest()
    return tuple(f"{int.from_bytes(digest[5 * i:5 * i + 5], 'big') % 100000:05d}"
                 for i in range(GROUPS_PER_KEY))


@dataclass(frozen=True)
class SafetyCode:
    """The code for one pair of identities; ``str()`` gives ``"12345 67890 ..."``."""

    groups: tuple[str, ...]
    """Eight five-digit groups: the smaller key half first."""

    def __str__(self) -> str:
        return " ".join(self.groups)

    @property
    def lines(self) -> tuple[str, str]:
        """Two lines of four groups, for display (one half per line)."""
        half = len(self.groups) // 2
        return " ".join(self.groups[:half]), " ".join(self.groups[half:])


def safety_code(alg_a: SignatureAlgorithm, key_a: bytes,
                alg_b: SignatureAlgorithm, key_b: bytes) -> SafetyCode:
    """The safety code of two identity keys; the argument order does not matter."""
    halves = sorted([identity_digits(alg_a, key_a), identity_digits(alg_b, key_b)])
    return SafetyCode(halves[0] + halves[1])
