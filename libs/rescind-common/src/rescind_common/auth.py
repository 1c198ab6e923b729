"""Caller authentication: bearer JWTs verified with PyJWT, roles as FastAPI dependencies."""

from __future__ import annotations

import datetime as dt
import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from rescind_common.jwks import JwksKeys, KeysUnavailable, UnknownKey
from rescind_common.keyfiles import create_once
from rescind_common.problems import Problem
from rescind_common.settings import RescindSettings

# A token already verified for this request (by the rate limiter): (token, Principal) in scope["state"].
VERIFIED_STATE_KEY = "rescind_verified_token"


class Role(enum.StrEnum):
    SUBJECT = "subject"
    LICENSEE = "licensee"
    OPERATOR = "operator"
    # One Rescind service calling another: only what its `scope` claim names, on its callee alone.
    SERVICE = "service"


class ServiceScope(enum.StrEnum):
    """What a `service` token may do (its `scope` claim: space-separated, as in RFC 8693 / RFC 9068).
    Each is one call of one service; everything else answers 403 to a service token."""

    # registry POST /v1/holders with `view: licenses`: revocation-worker's intake.
    HOLDERS = "holders"
    # registry POST /v1/holders with `view: samples`: consent-api's access export (the recipients).
    RECIPIENTS = "recipients"


# The service whose API each scope opens: a service token carries that audience alone.
SCOPE_SERVICE: dict[ServiceScope, str] = {
    ServiceScope.HOLDERS: "registry",
    ServiceScope.RECIPIENTS: "registry",
}


@dataclass(frozen=True)
class Principal:
    sub: str
    role: Role
    claims: dict[str, Any]
    # The `scope` claim's entries; only a service token's are ever consulted.
    scopes: frozenset[str] = frozenset()

    def has_scope(self, scope: ServiceScope) -> bool:
        return self.role == Role.SERVICE and scope.value in self.scopes


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        detail,
        type_="https://rescind.dev/problems/unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="rescind"'},
    )


