"""Household keys: passphrase and recovery-code wraps, escrow wrap, 2-of-3 custodian shares
(issue 6: "Emergency under escrow needs two different custodians' shares; one share alone
fails")."""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homewarden.crypto import household_keys as hk
from homewarden.crypto.household_keys import (
    ARGON2ID_CAP,
    ARGON2ID_FLOOR,
    WRAP_ARGON2ID,
    WRAP_SIZE,
    Argon2idParams,
    EscrowShare,
    RecoveryCode,
    combine_escrow_shares,
    escrow_public_key_from_bytes,
    generate_escrow_key,
    generate_household_key,
    household_key_id,
    household_public_key_from_bytes,
    inspect_wrap,
    new_recovery_code,
    open_escrow,
    parse_escrow_share,
    parse_recovery_code,
    seal_for_escrow,
    split_escrow_key,
    unwrap_with_passphrase,
    unwrap_with_recovery_code,
    wrap_with_passphrase,
    wrap_with_recovery_code,
)
from homewarden.errors import (
    InvalidRequestError,
    KeyShareError,
    SealedFormatError,
    SealedTamperedError,
    WrongKeyError,
)

KEY = generate_household_key()
#: libsodium's minimum Argon2id cost, so the many wrap tests stay fast; the default is tested
#: once below.
CHEAP = ARGON2ID_FLOOR


def _flip(blob: bytes, pos: int) -> bytes:
    out = bytearray(blob)
    out[pos] ^= 0x01
    return bytes(out)


# --------------------------------------------------------------------------------------------
# key pairs


def test_key_ids_are_16_bytes_per_role_and_repr_hides_the_key() -> None:
    assert len(KEY.key_id) == 16
    assert KEY.key_id == household_key_id(KEY.public)
    assert household_public_key_from_bytes(bytes(KEY.public)) == KEY.public
    same_bytes = escrow_public_key_from_bytes(bytes(KEY.public))
    assert hk.escrow_key_id(same_bytes) != KEY.key_id  # personalised per role
    assert repr(KEY) == f"HouseholdKeyPair(key_id={KEY.key_id.hex()})"
    assert bytes(KEY.private).hex() not in repr(KEY)
    with pytest.raises(SealedFormatError, match="32 bytes"):
        household_public_key_from_bytes(b"short")


# --------------------------------------------------------------------------------------------
# passphrase wraps


def test_passphrase_wrap_with_the_default_argon2id_parameters() -> None:
    wrap = wrap_with_passphrase(KEY, "correct horse battery staple")
    assert len(wrap) == WRAP_SIZE
    info = inspect_wrap(wrap)
    assert (info.kind, info.key_id, info.params) == ("passphrase", KEY.key_id, WRAP_ARGON2ID)
    assert Argon2idParams(3, 64 * 1024 * 1024) == WRAP_ARGON2ID  # RFC 9106 section 4
    opened = unwrap_with_passphrase(wrap, "correct horse battery staple")
    assert bytes(opened.private) == bytes(KEY.private)
    assert opened.key_id == KEY.key_id


def test_wrong_passphrase_fails() -> None:
    wrap = wrap_with_passphrase(KEY, "correct horse", CHEAP)
    for wrong in ("Correct horse", "correct horse ", "correct hors"):
        with pytest.raises(WrongKeyError, match="passphrase does not open") as err:
            unwrap_with_passphrase(wrap, wrong)
        assert err.value.reason == "wrong passphrase"
    with pytest.raises(InvalidRequestError, match="empty"):
        unwrap_with_passphrase(wrap, "")


def test_each_wrap_has_its_own_salt() -> None:
    a = wrap_with_passphrase(KEY, "same", CHEAP)
    b = wrap_with_passphrase(KEY, "same", CHEAP)
    assert a[18:34] != b[18:34]
    assert a != b


def test_passphrase_is_unicode_normalised() -> None:
    composed, decomposed = "caf\u00e9 \u2460", "cafe\u0301 1"  # NFKC: e-acute, circled 1
    wrap = wrap_with_passphrase(KEY, composed, CHEAP)
    assert unwrap_with_passphrase(wrap, decomposed).key_id == KEY.key_id


def test_every_wrap_byte_changed_fails() -> None:
    wrap = wrap_with_passphrase(KEY, "pw", CHEAP)
    for pos in range(len(wrap)):
        if 6 <= pos < 18:
            continue  # parameters: see the next test (a change may ask for huge memory)
        with pytest.raises((SealedFormatError, WrongKeyError, SealedTamperedError)):
            unwrap_with_passphrase(_flip(wrap, pos), "pw")
    with pytest.raises(SealedTamperedError, match="names household key"):
        unwrap_with_passphrase(_flip(wrap, 40), "pw")  # the key id


