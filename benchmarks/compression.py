"""Response compression: starlette's GZipMiddleware against otelperf's CompressionMiddleware.

Both wrap the same raw ASGI app, which answers every request with the same 10 KiB JSON
body, and both compress with gzip at the same level. Requests are driven straight
through the ASGI interface (no server, no HTTP client) so the figures are the
middleware's own cost: header handling plus compression. Rounds alternate between the
contenders in one process; the median of the per-round means is reported.

    python benchmarks/compression.py [--rounds 30] [--requests 300] [--level 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otelperf.config._schema import HttpCompression
from otelperf.http._compression import CompressionMiddleware, available_encodings

BODY_SIZE = 10 * 1024


def json_body(size: int = BODY_SIZE) -> bytes:
    """A realistic JSON document (a product listing) of at least ``size`` bytes."""
    rng = random.Random(42)
    items: list[dict[str, object]] = []
    while True:
        i = len(items)
        items.append(
            {
                "id": i,
                "sku": f"SKU-{rng.randrange(10**8):08d}",
                "name": rng.choice(["Kettle", "Lamp", "Chair", "Desk", "Mug"]) + f" {i}",
                "price": round(rng.uniform(1, 500), 2),
                "in_stock": rng.random() > 0.2,
                "tags": rng.sample(["home", "office", "sale", "new", "eco", "gift"], 2),
            }
        )
        body = json.dumps({"items": items, "total": len(items)}).encode()
        if len(body) >= size:
            return body


def make_app(body: bytes) -> ASGIApp:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # A fresh list each time: starlette's GZipMiddleware edits the headers in place.
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    return app


SCOPE: Scope = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items",
    "raw_path": b"/items",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"shop.example"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("shop.example", 80),
}


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def without_accept_encoding(scope: Scope) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
    return {**scope, "headers": headers}


async def one_round(app: ASGIApp, scope: Scope, requests: int, sink: list[int]) -> float:
    """Mean µs per request over ``requests`` sequential requests."""

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            sink.append(len(message["body"]))

    start = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - start) / requests * 1e6


async def run(
    contenders: dict[str, ASGIApp], scope: Scope, rounds: int, requests: int
) -> dict[str, tuple[float, int]]:
    """Median µs per response and the body size sent, for each contender."""
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    sizes: dict[str, list[int]] = {name: [] for name in contenders}
    for name, app in contenders.items():  # warm-up
        await one_round(app, scope, requests // 10 or 1, sizes[name])
    for _ in range(rounds):
        for name, app in contenders.items():
            timings[name].append(await one_round(app, scope, requests, sizes[name]))
    return {name: (statistics.median(timings[name]), sizes[name][-1]) for name in contenders}


def report(title: str, results: dict[str, tuple[float, int]], ours: str, theirs: str) -> None:
    print(f"\n{title}")
    print(f"  {'':28} {'µs/response':>12} {'body bytes':>11}")
    for name, (micros, size) in results.items():
        print(f"  {name:28} {micros:12.1f} {size:11d}")
    ratio = results[ours][0] / results[theirs][0]
    print(f"  ratio {ours} / {theirs}: {ratio:.3f} (below 1: otelperf is faster)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--level", type=int, default=6, help="gzip level for both (default 6)")
    args = parser.parse_args(argv)

    body = json_body()
    inner = make_app(body)

    def ours(algorithms: list[str]) -> ASGIApp:
        config = HttpCompression.model_validate({"algorithms": algorithms, "level": args.level})
        return CompressionMiddleware(inner, config=config)

    starlette = GZipMiddleware(inner, minimum_size=500, compresslevel=args.level)
    contenders: dict[str, ASGIApp] = {
        "no middleware": inner,
        "starlette GZipMiddleware": starlette,
        "otelperf gzip": ours(["gzip"]),
    }
    for extra in ("zstd", "br"):
        if extra in available_encodings():
            contenders[f"otelperf {extra}"] = ours([extra])

    print(
        f"{len(body)} B JSON response, gzip level {args.level}, {args.rounds} interleaved "
        f"rounds x {args.requests} requests each, median of the round means"
    )
    compressing = asyncio.run(run(contenders, SCOPE, args.rounds, args.requests))
    report(
        "client sends Accept-Encoding: gzip, deflate, br, zstd",
        compressing,
        "otelperf gzip",
        "starlette GZipMiddleware",
    )
    overhead = {k: contenders[k] for k in ("no middleware", "starlette GZipMiddleware")}
    overhead["otelperf"] = ours(["zstd", "br", "gzip"])
    plain = asyncio.run(run(overhead, without_accept_encoding(SCOPE), args.rounds, args.requests))
    report(
        "client sends no Accept-Encoding (middleware overhead alone)",
        plain,
        "otelperf",
        "starlette GZipMiddleware",
    )


if __name__ == "__main__":
    main()
