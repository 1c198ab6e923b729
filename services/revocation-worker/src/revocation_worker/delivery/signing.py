"""Standard Webhooks signatures, made with the `standardwebhooks` library itself."""

from __future__ import annotations

import datetime as dt

from standardwebhooks.webhooks import Webhook


def webhook_id(notice_id: str, kind: str = "notice") -> str:
    """Stable across every retry and redelivery of one notice: receivers deduplicate on it. Its
    reminder and overdue notice are other messages, each with an id of its own."""
    return f"msg_{notice_id}" if kind == "notice" else f"msg_{notice_id}_{kind}"


def sign_headers(msg_id: str, body: str, secrets: list[str], now: dt.datetime) -> dict[str, str]:
    """`webhook-signature` carries one `v1,<sig>` per secret (old and new during a rotation)."""
    signatures = " ".join(Webhook(secret).sign(msg_id, now, body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "Rescind-Webhooks/1",
    }
