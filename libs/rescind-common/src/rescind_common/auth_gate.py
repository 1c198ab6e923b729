"""Authenticate before a body is read: a request that sends a body to a route needing a token is
answered 401 unless its bearer token verifies, before `receive` is called once. Reading and parsing
a large JSON body costs seconds of event loop; without this, anyone could spend them for free."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from rescind_common.auth import VERIFIED_STATE_KEY, Principal, TokenVerifier
from rescind_common.problems import PROBLEM_BASE, Problem, problem_response

# A token refused earlier in this request: (token, Problem), so a refusal costs one check, too.
REFUSED_STATE_KEY = "rescind_refused_token"
# Methods whose requests may carry a body the app would read.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Paths that take a body without a token. None today: every POST/PUT/DELETE route of the three
# services needs one (tests/common/test_auth_gate.py checks every route against this list).
PUBLIC_BODY_PATHS: frozenset[str] = frozenset()

_NO_TOKEN = Problem(401, "A bearer token is required.")

# An answer sent before a body larger than this was read closes the connection (see
# rescind_common.app.CloseUnreadBodyMiddleware): draining it would let a refused caller make the
# server take in the whole body after all.
UNREAD_BODY_CLOSE_BYTES = 64 * 1024


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _verifier(scope: Scope) -> TokenVerifier | None:
    return getattr(getattr(scope.get("app"), "state", None), "token_verifier", None)


async def scope_principal(scope: Scope) -> tuple[Principal | None, Problem | None]:
    """The request's verified principal, or why not; verified once per request whoever asks first
    (rate limiter, auth gate), success handed to `current_principal` by VERIFIED_STATE_KEY."""
    token = bearer_token(scope)
    if token is None:
        return None, _NO_TOKEN
    state = scope.setdefault("state", {})
    verified = state.get(VERIFIED_STATE_KEY)
    if verified is not None and verified[0] == token:
        return verified[1], None
    refused = state.get(REFUSED_STATE_KEY)
    if refused is not None and refused[0] == token:
        return None, refused[1]
    verifier = _verifier(scope)
    if verifier is None:
        return None, _NO_TOKEN
    try:
        principal = verifier.cached(token)
        if principal is None:
            if verifier.uses_network:  # a JWKS fetch must not block the event loop
                principal = await anyio.to_thread.run_sync(verifier.verify, token)
            else:
                principal = verifier.verify(token)
    except Problem as exc:
        state[REFUSED_STATE_KEY] = (token, exc)
        return None, exc
    except Exception:
        problem = Problem(401, "The token is invalid.")
        state[REFUSED_STATE_KEY] = (token, problem)
        return None, problem
    state[VERIFIED_STATE_KEY] = (token, principal)
    return principal, None


def announced_body(scope: Scope) -> int | None:
    """The body size the request's headers announce: None when none, -1 when not known in advance
    (chunked, or a Content-Length that is not a number)."""
    size: int | None = None
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding":
            return -1
        if name == b"content-length":
            value = value.strip()
            size = int(value) if value.isdigit() else (None if value == b"" else -1)
    return size


def _announces_body(scope: Scope) -> bool:
    return announced_body(scope) not in (None, 0)


class AuthBeforeBodyMiddleware:
    """Plain ASGI: a POST/PUT/PATCH/DELETE announcing a body, off `public_paths`, gets 401 problem
    JSON without its body being read unless its token verifies. Routes still check the role; this
    only keeps tokenless callers from making the app read and parse bodies. Requests without a body
    pass untouched: the route answers them (401, 404, 405) as before."""

    def __init__(self, app: ASGIApp, public_paths: Iterable[str] = PUBLIC_BODY_PATHS) -> None:
        self.app = app
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or scope["path"] in self.public_paths
            or not _announces_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        principal, problem = await scope_principal(scope)
        if principal is None:
            assert problem is not None
            response = problem_response(
                401,
                problem.detail,
                type_=PROBLEM_BASE + "unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="rescind"'},
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class NoTokenShortcut:
    """Outside every other layer (Starlette's error and exception middleware, metrics, limits): a
    write that announces a body and carries no Authorization header at all gets its 401 from
    pre-built bytes. Such a request can only end that way, and a flood of them is the cheapest
    attack there is; each layer it skips is CPU the authenticated callers keep. The answer is the
    gate's own (problem JSON, WWW-Authenticate), closing the connection when the body is large.
    Requests with a token, good or bad, take the normal path. The answer comes after `delay`: a
    caller looping on tokenless writes gets 1/delay answers a second per connection, not thousands
    (every request it makes costs the server CPU its callers with tokens need)."""

    def __init__(
        self,
        app: ASGIApp,
        on_refused: Callable[[str], None],
        public_paths: Iterable[str],
        *,
        delay: float = 0.0,
    ) -> None:
        self.app = app
        self.delay = delay
        self.on_refused = on_refused
        self.public_paths = frozenset(public_paths)
        body = json.dumps(
            {
                "type": PROBLEM_BASE + "unauthorized",
                "title": "Unauthorized",
                "status": 401,
                "detail": _NO_TOKEN.detail,
            },
            separators=(",", ":"),
        ).encode()
        self._body = {"type": "http.response.body", "body": body}
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="rescind"'),
        ]
        self._start = {"type": "http.response.start", "status": 401, "headers": headers}
        self._start_close = {**self._start, "headers": [*headers, (b"connection", b"close")]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or scope["path"] in self.public_paths
        ):
            await self.app(scope, receive, send)
            return
        if any(name == b"authorization" for name, _ in scope.get("headers", [])):
            await self.app(scope, receive, send)  # a token, good or bad: the normal path
            return
        size = announced_body(scope)
        if size is None or size == 0:
            await self.app(scope, receive, send)  # no body: the route answers, as before
            return
        large = size < 0 or size > UNREAD_BODY_CLOSE_BYTES
        if self.delay > 0:
            # A timer, not work: the body waits unread in the socket (flow control stops the sender).
            await anyio.sleep(self.delay)
        await send(self._start_close if large else self._start)
        await send(self._body)
        self.on_refused(scope["method"])


__all__ = [
    "BODY_METHODS",
    "PUBLIC_BODY_PATHS",
    "REFUSED_STATE_KEY",
    "UNREAD_BODY_CLOSE_BYTES",
    "AuthBeforeBodyMiddleware",
    "NoTokenShortcut",
    "announced_body",
    "bearer_token",
    "scope_principal",
]
