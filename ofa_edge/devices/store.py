"""Every measurement a bench takes, in SQLite, keyed by the device identity.

A predictor is valid for one device identity only (DESIGN.md §6): the spec, the runtime and
its version, the delegate or execution providers, threads, affinity, governor and CPU. Each
row is committed as soon as it is measured, so a dropped link or a killed bench loses nothing
and the next run measures only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

SCHEMA_VERSION = 1


def identity_id(identity: dict) -> str:
    """A short stable hash of an identity dict."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class MeasurementStore:
    """``kind`` is ``block`` or ``subnet``; ``key`` a block id or an arch's text."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30)
        self.db.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS identities (id TEXT PRIMARY KEY, identity TEXT NOT NULL,
                                                   first_seen REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS measurements (
                identity TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
                model_sha256 TEXT NOT NULL, median_ms REAL NOT NULL, stats TEXT NOT NULL,
                measured_at REAL NOT NULL, PRIMARY KEY (identity, kind, key));
        """)
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self.db.commit()
        elif int(row[0]) != SCHEMA_VERSION:
            from ofa_edge.errors import OfaEdgeError

            raise OfaEdgeError(f"{self.path}: measurement store schema {row[0]}, this ofa-edge reads "
                               f"{SCHEMA_VERSION}; move the file away to start a new store")

    def register(self, identity: dict) -> str:
        ident = identity_id(identity)
        self.db.execute("INSERT OR IGNORE INTO identities VALUES (?, ?, ?)",
                        (ident, json.dumps(identity, sort_keys=True), time.time()))
        self.db.commit()
        return ident

    def put(self, identity: str, kind: str, key: str, stats: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (identity, kind, key, stats["sha256"], float(stats["median_ms"]),
                         json.dumps(stats, sort_keys=True), time.time()))
        self.db.commit()

    def get(self, identity: str, kind: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT key, stats FROM measurements WHERE identity=? AND kind=?",
                               (identity, kind))
        return {key: json.loads(stats) for key, stats in rows}

    def count(self, identity: str | None = None) -> int:
        if identity is None:
            return self.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM measurements WHERE identity=?", (identity,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "MeasurementStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
