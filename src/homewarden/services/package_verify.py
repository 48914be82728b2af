"""Verify an evidence package offline: read a folder or a ``.zip``, then check it.

The reading is here (files, zip entries, the public key file); every check is
:func:`homewarden.domain.package.verify_package`. A zip holds one top folder (the package id)
and nothing else; an entry that is absolute, climbs (``..``), repeats a name, or lies outside
that folder makes the package fail, never a file written anywhere (nothing is extracted).

Public keys (``--public-key FILE``), any of:

* 64 hex digits (the raw 32-byte Ed25519 public key), or the raw 32 bytes;
* JSON ``{"public_key": "<hex>"}``;
* the deployment's ``log_public_keys.json`` (``{"log_public_keys": [{"public_key": ...}]}``),
  every key of it, current and retired, trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homewarden.crypto import merkle
from homewarden.crypto.signing import (
    LogPublicKey,
    SignedTreeHead,
    key_id,
    log_public_key_from_bytes,
    verify_manifest,
    verify_tree_head,
)
from homewarden.domain import package as pkg
from homewarden.domain.audit import AuditEntry
from homewarden.errors import (
    InvalidProofError,
    InvalidRequestError,
    InvalidSignatureError,
    PackageTamperedError,
    VerificationError,
)

_CHUNK = 1 << 20
#: Largest manifest, signature or audit record read into memory (bytes).
_MAX_SMALL = 64 << 20


def load_public_keys(path: Path) -> dict[bytes, LogPublicKey]:
    """The trusted public keys in ``path`` by key id (formats in the module docstring).

    Raises:
        InvalidRequestError: unreadable, or no public key in it.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    texts: list[str] = []
    if len(raw) == 32:
        keys = [raw]
    else:
        stripped = raw.strip()
        try:
            data: Any = json.loads(stripped)
        except ValueError:
            data = stripped.decode("ascii", "replace")
        if isinstance(data, dict) and isinstance(data.get("log_public_keys"), list):
            texts = [
                str(k.get("public_key", "")) for k in data["log_public_keys"] if isinstance(k, dict)
            ]
        elif isinstance(data, dict) and "public_key" in data:
            texts = [str(data["public_key"])]
        elif isinstance(data, str):
            texts = [data]
        try:
            keys = [bytes.fromhex(t) for t in texts]
        except ValueError as exc:
            raise InvalidRequestError(f"{path}: a public key is not hex: {exc}") from exc
    out: dict[bytes, LogPublicKey] = {}
    for k in keys:
        try:
            public = log_public_key_from_bytes(k)
        except VerificationError as exc:
            raise InvalidRequestError(f"{path}: {exc}") from exc
        out[key_id(public)] = public
    if not out:
        raise InvalidRequestError(f"{path} holds no public key")
    return out


def verify_package_path(
    path: Path, trusted: dict[bytes, LogPublicKey] | None = None
) -> PackageReport:
    """Verify the package folder or ``.zip`` at ``path``.

    Raises:
        InvalidRequestError: ``path`` is neither a folder nor a zip file.
        PackageTamperedError, InvalidSignatureError, InvalidProofError: it does not verify
            (see :func:`homewarden.domain.package.verify_package`).
    """
    if path.is_dir():
        return _verify_folder(path, trusted)
    if path.is_file() and zipfile.is_zipfile(path):
        return _verify_zip(path, trusted)
    if path.is_file():
        raise PackageTamperedError(f"{path} is not a zip file (nor a package folder)")
    raise InvalidRequestError(f"no package at {path}")


def _hash_stream(chunks: Iterator[bytes]) -> pkg.FileFacts:
    h = hashlib.sha256()
    size = 0
    for c in chunks:
        h.update(c)
        size += len(c)
    return pkg.FileFacts(h.digest(), size)


def _read_chunks(read: Any) -> Iterator[bytes]:
    while chunk := read(_CHUNK):
        yield chunk