def test_changed_argon2id_parameters_fail_and_are_bounded() -> None:
    wrap = wrap_with_passphrase(KEY, "pw", CHEAP)
    stronger = wrap[:6] + struct.pack(">IQ", 2, CHEAP.memlimit) + wrap[18:]
    with pytest.raises(WrongKeyError):
        unwrap_with_passphrase(stronger, "pw")
    huge = wrap[:6] + struct.pack(">IQ", 1, ARGON2ID_CAP.memlimit * 4) + wrap[18:]
    with pytest.raises(SealedFormatError, match="outside"):
        unwrap_with_passphrase(huge, "pw")
    with pytest.raises(SealedFormatError, match="outside"):
        wrap_with_passphrase(KEY, "pw", Argon2idParams(0, CHEAP.memlimit))


def test_expected_key_id_is_checked() -> None:
    other = generate_household_key()
    wrap = wrap_with_passphrase(other, "pw", CHEAP)
    with pytest.raises(WrongKeyError, match="not the expected"):
        unwrap_with_passphrase(wrap, "pw", expected_key_id=KEY.key_id)


def test_not_a_wrap() -> None:
    with pytest.raises(SealedFormatError, match="122 bytes"):
        inspect_wrap(b"HWKW")
    with pytest.raises(SealedFormatError, match="magic"):
        inspect_wrap(bytes(WRAP_SIZE))


# --------------------------------------------------------------------------------------------
# recovery codes


def test_recovery_code_text_is_8_groups_of_4_crockford_symbols() -> None:
    code = new_recovery_code()
    assert re.fullmatch(r"([0-9A-HJKMNP-TV-Z]{4}-){7}[0-9A-HJKMNP-TV-Z]{4}", code.text)
    assert len(code.secret) * 8 >= 128
    assert repr(code) == "RecoveryCode(***)"
    assert code.text not in repr(code)
    assert parse_recovery_code(code.text) == code
    assert new_recovery_code() != code


@pytest.mark.parametrize(
    "sloppy",
    [
        str.lower,
        lambda t: t.replace("-", ""),
        lambda t: t.replace("-", " "),
        lambda t: " " + t.lower().replace("-", " - ") + "\n",
        lambda t: t.replace("0", "O").replace("1", "I"),
        lambda t: t.lower().replace("0", "o").replace("1", "l"),
    ],
)
def test_recovery_code_round_trip_with_sloppy_typing(sloppy: Callable[[str], str]) -> None:
    code = RecoveryCode(bytes.fromhex("060102030405060708090a0b0c0d0e0f"))  # has 0s and 1s
    assert "0" in code.text
    assert "1" in code.text
    wrap = wrap_with_recovery_code(KEY, code)
    assert inspect_wrap(wrap).kind == "recovery"
    assert unwrap_with_recovery_code(wrap, sloppy(code.text)).key_id == KEY.key_id


def test_mistyped_recovery_code_is_named_as_mistyped() -> None:
    code = new_recovery_code()
    text = code.text
    i = 5 if text[5] != "Z" else 6
    typo = text[:i] + ("Z" if text[i] != "Z" else "Y") + text[i + 1 :]
    with pytest.raises(WrongKeyError, match="mistyped") as err:
        parse_recovery_code(typo)
    assert err.value.reason == "mistyped recovery code"
    with pytest.raises(WrongKeyError, match="symbol 3 'U'"):
        parse_recovery_code("ABU" + text[3:])
    with pytest.raises(WrongKeyError, match="31 symbols"):
        parse_recovery_code(text[:-1])


def test_wrong_recovery_code_fails() -> None:
    wrap = wrap_with_recovery_code(KEY, new_recovery_code())
    with pytest.raises(WrongKeyError, match="recovery code does not open") as err:
        unwrap_with_recovery_code(wrap, new_recovery_code().text)
    assert err.value.reason == "wrong recovery code"


def test_wraps_are_not_interchangeable() -> None:
    code = new_recovery_code()
    recovery = wrap_with_recovery_code(KEY, code)
    passphrase = wrap_with_passphrase(KEY, code.text, CHEAP)
    with pytest.raises(SealedFormatError, match="not a passphrase wrap"):
        unwrap_with_passphrase(recovery, code.text)
    with pytest.raises(SealedFormatError, match="not a recovery-code wrap"):
        unwrap_with_recovery_code(passphrase, code)


@given(st.binary(min_size=1, max_size=64))
def test_crockford_base32_round_trip(data: bytes) -> None:
    text = hk._b32_encode(data)
    assert set(text) <= set(hk._CROCKFORD)
    assert hk._b32_decode(text.lower(), len(data), "x") == data


# --------------------------------------------------------------------------------------------
# escrow


ESCROW = generate_escrow_key()
SHARES = split_escrow_key(ESCROW)


def test_escrow_wrap_round_trip_and_wrong_escrow_key() -> None:
    blob = seal_for_escrow(KEY, ESCROW.public)
    assert open_escrow(blob, ESCROW, expected_key_id=KEY.key_id).key_id == KEY.key_id
    with pytest.raises(WrongKeyError, match="sealed to escrow key"):
        open_escrow(blob, generate_escrow_key())
    with pytest.raises(WrongKeyError, match="not the expected"):
        open_escrow(blob, ESCROW, expected_key_id=generate_household_key().key_id)


