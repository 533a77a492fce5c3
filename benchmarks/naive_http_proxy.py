"""The baseline the router's HTTP port is measured against: a naive Python aiohttp pass-through proxy.

One aiohttp server; every request is forwarded to one upstream over a
keep-alive aiohttp session, body and answer whole. No routing, no holding,
no metrics, no registry: what "just put a Python HTTP proxy in front" costs.

    python benchmarks/naive_http_proxy.py --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

DROPPED = frozenset(("host", "connection", "content-length", "transfer-encoding"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        async with session.request(request.method, f"http://{args.upstream}{request.path_qs}", data=await request.read(), headers=headers) as answer:
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED}
            return web.Response(status=answer.status, body=body, headers=kept)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = args.listen.rsplit(":", 1)
    await web.TCPSite(runner, host, int(port)).start()
    print("serving", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
