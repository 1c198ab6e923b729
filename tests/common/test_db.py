"""The database layer every service shares (rescind_common.db), on both backends."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import exc, text

from rescind_common.db import make_engine
from rescind_common.logs import JsonFormatter


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_a_logged_database_error_never_shows_the_values_it_was_given(
    backend: str, pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = pg_database("dberrors") if backend == "postgresql" else f"sqlite:///{tmp_path / 'errors.db'}"
    engine = make_engine(url)
    secret = "alice.private@example.com"
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE people (email VARCHAR(64) NOT NULL UNIQUE)"))
            conn.execute(text("INSERT INTO people (email) VALUES (:email)"), {"email": secret})
        with pytest.raises(exc.IntegrityError) as failed, engine.begin() as conn:
            conn.execute(text("INSERT INTO people (email) VALUES (:email)"), {"email": secret})
        # The log line a service writes for an unexpected database error, traceback included.
        error = failed.value
        info = (type(error), error, error.__traceback__)
        record = logging.LogRecord("rescind", logging.ERROR, __file__, 1, "database error", None, info)
        line = json.loads(JsonFormatter().format(record))
        assert "INSERT INTO people" in line["exc"] and "IntegrityError" in line["exc"]
        assert secret not in line["exc"]
    finally:
        engine.dispose()
