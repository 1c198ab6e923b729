"""Admission control: when every database slot is taken, a caller is told at once to come back
(503 problem JSON with Retry-After) instead of queueing for seconds, and is served again as soon
as capacity returns."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from consent_api.main import create_app

from support.helpers import TokenFactory, assert_problem, auth, make_settings, register, sha

SLOTS = 2


@contextmanager
def writers_blocked(db_url: str) -> Iterator[None]:
    """Another session holds the locks every write needs, so requests that reach the database
    wait there (holding their slot) until it ends."""
    if db_url.startswith("sqlite"):
        lite = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lite.execute("COMMIT")
            lite.close()
        return
    with psycopg.connect(db_url) as conn:
        conn.execute("LOCK TABLE subjects IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.commit()


def _small_app(db_url: str, state_dir: Path, max_in_flight: int | None = None) -> Any:
    settings = make_settings(
        db_url,
        state_dir,
        consent_db_pool_size=SLOTS,
        consent_db_max_overflow=1,
        consent_db_pool_timeout_seconds=0.3,
        consent_max_in_flight=max_in_flight,
    )
    return create_app(settings)


# None: the caller waits for a database slot and is refused when none comes free in time;
# SLOTS: requests in progress are capped too, and the caller is refused before its body is read.
@pytest.mark.parametrize("max_in_flight", [None, SLOTS], ids=["db-slots", "in-flight-cap"])
def test_full_service_answers_503_with_retry_after_then_serves_again(
    db_url: str, state_dir: Path, token: TokenFactory, max_in_flight: int | None
) -> None:
    app = _small_app(db_url, state_dir, max_in_flight)
    with TestClient(app) as client:
        busy = [auth(token("subject")) for _ in range(SLOTS)]
        caller = auth(token("subject"))
        for h in [*busy, caller]:
            register(client, h)  # subjects exist; nothing is held yet
        answers: list[int] = []

        def occupy(h: dict[str, str]) -> None:
            r = client.post("/v1/samples", json={"kind": "face_image", "sha256": sha()}, headers=h)
            answers.append(r.status_code)

        with writers_blocked(db_url):
            threads = [threading.Thread(target=occupy, args=(h,)) for h in busy]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while app.state.db_admission.in_use < SLOTS and time.monotonic() < deadline:
                time.sleep(0.01)
            assert app.state.db_admission.in_use == SLOTS, "the busy requests should hold every slot"

            r = client.post("/v1/samples", json={"kind": "face_image", "sha256": sha()}, headers=caller)
            body = assert_problem(r, 503)
            assert body["type"].endswith("/overloaded"), body
            assert int(r.headers["retry-after"]) >= 1
        for t in threads:
            t.join(timeout=30)
        assert answers == [201] * SLOTS  # the requests that held the slots were served

        r = client.post("/v1/samples", json={"kind": "face_image", "sha256": sha()}, headers=caller)
        assert r.status_code == 201, r.text


def test_exhausted_connection_pool_answers_503_with_retry_after(
    db_url: str, state_dir: Path, token: TokenFactory
) -> None:
    app = _small_app(db_url, state_dir)
    with TestClient(app) as client:
        seller = auth(token("subject"))
        engine = app.state.ctx.engine
        held = [engine.connect() for _ in range(SLOTS + 1)]  # pool + overflow, taken outside requests
        try:
            r = client.post("/v1/samples", json={"kind": "face_image", "sha256": sha()}, headers=seller)
            assert_problem(r, 503)
            assert int(r.headers["retry-after"]) >= 1
        finally:
            for conn in held:
                conn.close()
        register(client, seller)