def _verify_folder(root: Path, trusted: dict[bytes, LogPublicKey] | None) -> PackageReport:
    listing: dict[str, pkg.FileFacts] = {}
    small: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise PackageTamperedError(f"{rel} is not a regular file", name=rel)
        if path.is_dir():
            continue
        try:
            if rel in (pkg.MANIFEST, pkg.SIGNATURE, pkg.AUDIT):
                data = path.read_bytes()[: _MAX_SMALL + 1]
                small[rel] = data
                listing[rel] = pkg.FileFacts(hashlib.sha256(data).digest(), len(data))
            else:
                with path.open("rb") as fh:
                    listing[rel] = _hash_stream(_read_chunks(fh.read))
        except OSError as exc:
            raise PackageTamperedError(f"cannot read {rel}: {exc.strerror}", name=rel) from exc
    return _check(listing, small, trusted)


def _verify_zip(path: Path, trusted: dict[bytes, LogPublicKey] | None) -> PackageReport:
    listing: dict[str, pkg.FileFacts] = {}
    small: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            tops = {i.filename.split("/", 1)[0] for i in infos}
            if len(tops) != 1:
                raise PackageTamperedError(
                    f"{path.name} must hold one package folder, it holds {sorted(tops)}"
                )
            top = tops.pop()
            for info in infos:
                name = info.filename
                rel = name[len(top) + 1 :]
                if info.is_dir():
                    continue
                norm = posixpath.normpath(rel)
                if not rel or norm != rel or rel.startswith(("/", "../")) or "\\" in rel:
                    raise PackageTamperedError(f"zip entry {name!r} is not a plain path", name=name)
                if rel in listing:
                    raise PackageTamperedError(f"zip holds {rel} twice", name=rel)
                try:
                    with zf.open(info) as fh:
                        if rel in (pkg.MANIFEST, pkg.SIGNATURE, pkg.AUDIT):
                            data = fh.read(_MAX_SMALL + 1)
                            small[rel] = data
                            listing[rel] = pkg.FileFacts(hashlib.sha256(data).digest(), len(data))
                        else:
                            listing[rel] = _hash_stream(_read_chunks(fh.read))
                except zipfile.BadZipFile as exc:
                    # The zip's own CRC-32 catches a flipped bit before the SHA-256 does.
                    raise PackageTamperedError(
                        f"{rel} is damaged in the zip ({exc}): its bytes changed", name=rel
                    ) from exc
    except zipfile.BadZipFile as exc:
        # A CRC mismatch (a flipped bit) surfaces here while an entry is read.
        raise PackageTamperedError(f"{path.name}: {exc}") from exc
    except OSError as exc:
        raise PackageTamperedError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _check(listing, small, trusted)


def _check(
    listing: dict[str, pkg.FileFacts],
    small: dict[str, bytes],
    trusted: dict[bytes, LogPublicKey] | None,
) -> PackageReport:
    return verify_package(
        listing,
        small.get(pkg.MANIFEST, b""),
        small.get(pkg.SIGNATURE, b""),
        small.get(pkg.AUDIT, b""),
        trusted,
    )


# ------------------------------------------------------------------------------------------
# audit.json (in services: it needs the crypto package, which domain may not import)


@dataclass(frozen=True, slots=True)
class AuditProof:
    """One audit entry of the export: ``leaf`` (the canonical entry bytes), its ``index`` and
    the RFC 9162 inclusion ``path`` (leaf side first) in the tree of the record's head."""

    index: int
    leaf: bytes
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """audit.json: the export's entries with proofs, the signed ``tree_head`` they verify
    against, and the log ``public_key`` that signed it (raw 32 bytes)."""

    entries: tuple[AuditProof, ...]
    tree_head: SignedTreeHead
    public_key: bytes

    def to_bytes(self) -> bytes:
        """audit.json's bytes (:func:`render_json`)."""
        return pkg.render_json(
            {
                "format": pkg.AUDIT_FORMAT,
                "entries": [
                    {
                        "index": e.index,
                        "leaf": base64.b64encode(e.leaf).decode("ascii"),
                        "entry": json.loads(e.leaf),
                        "leaf_hash": merkle.leaf_hash(e.leaf).hex(),
                        "inclusion_path": [h.hex() for h in e.path],
                    }
                    for e in self.entries
                ],
                "tree_head": self.tree_head.to_json(),
                "log_public_key": {
                    "public_key": self.public_key.hex(),
                    "key_id": hashlib.sha256(self.public_key).hexdigest(),
                },
            }
        )


