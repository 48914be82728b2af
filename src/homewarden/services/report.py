"""The transparency report and the public log export it is checked against.

:meth:`TransparencyReport.build` counts the requests filed in a time range from the audit
log (rules: :mod:`homewarden.domain.report`) at a signed tree head, and returns the report
with that head and the index range it read. :meth:`TransparencyReport.export_public` writes
the log as anyone may hold it: request entries (the counted kinds) with their leaves, every
other entry as its RFC 9162 leaf hash only, so the tree still hashes to the signed root while
who watched which camera stays private. :func:`verify_report` recomputes the root from an
export, checks the head's signature, recounts, and names the first figure that differs.

Public export (JSON Lines, UTF-8): a header line ``{"format": "homewarden-public-log",
"v": 1, "tree_head": {...}, "public_keys": ["<hex>", ...]}`` then one line per entry in index
order: ``{"i": N, "leaf": "<canonical entry JSON>"}`` or ``{"i": N, "leaf_hash": "<hex>"}``.

Requests the public may not hear of yet (a non-disclosure order in force, a delayed owner
notice) are exported as leaf hashes and counted only once the owner has been told; the
report's ``notices_pending`` therefore counts only what is already public.

What an export cannot prove: that an entry published as a hash is not a request entry. The
tree binds contents, not their kinds; a deployment hiding a request entry behind its hash
would go unnoticed by the recount (the owner, who is told of every request, is the check).
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import html
import io
import json
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any

from homewarden.crypto.merkle import CompactRange, leaf_hash
from homewarden.crypto.signing import (
    LogPublicKey,
    SignedTreeHead,
    key_id,
    log_public_key_from_bytes,
    verify_tree_head,
)
from homewarden.domain import report as rules
from homewarden.domain.audit import epoch_ms
from homewarden.errors import (
    InvalidRequestError,
    LogTamperedError,
    VerificationError,
)
from homewarden.services.audit import AuditLog

#: Format name in a public export's header line.
EXPORT_FORMAT = "homewarden-public-log"


def half_year(label: str) -> tuple[float, float]:
    """``"2026H1"`` / ``"2026H2"`` as ``(start, end)`` UTC epoch seconds (Jan 1 - Jul 1,
    Jul 1 - Jan 1 of the next year).

    Raises:
        InvalidRequestError: not ``YYYYH1`` or ``YYYYH2``.
    """
    text = label.strip().upper()
    if len(text) != 6 or not text[:4].isdigit() or text[4:] not in ("H1", "H2"):
        raise InvalidRequestError(f"a half-year is like 2026H2, not {label!r}")
    year = int(text[:4])
    if text[4:] == "H1":
        return float(calendar.timegm((year, 1, 1, 0, 0, 0))), float(
            calendar.timegm((year, 7, 1, 0, 0, 0))
        )
    return float(calendar.timegm((year, 7, 1, 0, 0, 0))), float(
        calendar.timegm((year + 1, 1, 1, 0, 0, 0))
    )


def current_half_year(now: float) -> str:
    """The half-year label holding ``now`` (UTC epoch seconds), e.g. ``2026H2``."""
    t = time.gmtime(now)
    return f"{t.tm_year}H{1 if t.tm_mon <= 6 else 2}"


class TransparencyReport:
    """Reports and public exports over one :class:`AuditLog`.

    ``withheld`` returns the ids of requests the public may not hear of yet (see
    :func:`homewarden.services.disclosure.withheld_requests`): their entries are exported as
    leaf hashes and left out of the counts, consistently, so a report still recounts from
    its export.
    """

    def __init__(
        self, audit: AuditLog, withheld: Callable[[], Collection[str]] | None = None
    ) -> None:
        self._audit = audit
        self._withheld = withheld

    def head(self, *, sign_if_grown: bool = True) -> SignedTreeHead:
        """The newest signed tree head; signs one when the log has none, or (with
        ``sign_if_grown``) when it grew since. Public pages pass False: the runtime signs
        heads on its own schedule, and a visitor should not make it sign."""
        head = self._audit.latest_tree_head()
        if head is None or (sign_if_grown and head.tree_size < self._audit.size()):
            head = self._audit.sign_tree_head()
        return head

    def build(
        self, start: float, end: float, *, head: SignedTreeHead | None = None
    ) -> dict[str, Any]:
        """The report over requests filed in ``[start, end)`` (UTC epoch s), counted from
        entries ``[0, head.tree_size)``.

        Raises:
            InvalidRequestError: ``end <= start``.
            LogTamperedError: a stored entry is not canonical.
        """
        sth = head or self.head()
        start_ms, end_ms = epoch_ms(start), epoch_ms(end)
        hidden = self._hidden()
        entries = []
        for _, leaf, _ in self._audit.iter_leaves(0, sth.tree_size):
            entry = _request_entry(leaf)
            if entry is not None and entry.request not in hidden:
                entries.append(entry)
        counts = rules.count(entries, start_ms, end_ms)
        return {
            "v": rules.REPORT_VERSION,
            "range": {"start_ms": start_ms, "end_ms": end_ms},
            "index_range": {"start": 0, "end": sth.tree_size},
            "tree_head": sth.to_json(),
            "figures": counts,
        }

    def export_public(self, out: IO[str], head: SignedTreeHead | None = None) -> SignedTreeHead:
        """Write the public export of entries ``[0, head.tree_size)`` to ``out`` (see the
        module docstring); returns the head it is cut at."""
        sth = head or self.head()
        for line in self.public_lines(sth):
            out.write(line)
        return sth

    def public_lines(self, head: SignedTreeHead) -> Iterator[str]:
        """The public export cut at ``head``, line by line (each ending in a newline),
        streamed from the database."""
        keys = sorted(bytes(k).hex() for k in self._audit.public_keys().values())
        header = {
            "format": EXPORT_FORMAT,
            "v": 1,
            "tree_head": head.to_json(),
            "public_keys": keys,
        }
        yield json.dumps(header, sort_keys=True) + "\n"
        hidden = self._hidden()
        for index, leaf, lh in self._audit.iter_leaves(0, head.tree_size):
            entry = _request_entry(leaf)
            if entry is not None and entry.request not in hidden:
                line: dict[str, Any] = {"i": index, "leaf": leaf.decode("utf-8")}
            else:
                line = {"i": index, "leaf_hash": lh.hex()}
            yield json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n"

    def _hidden(self) -> frozenset[str]:
        return frozenset(self._withheld()) if self._withheld is not None else frozenset()


def _request_entry(leaf: bytes) -> rules.RequestEntry | None:
    if b'"request:' not in leaf:
        return None
    try:
        data = json.loads(leaf)
    except ValueError as exc:
        raise LogTamperedError(f"an audit leaf is not JSON: {exc}", first_bad_index=None) from exc
    if not isinstance(data, dict):
        raise LogTamperedError("an audit leaf is not a JSON object", first_bad_index=None)
    try:
        return rules.request_entry(data)
    except InvalidRequestError as exc:
        raise LogTamperedError(str(exc), first_bad_index=data.get("index")) from exc


# --- formats -------------------------------------------------------------------------------


def to_csv(report: dict[str, Any]) -> str:
    """The report as CSV: ``figure,value`` rows, then the range and the head."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["figure", "value"])
    for name, value in rules.figures(report["figures"]):
        w.writerow([name, value])
    w.writerow(["range.start_ms", report["range"]["start_ms"]])
    w.writerow(["range.end_ms", report["range"]["end_ms"]])
    for key in ("tree_size", "root_hash", "timestamp_ms", "key_id", "signature"):
        w.writerow([f"tree_head.{key}", report["tree_head"][key]])
    return buf.getvalue()


