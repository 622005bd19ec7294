"""A small Starlette shop for the demo and the tests: fast, slow, failing and streaming routes.

``create_app(perf)`` uses the Perf's ``products`` cache for product lookups and its
``events`` batcher for checkout events when the config declares them; ``app`` is the
plain shop, with neither.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

import otelperf

_PRODUCTS = {
    i: {"id": i, "name": f"product-{i}", "price": round(5 + i * 1.25, 2)} for i in range(1, 51)
}


async def list_products(request: Request) -> JSONResponse:
    return JSONResponse(list(_PRODUCTS.values())[:10])


async def load_product(product_id: int) -> dict[str, Any] | None:
    """The origin of a product: a 2 ms lookup, like a database query."""
    await asyncio.sleep(0.002)
    return _PRODUCTS.get(product_id)


async def checkout_payment() -> int:
    """A slow dependency: 20-60 ms of awaiting, like a payment API."""
    await asyncio.sleep(random.uniform(0.02, 0.06))
    return random.randint(1000, 9999)


async def report(request: Request) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for i in range(5):
            await asyncio.sleep(0.002)
            yield f"row {i}\n".encode()

    return StreamingResponse(rows(), media_type="text/plain")


async def fail(request: Request) -> PlainTextResponse:
    raise RuntimeError("the payment provider is down")


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app(perf: otelperf.Perf | None = None) -> Starlette:
    """The shop; with ``perf``, product lookups are cached and checkouts emit events."""
    lookup = load_product
    events = None
    if perf is not None and "products" in perf.resources.caches:
        lookup = perf.cached("products", key="product:{product_id}")(load_product)
    if perf is not None and "events" in perf.resources.batchers:
        events = perf.batcher("events")

    async def get_product(request: Request) -> JSONResponse:
        product = await lookup(int(request.path_params["product_id"]))
        if product is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(product)

    async def checkout(request: Request) -> JSONResponse:
        order = await checkout_payment()
        if events is not None:
            await events.put({"kind": "checkout", "order": order, "ts": time.time()})
        return JSONResponse({"order": order}, status_code=201)

    api = Starlette(
        routes=[
            Route("/products", list_products),
            Route("/products/{product_id:int}", get_product),
            Route("/checkout", checkout, methods=["POST"]),
        ]
    )
    return Starlette(
        routes=[
            Mount("/api", app=api),
            Route("/reports/daily", report),
            Route("/fail", fail),
            Route("/healthz", healthz),
        ]
    )


app = create_app()