def ensure_dev_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load, or create on first use, the development token-signing key (ES256)."""

    def make() -> bytes:
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key = serialization.load_pem_private_key(create_once(path, make), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


# How long a verified token is trusted without a new signature check, at most (its `exp` comes first).
TOKEN_CACHE_TTL = 300.0


class TokenVerifier:
    """Verifies signature, `exp`, `iss`, `aud` and the pinned algorithm; extracts `sub`, `role` and
    `scope`. `service` names whose API this is: its audience is required (RESCIND_AUTH_AUDIENCE, when
    set, is accepted too, except for service tokens).

    Successful verifications are cached per exact token string (see `verify`)."""

    def __init__(self, settings: RescindSettings, *, service: str) -> None:
        self.algorithms = [a for a in settings.auth_algorithms if a.lower() != "none"]
        if not self.algorithms:
            raise ValueError("no usable JWT algorithm configured")
        self.issuer = settings.auth_issuer
        self.own_audience = settings.audience_of(service)
        self.audience = [self.own_audience, *([settings.auth_audience] if settings.auth_audience else [])]
        self.leeway = settings.auth_leeway_seconds
        self._jwks: JwksKeys | None = None
        self._key: Any = None
        if settings.auth_jwks_url:
            self._jwks = JwksKeys(
                settings.auth_jwks_url,
                lifespan=settings.auth_jwks_cache_seconds,
                refetch_interval=settings.auth_jwks_refetch_seconds,
            )
        elif settings.auth_public_key_file:
            self._key = serialization.load_pem_public_key(settings.auth_public_key_file.read_bytes())
        elif settings.profile == "development":
            self._key = ensure_dev_key(settings.dev_auth_key_file).public_key()
        else:
            raise ValueError("no token verification key configured")
        # Verified tokens, keyed by the exact token string: a repeat costs a dict lookup instead of
        # an ES256 check (~1 ms of CPU). Only successes are kept, each until its `exp` (+ leeway, as
        # PyJWT allows), at most `TOKEN_CACHE_TTL` seconds and, with a JWKS, no longer than the key
        # set that verified it (so a key dropped from the JWKS stops working when the set is
        # fetched again), least recently used first out past `auth_token_cache_size`.
        self.cache_size = settings.auth_token_cache_size
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.clock: Callable[[], float] = time.time

    @property
    def uses_network(self) -> bool:
        """True when verifying may fetch keys (JWKS): callers on an event loop use a thread."""
        return self._jwks is not None

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified earlier and not yet lapsed; None otherwise (no I/O)."""
        if self.cache_size <= 0:
            return None
        now = self.clock()
        with self._cache_lock:
            hit = self._cache.get(token)
            if hit is None:
                return None
            if now < hit[1]:
                self._cache.move_to_end(token)
                return hit[0]
            del self._cache[token]
        return None

    def verify(self, token: str) -> Principal:
        hit = self.cached(token)
        if hit is not None:
            return hit
        # First sight (or lapsed): every check, exactly as uncached. Failures raise and are not kept.
        principal, key_ttl = self._verify(token)
        if self.cache_size <= 0:
            return principal
        now = self.clock()
        exp = principal.claims["exp"]  # required, and numeric: PyJWT checked it
        # PyJWT refuses once `exp <= now - leeway`, so a cached entry ends at exp + leeway.
        until = min(float(exp) + self.leeway, now + TOKEN_CACHE_TTL, now + key_ttl)
        if now < until:
            with self._cache_lock:
                self._cache[token] = (principal, until)
                self._cache.move_to_end(token)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return principal

    def _signing_key(self, header: dict[str, Any]) -> tuple[Any, float]:
        """The key that must have signed a token with this header, and for how many more seconds
        it may be trusted."""
        if self._jwks is None:
            return self._key, TOKEN_CACHE_TTL
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _unauthorized("The token's key id is invalid.")
        try:
            key, valid_until = self._jwks.key(kid)
        except UnknownKey as exc:
            raise _unauthorized("The token is signed with an unknown key.") from exc
        except KeysUnavailable as exc:
            raise Problem(
                503,
                "The token-verification keys cannot be fetched; retry shortly.",
                type_="https://rescind.dev/problems/overloaded",
                headers={"Retry-After": "5"},
            ) from exc
        return key, max(0.0, valid_until - self._jwks.clock())

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _unauthorized("The bearer token is malformed.") from exc
        if header.get("alg") not in self.algorithms:
            raise _unauthorized("The token's algorithm is not accepted.")
        key, key_ttl = self._signing_key(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("The token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise _unauthorized("The token's audience is wrong.") from exc
        except jwt.InvalidIssuerError as exc:
            raise _unauthorized("The token's issuer is wrong.") from exc
        except jwt.PyJWTError as exc:
            raise _unauthorized("The token is invalid.") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise _unauthorized("The token's subject is invalid.")
        try:
            role = Role(str(claims.get("role")))
        except ValueError as exc:
            raise _unauthorized("The token carries no known role.") from exc
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise _unauthorized("The token's scope is invalid.")
        if role == Role.SERVICE:
            # A service token names its callee: the shared (deprecated) audience never opens a service.
            aud = claims["aud"]
            if self.own_audience not in (aud if isinstance(aud, list) else [aud]):
                raise _unauthorized("The token's audience is wrong.")
        return Principal(sub=sub, role=role, claims=claims, scopes=frozenset(scope.split())), key_ttl


def mint_token(
    private_key: Any,
    *,
    sub: str,
    role: Role | str,
    issuer: str,
    audience: str | list[str],
    ttl: dt.timedelta = dt.timedelta(hours=12),
    algorithm: str = "ES256",
    scopes: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> str:
    """`audience`: one, or a list (a token any of those services accepts)."""
    now = dt.datetime.now(dt.UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "role": str(Role(role)),
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now - dt.timedelta(seconds=5),
        "exp": now + ttl,
    }
    scope = " ".join(scopes)
    if scope:
        claims["scope"] = scope
    claims.update(extra or {})
    return jwt.encode(claims, private_key, algorithm=algorithm)


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # async: usually the rate limiter has verified the token already, and a local-key check is
    # cheaper than a hop to a worker thread; only a JWKS fetch (network) goes to a thread.
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("A bearer token is required.")
    verified = request.scope.get("state", {}).get(VERIFIED_STATE_KEY)
    if verified is not None and verified[0] == credentials.credentials:
        principal: Principal = verified[1]
    else:
        verifier: TokenVerifier = request.app.state.token_verifier
        cached = verifier.cached(credentials.credentials)
        if cached is not None:
            principal = cached
        elif verifier.uses_network:
            principal = await run_in_threadpool(verifier.verify, credentials.credentials)
        else:
            principal = verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


def forbidden(detail: str) -> Problem:
    return Problem(403, detail, type_="https://rescind.dev/problems/forbidden")


def require_role(*roles: Role, scopes: Iterable[ServiceScope] = ()) -> Any:
    """Callers with one of `roles`, or service tokens carrying one of `scopes` (403 otherwise).
    Role.SERVICE itself is never in `roles`: a service is let in by scope alone."""
    allowed = set(roles)
    admitting = frozenset(scopes)
    assert Role.SERVICE not in allowed, "services are admitted by scope, not by role"
    needed = " or ".join(sorted(r.value for r in allowed))
    if admitting:
        needed += " (or a service token with scope " + " or ".join(sorted(admitting)) + ")"

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed and not any(principal.has_scope(s) for s in admitting):
            raise forbidden(f"This operation needs the role {needed}.")
        return principal

    return Depends(dependency)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
CurrentSubject = Annotated[Principal, require_role(Role.SUBJECT)]
CurrentLicensee = Annotated[Principal, require_role(Role.LICENSEE)]
RequireOperator = Annotated[Principal, require_role(Role.OPERATOR)]
