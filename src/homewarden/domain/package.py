"""Evidence packages: the signed manifest, the audit record, and their verification. Pure.

DESIGN.md flow 6, issue 5 "Evidence package". A package is a folder (and a ``.zip`` of it)::

    <package id>/
      manifest.json      what the package holds and why (below); signed
      manifest.sig       64-byte Ed25519 signature over the exact bytes of manifest.json
      audit.json         the export's audit entries, their RFC 9162 inclusion proofs and the
                         signed tree head they verify against
      README.txt         how to verify (its SHA-256 is in the manifest)
      clips/<file>.mp4   the released clips

The manifest (schema ``format`` :data:`FORMAT`) is JSON with sorted keys, two-space indent and
a final newline, integers only (times are UTC epoch milliseconds, with ISO 8601 text beside
them for people), so it has exactly one spelling (:func:`manifest_bytes`); a verifier insists
on it, and on no duplicate keys, so every reader sees the same manifest the signature covers.

Every file the export made is listed with its SHA-256 and size - the originals remuxed from
the recorded segments and, when redacted, the redacted copies - and ``released`` says which
are in the package. Unreleased files (the originals behind redacted copies) are withheld but
hashed, so the deployment can later prove which original a redacted copy came from.

Withheld sealed footage. A package released in part because some of the scope is sealed to
keys only the household holds (issue 6: a search warrant over footage recorded partly before
sealing was turned on) lists those ranges under ``withheld_sealed`` (:class:`WithheldRange`:
camera, start and end, why); the clips around them show the same spans as gaps. The key is
written only when there is such a range, so manifests made before it existed keep their one
spelling.

Binding. The manifest cannot name its own audit entry (the entry names the manifest), so each
audit entry of the export (``footage:export:create``, one per camera) carries the package id
as its ``request`` and the manifest's SHA-256 in its reason (:func:`binding_reason`); audit.json
proves those entries are in the log under a signed head.

Trust. The signature and the tree head are checked with the public key embedded in the package
unless the verifier is given the deployment's public key(s): only then is the package's origin
established; otherwise the report says the signature is self-asserted.

Verifiers raise :class:`~homewarden.errors.VerificationError` subclasses - never return False:
:class:`~homewarden.errors.InvalidSignatureError` (manifest signature, tree head signature,
untrusted key), :class:`~homewarden.errors.PackageTamperedError` (a file changed, missing or
extra; malformed manifest or audit record; entries about another package),
:class:`~homewarden.errors.InvalidProofError` (an entry's leaf hash or inclusion proof does not
match the signed head).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from homewarden.domain.audit import AuditEntry, AuditTag
from homewarden.errors import PackageTamperedError

#: Schema of manifest.json.
FORMAT = "homewarden-evidence-package/v1"
#: Schema of audit.json.
AUDIT_FORMAT = "homewarden-evidence-audit/v1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
AUDIT = "audit.json"
README = "README.txt"
#: Files every package holds besides its clips.
FIXED_FILES = (MANIFEST, SIGNATURE, AUDIT, README)
#: Folder of the clips inside a package.
CLIPS_DIR = "clips"
#: A clip's name inside a package: ``clips/<letters, digits, - _ .>.mp4``, no other path.
_CLIP_NAME = re.compile(r"clips/[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.mp4")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_BINDING = re.compile(r"evidence package (\S+): manifest sha256 ([0-9a-f]{64})")


class FileKind(StrEnum):
    """An original clip remuxed from the segments, or a redacted copy of one."""

    ORIGINAL = "original"
    REDACTED = "redacted"


@dataclass(frozen=True, slots=True)
class FileFacts:
    """What a verifier measured of one file: its SHA-256 (32 bytes) and size in bytes."""

    sha256: bytes
    size: int


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One clip the export made.

    ``name``: path inside the package (``clips/...mp4``); ``sha256``: 64 hex digits;
    ``size``: bytes; ``camera``; ``start_ms``/``end_ms``: UTC epoch ms the clip presents;
    ``clock_offset_ms``: the recorder's clock offset from UTC, ms (``clock_measured`` says
    whether it was measured); ``kind``; ``released``: whether the file is in the package;
    ``source``: for a redacted copy, the name of its original; ``gaps``: ``[start_ms,
    end_ms]`` spans without footage inside the clip.
    """

    name: str
    sha256: str
    size: int
    camera: str
    start_ms: int
    end_ms: int
    kind: FileKind
    released: bool
    clock_offset_ms: int = 0
    clock_measured: bool = False
    source: str | None = None
    gaps: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (times also as ISO 8601 text)."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "bytes": self.size,
            "camera": self.camera,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "start": iso_ms(self.start_ms),
            "end": iso_ms(self.end_ms),
            "recorder_clock_offset_ms": self.clock_offset_ms,
            "recorder_clock_offset_measured": self.clock_measured,
            "kind": str(self.kind),
            "released": self.released,
            "source": self.source,
            "gaps_ms": [list(g) for g in self.gaps],
        }

    @classmethod
    def from_json(cls, data: Any) -> PackageFile:
        """Parse :meth:`to_json`'s form.

        Raises:
            PackageTamperedError: malformed.
        """
        obj = json_object(data, "a manifest file entry")
        try:
            out = cls(
                name=json_str(obj["name"]),
                sha256=json_str(obj["sha256"]),
                size=json_int(obj["bytes"]),
                camera=json_str(obj["camera"]),
                start_ms=json_int(obj["start_ms"]),
                end_ms=json_int(obj["end_ms"]),
                kind=FileKind(obj["kind"]),
                released=_bool(obj["released"]),
                clock_offset_ms=json_int(obj["recorder_clock_offset_ms"], signed=True),
                clock_measured=_bool(obj["recorder_clock_offset_measured"]),
                source=None if obj["source"] is None else json_str(obj["source"]),
                gaps=tuple(_gap(g) for g in json_list(obj["gaps_ms"])),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise PackageTamperedError(
                f"manifest file entry malformed: {exc}", name=MANIFEST
            ) from exc
        if out.to_json() != obj:
            raise PackageTamperedError(
                f"manifest entry of {out.name} has unknown or inconsistent fields", name=MANIFEST
            )
        if not _CLIP_NAME.fullmatch(out.name):
            raise PackageTamperedError(
                f"manifest lists a bad file name {out.name!r}", name=MANIFEST
            )
        if not _HEX64.fullmatch(out.sha256):
            raise PackageTamperedError(f"bad SHA-256 for {out.name}", name=MANIFEST)
        return out


#: Why a :class:`WithheldRange` was not produced.
WITHHELD_SEALED_WHY = (
    "sealed at rest to keys only the household holds: the provider cannot produce this "
    "content; the owner holds the keys"
)


@dataclass(frozen=True, slots=True)
class WithheldRange:
    """Footage of ``camera`` over ``[start_ms, end_ms]`` (UTC epoch ms) in the scope but not
    in the package, as it is sealed to keys only the household holds (``why``)."""

    camera: str
    start_ms: int
    end_ms: int
    why: str = WITHHELD_SEALED_WHY

    def to_json(self) -> dict[str, Any]:
        """JSON form (times also as ISO 8601 text)."""
        return {
            "camera": self.camera,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "start": iso_ms(self.start_ms),
            "end": iso_ms(self.end_ms),
            "why": self.why,
        }

    @classmethod
    def from_json(cls, data: Any) -> WithheldRange:
        """Parse :meth:`to_json`'s form (its consistency is checked with the manifest's
        canonical spelling).

        Raises:
            PackageTamperedError: malformed.
        """
        obj = json_object(data, "a withheld range")
        try:
            return cls(
                camera=json_str(obj["camera"]),
                start_ms=json_int(obj["start_ms"]),
                end_ms=json_int(obj["end_ms"]),
                why=json_str(obj["why"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise PackageTamperedError(f"withheld range malformed: {exc}", name=MANIFEST) from exc


@dataclass(frozen=True, slots=True)
class Manifest:
    """The signed statement of a package.

    ``package_id``: the request id, or the export id of an owner's own export; ``kind``:
    ``request`` or ``export``; ``request_id``: the disclosure request (None for an export);
    ``legal_basis``: text; ``reason``: why, as given; ``household``, ``cameras``,
    ``start_ms``/``end_ms``: the scope; ``files``; ``readme_sha256``/``readme_size``;
    ``software_version``; ``created_ms``; ``public_key``: the signing key (32 bytes raw, hex)
    and ``key_id`` (its SHA-256, hex); ``clock_note``: what the recorder's clock offset means;
    ``withheld_sealed``: ranges of the scope not produced as they are sealed to keys only the
    household holds (written only when there are any).
    """

    package_id: str
    kind: str
    request_id: str | None
    legal_basis: str
    reason: str
    household: str
    cameras: tuple[str, ...]
    start_ms: int
    end_ms: int
    files: tuple[PackageFile, ...]
    readme_sha256: str
    readme_size: int
    software_version: str
    created_ms: int
    public_key: str
    key_id: str
    clock_note: str
    redaction: Mapping[str, Any] | None = field(default=None)
    withheld_sealed: tuple[WithheldRange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form (schema in the module docstring)."""
        out = {
            "format": FORMAT,
            "package_id": self.package_id,
            "kind": self.kind,
            "request_id": self.request_id,
            "legal_basis": self.legal_basis,
            "reason": self.reason,
            "scope": {
                "household": self.household,
                "cameras": list(self.cameras),
                "start_ms": self.start_ms,
                "end_ms": self.end_ms,
                "start": iso_ms(self.start_ms),
                "end": iso_ms(self.end_ms),
            },
            "files": [f.to_json() for f in self.files],
            "readme": {"name": README, "sha256": self.readme_sha256, "bytes": self.readme_size},
            "recorder_clock": self.clock_note,
            "redaction": None if self.redaction is None else dict(self.redaction),
            "software": {"name": "homewarden", "version": self.software_version},
            "created_ms": self.created_ms,
            "created": iso_ms(self.created_ms),
            "signature": {
                "algorithm": "Ed25519",
                "file": SIGNATURE,
                "key_id": self.key_id,
                "public_key": self.public_key,
                "covers": f"the exact bytes of {MANIFEST}",
            },
            "audit": {"file": AUDIT, "action": str(AuditTag.FOOTAGE_EXPORT_CREATE)},
        }
        if self.withheld_sealed:
            out["withheld_sealed"] = [w.to_json() for w in self.withheld_sealed]
        return out

    @property
    def released(self) -> tuple[PackageFile, ...]:
        """The files in the package."""
        return tuple(f for f in self.files if f.released)


def manifest_bytes(manifest: Manifest) -> bytes:
    """The one spelling of ``manifest``: sorted keys, 2-space indent, UTF-8, final newline.

    Raises:
        InvalidRequestError: a value JSON cannot hold or a float (times are integer ms).
    """
    return render_json(manifest.to_json())


def render_json(value: Any) -> bytes:
    """Sorted-key, 2-space-indented UTF-8 JSON with a final newline; integers only.

    Raises:
        PackageTamperedError: a float, NaN or a value JSON cannot hold.
    """
    _no_floats(value)
    try:
        text = json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PackageTamperedError(f"not representable as package JSON: {exc}") from exc
    return (text + "\n").encode("utf-8")


def parse_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes, insisting on :func:`manifest_bytes`'s spelling.

    Raises:
        PackageTamperedError: not UTF-8 JSON of a v1 manifest, duplicate keys, unknown fields,
            or not in its one spelling.
    """
    obj = json_object(load_json(data, MANIFEST), "the manifest")
    try:
        if obj.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        scope = json_object(obj["scope"], "scope")
        readme = json_object(obj["readme"], "readme")
        software = json_object(obj["software"], "software")
        sig = json_object(obj["signature"], "signature")
        redaction = obj["redaction"]
        manifest = Manifest(
            package_id=json_str(obj["package_id"]),
            kind=json_str(obj["kind"]),
            request_id=None if obj["request_id"] is None else json_str(obj["request_id"]),
            legal_basis=json_str(obj["legal_basis"]),
            reason=json_str(obj["reason"]),
            household=json_str(scope["household"]),
            cameras=tuple(json_str(c) for c in json_list(scope["cameras"])),
            start_ms=json_int(scope["start_ms"]),
            end_ms=json_int(scope["end_ms"]),
            files=tuple(PackageFile.from_json(f) for f in json_list(obj["files"])),
            readme_sha256=json_str(readme["sha256"]),
            readme_size=json_int(readme["bytes"]),
            software_version=json_str(software["version"]),
            created_ms=json_int(obj["created_ms"]),
            public_key=json_str(sig["public_key"]),
            key_id=json_str(sig["key_id"]),
            clock_note=json_str(obj["recorder_clock"]),
            redaction=None if redaction is None else json_object(redaction, "redaction"),
            withheld_sealed=tuple(
                WithheldRange.from_json(w) for w in json_list(obj.get("withheld_sealed", []))
            ),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise PackageTamperedError(f"{MANIFEST} is malformed: {exc}", name=MANIFEST) from exc
    if manifest_bytes(manifest) != data:
        raise PackageTamperedError(
            f"{MANIFEST} has unknown fields or is not in its canonical spelling", name=MANIFEST
        )
    names = [f.name for f in manifest.files]
    if len(set(names)) != len(names):
        raise PackageTamperedError(f"{MANIFEST} lists a file twice", name=MANIFEST)
    return manifest


def binding_reason(package_id: str, manifest_sha256: bytes) -> str:
    """The reason of a package's audit entries: names the package and its manifest's hash."""
    return f"evidence package {package_id}: manifest sha256 {manifest_sha256.hex()}"


def check_files(listing: Mapping[str, FileFacts], manifest: Manifest) -> int:
    """Check that the package's files are exactly the released ones, README.txt and the fixed
    files, each with its listed size and SHA-256; returns how many listed files were checked.

    Raises:
        PackageTamperedError: a file missing, extra, of another size or another hash (named).
    """
    parsed = manifest
    expected: dict[str, tuple[str, int]] = {f.name: (f.sha256, f.size) for f in parsed.released}
    expected[README] = (parsed.readme_sha256, parsed.readme_size)
    wanted = set(expected) | {MANIFEST, SIGNATURE, AUDIT}
    missing = sorted(wanted - set(listing))
    if missing:
        raise PackageTamperedError(
            f"file {missing[0]} listed in the manifest is missing", name=missing[0]
        )
    extra = sorted(set(listing) - wanted)
    if extra:
        raise PackageTamperedError(
            f"file {extra[0]} is in the package but not in the manifest", name=extra[0]
        )
    for name, (sha, size) in sorted(expected.items()):
        facts = listing[name]
        if facts.size != size:
            raise PackageTamperedError(
                f"{name} is {facts.size} bytes, the manifest says {size}", name=name
            )
        if facts.sha256.hex() != sha:
            raise PackageTamperedError(
                f"{name} does not match its SHA-256 in the manifest (its bytes changed)",
                name=name,
            )
    return len(expected)


def check_binding(entry: AuditEntry, manifest: Manifest, manifest_hash: bytes) -> None:
    """Check that audit ``entry`` records the export of this package: a
    ``footage:export:create`` whose request is the package id and whose reason names
    ``manifest_hash`` (:func:`binding_reason`), in the manifest's household.

    Raises:
        PackageTamperedError: it is about something else.
    """
    where = f"{AUDIT} entry {entry.index}"
    if entry.action is not AuditTag.FOOTAGE_EXPORT_CREATE:
        raise PackageTamperedError(f"{where} is a {entry.action}, not an export", name=AUDIT)
    found = _BINDING.fullmatch(entry.reason)
    if (
        found is None
        or entry.subject.request != manifest.package_id
        or found.group(1) != manifest.package_id
    ):
        raise PackageTamperedError(f"{where} is about another package", name=AUDIT)
    if found.group(2) != manifest_hash.hex():
        raise PackageTamperedError(
            f"{where} names manifest sha256 {found.group(2)[:16]}..., not this manifest's "
            f"{manifest_hash.hex()[:16]}...",
            name=AUDIT,
        )
    if entry.subject.household != manifest.household:
        raise PackageTamperedError(f"{where} is about another household", name=AUDIT)


# ------------------------------------------------------------------------------------------
# helpers


def iso_ms(ms: int) -> str:
    """UTC epoch ms as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (proleptic Gregorian, no leap seconds)."""
    days, rem = divmod(ms, 86_400_000)
    y, m, d = _civil(days)
    hh, rem = divmod(rem, 3_600_000)
    mm, rem = divmod(rem, 60_000)
    ss, milli = divmod(rem, 1000)
    return f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}.{milli:03d}Z"


def _civil(days: int) -> tuple[int, int, int]:
    """Days since 1970-01-01 to (year, month, day): H. Hinnant's ``civil_from_days``."""
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + 1 if m <= 2 else y), m, d


def load_json(data: bytes, name: str) -> Any:
    def no_dupes(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_dupes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PackageTamperedError(f"{name} is not valid JSON: {exc}", name=name) from exc


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageTamperedError(f"{what} is not a JSON object")
    return value


def json_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def json_str(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string, got {value!r}")
    return value


def json_int(value: Any, *, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and not signed):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _gap(value: Any) -> tuple[int, int]:
    pair = json_list(value)
    if len(pair) != 2:
        raise ValueError("a gap is [start_ms, end_ms]")
    return json_int(pair[0]), json_int(pair[1])


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise PackageTamperedError(f"package JSON holds integers only, not {value!r}")
    if isinstance(value, dict):
        for v in value.values():
            _no_floats(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _no_floats(v)
