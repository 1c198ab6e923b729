"""A success answer is only sent once the change is committed: the request's transaction ends
before the response goes out (FastAPI's default would commit after sending it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from support.helpers import register


def test_commit_happens_before_the_response_is_sent(client: Any, seller: dict[str, str]) -> None:
    engine = client.app.state.ctx.engine
    order: list[str] = []

    def on_commit(conn: Any) -> None:
        order.append("commit")

    event.listen(engine, "commit", on_commit)

    async def app_with_probe(scope: Any, receive: Any, send: Any) -> None:
        async def probed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                order.append("response")
            await send(message)

        await inner(scope, receive, probed_send)

    inner = client.app.middleware_stack or client.app.build_middleware_stack()
    client.app.middleware_stack = app_with_probe
    try:
        register(client, seller)
    finally:
        client.app.middleware_stack = inner
        event.remove(engine, "commit", on_commit)
    assert "commit" in order and "response" in order
    assert order.index("commit") < order.index("response"), order
