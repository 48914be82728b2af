"""Evidence packages: the footage of a scope, signed, accounted for, verifiable offline.

DESIGN.md flow 6, issue 5 "Evidence package"; the layout and the checks are in
:mod:`homewarden.domain.package`. :meth:`EvidenceService.export` is what a fulfilled disclosure
request will call (with its request id and legal basis); today it is the owner's own export
(``homewarden export``).

Steps (all inside ``<out>/<package id>.part/``; nothing is left behind on any failure):

1. per camera, the scope is cut into files of at most ``max_file_seconds`` (the clip limit,
   :data:`homewarden.services.queries.MAX_CLIP_SECONDS`), each remuxed from the recorded
   segments without re-encoding (:func:`homewarden.media.clip.compose_clip`); spans without
   footage are listed as gaps;
2. with ``redact``, each clip gets a redacted copy (:func:`homewarden.media.redact.redact_clip`:
   faces blurred, the camera's privacy masks filled, audio dropped); then the redacted copies
   are released and the originals withheld - hashed in the manifest and kept beside the
   package in ``<package id>.withheld/`` (not in the zip), so the deployment can show later
   which original a redacted copy came from;
3. every file is hashed (SHA-256); README.txt is written; the manifest is built and signed
   with the deployment key (:meth:`AuditLog.sign_manifest`);
4. one ``footage:export:create`` entry per camera is appended to the audit log (its reason
   names the manifest's hash, its request the package id) - if that fails, no package exists;
   a tree head is signed and each entry's inclusion proof written to audit.json;
5. the zip is written (``<package id>.zip.part``, renamed), then the folder is renamed into
   place.

With ``skip_sealed`` (a search warrant over a scope recorded partly before sealing was turned
on, issue 6) sealed segments are left out: the clips hold the footage in the clear, the sealed
spans show as gaps in them, and the manifest lists each sealed range under
``withheld_sealed`` (:func:`sealed_ranges`) with why: the owner holds the keys.

Recorder clock offset: segment times are the recorder's wall clock, anchored at packet
arrival (``homewarden.services.recorder``); the recorder does not measure its clock against a
time source, so every file states offset 0 ms, "not measured", and the manifest says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from homewarden import __version__
from homewarden.config import Settings
from homewarden.domain import package as pkg
from homewarden.domain.audit import Actor, AuditTag, epoch_ms
from homewarden.errors import (
    AuditUnavailableError,
    DatabaseError,
    InvalidRequestError,
    LogTamperedError,
    NotFoundError,
    StorageError,
)
from homewarden.media.clip import compose_clip
from homewarden.media.redact import DETECT_EVERY, DETECT_WIDTH, redact_clip
from homewarden.services.audit import AuditLog
from homewarden.services.package_verify import AuditProof, AuditRecord
from homewarden.services.queries import MAX_CLIP_SECONDS
from homewarden.services.sealed_footage import KeySource, open_sealed_segment
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from homewarden.timefmt import utc_text

#: Legal basis stated for an owner's own export (no disclosure request).
OWNER_EXPORT_BASIS = "owner's own export of their household's footage (no disclosure request)"
CLOCK_NOTE = (
    "Times are the recorder's wall clock in UTC, anchored when packets arrived from the "
    "camera. The recorder does not measure its clock against a time source: the offset is "
    "stated as 0 ms, not measured."
)
_CHUNK = 1 << 20
#: Sealed segments closer than this (s) are one withheld range (segments of one recording
#: meet end to start; the recorder's cut can leave a few ms between them).
SEALED_MERGE_SECONDS = 1.0

#: Progress callback: (what, done fraction 0..1).
ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class PackageResult:
    """A written package: ``folder`` and ``zip_path``, the ``package_id``, the
    ``manifest_sha256`` (hex), the released and withheld file names, the ``withheld_dir``
    (None when nothing is withheld), the audit entries' ``audit_indexes`` under a head of
    ``tree_size``, and the sealed ranges left out (``withheld_sealed``, with ``skip_sealed``)."""

    folder: Path
    zip_path: Path
    package_id: str
    manifest_sha256: str
    released: tuple[str, ...]
    withheld: tuple[str, ...]
    withheld_dir: Path | None
    audit_indexes: tuple[int, ...]
    tree_size: int
    withheld_sealed: tuple[pkg.WithheldRange, ...] = ()


def sha256_file(path: Path) -> tuple[bytes, int]:
    """SHA-256 (32 bytes) and size of the file at ``path``.

    Raises:
        StorageError: it cannot be read.
    """
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.digest(), size


def sealed_ranges(
    segments: Sequence[SegmentRecord], start: float, end: float
) -> list[tuple[float, float]]:
    """The spans of ``[start, end]`` (UTC epoch s) the sealed ``segments`` of one camera
    cover, clipped to it, in time order; segments less than :data:`SEALED_MERGE_SECONDS`
    apart are one span."""
    spans: list[tuple[float, float]] = []
    for seg in sorted((s for s in segments if s.sealed), key=lambda s: s.start):
        a, b = max(start, seg.start), min(end, seg.end)
        if b <= a:
            continue
        if spans and a - spans[-1][1] < SEALED_MERGE_SECONDS:
            spans[-1] = (spans[-1][0], max(spans[-1][1], b))
        else:
            spans.append((a, b))
    return spans


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%SZ")


class EvidenceService:
    """Makes evidence packages from the recorded footage of ``index``.

    Args:
        index: the migrated index (segments).
        settings: cameras (households, privacy masks) and the media dir.
        audit: the audit log the export is written to (and whose key signs the manifest).
        clock: now, UTC epoch seconds.
    """

    def __init__(
        self,
        index: Index,
        settings: Settings,
        audit: AuditLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._settings = settings
        self._audit = audit
        self._clock = clock

    def export(
        self,
        cameras: Sequence[str],
        start: float,
        end: float,
        out_dir: Path,
        *,
        actor: Actor,
        reason: str,
        redact: bool = False,
        request_id: str | None = None,
        legal_basis: str | None = None,
        max_file_seconds: float = MAX_CLIP_SECONDS,
        detect_every: int = DETECT_EVERY,
        progress: ProgressFn | None = None,
        keys: KeySource | None = None,
        skip_sealed: bool = False,
        thorough: bool = False,
    ) -> PackageResult:
        """Write the evidence package of ``cameras`` over ``[start, end]`` (UTC epoch s)
        into ``out_dir`` as ``<id>/`` and ``<id>.zip``.

        ``keys``: the household keys of the owner's unlocked session, which open sealed
        segments (``storage.sealed``; :mod:`homewarden.services.sealed_footage`) in memory;
        without them a scope holding sealed footage is :class:`KeysLockedError`.

        ``skip_sealed``: leave sealed segments out instead (no key is used): the package holds
        the footage in the clear and its manifest lists the sealed ranges left out
        (``withheld_sealed``, :func:`sealed_ranges`; also
        :attr:`PackageResult.withheld_sealed`), "the owner holds the keys" - how a search
        warrant over a scope recorded partly before sealing was turned on is answered
        (issue 6). With nothing in the clear it is :class:`NotFoundError`.

        ``thorough`` (with ``redact``): faces are searched on every frame at full
        resolution (:func:`redact_clip` ``thorough``), ~11x the time; the manifest's
        ``redaction`` says which.

        ``request_id``/``legal_basis``: the disclosure request being fulfilled (its id is the
        package id); without one this is an owner's export, id ``export-<UTC>-<random>``.

        Raises:
            InvalidRequestError: no camera, a camera twice, cameras of several households,
                ``end <= start``, an empty reason, ``max_file_seconds`` not positive,
                ``thorough`` without ``redact``.
            NotFoundError: an unknown camera, or no footage at all in the scope.
            StorageError: ``out_dir`` is not a directory, the package exists, or writing fails.
            AuditUnavailableError: the export cannot be written to the audit log (no package).
            MediaError, ClipError: the footage cannot be remuxed or redacted.
            KeysLockedError, KeyUnavailableError: sealed footage and no key to open it.
            SealedDataError: a sealed segment does not open (tampered): no package.
        """
        cams = self._check(cameras, start, end, out_dir, reason, max_file_seconds)
        if thorough and not redact:
            raise InvalidRequestError("a thorough face search is a kind of redaction: ask for both")
        household = self._settings.camera_household(cams[0])
        now = self._clock()
        package_id = request_id or f"export-{_stamp(now)}-{secrets.token_hex(3)}"
        if not all(c.isalnum() or c in "-_." for c in package_id) or package_id.startswith("."):
            raise InvalidRequestError(f"package id {package_id!r} is not a safe file name")
        folder = out_dir / package_id
        zip_path = out_dir / f"{package_id}.zip"
        withheld_dir = out_dir / f"{package_id}.withheld"
        for p in (folder, zip_path, withheld_dir):
            if p.exists() or p.is_symlink():
                raise StorageError(f"cannot write package: {p} already exists")
        work = out_dir / f"{package_id}.part"
        try:
            work.mkdir()
        except FileExistsError as exc:
            raise StorageError(
                f"cannot write package: {work} exists (another export, or one interrupted: "
                "remove it if none is running)"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot write package in {out_dir}: {exc.strerror}") from exc
        zip_part = out_dir / f"{package_id}.zip.part"
        held_part = out_dir / f"{package_id}.withheld.part"
        try:
            return self._build(
                cams, household, start, end, work, folder, zip_path, zip_part,
                withheld_dir, held_part, package_id,
                actor=actor, reason=reason, redact=redact, request_id=request_id,
                legal_basis=legal_basis, max_file_seconds=max_file_seconds,
                detect_every=detect_every, progress=progress, now=now, keys=keys,
                skip_sealed=skip_sealed, thorough=thorough,
            )  # fmt: skip
        except BaseException:
            for p in (work, held_part):
                shutil.rmtree(p, ignore_errors=True)
            with contextlib.suppress(OSError):
                zip_part.unlink()
            raise

    def _check(
        self,
        cameras: Sequence[str],
        start: float,
        end: float,
        out_dir: Path,
        reason: str,
        max_file_seconds: float,
    ) -> list[str]:
        cams = list(cameras)
        if not cams:
            raise InvalidRequestError("an export names at least one camera")
        if len(set(cams)) != len(cams):
            raise InvalidRequestError("an export names each camera once")
        if not end > start:
            raise InvalidRequestError(f"export end ({end}) must be after its start ({start})")
        if not reason.strip():
            raise InvalidRequestError("an export needs a reason (it is in the audit log)")
        if not max_file_seconds > 0:
            raise InvalidRequestError("max_file_seconds must be positive")
        known = set(self._settings.cameras) | set(self._index.camera_names())
        for c in cams:
            if c not in known:
                raise NotFoundError(f"no camera named {c!r}")
        households = {self._settings.camera_household(c) for c in cams}
        if len(households) != 1:
            raise InvalidRequestError(
                f"one package holds one household's footage, not {sorted(households)}"
            )
        if not out_dir.is_dir():
            raise StorageError(f"cannot write package: {out_dir} is not a directory")
        return cams

    def _build(
        self,
        cams: list[str],
        household: str,
        start: float,
        end: float,
        work: Path,
        folder: Path,
        zip_path: Path,
        zip_part: Path,
        withheld_dir: Path,
        held_part: Path,
        package_id: str,
        *,
        actor: Actor,
        reason: str,
        redact: bool,
        request_id: str | None,
        legal_basis: str | None,
        max_file_seconds: float,
        detect_every: int,
        progress: ProgressFn | None,
        now: float,
        keys: KeySource | None = None,
        skip_sealed: bool = False,
        thorough: bool = False,
    ) -> PackageResult:
        clips = work / pkg.CLIPS_DIR
        clips.mkdir()
        media = self._settings.media_dir
        made: list[tuple[str, str, float, float, list[tuple[float, float]]]] = []
        withheld_sealed: list[pkg.WithheldRange] = []
        for cam in cams:
            segs = self._index.segments(cam, start, end)
            if skip_sealed:
                withheld_sealed += [
                    pkg.WithheldRange(
                        cam, epoch_ms(a, rounding="floor"), epoch_ms(b, rounding="ceil")
                    )
                    for a, b in sealed_ranges(segs, start, end)
                ]
                segs = [s for s in segs if not s.sealed]
            parts = [(media / s.path, s.start) for s in segs]
            sealed = {media / s.path: s for s in segs if s.sealed}

            def reader(path: Path, sealed: dict[Path, SegmentRecord] = sealed) -> bytes | None:
                seg = sealed.get(path)
                return None if seg is None else open_sealed_segment(media, seg, household, keys)

            a = start
            while a < end and parts:
                b = min(end, a + max_file_seconds)
                name = f"{pkg.CLIPS_DIR}/{cam}-{_stamp(a)}.mp4"
                try:
                    info = compose_clip(parts, a, b, work / name, reader=reader)
                except NotFoundError:
                    a = b
                    continue
                made.append((cam, name, info.start, info.end, list(info.gaps)))
                if progress:
                    progress(f"remuxed {name}", (b - start) / (end - start))
                a = b
        if not made:
            raise NotFoundError(
                f"no footage of {', '.join(cams)} between {utc_text(start)} and {utc_text(end)}"
            )
        files: list[pkg.PackageFile] = []
        redaction: dict[str, object] | None = None
        for i, (cam, name, a, b, gaps) in enumerate(made):
            digest, size = sha256_file(work / name)
            gap_ms = tuple(
                (epoch_ms(g0, rounding="floor"), epoch_ms(g1, rounding="ceil")) for g0, g1 in gaps
            )
            common = {
                "camera": cam,
                "start_ms": epoch_ms(a, rounding="floor"),
                "end_ms": epoch_ms(b, rounding="ceil"),
                "gaps": gap_ms,
            }
            files.append(
                pkg.PackageFile(
                    name=name, sha256=digest.hex(), size=size, kind=pkg.FileKind.ORIGINAL,
                    released=not redact, **common,  # type: ignore[arg-type]
                )
            )  # fmt: skip
            if not redact:
                continue
            rname = name.removesuffix(".mp4") + "-redacted.mp4"
            cam_cfg = self._settings.cameras.get(cam)
            masks = [list(m) for m in cam_cfg.motion.masks] if cam_cfg is not None else []
            rinfo = redact_clip(
                work / name, work / rname, masks=masks, detect_every=detect_every, thorough=thorough
            )
            rdigest, rsize = sha256_file(work / rname)
            files.append(
                pkg.PackageFile(
                    name=rname, sha256=rdigest.hex(), size=rsize, kind=pkg.FileKind.REDACTED,
                    released=True, source=name, **common,  # type: ignore[arg-type]
                )
            )  # fmt: skip
            redaction = {
                "faces": "blurred: OpenCV Haar frontal and profile cascades, boxes carried "
                "between detections",
                "detect_every_frames": rinfo.detect_every,
                "hold_frames": rinfo.hold,
                "face_search": "every frame, full resolution"
                if rinfo.thorough
                else f"at most {DETECT_WIDTH} px wide, between full passes changed regions only",
                "privacy_masks": "the cameras' configured masks, filled black",
                "audio": "removed",
                "encoder": "libx264 (H.264), re-encoded",
            }
            if progress:
                progress(f"redacted {rname}", (i + 1) / len(made))
        readme_bytes = _readme(package_id, redact, withheld_sealed).encode("utf-8")
        (work / pkg.README).write_bytes(readme_bytes)
        self._audit.ensure_key()
        # The public key is only known once signed; sign a draft to learn it (cheap), then
        # the manifest that names it.
        _, public = self._audit.sign_manifest(b"{}")
        public_raw = bytes(public)
        manifest = pkg.Manifest(
            package_id=package_id,
            kind="request" if request_id else "export",
            request_id=request_id,
            legal_basis=legal_basis or OWNER_EXPORT_BASIS,
            reason=reason,
            household=household,
            cameras=tuple(cams),
            start_ms=epoch_ms(start, rounding="floor"),
            end_ms=epoch_ms(end, rounding="ceil"),
            files=tuple(files),
            readme_sha256=hashlib.sha256(readme_bytes).hexdigest(),
            readme_size=len(readme_bytes),
            software_version=__version__,
            created_ms=epoch_ms(now),
            public_key=public_raw.hex(),
            key_id=hashlib.sha256(public_raw).hexdigest(),
            clock_note=CLOCK_NOTE,
            redaction=redaction,
            withheld_sealed=tuple(withheld_sealed),
        )
        manifest_raw = pkg.manifest_bytes(manifest)
        signature, signer = self._audit.sign_manifest(manifest_raw)
        if bytes(signer) != public_raw:
            raise StorageError("the deployment key changed while the package was made; retry")
        (work / pkg.MANIFEST).write_bytes(manifest_raw)
        (work / pkg.SIGNATURE).write_bytes(signature)
        manifest_hash = hashlib.sha256(manifest_raw).digest()
        # Account for the export before any of it is placed where it can be taken.
        indexes: list[int] = []
        try:
            for cam in cams:
                appended = self._audit.append(
                    AuditTag.FOOTAGE_EXPORT_CREATE,
                    actor,
                    pkg.binding_reason(package_id, manifest_hash),
                    camera=cam,
                    start=start,
                    end=end,
                    request=package_id,
                    household=household,
                )
                indexes.append(appended.index)
        except DatabaseError as exc:
            raise AuditUnavailableError(
                f"no package made: the export cannot be written to the audit log ({exc})"
            ) from exc
        head = self._audit.sign_tree_head()
        proofs = []
        for idx in indexes:
            proof = self._audit.inclusion_proof(idx, head.tree_size)
            if proof.root_hash != head.root_hash:
                raise LogTamperedError(
                    f"the stored audit tree of size {head.tree_size} does not match its new "
                    "signed head; run `homewarden audit verify`",
                    first_bad_index=None,
                    bad_range=(0, head.tree_size),
                )
            proofs.append(AuditProof(idx, proof.leaf, proof.path))
        log_key = self._audit.public_keys()[head.key_id]
        record = AuditRecord(tuple(proofs), head, bytes(log_key))
        (work / pkg.AUDIT).write_bytes(record.to_bytes())
        released = [f.name for f in files if f.released]
        withheld = [f.name for f in files if not f.released]
        if withheld:
            held_part.mkdir()
            (held_part / pkg.CLIPS_DIR).mkdir()
            for name in withheld:
                os.replace(work / name, held_part / name)
        _write_zip(work, zip_part, package_id)
        _fsync_tree(work)
        try:
            os.replace(zip_part, zip_path)
            os.rename(work, folder)
            if withheld:
                os.rename(held_part, withheld_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                zip_path.unlink()
            raise StorageError(f"cannot place package {folder}: {exc.strerror}") from exc
        return PackageResult(
            folder=folder,
            zip_path=zip_path,
            package_id=package_id,
            manifest_sha256=manifest_hash.hex(),
            released=tuple(released),
            withheld=tuple(withheld),
            withheld_dir=withheld_dir if withheld else None,
            audit_indexes=tuple(indexes),
            tree_size=head.tree_size,
            withheld_sealed=tuple(withheld_sealed),
        )


def _write_zip(work: Path, zip_part: Path, package_id: str) -> None:
    """Zip ``work``'s files under ``<package_id>/`` (stored: video does not deflate)."""
    try:
        with zipfile.ZipFile(zip_part, "x", compression=zipfile.ZIP_STORED) as zf:
            for path in sorted(p for p in work.rglob("*") if p.is_file()):
                rel = path.relative_to(work).as_posix()
                zf.write(path, f"{package_id}/{rel}")
        with zip_part.open("rb") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        raise StorageError(f"cannot write {zip_part}: {exc.strerror or exc}") from exc


