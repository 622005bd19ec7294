"""A small Starlette shop for the demo and the tests: fast, slow, failing and streaming routes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

_PRODUCTS = {
    i: {"id": i, "name": f"product-{i}", "price": round(5 + i * 1.25, 2)} for i in range(1, 51)
}


async def list_products(request: Request) -> JSONResponse:
    return JSONResponse(list(_PRODUCTS.values())[:10])


async def get_product(request: Request) -> JSONResponse:
    product = _PRODUCTS.get(int(request.path_params["product_id"]))
    if product is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse(product)


async def checkout(request: Request) -> JSONResponse:
    # A slow dependency: 20-60 ms of awaiting, like a payment API.
    await asyncio.sleep(random.uniform(0.02, 0.06))
    return JSONResponse({"order": random.randint(1000, 9999)}, status_code=201)


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


api = Starlette(
    routes=[
        Route("/products", list_products),
        Route("/products/{product_id:int}", get_product),
        Route("/checkout", checkout, methods=["POST"]),
    ]
)

app = Starlette(
    routes=[
        Mount("/api", app=api),
        Route("/reports/daily", report),
        Route("/fail", fail),
        Route("/healthz", healthz),
    ]
)
