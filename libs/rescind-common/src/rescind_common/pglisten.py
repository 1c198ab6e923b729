"""PostgreSQL LISTEN on a dedicated connection, in a thread: wakes a loop when a NOTIFY arrives.

A notification is only a hint that there may be work: the loop it wakes must still read the
database, and must still poll now and then (a notification can be missed: the connection drops, a
network partition, a NOTIFY sent before LISTEN). `Listener` wakes the loop on every (re)connect too,
for whatever was committed while it was not listening, and when it loses the connection, so that the
loop can switch to a short poll until it is back (`listening`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# A connection that dies without a word (a partition, a dead host) is noticed after about
# idle + interval * count seconds; the loop's fallback poll covers the meantime.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}


def libpq_url(engine: Engine) -> str:
    """The engine's database as a libpq URL (for a psycopg connection outside the pool)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """LISTEN `channel` on its own autocommit connection in a daemon thread, reconnecting after
    `retry` seconds when the connection is lost. `on_wake()` is called for every notification,
    after every successful LISTEN and after every lost connection; `on_state(listening)` when
    `listening` changes. Both are called from the listener's thread and must be quick."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_wake: Callable[[], None],
        *,
        on_state: Callable[[bool], None] | None = None,
        retry: float = 2.0,
        name: str = "pg-listen",
    ) -> None:
        self.url = url
        self._conninfo = make_conninfo(url, connect_timeout=5, **KEEPALIVES)
        self.channel = channel
        self.on_wake = on_wake
        self.on_state = on_state
        self.retry = retry
        self.listening = False
        # The backend pid of the current LISTEN connection (tests terminate it).
        self.backend_pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _set_listening(self, value: bool) -> None:
        if value != self.listening:
            self.listening = value
            if self.on_state is not None:
                self.on_state(value)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.backend_pid = conn.info.backend_pid
                    self._set_listening(True)
                    self.on_wake()  # anything committed while we were not listening
                    while not self._stop.is_set():
                        # The timeout only bounds how long a stop waits; a lost connection raises.
                        for _ in conn.notifies(timeout=1.0):
                            self.on_wake()
            except Exception as exc:
                was = self.listening
                self._set_listening(False)
                self.backend_pid = None
                if was:
                    self.on_wake()  # let the loop fall back to its short poll now
                if not self._stop.is_set():
                    log.warning(
                        "LISTEN %s failed (%s: %s); polling, reconnecting in %.0fs",
                        self.channel,
                        type(exc).__name__,
                        exc,
                        self.retry,
                    )
                self._stop.wait(self.retry)
        self._set_listening(False)
        self.backend_pid = None
