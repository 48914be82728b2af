"""Audit log speed: durable appends, one inclusion proof in a 1,000,000-entry log, full verify.

Issue 5 ("Speed"): on SQLite,

* appends per second with each append durable before the caller returns (target >= 2,000/s);
* an inclusion proof for one entry of a 1,000,000-entry log (target < 10 ms);
* a full verify of 1,000,000 entries (target < 30 s).

Each figure is printed with a baseline measured in the same run on the same disk, as a ratio:

* appends - a plain ``INSERT`` loop (sqlite3, WAL, ``synchronous = FULL``, one commit per row,
  the same leaf bytes): the price of one durable commit on this disk, which bounds what any
  single caller can do. :meth:`AuditLog.append` is measured with one caller (sequential) and
  with many concurrent callers (API threads), where group commit lets them share fsyncs; every
  caller still returns only after its own entry is on disk.
* proof - one primary-key ``SELECT`` of the entry (the least any proof must read).
* verify - reading every row plus raw ``hashlib.sha256`` over the same leaves (the least any
  recomputation must do).

The 1,000,000-entry log is built through the same adapter in large transactions (a bulk path:
entries, leaf hashes and tree nodes exactly as appends make them, without an fsync per entry);
only the append figures measure the normal path.

Run from the repo root: ``.venv/bin/python bench/audit.py [--entries 1000000]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import hashlib
import json
import os
import random
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from homewarden.crypto import merkle
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag, Subject
from homewarden.services.audit import AuditLog
from homewarden.store.audit_store import AuditStore
from homewarden.store.index import Index

TARGET_APPENDS = 2000.0
TARGET_PROOF_MS = 10.0
TARGET_VERIFY_S = 30.0
T0_MS = 1_700_000_000_000
CAMERAS = ("front", "porch", "garage", "drive")


def _entry_fields(i: int) -> tuple[Actor, AuditTag, str, float, float]:
    actor = Actor(ActorKind.LOCAL_OPERATOR, f"127.0.0.{1 + i % 5}")
    tag = AuditTag.FOOTAGE_CLIP_DOWNLOAD if i % 3 else AuditTag.FOOTAGE_SNAPSHOT_VIEW
    start = T0_MS / 1000 + i * 7.25
    return actor, tag, CAMERAS[i % len(CAMERAS)], start, start + 30.0


def _open(db: Path) -> str:
    url = f"sqlite:///{db}"
    index = Index(url)
    index.migrate()
    index.close()
    return url


# ------------------------------------------------------------------------------------------
# appends


def bench_baseline_inserts(tmp: Path, n: int) -> float:
    """Plain INSERT loop, one durable commit per row; rows per second."""
    leaves = [AuditEntry(i, T0_MS, *_subject_args(i)).leaf() for i in range(n)]
    con = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.execute("CREATE TABLE t (idx INTEGER PRIMARY KEY, leaf BLOB, leaf_hash BLOB)")
    start = time.perf_counter()
    for i, leaf in enumerate(leaves):
        con.execute("BEGIN IMMEDIATE")
        con.execute(
            "INSERT INTO t VALUES (?, ?, ?)", (i, leaf, hashlib.sha256(b"\0" + leaf).digest())
        )
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return n / elapsed


def _subject_args(i: int) -> tuple[Actor, AuditTag, Subject, str]:
    actor, tag, camera, start, end = _entry_fields(i)
    return actor, tag, Subject("home", camera, int(start * 1000), int(end * 1000)), "api"


def bench_appends(url: str, keys: Path, n: int, threads: int) -> float:
    """AuditLog.append from ``threads`` concurrent callers, ``n`` in all; appends per second."""
    with AuditLog.open(url, keys) as log:
        log.append(AuditTag.FOOTAGE_CLIP_DOWNLOAD, Actor(ActorKind.SYSTEM, "bench"), "warm-up")
        per = n // threads

        def work(k: int) -> None:
            for j in range(per):
                actor, tag, camera, start, end = _entry_fields(k * per + j)
                log.append(tag, actor, "api", camera=camera, start=start, end=end)

        workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        begin = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - begin
        log.sign_tree_head()
        log.verify()  # every entry of every thread landed, in a valid tree
    return per * threads / elapsed


# ------------------------------------------------------------------------------------------
# the big log


def build_log(url: str, n: int, batch: int = 20_000) -> float:
    """Bulk-build ``n`` entries through the store's writer; seconds taken."""
    store = AuditStore(url)
    compact = merkle.CompactRange()
    begin = time.perf_counter()
    done = 0
    try:
        while done < n:
            with store.writer() as w:
                for _ in range(min(batch, n - done)):
                    i = w.size
                    leaf = AuditEntry(i, T0_MS + i, *_subject_args(i)).leaf()
                    lh = merkle.leaf_hash(leaf)
                    w.append(leaf, lh, compact.append(lh))
                    done += 1
            if done % 200_000 == 0:
                print(f"  built {done:,} entries ({time.perf_counter() - begin:.0f} s)", flush=True)
    finally:
        store.close()
    return time.perf_counter() - begin