def test_escrow_wrap_tampering_is_detected() -> None:
    blob = seal_for_escrow(KEY, ESCROW.public)
    for pos in range(len(blob)):
        with pytest.raises((SealedFormatError, WrongKeyError, SealedTamperedError)):
            open_escrow(_flip(blob, pos), ESCROW)
    with pytest.raises(SealedTamperedError, match="names household key"):
        open_escrow(_flip(blob, 25), ESCROW)
    with pytest.raises(SealedTamperedError, match="does not open"):
        open_escrow(_flip(blob, 60), ESCROW)


def test_shares_are_2_of_3_with_indexes_1_to_3() -> None:
    assert [(s.index, s.threshold, s.count) for s in SHARES] == [(1, 2, 3), (2, 2, 3), (3, 2, 3)]
    for share in SHARES:
        assert share.text.startswith("HWES-")
        assert parse_escrow_share(share.text) == share
        assert share.halves[0].hex() not in repr(share)


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(range(3), 2)))
def test_any_two_different_shares_rebuild_the_escrow_key(a: int, b: int) -> None:
    rebuilt = combine_escrow_shares([SHARES[a].text, SHARES[b].text])
    assert bytes(rebuilt.private) == bytes(ESCROW.private)
    blob = seal_for_escrow(KEY, ESCROW.public)
    assert open_escrow(blob, rebuilt).key_id == KEY.key_id


def test_all_three_shares_and_sloppy_typing_work() -> None:
    texts = [SHARES[0].text.lower(), SHARES[2].text.replace("-", " "), SHARES[1]]
    assert combine_escrow_shares(texts).key_id == ESCROW.key_id


def test_one_share_alone_fails() -> None:
    for share in SHARES:
        with pytest.raises(KeyShareError, match="needs 2 different") as err:
            combine_escrow_shares([share.text])
        assert err.value.reason == "too few shares"
    with pytest.raises(KeyShareError, match="no escrow share"):
        combine_escrow_shares([])


def test_the_same_share_twice_fails() -> None:
    share = SHARES[1].text
    with pytest.raises(KeyShareError, match="same share as the 1st") as err:
        combine_escrow_shares([share, share.lower().replace("-", "")])
    assert (err.value.reason, err.value.share_position) == ("duplicate share", 2)


def test_a_corrupted_share_is_named() -> None:
    text = SHARES[2].text
    i = 6  # inside the first group after the prefix
    typo = text[:i] + ("X" if text[i] != "X" else "Y") + text[i + 1 :]
    with pytest.raises(KeyShareError, match="2nd share is mistyped") as err:
        combine_escrow_shares([SHARES[0].text, typo])
    assert (err.value.reason, err.value.share_position) == ("mistyped share", 2)
    with pytest.raises(KeyShareError, match="1st share does not start with HWES") as err:
        combine_escrow_shares(["ABCD-" + text[5:], SHARES[0].text])
    assert err.value.share_position == 1
    with pytest.raises(KeyShareError, match="symbol") as err:
        combine_escrow_shares([SHARES[0].text, text[:-1] + "U"])
    assert err.value.share_position == 2


def test_shares_of_different_splits_do_not_mix() -> None:
    other = split_escrow_key(generate_escrow_key())
    with pytest.raises(KeyShareError, match="another split") as err:
        combine_escrow_shares([SHARES[0].text, other[1].text])
    assert (err.value.reason, err.value.share_position) == ("shares of different splits", 2)
    # a second split of the same key: same key id, other polynomials; refused as not matching
    resplit = split_escrow_key(ESCROW)
    with pytest.raises(KeyShareError, match="do not rebuild") as err:
        combine_escrow_shares([SHARES[0].text, resplit[1].text])
    assert err.value.reason == "shares do not match"


def test_a_forged_share_with_a_valid_checksum_is_refused() -> None:
    s = SHARES[1]
    forged = EscrowShare(s.threshold, s.count, s.index, s.escrow_key_id, (bytes(16), s.halves[1]))
    with pytest.raises(KeyShareError, match="do not rebuild"):
        combine_escrow_shares([SHARES[0].text, forged.text])


def test_split_parameters_are_checked() -> None:
    with pytest.raises(InvalidRequestError):
        split_escrow_key(ESCROW, threshold=1, count=3)
    with pytest.raises(InvalidRequestError):
        split_escrow_key(ESCROW, threshold=4, count=3)
    shares = split_escrow_key(ESCROW, threshold=3, count=5)
    with pytest.raises(KeyShareError, match="needs 3"):
        combine_escrow_shares([shares[0].text, shares[4].text])
    assert combine_escrow_shares([s.text for s in shares[1:4]]).key_id == ESCROW.key_id


def test_escrow_wrap_is_a_sealed_box_to_the_escrow_key() -> None:
    blob = seal_for_escrow(KEY, ESCROW.public)
    raw = nacl.bindings.crypto_box_seal_open(blob[37:], bytes(ESCROW.public), bytes(ESCROW.private))
    assert raw == bytes(KEY.private)
