"""The bearer token one Rescind service shows another (the worker and the consent API asking the
registry who holds samples): the configured token, else a short-lived `service` token minted with
the development signing key, carrying the callee's audience and the caller's one scope alone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from rescind_common.auth import SCOPE_SERVICE, Role, ServiceScope, ensure_dev_key, mint_token
from rescind_common.settings import RescindSettings

# The development signing key is an EC P-256 key: its tokens are ES256, whatever else is accepted.
DEV_KEY_ALGORITHM = "ES256"


def service_audience(settings: RescindSettings, scopes: Iterable[ServiceScope]) -> str:
    """The one audience a service token for `scopes` carries (all of them must open one service)."""
    callees = {SCOPE_SERVICE[ServiceScope(s)] for s in scopes}
    if len(callees) != 1:
        raise ValueError("a service token's scopes must all be for one service (its audience)")
    return settings.audience_of(callees.pop())


def mint_service_token(
    settings: RescindSettings, *, subject: str, scopes: Iterable[ServiceScope], ttl: dt.timedelta
) -> str:
    """A `service` token signed with the development key, for the issuer and the callee's audience.
    Refused (ValueError) when the settings do not accept that key's algorithm: the callee would
    refuse the token anyway, and this says why."""
    accepted = {a.upper() for a in settings.auth_algorithms}
    if DEV_KEY_ALGORITHM not in accepted:
        raise ValueError(
            f"service tokens are {DEV_KEY_ALGORITHM} (the development key), which RESCIND_AUTH_ALGORITHMS "
            "does not accept; configure a token for the callee instead"
        )
    scopes = [ServiceScope(s) for s in scopes]
    return mint_token(
        ensure_dev_key(settings.dev_auth_key_file),
        sub=subject,
        role=Role.SERVICE,
        issuer=settings.auth_issuer,
        audience=service_audience(settings, scopes),
        ttl=ttl,
        algorithm=DEV_KEY_ALGORITHM,
        scopes=scopes,
    )


class ServiceToken:
    """`static` when one is configured; else a minted token, minted again once half its life
    has gone (so that one in use never expires mid-request)."""

    def __init__(
        self,
        settings: RescindSettings,
        *,
        subject: str,
        scope: ServiceScope,
        static: str | None,
        ttl: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings
        self.subject = subject
        self.scope = scope
        self.static = static
        self.ttl = ttl
        self.clock = clock
        self._token: str | None = None
        self._minted_at: dt.datetime | None = None

    def value(self) -> str:
        if self.static:
            return self.static
        now = self.clock()
        if self._token is None or self._minted_at is None or now - self._minted_at > self.ttl / 2:
            self._token = mint_service_token(
                self.settings, subject=self.subject, scopes=[self.scope], ttl=self.ttl
            )
            self._minted_at = now
        return self._token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value()}"}
