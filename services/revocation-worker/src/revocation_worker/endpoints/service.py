"""Licensees' webhook endpoints: registration behind the SSRF guard, secrets, rotation, disabling."""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Protocol

from sqlalchemy.orm import Session

from rescind_common.db import utcnow
from rescind_common.ids import new_id
from rescind_common.keyring import LEGACY_KEY_ID, KeyUnavailable
from rescind_common.problems import Problem, field_error
from rescind_common.proto.rescind.v1 import notice_events_pb2 as pb
from revocation_worker.context import AppContext
from revocation_worker.delivery import repository as deliveries_repo
from revocation_worker.endpoints import repository as endpoints_repo
from revocation_worker.endpoints.models import Endpoint
from revocation_worker.endpoints.schemas import EndpointIn, EndpointOut
from revocation_worker.endpoints.urlguard import UnsafeURL, check_webhook_url
from revocation_worker.events import publish
from revocation_worker.notices import service as notices_service
from revocation_worker.secrets import SecretBox, new_secret

log = logging.getLogger(__name__)


def create(session: Session, ctx: AppContext, licensee_id: str, body: EndpointIn) -> tuple[Endpoint, str]:
    # Checked before the URL (whose check resolves DNS): a licensee at its cap costs nothing more.
    limit = ctx.settings.worker_max_endpoints_per_licensee
    if endpoints_repo.count_for(session, licensee_id, lock=True) >= limit:
        raise Problem(
            409,
            f"A licensee may have at most {limit} endpoints (active or disabled); delete one first.",
            type_="https://rescind.dev/problems/endpoint-limit",
            limit=limit,
        )
    # A new endpoint is sent every notice not yet delivered: deleting and registering again must
    # not be a way round the redeliver rate, so registrations have a budget of their own at it.
    wait = ctx.redeliveries.take(f"register:{licensee_id}")
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise Problem(
            429,
            f"Too many endpoint registrations by this licensee; retry in {retry_after} s.",
            type_="https://rescind.dev/problems/register-rate-limited",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        check_webhook_url(body.url, ctx.policy, allow_http=ctx.settings.worker_allow_http)
    except UnsafeURL as exc:
        raise Problem(
            422,
            f"The endpoint URL is refused: {exc}.",
            type_="https://rescind.dev/problems/unsafe-url",
            errors=[field_error("body.url", str(exc))],
            rule=exc.rule,
        ) from exc
    endpoint_id = new_id("ep")
    secret = new_secret()
    key_id, sealed = ctx.secrets.seal(secret, endpoint_id)
    endpoint = Endpoint(
        id=endpoint_id,
        licensee_id=licensee_id,
        url=body.url,
        description=body.description,
        status="active",
        secret_sealed=sealed,
        secret_key_id=key_id,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    # Notices that reached no endpoint yet go to the new one.
    deliveries_repo.add_deliveries_for_new_endpoint(session, endpoint)
    return endpoint, secret


def rotate(
    session: Session, ctx: AppContext, endpoint: Endpoint, *, expire_old_now: bool = False
) -> tuple[str, dt.datetime]:
    """A new secret; the old one keeps signing beside it for the grace period, or (expire_old_now:
    it leaked) is dropped at once, with any older one still in its grace. Returns the new secret and
    when the old one stops signing."""
    secret = new_secret()
    now = utcnow()
    if expire_old_now:
        expires = now
        endpoint.previous_secret_sealed = None
        endpoint.previous_secret_key_id = None
    else:
        expires = now + dt.timedelta(seconds=ctx.settings.worker_rotation_grace_seconds)
        endpoint.previous_secret_sealed = endpoint.secret_sealed
        endpoint.previous_secret_key_id = endpoint.secret_key_id
    endpoint.previous_secret_expires_at = expires
    endpoint.secret_key_id, endpoint.secret_sealed = ctx.secrets.seal(secret, endpoint.id)
    return secret, expires


class SealedSecrets(Protocol):
    """What signing reads of an endpoint: an `Endpoint` or a plain row with its id and secrets."""

    @property
    def id(self) -> str: ...
    @property
    def secret_sealed(self) -> bytes: ...
    @property
    def secret_key_id(self) -> str: ...
    @property
    def previous_secret_sealed(self) -> bytes | None: ...
    @property
    def previous_secret_key_id(self) -> str | None: ...
    @property
    def previous_secret_expires_at(self) -> dt.datetime | None: ...


def signing_secrets(ctx: AppContext, endpoint: SealedSecrets, now: dt.datetime) -> list[str]:
    """The current secret, plus the previous one during its grace period. Raises KeyUnavailable
    when the key that sealed the current one is not configured; a previous secret under such a key
    is left out (the current one still signs)."""
    out = [ctx.secrets.open(endpoint.secret_key_id, endpoint.secret_sealed, endpoint.id)]
    if (
        endpoint.previous_secret_sealed is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    ):
        try:
            out.append(
                ctx.secrets.open(
                    endpoint.previous_secret_key_id or LEGACY_KEY_ID,
                    endpoint.previous_secret_sealed,
                    endpoint.id,
                )
            )
        except KeyUnavailable as exc:
            log.error(
                "endpoint %s: its previous secret is %s; signing with the current one only", endpoint.id, exc
            )
    return out


def reseal(box: SecretBox, rows: list[Endpoint], now: dt.datetime) -> tuple[int, dict[str, int]]:
    """Reseal locked endpoints' secrets under the current key; a previous secret past its grace
    period signs nothing any more and is dropped instead. Returns how many endpoints were resealed
    and, per key id, how many secrets could not be (their key is not configured)."""
    current = box.ring.current_id
    done, unavailable = 0, dict[str, int]()
    for e in rows:
        changed = False
        if e.previous_secret_sealed is not None and (
            e.previous_secret_expires_at is None or e.previous_secret_expires_at <= now
        ):
            e.previous_secret_sealed, e.previous_secret_key_id, e.previous_secret_expires_at = (
                None,
                None,
                None,
            )
            changed = True
        try:
            if e.secret_key_id != current:
                secret = box.open(e.secret_key_id, e.secret_sealed, e.id)
                e.secret_key_id, e.secret_sealed = box.seal(secret, e.id)
                changed = True
            if e.previous_secret_sealed is not None and e.previous_secret_key_id != current:
                old = box.open(e.previous_secret_key_id or LEGACY_KEY_ID, e.previous_secret_sealed, e.id)
                e.previous_secret_key_id, e.previous_secret_sealed = box.seal(old, e.id)
                changed = True
        except KeyUnavailable as exc:
            unavailable[exc.key_id] = unavailable.get(exc.key_id, 0) + 1
            continue
        done += changed
    return done, unavailable


def disable(session: Session, ctx: AppContext, endpoint: Endpoint, reason: str) -> None:
    if endpoint.status == "disabled":
        return
    endpoint.status = "disabled"
    endpoint.disabled_reason = reason[:500]
    endpoint.disabled_at = utcnow()
    publish(
        session,
        ctx.settings,
        licensee_id=endpoint.licensee_id,
        endpoint_disabled=pb.EndpointDisabled(endpoint_id=endpoint.id, reason=reason[:500]),
    )


def enable(session: Session, endpoint: Endpoint) -> int:
    """Active again (`endpoint` row-locked by the caller): what was dead-lettered to it while it
    was disabled is re-driven (the same re-drive as the operator's), and notices that reached no
    endpoint meanwhile go to it, as to a new endpoint. Returns the deliveries put in line."""
    was_disabled = endpoint.status == "disabled"
    endpoint.status = "active"
    endpoint.disabled_reason = None
    endpoint.disabled_at = None
    endpoint.failing_since = None
    if not was_disabled:
        return 0
    session.flush()
    redriven = notices_service.redrive_dead(session, endpoint.licensee_id, endpoint.id)
    return redriven + deliveries_repo.add_deliveries_for_new_endpoint(session, endpoint)


def to_out(e: Endpoint) -> EndpointOut:
    return EndpointOut(
        id=e.id,
        licensee_id=e.licensee_id,
        url=e.url,
        description=e.description,
        status=e.status,
        disabled_reason=e.disabled_reason,
        disabled_at=e.disabled_at,
        failing_since=e.failing_since,
        last_success_at=e.last_success_at,
        created_at=e.created_at,
    )


def cancel_deliveries(session: Session, endpoint: Endpoint) -> None:
    deliveries_repo.cancel_deliveries_to(session, endpoint.id)