def to_html(report: dict[str, Any], *, title: str = "Transparency report") -> str:
    """A self-contained HTML page of the report (no script)."""
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{value}</td></tr>"
        for name, value in rules.figures(report["figures"])
    )
    head = report["tree_head"]
    rng = report["range"]
    start = time.strftime("%Y-%m-%d", time.gmtime(rng["start_ms"] / 1000))
    end = time.strftime("%Y-%m-%d", time.gmtime(rng["end_ms"] / 1000))
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>Requests filed from {start} to {end} (UTC, end excluded), counted from audit "
        f"log entries 0 to {report['index_range']['end']} at the signed tree head below.</p>"
        f"<table><thead><tr><th>figure</th><th>value</th></tr></thead><tbody>{rows}</tbody>"
        "</table><h2>Signed tree head</h2><pre>"
        f"{html.escape(json.dumps(head, indent=2, sort_keys=True))}</pre>"
        "<p>Check it: download the report JSON and the public log export, then run "
        "<code>homewarden report verify REPORT.json --log LOG.jsonl</code>.</p></html>\n"
    )


# --- verification --------------------------------------------------------------------------


def _lines(path: Path) -> Iterator[str]:
    try:
        with path.open("r", encoding="utf-8") as f:
            yield from f
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise VerificationError(f"{path} is not UTF-8: {exc}") from exc


