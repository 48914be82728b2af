"""Holder keys of :mod:`homewarden.crypto.household_keys`: a person's or the recovery key's
X25519 pair, its wraps (kinds 3 and 4) and household keys sealed to it."""

from __future__ import annotations

import pytest

from homewarden.crypto import household_keys as hk
from homewarden.crypto.household_keys import (
    ARGON2ID_FLOOR,
    HOLDER_SEAL_SIZE,
    WRAP_SIZE,
    generate_holder_key,
    generate_household_key,
    holder_key_from_private_bytes,
    holder_public_key_from_bytes,
    inspect_wrap,
    new_recovery_code,
    open_holder_seal,
    seal_to_holder,
    unwrap_holder_with_passphrase,
    unwrap_holder_with_recovery_code,
    unwrap_with_passphrase,
    unwrap_with_recovery_code,
    wrap_holder_with_passphrase,
    wrap_holder_with_recovery_code,
)
from homewarden.errors import SealedFormatError, SealedTamperedError, WrongKeyError

HOLDER = generate_holder_key()
KEY = generate_household_key()


def _flip(blob: bytes, pos: int) -> bytes:
    out = bytearray(blob)
    out[pos] ^= 0x01
    return bytes(out)


def test_holder_key_ids_differ_from_household_ids_of_the_same_bytes() -> None:
    assert len(HOLDER.key_id) == 16
    assert HOLDER.key_id == hk.holder_key_id(HOLDER.public)
    same = hk.household_public_key_from_bytes(bytes(HOLDER.public))
    assert hk.household_key_id(same) != HOLDER.key_id
    assert holder_public_key_from_bytes(bytes(HOLDER.public)) == HOLDER.public
    again = holder_key_from_private_bytes(bytes(HOLDER.private))
    assert again.key_id == HOLDER.key_id
    assert bytes(HOLDER.private).hex() not in repr(HOLDER)
    with pytest.raises(SealedFormatError, match="32 bytes"):
        holder_key_from_private_bytes(b"short")


def test_holder_passphrase_wrap_round_trip_and_is_not_a_household_wrap() -> None:
    wrap = wrap_holder_with_passphrase(HOLDER, "correct horse battery", ARGON2ID_FLOOR)
    assert len(wrap) == WRAP_SIZE
    info = inspect_wrap(wrap)
    assert (info.kind, info.key_id, info.params) == (
        "holder-passphrase",
        HOLDER.key_id,
        ARGON2ID_FLOOR,
    )
    opened = unwrap_holder_with_passphrase(wrap, "correct horse battery")
    assert bytes(opened.private) == bytes(HOLDER.private)
    with pytest.raises(WrongKeyError, match="passphrase does not open"):
        unwrap_holder_with_passphrase(wrap, "correct horse batterY")
    with pytest.raises(WrongKeyError, match="not the expected"):
        unwrap_holder_with_passphrase(
            wrap, "correct horse battery", expected_key_id=generate_holder_key().key_id
        )
    # a holder wrap is refused where a household key wrap is expected, and the reverse
    with pytest.raises(SealedFormatError, match="holder passphrase wrap, not a passphrase"):
        unwrap_with_passphrase(wrap, "correct horse battery")
    household_wrap = hk.wrap_with_passphrase(KEY, "correct horse battery", ARGON2ID_FLOOR)
    with pytest.raises(SealedFormatError, match="not a holder passphrase wrap"):
        unwrap_holder_with_passphrase(household_wrap, "correct horse battery")


def test_holder_recovery_wrap_round_trip() -> None:
    code = new_recovery_code()
    wrap = wrap_holder_with_recovery_code(HOLDER, code)
    assert inspect_wrap(wrap).kind == "holder-recovery"
    assert unwrap_holder_with_recovery_code(wrap, code.text.lower()).key_id == HOLDER.key_id
    with pytest.raises(WrongKeyError, match="recovery code does not open"):
        unwrap_holder_with_recovery_code(wrap, new_recovery_code())
    with pytest.raises(SealedFormatError, match="not a recovery-code wrap"):
        unwrap_with_recovery_code(wrap, code)
    # a changed key id field is bound by nothing but the check after opening
    forged = wrap[:34] + generate_holder_key().key_id + wrap[50:]
    with pytest.raises(SealedTamperedError, match="names holder key"):
        unwrap_holder_with_recovery_code(forged, code)


def test_seal_to_holder_opens_only_with_that_holder() -> None:
    seal = seal_to_holder(KEY, HOLDER.public)
    assert len(seal) == HOLDER_SEAL_SIZE
    assert hk.holder_seal_key_ids(seal) == (HOLDER.key_id, KEY.key_id)
    opened = open_holder_seal(seal, HOLDER, expected_key_id=KEY.key_id)
    assert bytes(opened.private) == bytes(KEY.private)
    with pytest.raises(WrongKeyError, match="sealed to holder key"):
        open_holder_seal(seal, generate_holder_key())
    with pytest.raises(SealedTamperedError, match="does not open"):
        open_holder_seal(_flip(seal, HOLDER_SEAL_SIZE - 1), HOLDER)
    with pytest.raises(WrongKeyError, match="not the expected"):
        open_holder_seal(seal, HOLDER, expected_key_id=generate_household_key().key_id)
    with pytest.raises(SealedFormatError, match="not a HomeWarden holder seal"):
        open_holder_seal(b"HWEW" + seal[4:], HOLDER)
    with pytest.raises(SealedFormatError, match="117 bytes"):
        open_holder_seal(seal[:-1], HOLDER)
