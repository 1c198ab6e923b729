"""`revocation-worker keys rotate | status`: reseal every endpoint secret under the current key
(docs/operations.md, key rotation). The secrets themselves do not change: licensees notice nothing."""

from __future__ import annotations

import sys

from sqlalchemy.orm import Session

from rescind_common import keyrotation
from rescind_common.db import utcnow
from revocation_worker.config import WorkerSettings
from revocation_worker.endpoints import repository
from revocation_worker.endpoints import service as endpoints
from revocation_worker.secrets import SecretBox

WHAT = "endpoint secrets"


def rotate(settings: WorkerSettings, batch_size: int = 500) -> keyrotation.Report:
    box = SecretBox.from_settings(settings)
    current = box.ring.current_id

    def batch(session: Session, after: str) -> tuple[str | None, int, dict[str, int]]:
        rows = repository.to_reseal(session, current, after, batch_size)
        if not rows:
            return None, 0, {}
        done, unavailable = endpoints.reseal(box, rows, utcnow())
        return rows[-1].id, done, unavailable

    return keyrotation.rotate(
        settings.worker_database_url,
        box.ring,
        batch,
        repository.secret_key_counts,
        what=WHAT,
        progress=sys.stderr,
    )


def status(settings: WorkerSettings) -> keyrotation.Report:
    box = SecretBox.from_settings(settings)
    return keyrotation.status(settings.worker_database_url, box.ring, repository.secret_key_counts, what=WHAT)
