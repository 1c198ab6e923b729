"""The keyring settings and the subject pepper: pure checks, no database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from consent_api.config import ConsentSettings
from consent_api.keys import MasterKey
from rescind_common.keyring import Keyring, KeyUnavailable, check_ring
from revocation_worker.config import WorkerSettings

NAMES = ("RING", "RING_ID", "SINGLE")


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.mark.parametrize(
    ("keys", "current", "legacy", "message"),
    [
        ({"bad id!": _key()}, None, None, "key id 'bad id!'"),
        ({"k": "not base64!"}, None, None, "RING\\['k'\\] is not base64"),
        ({"k": base64.b64encode(b"short").decode()}, None, None, "32 bytes, not 5"),
        ({"v1": _key()}, None, _key(), "SINGLE is key 'v1', which RING defines differently"),
        ({"k": _key()}, "other", None, "RING_ID 'other' is not a key"),
        ({"a": _key(), "b": _key()}, None, None, "RING_ID must name the current key"),
    ],
)
def test_bad_key_settings_name_the_setting_never_the_key(
    keys: dict[str, str], current: str | None, legacy: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_ring(keys, current, legacy, NAMES)
    for value in [*keys.values(), legacy]:
        assert value is None or value not in str(caught.value)


def test_settings_refuse_a_bad_keyring() -> None:
    with pytest.raises(ValueError, match="RESCIND_WORKER_SECRET_KEY_ID must name the current key"):
        WorkerSettings(worker_secret_keys={"a": _key(), "b": _key()})
    with pytest.raises(ValueError, match="RESCIND_CONSENT_MASTER_KEY_ID 'x' is not a key"):
        ConsentSettings(consent_master_key=_key(), consent_master_key_id="x")


def test_a_value_under_another_key_is_key_unavailable(tmp_path: Path) -> None:
    a, b = base64.b64decode(_key()), base64.b64decode(_key())
    key_id, blob = Keyring({"a": a}, "a").encrypt(b"secret", b"ctx")
    assert key_id == "a"
    with pytest.raises(KeyUnavailable, match="'a', which is not configured"):
        Keyring({"b": b}, "b").decrypt("a", blob, b"ctx")
    with pytest.raises(KeyUnavailable, match="does not open it"):
        Keyring({"a": b}, "a").decrypt("a", blob, b"ctx")
    assert Keyring({"a": a, "b": b}, "b").decrypt("a", blob, b"ctx") == b"secret"


def test_an_existing_deployment_keeps_its_subject_identities(tmp_path: Path) -> None:
    # Before the pepper setting, the pepper was HMAC(master key, label): a deployment configured as
    # before hashes every `sub` as before; once the pepper is set, rotating the master key changes nothing.
    master = _key()
    pepper = hmac.new(base64.b64decode(master), b"rescind/subject-sub-pepper/v1", hashlib.sha256).digest()
    before = hmac.new(pepper, b"alice", hashlib.sha256).hexdigest()
    legacy = MasterKey.from_settings(ConsentSettings(state_dir=tmp_path, consent_master_key=master))
    assert legacy.sub_hash("alice") == before
    rotated = MasterKey.from_settings(
        ConsentSettings(
            state_dir=tmp_path,
            consent_master_keys={"k2": _key()},
            consent_subject_pepper=base64.b64encode(pepper).decode(),
        )
    )
    assert rotated.sub_hash("alice") == before


def test_development_keeps_the_identities_of_an_existing_state_dir(tmp_path: Path) -> None:
    # A development state dir from before the pepper file: its master key file exists, so the pepper
    # file is made with the legacy pepper, and its subjects stay who they were.
    master = os.urandom(32)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "master.key").write_bytes(base64.b64encode(master))
    pepper = hmac.new(master, b"rescind/subject-sub-pepper/v1", hashlib.sha256).digest()
    got = MasterKey.from_settings(ConsentSettings(state_dir=tmp_path))
    assert got.sub_hash("bob") == hmac.new(pepper, b"bob", hashlib.sha256).hexdigest()
    assert (tmp_path / "keys" / "subject-pepper.key").exists()
    # A new state dir gets a random pepper of its own.
    fresh = MasterKey.from_settings(ConsentSettings(state_dir=tmp_path / "new"))
    assert fresh.sub_hash("bob") != got.sub_hash("bob")
