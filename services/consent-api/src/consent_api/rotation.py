"""`consent-api keys rotate | status | legacy-pepper`: the master-key rotation runbook's commands
(docs/operations.md). Rotation rewraps subject data keys only: what they seal (profiles, attributes,
reasons) is under the subjects' own keys and never changes."""

from __future__ import annotations

import base64
import sys

from sqlalchemy.orm import Session

from consent_api.config import ConsentSettings
from consent_api.keys import MasterKey, legacy_pepper
from consent_api.subjects import repository
from consent_api.subjects import service as subjects
from rescind_common import keyrotation

WHAT = "subject keys"


def rotate(settings: ConsentSettings, batch_size: int = 500) -> keyrotation.Report:
    master = MasterKey.from_settings(settings)
    current = master.ring.current_id

    def batch(session: Session, after: str) -> tuple[str | None, int, dict[str, int]]:
        rows = repository.keys_to_rewrap(session, current, after, batch_size)
        if not rows:
            return None, 0, {}
        done, unavailable = subjects.rewrap(master, rows)
        return rows[-1].subject_id, done, unavailable

    return keyrotation.rotate(
        settings.consent_database_url,
        master.ring,
        batch,
        repository.key_counts,
        what=WHAT,
        progress=sys.stderr,
    )


def status(settings: ConsentSettings) -> keyrotation.Report:
    master = MasterKey.from_settings(settings)
    return keyrotation.status(settings.consent_database_url, master.ring, repository.key_counts, what=WHAT)


def pepper_warning(settings: ConsentSettings) -> str | None:
    """Said after a rotation while the pepper is still the legacy one, derived from key `v1`."""
    if settings.consent_subject_pepper or settings.legacy_master_key is None:
        return None
    return (
        "the subject pepper is still derived from master key 'v1': before removing 'v1', set "
        "RESCIND_CONSENT_SUBJECT_PEPPER to what `consent-api keys legacy-pepper` prints"
    )


def print_legacy_pepper(settings: ConsentSettings) -> int:
    """Print the legacy pepper (base64) of master key `v1`, to set as RESCIND_CONSENT_SUBJECT_PEPPER."""
    legacy = settings.legacy_master_key
    if legacy is None:
        dev_file = settings.keys_dir / "master.key"
        if settings.profile != "development" or settings.consent_master_keys or not dev_file.exists():
            print(
                "consent-api: master key 'v1' is not configured: no legacy pepper to print", file=sys.stderr
            )
            return 1
        legacy = dev_file.read_text().strip()
    print(base64.b64encode(legacy_pepper(base64.b64decode(legacy))).decode())
    return 0
