"""Which HTTP client should deliver webhooks? POST/s to a local receiver at 50 concurrent requests.

Same run, same receiver (an aiohttp server in its own process answering 204), same 1 KiB JSON body:
  - aiohttp ClientSession (one pooled session)
  - httpx AsyncClient (one pooled client)
  - httpx Client (sync, keep-alive) from 50 threads
Prints requests/s for each and the ratio to the fastest.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import sys
import threading
import time

import aiohttp
import httpx
from aiohttp import web

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
CONCURRENCY = 50
BODY = json.dumps({"type": "revocation.notice", "data": {"x": "y" * 1000}}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int) -> None:
    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def run_aiohttp(url: str) -> float:
    conn = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=conn) as session:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with sem, session.post(url, data=BODY, headers={"content-type": "application/json"}) as r:
                await r.read()
                assert r.status == 204

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(N)))
        return N / (time.perf_counter() - t)


async def run_httpx_async(url: str) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits) as client:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with sem:
                r = await client.post(url, content=BODY, headers={"content-type": "application/json"})
                assert r.status_code == 204

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(N)))
        return N / (time.perf_counter() - t)


def run_httpx_sync(url: str) -> float:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    per = N // CONCURRENCY
    with httpx.Client(limits=limits) as client:

        def work() -> None:
            for _ in range(per):
                r = client.post(url, content=BODY, headers={"content-type": "application/json"})
                assert r.status_code == 204

        threads = [threading.Thread(target=work) for _ in range(CONCURRENCY)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return per * CONCURRENCY / (time.perf_counter() - t)


def main() -> None:
    port = free_port()
    proc = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    proc.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/hook"
    results = {
        "aiohttp ClientSession": asyncio.run(run_aiohttp(url)),
        "httpx AsyncClient": asyncio.run(run_httpx_async(url)),
        "httpx Client (sync, 50 threads)": run_httpx_sync(url),
    }
    proc.terminate()
    best = max(results.values())
    print(f"{'client':<34}{'POST/s':>10}{'vs best':>10}   (n={N}, {CONCURRENCY} concurrent)")
    for name, rps in results.items():
        print(f"{name:<34}{rps:>10.0f}{rps / best:>10.2f}")


if __name__ == "__main__":
    main()