def _fsync_tree(root: Path) -> None:
    """Flush every file of ``root`` to disk before the package is renamed into place."""
    try:
        for path in root.rglob("*"):
            if path.is_file():
                with path.open("rb") as fh:
                    os.fsync(fh.fileno())
    except OSError as exc:
        raise StorageError(f"cannot flush {root}: {exc.strerror or exc}") from exc


def _readme(
    package_id: str, redacted: bool, withheld_sealed: Sequence[pkg.WithheldRange] = ()
) -> str:
    what = (
        "redacted copies of the footage (faces blurred, privacy masks filled, audio removed); "
        "the originals they were made from are withheld, but their SHA-256 hashes are listed"
        if redacted
        else "the original footage, remuxed from the recordings without re-encoding"
    )
    sealed = ""
    if withheld_sealed:
        listed = "".join(
            f"\n  {w.camera}: {pkg.iso_ms(w.start_ms)} to {pkg.iso_ms(w.end_ms)}"
            for w in withheld_sealed
        )
        sealed = (
            "\n\nIt holds only the footage of the scope recorded in the clear. The footage of "
            "these ranges is sealed at rest to keys only the household holds and is not in "
            "the package: the provider cannot produce this content; the owner holds the keys "
            f'(manifest.json, "withheld_sealed"; the clips show these spans as gaps):{listed}'
        )
    return f"""HomeWarden evidence package {package_id}

This package holds {what}.{sealed}

  manifest.json  what is here and why: scope, cameras, and for every file its SHA-256,
                 size, start and end time (UTC) and whether it was released
  manifest.sig   Ed25519 signature over the exact bytes of manifest.json
  audit.json     the audit log entries recording this export, with Merkle inclusion proofs
                 (RFC 9162) and the signed tree head they verify against
  clips/         the video files (MP4, H.264)

How to verify (offline):

  homewarden verify {package_id}.zip --public-key DEPLOYMENT_KEY

DEPLOYMENT_KEY is the deployment's public key as you obtained it from its operator by a
separate channel (its hex, or the operator's log_public_keys.json). Without --public-key the
check uses the key embedded in the package and can only say the package is intact and
self-consistent, not who made it.

By hand: check that the key id in manifest.json ("signature") is the one you expect; check
manifest.sig over manifest.json with that Ed25519 key; compare each file's SHA-256 (for
example `sha256sum clips/*`) and size with manifest.json; check that audit.json's entries
name this package and the SHA-256 of manifest.json, and that their inclusion proofs lead to
the root of its signed tree head.
"""