def parse_audit(data: bytes) -> AuditRecord:
    """Parse audit.json. The readable ``entry`` must be the parsed ``leaf``; ``leaf_hash`` is
    checked by :func:`verify_package`.

    Raises:
        PackageTamperedError: malformed.
    """
    obj = pkg.json_object(pkg.load_json(data, pkg.AUDIT), "the audit record")
    try:
        if obj.get("format") != pkg.AUDIT_FORMAT:
            raise ValueError(f"format is not {pkg.AUDIT_FORMAT!r}")
        try:
            head = SignedTreeHead.from_json(obj["tree_head"])
        except VerificationError as exc:
            raise ValueError(str(exc)) from exc
        entries = []
        for raw in pkg.json_list(obj["entries"]):
            e = pkg.json_object(raw, "an audit entry")
            leaf = base64.b64decode(pkg.json_str(e["leaf"]), validate=True)
            if json.loads(leaf) != e["entry"]:
                raise ValueError(f"entry {e['index']}: readable entry differs from its leaf")
            path = tuple(bytes.fromhex(pkg.json_str(h)) for h in pkg.json_list(e["inclusion_path"]))
            entries.append(AuditProof(pkg.json_int(e["index"]), leaf, path))
            if bytes.fromhex(pkg.json_str(e["leaf_hash"])) != merkle.leaf_hash(leaf):
                raise InvalidProofError(
                    f"audit entry {e['index']}: the leaf does not hash to its stated leaf hash"
                )
        public = bytes.fromhex(
            pkg.json_str(pkg.json_object(obj["log_public_key"], "log_public_key")["public_key"])
        )
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        raise PackageTamperedError(f"{pkg.AUDIT} is malformed: {exc}", name=pkg.AUDIT) from exc
    return AuditRecord(tuple(entries), head, public)


# ------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True, slots=True)
class PackageReport:
    """A package that verified: its ``manifest``, ``manifest_sha256`` (hex), whether the
    signing key was ``trusted`` (matched a key the verifier supplied) or self-asserted, the
    ``key_id`` (hex), ``files_checked``, and the audit entries' ``audit_indexes`` under the
    signed ``tree_head``."""

    manifest: pkg.Manifest
    manifest_sha256: str
    trusted: bool
    key_id: str
    files_checked: int
    audit_indexes: tuple[int, ...]
    tree_head: SignedTreeHead

    def to_json(self) -> dict[str, Any]:
        """JSON summary."""
        return {
            "ok": True,
            "package_id": self.manifest.package_id,
            "manifest_sha256": self.manifest_sha256,
            "signature": "trusted key" if self.trusted else "self-asserted (embedded key)",
            "key_id": self.key_id,
            "files_checked": self.files_checked,
            "released": [f.name for f in self.manifest.released],
            "withheld": [f.name for f in self.manifest.files if not f.released],
            "audit_indexes": list(self.audit_indexes),
            "tree_head": self.tree_head.to_json(),
        }


