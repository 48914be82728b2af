"""The evidence manifest's one spelling, and package verification over bytes and hashes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from homewarden.crypto import merkle
from homewarden.crypto.signing import (
    TreeHead,
    generate_log_key,
    key_id,
    log_public_key,
    sign_manifest,
    sign_tree_head,
)
from homewarden.domain import package as pkg
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag, Subject
from homewarden.errors import InvalidProofError, InvalidSignatureError, PackageTamperedError
from homewarden.services import package_verify as pv

KEY = generate_log_key()
PUB = log_public_key(KEY)
CLIP = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40
README = b"how to verify\n"


def _manifest(package_id: str = "export-1") -> pkg.Manifest:
    return pkg.Manifest(
        package_id=package_id,
        kind="export",
        request_id=None,
        legal_basis="owner",
        reason="théft",  # non-ASCII stays UTF-8
        household="home",
        cameras=("porch",),
        start_ms=1_700_000_000_000,
        end_ms=1_700_000_010_000,
        files=(
            pkg.PackageFile(
                name="clips/porch-1.mp4",
                sha256=hashlib.sha256(CLIP).hexdigest(),
                size=len(CLIP),
                camera="porch",
                start_ms=1_700_000_000_000,
                end_ms=1_700_000_010_000,
                kind=pkg.FileKind.ORIGINAL,
                released=True,
                gaps=((1_700_000_004_000, 1_700_000_005_000),),
            ),
        ),
        readme_sha256=hashlib.sha256(README).hexdigest(),
        readme_size=len(README),
        software_version="0.1.0",
        created_ms=1_700_000_100_000,
        public_key=bytes(PUB).hex(),
        key_id=key_id(PUB).hex(),
        clock_note="not measured",
    )


def _package(manifest: pkg.Manifest) -> tuple[dict[str, pkg.FileFacts], bytes, bytes, bytes]:
    raw = pkg.manifest_bytes(manifest)
    sig = sign_manifest(raw, KEY)
    mhash = hashlib.sha256(raw).digest()
    actor = Actor(ActorKind.LOCAL_OPERATOR, "cli:o")
    leaves = [
        AuditEntry(0, 1, actor, AuditTag.SYSTEM_KEY_CREATE, Subject("home", key="ab"), "k").leaf(),
        AuditEntry(
            1,
            2,
            actor,
            AuditTag.FOOTAGE_EXPORT_CREATE,
            Subject("home", camera="porch", start_ms=1, end_ms=2, request=manifest.package_id),
            pkg.binding_reason(manifest.package_id, mhash),
        ).leaf(),
        AuditEntry(2, 3, actor, AuditTag.SETTING_CHANGE, Subject("home"), "x").leaf(),
    ]
    hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    nodes: dict[tuple[int, int], bytes] = {(0, i): h for i, h in enumerate(hashes)}
    compact = merkle.CompactRange()
    for h in hashes:
        nodes.update({(n.level, n.idx): v for n, v in compact.append(h)})
    path = merkle.inclusion_proof(1, 3, lambda ids: {i: nodes[i] for i in ids if i in nodes})
    head = sign_tree_head(TreeHead(3, compact.root(), 5, key_id(PUB)), KEY)
    audit = pv.AuditRecord((pv.AuditProof(1, leaves[1], tuple(path)),), head, bytes(PUB))
    audit_raw = audit.to_bytes()
    listing = {
        name: pkg.FileFacts(hashlib.sha256(data).digest(), len(data))
        for name, data in {
            "clips/porch-1.mp4": CLIP,
            pkg.README: README,
            pkg.MANIFEST: raw,
            pkg.SIGNATURE: sig,
            pkg.AUDIT: audit_raw,
        }.items()
    }
    return listing, raw, sig, audit_raw


def test_manifest_has_one_spelling_and_round_trips() -> None:
    m = _manifest()
    raw = pkg.manifest_bytes(m)
    assert raw.endswith(b"}\n")
    assert "théft".encode() in raw
    assert pkg.parse_manifest(raw) == m
    with pytest.raises(PackageTamperedError, match="canonical spelling"):
        pkg.parse_manifest(raw.replace(b"\n  ", b"\n   ", 1))
    with pytest.raises(PackageTamperedError, match="duplicate key"):
        pkg.parse_manifest(raw.replace(b'{\n  "audit"', b'{\n  "kind": "x",\n  "audit"', 1))


def test_iso_ms_matches_datetime() -> None:
    for ms in (0, 951_782_400_000, 1_700_002_795_123, 4_102_444_799_999):
        want = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        assert pkg.iso_ms(ms) == want.replace("+00:00", "Z")


def test_a_good_package_verifies_trusted_or_self_asserted() -> None:
    listing, raw, sig, audit = _package(_manifest())
    report = pv.verify_package(listing, raw, sig, audit, {key_id(PUB): PUB})
    assert report.trusted
    assert report.audit_indexes == (1,)
    assert report.files_checked == 2
    assert not pv.verify_package(listing, raw, sig, audit).trusted


def test_each_change_fails_with_its_reason() -> None:
    listing, raw, sig, audit = _package(_manifest())
    bad = dict(listing)
    bad["clips/porch-1.mp4"] = pkg.FileFacts(b"\x01" * 32, len(CLIP))
    with pytest.raises(PackageTamperedError, match="does not match its SHA-256"):
        pv.verify_package(bad, raw, sig, audit)
    bad["clips/porch-1.mp4"] = pkg.FileFacts(b"\x01" * 32, len(CLIP) + 1)
    with pytest.raises(PackageTamperedError, match="bytes, the manifest says"):
        pv.verify_package(bad, raw, sig, audit)
    edited = raw.replace(b'"legal_basis": "owner"', b'"legal_basis": "owneR"')
    with pytest.raises(InvalidSignatureError, match="manifest was edited"):
        pv.verify_package(listing, edited, sig, audit)
    with pytest.raises(InvalidSignatureError):
        pv.verify_package(listing, raw, sig[:-1] + bytes([sig[-1] ^ 1]), audit)
    other = log_public_key(generate_log_key())
    with pytest.raises(InvalidSignatureError, match="not the public key you trust"):
        pv.verify_package(listing, raw, sig, audit, {key_id(other): other})
    with pytest.raises(PackageTamperedError, match=r"audit\.json is not valid JSON"):
        pv.verify_package(listing, raw, sig, audit[:-3])


def test_an_audit_record_of_another_manifest_is_refused() -> None:
    listing, raw, sig, _ = _package(_manifest())
    _, _, _, other_audit = _package(_manifest("export-2"))
    with pytest.raises(PackageTamperedError, match="about another package"):
        pv.verify_package(listing, raw, sig, other_audit)


def test_a_proof_against_another_root_fails() -> None:
    listing, raw, sig, audit = _package(_manifest())
    record = pv.parse_audit(audit)
    wrong = pv.AuditRecord(
        (pv.AuditProof(1, record.entries[0].leaf, (b"\x07" * 32, *record.entries[0].path[1:])),),
        record.tree_head,
        record.public_key,
    )
    with pytest.raises(InvalidProofError, match="does not match the signed tree head"):
        pv.verify_package(listing, raw, sig, wrong.to_bytes())


def test_manifest_signatures_cannot_pass_for_tree_heads() -> None:
    with pytest.raises(InvalidSignatureError, match="JSON object"):
        sign_manifest(b"homewarden/audit-tree-head/v1\x00", KEY)
