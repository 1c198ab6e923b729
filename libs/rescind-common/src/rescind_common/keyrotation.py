"""Master-key rotation: rewrap every stored value under the keyring's current key, in batches.

Each batch is one transaction over the next rows (by id) not under the current key, row-locked, so
the command is idempotent (rows already under the current key are not selected) and resumable (a
crash loses at most the batch in progress; run it again). Values whose key is not configured are
counted and skipped, never a crash: the report names their key ids and the exit code is 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from sqlalchemy.orm import Session

from rescind_common.db import make_engine, make_session_factory
from rescind_common.keyring import Keyring

# How many stored values each key id holds.
Counts = Callable[[Session], dict[str, int]]
# (session, after-id) -> (the last id of the batch or None when there is none, rewrapped, unavailable)
Batch = Callable[[Session, str], tuple[str | None, int, dict[str, int]]]


@dataclass
class Report:
    what: str
    current: str
    configured: list[str]
    # None: a status report (nothing was rewrapped).
    rewrapped: int | None = 0
    unavailable: dict[str, int] = field(default_factory=dict)
    # How many values each key id holds after the run.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unavailable and set(self.counts) <= {self.current}

    def lines(self) -> list[str]:
        held = ", ".join(f"{k}: {n}" for k, n in sorted(self.counts.items())) or "none"
        done = "" if self.rewrapped is None else f"{self.rewrapped} rewrapped under key {self.current!r}; "
        out = [f"{self.what}: {done}by key now: {held} (current key: {self.current!r})"]
        for key_id, n in sorted(self.unavailable.items()):
            out.append(
                f"{self.what}: {n} under key {key_id!r}, which is not configured (or not that key): "
                "they stay unreadable until it is added back to the keyring"
            )
        retired = [k for k in self.configured if k != self.current and not self.counts.get(k)]
        if retired and not self.unavailable:
            out.append(f"{self.what}: nothing is under key(s) {', '.join(map(repr, retired))} any more")
        return out


def rotate(
    database_url: str,
    ring: Keyring,
    batch: Batch,
    counts: Counts,
    *,
    what: str,
    progress: TextIO | None = None,
) -> Report:
    """Rewrap, batch after batch, what `batch` finds not under `ring`'s current key."""
    report = Report(what, ring.current_id, ring.ids)
    engine = make_engine(database_url, pool_size=1)
    try:
        session_factory = make_session_factory(engine)
        after = ""
        while True:
            with session_factory() as session, session.begin():
                last, done, unavailable = batch(session, after)
            if last is None:
                break
            after = last
            report.rewrapped = (report.rewrapped or 0) + done
            for key_id, n in unavailable.items():
                report.unavailable[key_id] = report.unavailable.get(key_id, 0) + n
            if progress is not None and done:
                print(f"{what}: {report.rewrapped} rewrapped (up to {last})", file=progress)
        with session_factory() as session:
            report.counts = counts(session)
    finally:
        engine.dispose()
    return report


def status(database_url: str, ring: Keyring, counts: Counts, *, what: str) -> Report:
    """How many values each key id holds, and which of those ids `ring` lacks."""
    engine = make_engine(database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            held = counts(session)
    finally:
        engine.dispose()
    missing = {k: n for k, n in held.items() if not ring.has(k)}
    return Report(what, ring.current_id, ring.ids, None, missing, held)


def print_report(report: Report, out: TextIO | None = None) -> int:
    """Print it; the exit code: 0 when everything is under the current key, 1 otherwise."""
    for line in report.lines():
        print(line, file=out or sys.stdout)
    return 0 if report.complete else 1