def verify_package(
    listing: Mapping[str, pkg.FileFacts],
    manifest: bytes,
    signature: bytes,
    audit: bytes,
    trusted: Mapping[bytes, LogPublicKey] | None = None,
) -> PackageReport:
    """Verify a package from what was read of it.

    Args:
        listing: every file of the package by its path inside it (``/``-separated), with its
            measured SHA-256 and size (the fixed files included).
        manifest, signature, audit: the bytes of manifest.json, manifest.sig, audit.json.
        trusted: the deployment's public keys by key id, as the verifier obtained them; None
            to check with the package's embedded keys (self-asserted).

    Steps, each raising at its first failure: the manifest parses in its one spelling; the
    signature verifies over its exact bytes with its key (and that key is trusted, when keys
    are given); the files are exactly the released ones, pkg.README and the fixed files; each has
    its listed size and SHA-256; the tree head's signature verifies (trusted key when given);
    every audit entry hashes to its leaf hash, is the canonical entry of its index, and its
    inclusion proof reaches the head's root; the entries are ``footage:export:create`` of
    this package id and manifest hash, one per camera of the scope.

    Raises:
        PackageTamperedError, InvalidSignatureError, InvalidProofError: see the module
            docstring; the message names the file or entry.
    """
    for name in (pkg.MANIFEST, pkg.SIGNATURE, pkg.AUDIT):
        if name not in listing:
            raise PackageTamperedError(f"the package has no {name}", name=name)
    parsed = pkg.parse_manifest(manifest)
    manifest_hash = hashlib.sha256(manifest).digest()
    # Signature.
    try:
        embedded = log_public_key_from_bytes(bytes.fromhex(parsed.public_key))
    except ValueError as exc:
        raise PackageTamperedError(
            f"{pkg.MANIFEST}: bad public key: {exc}", name=pkg.MANIFEST
        ) from exc
    kid = key_id(embedded)
    if kid.hex() != parsed.key_id:
        raise InvalidSignatureError(f"{pkg.MANIFEST}: key id {parsed.key_id} is not its key's")
    if trusted is not None:
        pinned = trusted.get(kid)
        if pinned is None or bytes(pinned) != bytes(embedded):
            raise InvalidSignatureError(
                f"{pkg.MANIFEST} is signed by key {kid.hex()[:16]}, which is not the public key "
                "you trust for this deployment"
            )
    try:
        verify_manifest(manifest, signature, embedded)
    except InvalidSignatureError as exc:
        raise InvalidSignatureError(
            f"{pkg.SIGNATURE} does not verify over {pkg.MANIFEST}: the manifest was edited or the "
            f"signature replaced ({exc})"
        ) from exc
    expected_count = pkg.check_files(listing, parsed)
    # Audit record.
    record = parse_audit(audit)
    head = record.tree_head
    log_key = log_public_key_from_bytes(record.public_key)
    keys: Mapping[bytes, LogPublicKey] = (
        trusted if trusted is not None else {key_id(log_key): log_key}
    )
    try:
        verify_tree_head(head, keys)
    except InvalidSignatureError as exc:
        raise InvalidSignatureError(f"{pkg.AUDIT}: {exc}") from exc
    seen: list[str] = []
    for e in record.entries:
        try:
            entry = AuditEntry.from_leaf(e.leaf)
        except VerificationError as exc:
            raise PackageTamperedError(
                f"{pkg.AUDIT} entry {e.index}: {exc}", name=pkg.AUDIT
            ) from exc
        if entry.index != e.index:
            raise PackageTamperedError(
                f"{pkg.AUDIT}: entry at index {e.index} states index {entry.index}", name=pkg.AUDIT
            )
        try:
            merkle.verify_inclusion(
                e.index, head.tree_size, merkle.leaf_hash(e.leaf), e.path, head.root_hash
            )
        except InvalidProofError as exc:
            raise InvalidProofError(
                f"{pkg.AUDIT}: the inclusion proof of entry {e.index} does not match the signed "
                f"tree head of size {head.tree_size} ({exc})"
            ) from exc
        pkg.check_binding(entry, parsed, manifest_hash)
        if entry.subject.camera is not None:
            seen.append(entry.subject.camera)
    if sorted(seen) != sorted(parsed.cameras):
        raise PackageTamperedError(
            f"{pkg.AUDIT} holds export entries for cameras {sorted(seen)}, the scope is "
            f"{sorted(parsed.cameras)}",
            name=pkg.AUDIT,
        )
    return PackageReport(
        manifest=parsed,
        manifest_sha256=manifest_hash.hex(),
        trusted=trusted is not None,
        key_id=kid.hex(),
        files_checked=expected_count,
        audit_indexes=tuple(e.index for e in record.entries),
        tree_head=head,
    )
