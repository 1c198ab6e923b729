"""Development tokens: JWTs signed with the local key that the running stack verifies."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import ValidationError

from rescind_cli.errors import CliError
from rescind_common.auth import Role, ServiceScope, ensure_dev_key, mint_token
from rescind_common.service_token import service_audience
from rescind_common.settings import RescindSettings

ROLES = tuple(r.value for r in Role)
SCOPES = tuple(s.value for s in ServiceScope)
# The services refuse a `sub` longer than this.
MAX_SUB_LENGTH = 255

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> dt.timedelta:
    """`90s`, `15m`, `12h`, `7d` or plain seconds."""
    match = _TTL.match(text.lower())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"invalid lifetime {text!r}: use a positive number with s, m, h or d (e.g. 12h)")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def load_settings() -> RescindSettings:
    try:
        return RescindSettings()
    except ValidationError as exc:
        raise CliError(f"invalid RESCIND_* configuration:\n{exc}", code=2) from exc


def dev_token(
    settings: RescindSettings,
    *,
    role: str,
    sub: str,
    ttl: dt.timedelta,
    scopes: list[str] | None = None,
) -> str:
    """A token for `sub` with `role`, signed with the development key (created on first use). A
    person's token carries every service's audience; a `service` token its scopes and its callee's
    audience alone."""
    if settings.profile == "production":
        raise CliError(
            "refusing to mint a token: RESCIND_PROFILE is 'production', which has no development "
            "signing key; get tokens from your identity provider",
            code=2,
        )
    if not sub or len(sub) > MAX_SUB_LENGTH:
        raise CliError(f"--sub must be 1 to {MAX_SUB_LENGTH} characters", code=2)
    scopes = scopes or []
    audience: str | list[str]
    if Role(role) == Role.SERVICE:
        if not scopes:
            raise CliError(f"--role service needs --scope ({' or '.join(SCOPES)})", code=2)
        try:
            audience = service_audience(settings, [ServiceScope(s) for s in scopes])
        except ValueError as exc:
            raise CliError(str(exc), code=2) from exc
    elif scopes:
        raise CliError("--scope is for --role service only", code=2)
    else:
        audience = settings.token_audiences
    key = ensure_dev_key(settings.dev_auth_key_file)
    return mint_token(
        key,
        sub=sub,
        role=Role(role),
        issuer=settings.auth_issuer,
        audience=audience,
        ttl=ttl,
        scopes=scopes,
    )