def verify_report(
    report: dict[str, Any],
    export: Path,
    trusted: dict[bytes, LogPublicKey] | None = None,
) -> dict[str, Any]:
    """Check ``report`` against a public export of the log, offline.

    1. the report's tree head is signed by a key of the export (or of ``trusted``, when
       given: then only those keys count), and its index range is ``[0, head.tree_size)``;
    2. the export's entries ``[0, size)`` hash (RFC 9162 2.1.1) to the head's root, each
       published leaf stating its own index;
    3. recounting the request entries over the report's range gives every figure.

    Returns a summary (size, root, figures checked).

    Raises:
        VerificationError: a malformed report (a range that ends before it starts, an index
            range other than the head's) or export.
        InvalidSignatureError: the head's signature does not verify or its key is unknown.
        LogTamperedError: the export does not hash to the signed root, or an entry is out
            of place.
        VerificationError: a figure differs from the recount (the message names it).
    """
    try:
        sth = SignedTreeHead.from_json(report["tree_head"])
        start_ms = int(report["range"]["start_ms"])
        end_ms = int(report["range"]["end_ms"])
        stated = rules.figures(report["figures"])
        index_range = report["index_range"]
        covered = (int(index_range["start"]), int(index_range["end"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed report: missing or bad {exc}") from exc
    if end_ms <= start_ms:
        raise VerificationError("malformed report: its range ends before it starts")
    lines = _lines(export)
    try:
        header = json.loads(next(lines))
    except StopIteration:
        raise VerificationError(f"{export} is empty") from None
    except ValueError as exc:
        raise VerificationError(f"{export}: the header line is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise VerificationError(f"{export} is not a HomeWarden public log export")
    keys: dict[bytes, LogPublicKey] = {}
    if trusted is not None:
        keys = dict(trusted)
    else:
        for text in header.get("public_keys", []):
            try:
                public = log_public_key_from_bytes(bytes.fromhex(str(text)))
            except ValueError as exc:
                raise VerificationError(f"{export}: a public key is not hex") from exc
            keys[key_id(public)] = public
    verify_tree_head(sth, keys)
    if covered != (0, sth.tree_size):
        raise VerificationError(
            f"the report says it counted entries {covered[0]} to {covered[1]}, but its signed "
            f"tree head covers 0 to {sth.tree_size}"
        )
    compact = CompactRange()
    entries: list[rules.RequestEntry] = []
    expected = 0
    for number, text in enumerate(lines, start=2):
        if expected == sth.tree_size:
            break
        try:
            line = json.loads(text)
            index = int(line["i"])
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError(f"{export} line {number}: malformed ({exc})") from exc
        if index != expected:
            raise LogTamperedError(
                f"{export} line {number}: entry {index} where {expected} was expected",
                first_bad_index=expected,
            )
        if "leaf" in line:
            leaf = str(line["leaf"]).encode("utf-8")
            try:
                data = json.loads(leaf)
            except ValueError as exc:
                raise LogTamperedError(
                    f"entry {index}: the leaf is not JSON", first_bad_index=index
                ) from exc
            if not isinstance(data, dict) or data.get("index") != index:
                raise LogTamperedError(
                    f"entry {index}: the leaf states another index", first_bad_index=index
                )
            try:
                entry = rules.request_entry(data)
            except InvalidRequestError as exc:
                raise LogTamperedError(f"entry {index}: {exc}", first_bad_index=index) from exc
            if entry is not None:
                entries.append(entry)
            compact.push(leaf_hash(leaf))
        else:
            try:
                compact.push(bytes.fromhex(str(line["leaf_hash"])))
            except (KeyError, ValueError) as exc:
                raise VerificationError(f"{export} line {number}: bad leaf hash") from exc
        expected += 1
    if expected != sth.tree_size:
        raise LogTamperedError(
            f"{export} holds {expected} entries; the signed head covers {sth.tree_size}",
            first_bad_index=expected,
        )
    root = compact.root()
    if root != sth.root_hash:
        raise LogTamperedError(
            f"the exported log hashes to {root.hex()[:16]}..., not to the signed root "
            f"{sth.root_hash.hex()[:16]}...: an entry was changed, added or removed",
            first_bad_index=None,
        )
    recounted = rules.figures(rules.count(entries, start_ms, end_ms))
    for (name, says), (_, counted) in zip(stated, recounted, strict=True):
        if says != counted:
            raise VerificationError(
                f"figure {name}: the report says {says}, the log counts {counted}"
            )
    return {
        "ok": True,
        "key_id": sth.key_id.hex(),
        # Without keys obtained separately, the head is checked with the keys the export
        # itself lists: it proves consistency, not who made it.
        "key_trusted": trusted is not None,
        "tree_size": sth.tree_size,
        "root_hash": sth.root_hash.hex(),
        "figures_checked": len(stated),
        "request_entries": len(entries),
        "export_sha256": hashlib.sha256(export.read_bytes()).hexdigest(),
    }
