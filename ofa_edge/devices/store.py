"""Every measurement a bench takes, in SQLite, keyed by the device identity.

A predictor is valid for one device identity only (DESIGN.md §6): the spec, the runtime and
its version, the delegate or execution providers, threads, affinity, governor and CPU. Each
row is one pass of one model (its p10, p50 and p90 over all runs of the pass, the drift of the
reference model in its batch, how many attempts it took and whether it stayed flagged) and is
committed as soon as it is measured, so a dropped link or a killed bench loses nothing and the
next run measures only the passes that are missing. The figure of a model is derived from its
passes (``ofa_edge.devices.statistic.across_passes``).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import time
from pathlib import Path

from ofa_edge.devices.statistic import across_passes, drift_corrected

SCHEMA_VERSION = 2


def identity_id(identity: dict) -> str:
    """A short stable hash of an identity dict."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class MeasurementStore:
    """``kind`` is ``block``, ``subnet`` or ``reference``; ``key`` a block id or an arch's text."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30)
        self.db.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS identities (id TEXT PRIMARY KEY, identity TEXT NOT NULL,
                                                   first_seen REAL NOT NULL);
        """)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) == 1:
            # An older ofa-edge kept one figure per model from a single pass: keep that table for
            # the record, and measure again in passes.
            self.db.execute("ALTER TABLE measurements RENAME TO measurements_v1")
        elif row is not None and int(row[0]) != SCHEMA_VERSION:
            from ofa_edge.errors import OfaEdgeError

            raise OfaEdgeError(f"{self.path}: measurement store schema {row[0]}, this ofa-edge reads "
                               f"{SCHEMA_VERSION}; move the file away to start a new store")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS measurements (
                identity TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, pass INTEGER NOT NULL,
                model_sha256 TEXT NOT NULL, p10_ms REAL NOT NULL, p50_ms REAL NOT NULL, p90_ms REAL NOT NULL,
                drift REAL, attempts INTEGER NOT NULL, flagged INTEGER NOT NULL, stats TEXT NOT NULL,
                measured_at REAL NOT NULL, PRIMARY KEY (identity, kind, key, pass));
            CREATE TABLE IF NOT EXISTS drift (
                identity TEXT NOT NULL, run TEXT NOT NULL, seq INTEGER NOT NULL, record TEXT NOT NULL,
                PRIMARY KEY (identity, run, seq));
        """)
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.db.commit()

    def register(self, identity: dict) -> str:
        ident = identity_id(identity)
        self.db.execute("INSERT OR IGNORE INTO identities VALUES (?, ?, ?)",
                        (ident, json.dumps(identity, sort_keys=True), time.time()))
        self.db.commit()
        return ident

    def put_pass(self, identity: str, kind: str, key: str, pass_index: int, stats: dict) -> None:
        """One pass of one model: the runner's figures plus ``drift``, ``attempts``, ``flagged``."""
        self.db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (identity, kind, key, pass_index, stats["sha256"], float(stats["p10_ms"]),
                         float(stats["p50_ms"]), float(stats["p90_ms"]), stats.get("drift"),
                         int(stats.get("attempts", 1)), int(bool(stats.get("flagged"))),
                         json.dumps(stats, sort_keys=True), time.time()))
        self.db.commit()

    def passes(self, identity: str, kind: str) -> dict[str, dict[int, dict]]:
        """key -> pass index -> the stored row (its stats)."""
        out: dict[str, dict[int, dict]] = {}
        for key, index, stats in self.db.execute(
                "SELECT key, pass, stats FROM measurements WHERE identity=? AND kind=? ORDER BY pass",
                (identity, kind)):
            out.setdefault(key, {})[index] = json.loads(stats)
        return out

    def reference_level(self, identity: str) -> float | None:
        """The reference model's median p50 over every runner call of ``identity`` (None when no
        row carries it)."""
        values = sorted(json.loads(stats).get("reference_p50_ms") for (stats,) in self.db.execute(
            "SELECT stats FROM measurements WHERE identity=?", (identity,)))
        values = [v for v in values if v]
        return statistics.median(values) if values else None

    def get(self, identity: str, kind: str, passes: int = 1, level: float | None = None) -> dict[str, dict]:
        """key -> the model's figures over its first ``passes`` passes (models with fewer are left
        out): ``across_passes`` of the pass rows, drift-corrected to the reference ``level``
        (:meth:`reference_level`; None: raw), plus the last pass's other runner fields."""
        out = {}
        for key, rows in self.passes(identity, kind).items():
            chosen = [drift_corrected(rows[i], level) for i in sorted(rows)[:passes]]
            if len(chosen) < passes:
                continue
            out[key] = {**chosen[-1], **across_passes(chosen)}
        return out

    def add_drift(self, identity: str, run: str, records: list[dict]) -> None:
        """The reference model's series of one bench run (appended)."""
        start = self.db.execute("SELECT COUNT(*) FROM drift WHERE identity=? AND run=?", (identity, run)).fetchone()[0]
        self.db.executemany("INSERT INTO drift VALUES (?, ?, ?, ?)",
                            [(identity, run, start + i, json.dumps(r, sort_keys=True)) for i, r in enumerate(records)])
        self.db.commit()

    def drift_series(self, identity: str) -> list[dict]:
        """Every reference-model record of every bench run of ``identity``, run by run."""
        rows = self.db.execute("SELECT run, record FROM drift WHERE identity=? ORDER BY run, seq", (identity,))
        return [{"run": run, **json.loads(record)} for run, record in rows]

    def pass_counts(self, identity: str) -> dict:
        """Stored passes, how many needed more than one attempt, how many stayed flagged."""
        total, again, flagged = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(attempts > 1), 0), COALESCE(SUM(flagged), 0) FROM measurements "
            "WHERE identity=? AND kind != 'reference'", (identity,)).fetchone()
        return {"passes": total, "remeasured": int(again), "flagged": int(flagged)}

    def count(self, identity: str | None = None) -> int:
        """Stored passes (all models)."""
        if identity is None:
            return self.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM measurements WHERE identity=?", (identity,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