def bench_proofs(log: AuditLog, url: str, size: int, samples: int) -> dict[str, float]:
    """Median and p95 milliseconds of one inclusion proof (random entries, self-checked),
    and of the baseline: one primary-key SELECT of the entry."""
    rng = random.Random(5)
    indexes = [rng.randrange(size) for _ in range(samples)]
    log.inclusion_proof(indexes[0], size)  # warm the pool
    proof_ms = []
    for i in indexes:
        t = time.perf_counter()
        proof = log.inclusion_proof(i, size)
        proof_ms.append((time.perf_counter() - t) * 1000)
        assert proof.index == i
    store = AuditStore(url)
    select_ms = []
    try:
        for i in indexes:
            t = time.perf_counter()
            store.entries(i, i + 1)
            select_ms.append((time.perf_counter() - t) * 1000)
    finally:
        store.close()
    proof_ms.sort()
    select_ms.sort()
    return {
        "proof_median_ms": statistics.median(proof_ms),
        "proof_p95_ms": proof_ms[int(0.95 * len(proof_ms)) - 1],
        "select_median_ms": statistics.median(select_ms),
    }


def bench_verify_baseline(db: Path) -> float:
    """Seconds to read every leaf and SHA-256 it (0x00 prefix), nothing else."""
    con = sqlite3.connect(db)
    begin = time.perf_counter()
    count = 0
    for (leaf,) in con.execute("SELECT leaf FROM audit_entries ORDER BY idx"):
        hashlib.sha256(b"\0" + leaf).digest()
        count += 1
    elapsed = time.perf_counter() - begin
    con.close()
    assert count > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=4000, help="appends per append figure")
    parser.add_argument("--threads", type=int, default=32, help="concurrent appenders")
    parser.add_argument("--proofs", type=int, default=500, help="proofs sampled")
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="hw-bench-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work} (SQLite, WAL, synchronous=FULL for audit commits)")
    results: dict[str, Any] = {"entries": args.entries, "cpus": os.cpu_count()}

    # (1) appends
    baseline = bench_baseline_inserts(work, min(args.appends, 2000))
    url_a = _open(work / "appends.db")
    sequential = bench_appends(url_a, work / "keys", min(args.appends, 1000), threads=1)
    concurrent = bench_appends(url_a, work / "keys", args.appends, threads=args.threads)
    results.update(
        baseline_insert_per_s=baseline,
        append_sequential_per_s=sequential,
        append_concurrent_per_s=concurrent,
        append_threads=args.threads,
    )
    print(
        f"appends (durable): plain INSERT+commit loop {baseline:,.0f}/s | AuditLog.append "
        f"1 caller {sequential:,.0f}/s ({sequential / baseline:.2f}x) | {args.threads} "
        f"callers {concurrent:,.0f}/s ({concurrent / baseline:.2f}x baseline) "
        f"-> target >= {TARGET_APPENDS:,.0f}/s: "
        f"{'MET' if concurrent >= TARGET_APPENDS else 'MISSED'}"
    )

    # (2) the big log
    db = work / "big.db"
    url = _open(db)
    print(f"building a {args.entries:,}-entry log (bulk path) ...", flush=True)
    built = build_log(url, args.entries)
    results["build_s"] = built
    print(f"built in {built:.1f} s ({args.entries / built:,.0f} entries/s)")
    with AuditLog.open(url, work / "keys") as log:
        begin = time.perf_counter()
        sth = log.sign_tree_head()
        results["first_sign_s"] = time.perf_counter() - begin
        print(f"first signed tree head (re-hashes all entries) in {results['first_sign_s']:.1f} s")

        # (3) proofs
        proofs = bench_proofs(log, url, sth.tree_size, args.proofs)
        results.update(proofs)
        ok = proofs["proof_p95_ms"] < TARGET_PROOF_MS
        print(
            f"inclusion proof in a {sth.tree_size:,}-entry log: median "
            f"{proofs['proof_median_ms']:.2f} ms, p95 {proofs['proof_p95_ms']:.2f} ms | baseline "
            f"one-row SELECT {proofs['select_median_ms']:.3f} ms "
            f"({proofs['proof_median_ms'] / proofs['select_median_ms']:.1f}x) -> target < "
            f"{TARGET_PROOF_MS:.0f} ms: {'MET' if ok else 'MISSED'}"
        )

        # (4) verify
        base_verify = bench_verify_baseline(db)
        begin = time.perf_counter()
        report = log.verify()
        verify_s = time.perf_counter() - begin
        assert report.size == args.entries
        results.update(verify_s=verify_s, baseline_read_hash_s=base_verify)
        print(
            f"full verify of {report.size:,} entries ({report.nodes:,} stored nodes, "
            f"{report.tree_heads} head): {verify_s:.1f} s | baseline read+SHA-256 of the "
            f"leaves {base_verify:.1f} s ({verify_s / base_verify:.1f}x) -> target < "
            f"{TARGET_VERIFY_S:.0f} s: {'MET' if verify_s < TARGET_VERIFY_S else 'MISSED'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
