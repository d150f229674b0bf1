"""Safety codes (pyapp.core.security.safety): golden values, symmetry, what changes them."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyapp.core.security.interface import SignatureAlgorithm
from pyapp.core.security.safety import ITERATIONS, SafetyCode, identity_digits, safety_code
from pyapp.exceptions import InvalidArgumentError, LocalProtocolError

pytestmark = pytest.mark.unit

ED, P256 = SignatureAlgorithm.ED25519, SignatureAlgorithm.ECDSA_P256
ZERO_ED = bytes(32)
ONES_ED = bytes([1] * 32)
P256_KEY = b"\x04" + bytes(range(64))

# Golden values of format version 1. They change only with a deliberate new version:
# every user's printed or remembered code would change with them.
GOLDEN = {
    (ED, ZERO_ED): ("86044", "16486", "00402", "80342"),
    (ED, ONES_ED): ("61569", "26681", "47697", "28239"),
}


def reference_half(alg: int, key: bytes) -> tuple[str, ...]:
    """The derivation as docs/security describe it, written out independently."""
    h = hashlib.sha512(b"pyapp-safety-code" + b"\x00" + b"\x01" + bytes([alg]) + key).digest()
    for _ in range(5199):
        h = hashlib.sha512(h + bytes([alg]) + key).digest()
    return tuple(str(int(h[i:i + 5].hex(), 16) % 100000).zfill(5) for i in (0, 5, 10, 15))


def test_golden_halves() -> None:
    for (alg, key), half in GOLDEN.items():
        assert identity_digits(alg, key) == half


def test_golden_code_orders_the_smaller_half_first() -> None:
    code = safety_code(ED, ZERO_ED, ED, ONES_ED)
    assert str(code) == "61569 26681 47697 28239 86044 16486 00402 80342"
    assert code.lines == ("61569 26681 47697 28239", "86044 16486 00402 80342")
    assert code == SafetyCode(GOLDEN[(ED, ONES_ED)] + GOLDEN[(ED, ZERO_ED)])


def test_matches_the_written_derivation() -> None:
    assert ITERATIONS == 5200
    for alg, key in [(ED, ZERO_ED), (ED, ONES_ED), (P256, P256_KEY)]:
        assert identity_digits(alg, key) == reference_half(int(alg), key)


def test_algorithm_byte_is_part_of_the_code() -> None:
    # A P-256 key and an Ed25519 key never share a length, so compare the raw hash input:
    # the same 32 bytes under a different algorithm byte give a different half.
    assert reference_half(2, ZERO_ED) != reference_half(1, ZERO_ED) == identity_digits(ED, ZERO_ED)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_same_on_both_sides_and_keyed_by_both(a: bytes, b: bytes) -> None:
    code = safety_code(ED, a, ED, b)
    assert code == safety_code(ED, b, ED, a)
    assert len(code.groups) == 8 and all(len(g) == 5 and g.isdigit() for g in code.groups)
    if a != b:
        # A relay with its own key changes the half that belonged to the replaced key.
        assert set(code.lines) == {" ".join(identity_digits(ED, a)), " ".join(identity_digits(ED, b))}


def test_one_bit_changes_the_half() -> None:
    flipped = bytes([0x80]) + ZERO_ED[1:]
    assert identity_digits(ED, flipped) != identity_digits(ED, ZERO_ED)
    assert safety_code(ED, ZERO_ED, ED, ONES_ED) != safety_code(ED, flipped, ED, ONES_ED)


def test_mixed_algorithms() -> None:
    code = safety_code(P256, P256_KEY, ED, ZERO_ED)
    assert code == safety_code(ED, ZERO_ED, P256, P256_KEY)
    assert GOLDEN[(ED, ZERO_ED)] in (code.groups[:4], code.groups[4:])


@pytest.mark.parametrize("alg, key", [(ED, bytes(31)), (ED, P256_KEY), (P256, ZERO_ED), (1, ZERO_ED)])
def test_bad_input_is_a_named_local_error(alg: object, key: bytes) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        identity_digits(alg, key)  # type: ignore[arg-type]
    assert isinstance(info.value, LocalProtocolError)
    assert "must be" in str(info.value)
