"""Token-verification keys from an identity provider's JWKS, kept no longer than the key set is.

PyJWKClient's per-`kid` key cache never expires: a key the provider removed keeps verifying tokens
until the process restarts. Here the whole set is the cache: it is fetched again once it is
`lifespan` seconds old, so a removed key stops working within that interval, and every answer says
until when it holds (the token cache caps its entries there). An unknown `kid` (a new key, or a
forged one) fetches the set again at most once per `refetch_interval`: a flood of tokens with
random `kid`s costs one request to the provider, not one each.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

# After a failed fetch with no valid set held, requests are refused (503) this long before the next
# try, so that a provider outage costs one attempt a second, not one per request.
FAILED_FETCH_PAUSE = 1.0


class KeysUnavailable(Exception):
    """The key set could not be fetched and none is held that is still valid."""


class UnknownKey(Exception):
    """The token names a key the current key set does not have."""


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        lifespan: float = 300.0,
        refetch_interval: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.lifespan = lifespan
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.clock = clock
        self.fetches = 0  # successful fetches, for tests and metrics
        self._keys: dict[str | None, Any] = {}
        self._fetched_at: float | None = None
        self._last_refetch: float | None = None  # the last fetch an unknown kid asked for
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def valid_until(self) -> float:
        """When the key set held now must be fetched again (the clock's time; 0 when none is held)."""
        return 0.0 if self._fetched_at is None else self._fetched_at + self.lifespan

    def holds(self, kid: str | None) -> bool:
        """True when `kid` is in a key set that is still within its lifespan (no I/O)."""
        return self._fetched_at is not None and self.clock() < self.valid_until() and kid in self._keys

    def key(self, kid: str | None) -> tuple[Any, float]:
        """The verification key for `kid` and until when it may be trusted; may fetch (blocking I/O).

        Raises UnknownKey when the set (fresh, or fetched again for this `kid` within the refetch
        rate) lacks it, KeysUnavailable when no valid set can be had."""
        with self._lock:  # one fetch at a time; the others wait for its answer
            now = self.clock()
            if self._fetched_at is None or now >= self.valid_until():
                if self._failed_at is not None and now - self._failed_at < FAILED_FETCH_PAUSE:
                    # The provider just failed: do not make every waiting request try (and wait) again.
                    raise KeysUnavailable("the last fetch failed")
                self._fetch(now)
            elif kid not in self._keys and (
                self._last_refetch is None or now - self._last_refetch >= self.refetch_interval
            ):
                self._last_refetch = now
                self._fetch(now, keep_on_error=True)
            if kid not in self._keys:
                raise UnknownKey(kid)
            return self._keys[kid], self.valid_until()

    def _fetch(self, now: float, *, keep_on_error: bool = False) -> None:
        try:
            response = httpx.get(self.url, timeout=self.timeout, follow_redirects=False)
            response.raise_for_status()
            keys = parse_key_set(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            if keep_on_error:
                return  # a refetch for an unknown kid failed: the fresh set still holds
            # Expired and not renewed: refuse rather than trust keys the provider may have dropped.
            self._keys, self._fetched_at, self._failed_at = {}, None, now
            raise KeysUnavailable(str(exc)) from exc
        self._keys, self._fetched_at, self._failed_at = keys, now, None
        self.fetches += 1


def parse_key_set(body: bytes) -> dict[str | None, Any]:
    """`kid` → key for the signing keys of a JWKS document; a set of one key also answers tokens
    without a `kid`. ValueError when the document is not a usable key set."""
    try:
        document = json.loads(body)
        key_set = jwt.PyJWKSet.from_dict(document)
    except (ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"not a usable JWKS: {exc}") from exc
    keys: dict[str | None, Any] = {
        k.key_id: k.key for k in key_set.keys if k.public_key_use in (None, "sig") and k.key_id
    }
    if len(key_set.keys) == 1:
        keys[None] = key_set.keys[0].key
    return keys


__all__ = ["JwksKeys", "KeysUnavailable", "UnknownKey", "parse_key_set"]
