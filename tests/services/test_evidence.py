"""Evidence packages from real footage (bikes.mp4 recorded as segments): they verify, offline,
and fail with the precise reason after each kind of tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from homewarden.config import Settings
from homewarden.crypto.signing import generate_log_key, key_id, log_public_key, sign_manifest
from homewarden.domain import package as pkg
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag
from homewarden.errors import (
    InvalidProofError,
    InvalidRequestError,
    InvalidSignatureError,
    NotFoundError,
    PackageTamperedError,
)
from homewarden.services.audit import AuditLog
from homewarden.services.evidence import EvidenceService, PackageResult
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.store.index import Index
from tests.package_footage import CAMERA, T0, deploy

OWNER = Actor(ActorKind.LOCAL_OPERATOR, "cli:owner")


@dataclass(frozen=True)
class Made:
    result: PackageResult
    audit: AuditLog
    keys: Path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    data = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("out")
    settings = deploy(data, _index(data)).settings
    index = Index(settings.db_url)
    audit = AuditLog.open(settings.db_url, settings.keys_dir, household=settings.household)
    try:
        service = EvidenceService(index, settings, audit)
        result = service.export(
            [CAMERA], T0 + 1.0, T0 + 9.0, out, actor=OWNER, reason="break-in", max_file_seconds=4.0
        )
        yield Made(result, audit, settings.keys_dir / "log_public_keys.json")
    finally:
        audit.close()
        index.close()


def _index(data: Path) -> Index:
    index = Index(f"sqlite:///{data / 'homewarden.db'}")
    index.migrate()
    return index


def _deployed_with_out(tmp_path: Path) -> tuple[Index, Settings, Path]:
    """A deployed data dir under ``tmp_path`` (its open index and settings) and an empty
    ``out`` folder beside it."""
    data = tmp_path / "data"
    index = _index(data)
    settings = deploy(data, index).settings
    out = tmp_path / "out"
    out.mkdir()
    return index, settings, out


def _copy(made: Made, tmp_path: Path) -> Path:
    dst = tmp_path / made.result.package_id
    shutil.copytree(made.result.folder, dst)
    return dst


def test_package_holds_remuxed_clips_and_verifies_as_folder_and_zip(made: Made) -> None:
    r = made.result
    names = sorted(p.relative_to(r.folder).as_posix() for p in r.folder.rglob("*") if p.is_file())
    assert len(r.released) == 2  # 8 s in files of at most 4 s
    assert names == sorted([*pkg.FIXED_FILES, *r.released])
    assert r.withheld == ()
    assert r.withheld_dir is None
    trusted = load_public_keys(made.keys)
    for where in (r.folder, r.zip_path):
        report = verify_package_path(where, trusted)
        assert report.trusted
        assert report.files_checked == 3
        assert report.audit_indexes == r.audit_indexes
    manifest = json.loads((r.folder / pkg.MANIFEST).read_bytes())
    assert manifest["scope"]["cameras"] == [CAMERA]
    assert manifest["scope"]["start"] == "2023-11-14T22:59:56.000Z"
    first = manifest["files"][0]
    assert first["kind"] == "original"
    assert first["released"] is True
    assert first["recorder_clock_offset_ms"] == 0
    assert first["recorder_clock_offset_measured"] is False
    assert first["sha256"] == hashlib.sha256((r.folder / first["name"]).read_bytes()).hexdigest()
    # Remuxed, not re-encoded: the same H.264 stream as the recording.
    with av.open(str(r.folder / first["name"])) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.width == 640
    # The audit entry is in the deployment's log and names this manifest.
    entry = made.audit.entry(r.audit_indexes[0])
    assert entry.action is AuditTag.FOOTAGE_EXPORT_CREATE
    assert entry.subject.request == r.package_id
    assert entry.subject.camera == CAMERA
    assert r.manifest_sha256 in entry.reason
    made.audit.verify()


def test_without_public_key_the_signature_is_self_asserted(made: Made) -> None:
    report = verify_package_path(made.result.zip_path)
    assert not report.trusted
    assert report.to_json()["signature"].startswith("self-asserted")


def test_a_flipped_bit_in_a_clip_is_named(made: Made, tmp_path: Path) -> None:
    folder = _copy(made, tmp_path)
    clip = folder / made.result.released[1]
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 0x01
    clip.write_bytes(bytes(data))
    with pytest.raises(PackageTamperedError, match="does not match its SHA-256") as exc:
        verify_package_path(folder)
    assert exc.value.name == made.result.released[1]


def test_a_flipped_bit_in_the_zip_is_named(made: Made, tmp_path: Path) -> None:
    zpath = tmp_path / "p.zip"
    data = bytearray(made.result.zip_path.read_bytes())
    with zipfile.ZipFile(made.result.zip_path) as zf:
        info = zf.getinfo(f"{made.result.package_id}/{made.result.released[0]}")
    data[info.header_offset + 200] ^= 0x80  # inside the stored clip's bytes
    zpath.write_bytes(bytes(data))
    with pytest.raises(PackageTamperedError, match=made.result.released[0]):
        verify_package_path(zpath)


def test_an_edited_manifest_fails_the_signature(made: Made, tmp_path: Path) -> None:
    folder = _copy(made, tmp_path)
    path = folder / pkg.MANIFEST
    path.write_bytes(path.read_bytes().replace(b'"reason": "break-in"', b'"reason": "breakin!"'))
    with pytest.raises(InvalidSignatureError, match="manifest was edited or the signature"):
        verify_package_path(folder)


def test_a_swapped_signature_fails(made: Made, tmp_path: Path) -> None:
    folder = _copy(made, tmp_path)
    other = generate_log_key()
    manifest = (folder / pkg.MANIFEST).read_bytes()
    (folder / pkg.SIGNATURE).write_bytes(sign_manifest(manifest, other))
    with pytest.raises(InvalidSignatureError, match="does not verify"):
        verify_package_path(folder)


def test_a_manifest_resigned_by_another_key_fails_against_the_trusted_key(
    made: Made, tmp_path: Path
) -> None:
    folder = _copy(made, tmp_path)
    other = generate_log_key()
    data = json.loads((folder / pkg.MANIFEST).read_bytes())
    data["signature"]["public_key"] = bytes(log_public_key(other)).hex()
    data["signature"]["key_id"] = key_id(log_public_key(other)).hex()
    raw = pkg.render_json(data)
    (folder / pkg.MANIFEST).write_bytes(raw)
    (folder / pkg.SIGNATURE).write_bytes(sign_manifest(raw, other))
    with pytest.raises(InvalidSignatureError, match="not the public key you trust"):
        verify_package_path(folder, load_public_keys(made.keys))


def test_a_proof_that_does_not_match_the_head_fails(made: Made, tmp_path: Path) -> None:
    folder = _copy(made, tmp_path)
    audit = json.loads((folder / pkg.AUDIT).read_bytes())
    audit["entries"][0]["inclusion_path"][0] = hashlib.sha256(b"x").hexdigest()
    (folder / pkg.AUDIT).write_bytes(pkg.render_json(audit))
    with pytest.raises(InvalidProofError, match="does not match the signed tree head"):
        verify_package_path(folder)


def test_another_valid_head_does_not_prove_the_entry(made: Made, tmp_path: Path) -> None:
    """A genuine, correctly signed later head of the same log: the proof (made for the
    export's head) does not lead to its root."""
    folder = _copy(made, tmp_path)
    made.audit.append(AuditTag.SETTING_CHANGE, OWNER, "later")
    later = made.audit.sign_tree_head()
    assert later.tree_size > made.result.tree_size
    audit = json.loads((folder / pkg.AUDIT).read_bytes())
    audit["tree_head"] = later.to_json()
    (folder / pkg.AUDIT).write_bytes(pkg.render_json(audit))
    with pytest.raises(InvalidProofError):
        verify_package_path(folder, load_public_keys(made.keys))


def test_a_forged_head_signature_fails(made: Made, tmp_path: Path) -> None:
    folder = _copy(made, tmp_path)
    audit = json.loads((folder / pkg.AUDIT).read_bytes())
    sig = bytearray(base64.b64decode(audit["tree_head"]["signature"]))
    sig[0] ^= 1
    audit["tree_head"]["signature"] = base64.b64encode(bytes(sig)).decode()
    (folder / pkg.AUDIT).write_bytes(pkg.render_json(audit))
    with pytest.raises(InvalidSignatureError, match="tree head"):
        verify_package_path(folder)


def test_an_entry_about_another_package_fails(made: Made, tmp_path: Path) -> None:
    """audit.json from a different export (same log, valid proof) does not vouch for this one."""
    folder = _copy(made, tmp_path)
    proof = made.audit.inclusion_proof(0, made.result.tree_size)  # the key-creation entry
    audit = json.loads((folder / pkg.AUDIT).read_bytes())
    audit["entries"] = [
        {
            "index": 0,
            "leaf": base64.b64encode(proof.leaf).decode(),
            "entry": json.loads(proof.leaf),
            "leaf_hash": proof.leaf_hash.hex(),
            "inclusion_path": [h.hex() for h in proof.path],
        }
    ]
    (folder / pkg.AUDIT).write_bytes(pkg.render_json(audit))
    assert AuditEntry.from_leaf(proof.leaf).action is AuditTag.SYSTEM_KEY_CREATE
    with pytest.raises(PackageTamperedError, match="not an export"):
        verify_package_path(folder)


@pytest.mark.parametrize("change", ["extra", "missing", "readme"])
def test_extra_missing_or_edited_files_are_named(made: Made, tmp_path: Path, change: str) -> None:
    folder = _copy(made, tmp_path)
    if change == "extra":
        (folder / "clips" / "planted.mp4").write_bytes(b"not footage")
        expected = "clips/planted.mp4 is in the package but not in the manifest"
    elif change == "missing":
        (folder / made.result.released[0]).unlink()
        expected = f"{made.result.released[0]} listed in the manifest is missing"
    else:
        (folder / pkg.README).write_text("No need to verify anything.\n")
        expected = "README.txt is"
    with pytest.raises(PackageTamperedError, match=expected):
        verify_package_path(folder)


def test_no_footage_in_scope_leaves_nothing(made: Made, tmp_path: Path) -> None:
    data = tmp_path / "data"
    index = _index(data)
    settings = deploy(data, index).settings
    with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
        service = EvidenceService(index, settings, audit)
        size = audit.size()
        with pytest.raises(NotFoundError, match="no footage"):
            service.export([CAMERA], T0 + 100, T0 + 200, tmp_path, actor=OWNER, reason="x")
        assert audit.size() == size  # nothing exported, nothing accounted
    index.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_thorough_redaction_is_named_in_the_manifest_and_needs_redact(tmp_path: Path) -> None:
    index, settings, out = _deployed_with_out(tmp_path)
    with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
        service = EvidenceService(index, settings, audit)
        size = audit.size()
        with pytest.raises(InvalidRequestError, match="redaction"):
            service.export(
                [CAMERA], T0 + 3.0, T0 + 4.0, out, actor=OWNER, reason="r", thorough=True
            )
        assert audit.size() == size
        assert list(out.iterdir()) == []
        result = service.export(
            [CAMERA], T0 + 3.0, T0 + 4.0, out, actor=OWNER, reason="r", redact=True, thorough=True
        )
    index.close()
    report = verify_package_path(
        result.zip_path, load_public_keys(settings.keys_dir / "log_public_keys.json")
    )
    assert report.manifest.redaction is not None
    assert report.manifest.redaction["face_search"] == "every frame, full resolution"
    assert report.manifest.redaction["detect_every_frames"] == 1


def test_redacted_export_releases_redacted_copies_and_withholds_originals(
    tmp_path: Path,
) -> None:
    index, settings, out = _deployed_with_out(tmp_path)
    with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
        result = EvidenceService(index, settings, audit).export(
            [CAMERA], T0 + 3.0, T0 + 5.0, out, actor=OWNER, reason="share", redact=True
        )
    index.close()
    report = verify_package_path(
        result.zip_path, load_public_keys(settings.keys_dir / "log_public_keys.json")
    )
    files = report.manifest.files
    assert [(f.kind, f.released) for f in files] == [
        (pkg.FileKind.ORIGINAL, False),
        (pkg.FileKind.REDACTED, True),
    ]
    assert files[1].source == files[0].name
    assert result.withheld_dir is not None
    original = result.withheld_dir / files[0].name
    assert hashlib.sha256(original.read_bytes()).hexdigest() == files[0].sha256
    assert not (result.folder / files[0].name).exists()
    with av.open(str(result.folder / files[1].name)) as c:
        assert not c.streams.audio
        assert c.streams.video[0].codec_context.name == "h264"
    assert report.manifest.redaction is not None
