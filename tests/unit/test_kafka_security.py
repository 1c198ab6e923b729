"""The Kafka clients' security settings, from the environment the Deployments set."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

from rescind_common.kafka import security_config


def test_kafka_clients_authenticate_as_configured(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert security_config() == {}
    env = {
        "RESCIND_KAFKA_SECURITY_PROTOCOL": "SSL",
        "RESCIND_KAFKA_SSL_CAFILE": "/etc/rescind/kafka-ca/ca.crt",
        "RESCIND_KAFKA_SSL_CERTFILE": "/etc/rescind/kafka-user/user.crt",
        "RESCIND_KAFKA_SSL_KEYFILE": "/etc/rescind/kafka-user/user.key",
    }
    with mock.patch.dict(os.environ, env, clear=True):
        assert security_config() == {
            "security_protocol": "SSL",
            "ssl_cafile": "/etc/rescind/kafka-ca/ca.crt",
            "ssl_certfile": "/etc/rescind/kafka-user/user.crt",
            "ssl_keyfile": "/etc/rescind/kafka-user/user.key",
        }
    env = {"RESCIND_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RESCIND_KAFKA_SASL_USERNAME": "u"}
    with mock.patch.dict(os.environ, {**env, "RESCIND_KAFKA_SASL_PASSWORD": "p"}, clear=True):
        got = security_config()
    assert got["sasl_mechanism"] == "SCRAM-SHA-512" and got["sasl_plain_username"] == "u"
