"""The floor under consent-api's grant: a bare FastAPI endpoint doing one single-row INSERT + COMMIT.

Same stack as consent-api (FastAPI, a sync `def` handler in the threadpool, pydantic body, SQLAlchemy
engine from `rescind_common.db.make_engine` on psycopg, uvicorn with one worker, no access log), but
no auth, no subject lock, no receipt signing, no outbox, no audit: just parse, insert, commit, answer.

  .venv/bin/python bench/bare_app.py PORT DATABASE_URL
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text

from rescind_common.db import make_engine


class GrantIn(BaseModel):
    sample_ids: list[str]
    purposes: list[str]


def create_app(db_url: str) -> FastAPI:
    engine = make_engine(db_url, pool_size=10)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bare_grants (id varchar(40) PRIMARY KEY, "
                "sample_ids jsonb NOT NULL, purposes jsonb NOT NULL, created_at timestamptz NOT NULL)"
            )
        )
    insert = text(
        "INSERT INTO bare_grants (id, sample_ids, purposes, created_at) "
        "VALUES (:id, CAST(:s AS jsonb), CAST(:p AS jsonb), :t)"
    )
    app = FastAPI()

    @app.post("/grants", status_code=201)
    def grant(body: GrantIn) -> dict[str, Any]:
        row = {
            "id": uuid.uuid4().hex,
            "s": json.dumps(body.sample_ids),
            "p": json.dumps(body.purposes),
            "t": dt.datetime.now(dt.UTC),
        }
        with engine.begin() as conn:
            conn.execute(insert, row)
        return {"id": row["id"], "status": "active", "sample_ids": body.sample_ids, "created_at": row["t"]}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    port, db_url = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(create_app(db_url), host="127.0.0.1", port=port, workers=1, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
