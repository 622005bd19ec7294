"""CompressionMiddleware against real Starlette apps, through httpx and a raw ASGI harness."""

from __future__ import annotations

import asyncio
import gzip
import importlib
import json
import logging
import random
import sys
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otelperf.config._schema import HttpCompression
from otelperf.http._compression import (
    THREAD_MIN_SIZE,
    CompressionMiddleware,
    _negotiate,
    available_encodings,
)

ENCODINGS = available_encodings()
"""gzip always; zstd and br when their optional libraries are installed."""

PAYLOAD = json.dumps(
    [{"id": i, "name": f"product {i}", "price": i * 1.25, "tags": ["a", "b"]} for i in range(200)]
).encode()

_OPTIONAL_LIBS = ("compression.zstd", "backports.zstd", "zstandard", "brotli", "brotlicffi")


# --- helpers -------------------------------------------------------------------------


def _config(**fields: Any) -> HttpCompression:
    """A config validated as if read from YAML (so sizes may carry units)."""
    return HttpCompression.model_validate(fields)


def _decoder(encoding: str) -> Callable[[bytes], bytes]:
    """An incremental decoder for ``encoding``: feed it pieces, get the plain bytes so far."""
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "br":
        for name in ("brotli", "brotlicffi"):
            try:
                return partial(_drain, importlib.import_module(name).Decompressor().process)
            except ImportError:
                continue
    if encoding == "zstd":
        for name in ("compression.zstd", "backports.zstd"):
            try:
                return importlib.import_module(name).ZstdDecompressor().decompress  # type: ignore[no-any-return]
            except ImportError:
                continue
        zstandard = importlib.import_module("zstandard")
        return zstandard.ZstdDecompressor().decompressobj().decompress  # type: ignore[no-any-return]
    raise AssertionError(f"no decoder for {encoding}")


def _drain(process: Callable[[bytes], bytes], data: bytes) -> bytes:
    # brotlicffi's decoder may hold decoded bytes back until asked again with no input.
    out = process(data)
    while extra := process(b""):
        out += extra
    return out


def _decode(encoding: str, data: bytes) -> bytes:
    return _decoder(encoding)(data)


def _app(
    endpoint: Callable[[Request], Any],
    config: HttpCompression | None = None,
    on_saved: Callable[[int, str], None] | None = None,
) -> Starlette:
    return Starlette(
        routes=[Route("/", endpoint, methods=["GET"])],
        middleware=[
            Middleware(
                CompressionMiddleware,
                config=config or _config(),
                on_saved=on_saved,
            )
        ],
    )


def _body_app(
    body: bytes = PAYLOAD,
    media_type: str = "application/json",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return Response(body, status_code=status_code, media_type=media_type, headers=headers)

    return _app(endpoint, **kwargs)


class Sent:
    """What the server side of a raw ASGI call received from the app."""

    def __init__(self, messages: list[Message]) -> None:
        self.start = messages[0]
        self.bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]

    @property
    def status(self) -> int:
        return int(self.start["status"])

    def headers(self, name: str) -> list[str]:
        return [v.decode() for k, v in self.start["headers"] if k.lower() == name.encode()]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        assert len(values) <= 1, values
        return values[0] if values else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.bodies)


async def _acall(
    app: ASGIApp,
    *,
    method: str = "GET",
    accept_encoding: str | None = "gzip",
    on_send: Callable[[Message], None] | None = None,
) -> Sent:
    headers = [(b"host", b"test")]
    if accept_encoding is not None:
        headers.append((b"accept-encoding", accept_encoding.encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    done = asyncio.Event()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)
        if on_send is not None:
            on_send(message)

    await app(scope, receive, send)
    done.set()
    return Sent(messages)


def _call(app: ASGIApp, **kwargs: Any) -> Sent:
    return asyncio.run(_acall(app, **kwargs))


def _through_httpx(app: ASGIApp, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/", headers=headers)

    return asyncio.run(go())


def _assert_untouched(sent: Sent, body: bytes = PAYLOAD) -> None:
    assert sent.header("content-encoding") is None
    assert sent.body == body
    assert sent.header("content-length") == str(len(body))


# --- one-message responses -----------------------------------------------------------


def test_gzip_round_trip_through_httpx() -> None:
    """A real client asking for gzip gets a gzip body that decodes to the original."""
    response = _through_httpx(_body_app(), {"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.content == PAYLOAD
    assert response.num_bytes_downloaded < len(PAYLOAD) / 3


def test_content_length_is_the_compressed_size() -> None:
    """A one-message body is compressed whole and Content-Length gives its new size."""
    sent = _call(_body_app(config=_config(algorithms=["gzip"])))
    assert sent.header("content-encoding") == "gzip"
    assert sent.header("content-length") == str(len(sent.body))
    assert gzip.decompress(sent.body) == PAYLOAD
    assert len(sent.bodies) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_installed_encoding_round_trips(encoding: str) -> None:
    """Every installed encoding, when it is the client's only choice, decodes to the original."""
    sent = _call(_body_app(), accept_encoding=encoding)
    assert sent.header("content-encoding") == encoding
    assert sent.header("content-length") == str(len(sent.body))
    assert _decode(encoding, sent.body) == PAYLOAD


def test_server_preference_order_among_equal_weights() -> None:
    """With equal q-values the configured order decides, whatever order the client lists."""
    config = _config(algorithms=list(ENCODINGS[::-1]))
    sent = _call(_body_app(config=config), accept_encoding="zstd, br, gzip")
    assert sent.header("content-encoding") == "gzip"
    sent = _call(_body_app(), accept_encoding="gzip, br, zstd")
    assert sent.header("content-encoding") == ENCODINGS[0]


@pytest.mark.parametrize(
    ("accept_encoding", "offered", "chosen"),
    [
        ("gzip", ("zstd", "br", "gzip"), "gzip"),
        ("gzip, br, zstd", ("zstd", "br", "gzip"), "zstd"),
        ("gzip;q=0", ("gzip",), None),
        ("br;q=0, gzip", ("br", "gzip"), "gzip"),
        ("*", ("zstd", "br", "gzip"), "zstd"),
        ("*;q=0", ("gzip",), None),
        ("zstd;q=0, *", ("zstd", "br", "gzip"), "br"),
        ("gzip;q=0, *;q=0.5", ("gzip",), None),
        ("br;q=0.5, gzip", ("br", "gzip"), "gzip"),
        ("br;q=0.5, gzip;q=0.5", ("br", "gzip"), "br"),
        ("GZip;Q=1.0", ("gzip",), "gzip"),
        ("x-gzip", ("gzip",), "gzip"),
        ("identity", ("gzip",), None),
        ("deflate, compress", ("gzip",), None),
        ("gzip;q=abc", ("gzip",), None),
        ("gzip;q=2", ("gzip",), None),
        (" , ;q=1, gzip ; q=0.8 ", ("gzip",), "gzip"),
        ("", ("gzip",), None),
    ],
)
def test_negotiation_honours_q_values(
    accept_encoding: str, offered: tuple[str, ...], chosen: str | None
) -> None:
    """The highest q-value wins, ties go to server order, q=0 refuses, `*` covers the rest."""
    assert _negotiate(accept_encoding, offered) == chosen


def test_refused_encoding_is_not_used() -> None:
    """A client refusing gzip with q=0 gets the identity body, with Vary for caches."""
    sent = _call(_body_app(), accept_encoding="gzip;q=0")
    _assert_untouched(sent)
    assert sent.header("vary") == "Accept-Encoding"


def test_no_accept_encoding_gets_identity_with_vary() -> None:
    """A request without Accept-Encoding gets the body as is, marked as varying."""
    sent = _call(_body_app(), accept_encoding=None)
    _assert_untouched(sent)
    assert sent.header("vary") == "Accept-Encoding"


def test_below_min_size_untouched() -> None:
    """A one-message body below min_size is sent as it is, without Vary."""
    config = _config(min_size=500)
    sent = _call(_body_app(PAYLOAD[:499], config=config))
    _assert_untouched(sent, PAYLOAD[:499])
    assert sent.header("vary") is None
    sent = _call(_body_app(PAYLOAD[:500], config=config))
    assert sent.header("content-encoding") == "gzip"


def test_min_size_takes_units() -> None:
    """min_size written as 1KiB means 1024 bytes."""
    config = _config(min_size="1KiB")
    assert _call(_body_app(PAYLOAD[:1023], config=config)).header("content-encoding") is None
    assert _call(_body_app(PAYLOAD[:1024], config=config)).header("content-encoding") == "gzip"


def test_incompressible_body_sent_as_is() -> None:
    """A body that compression would not shrink goes out unchanged and reports no saving."""
    noise = random.Random(0).randbytes(600)
    saved: list[tuple[int, str]] = []
    sent = _call(_body_app(noise, media_type="application/octet-stream", on_saved=_record(saved)))
    _assert_untouched(sent, noise)
    assert sent.header("vary") == "Accept-Encoding"
    assert saved == []


def test_already_encoded_untouched() -> None:
    """A response that already has a Content-Encoding is passed through byte for byte."""
    encoded = gzip.compress(PAYLOAD)
    sent = _call(
        _body_app(encoded, headers={"content-encoding": "gzip"}), accept_encoding="br, gzip"
    )
    assert sent.header("content-encoding") == "gzip"
    assert sent.body == encoded
    assert sent.header("vary") is None


@pytest.mark.parametrize(
    "media_type",
    [
        "image/png",
        "image/jpeg",
        "video/mp4",
        "audio/mpeg",
        "application/zip",
        "application/gzip",
        "font/woff2",
        "application/grpc+proto",
        "text/event-stream",
    ],
)
def test_compressed_media_types_untouched(media_type: str) -> None:
    """Media types that are compressed already (or must stream raw) are not compressed."""
    sent = _call(_body_app(media_type=media_type))
    _assert_untouched(sent)


@pytest.mark.parametrize("media_type", ["image/svg+xml", "text/html; charset=utf-8", "text/csv"])
def test_text_media_types_compressed(media_type: str) -> None:
    """Text formats, SVG included, are compressed."""
    assert _call(_body_app(media_type=media_type)).header("content-encoding") == "gzip"


@pytest.mark.parametrize("status_code", [204, 206, 304])
def test_bodiless_and_partial_statuses_untouched(status_code: int) -> None:
    """204 and 304 carry no body and 206 carries a byte range: none is compressed."""
    body = b"" if status_code != 206 else PAYLOAD
    sent = _call(_body_app(body, status_code=status_code))
    assert sent.header("content-encoding") is None
    assert sent.body == body


def test_error_responses_compressed() -> None:
    """A large 500 body is compressed like any other."""
    sent = _call(_body_app(status_code=500))
    assert sent.status == 500
    assert gzip.decompress(sent.body) == PAYLOAD


def test_head_untouched() -> None:
    """A HEAD request passes through unchanged (the server drops the body)."""
    sent = _call(_body_app(), method="HEAD")
    assert sent.header("content-encoding") is None
    assert sent.header("content-length") == str(len(PAYLOAD))


def test_no_transform_untouched() -> None:
    """Cache-Control: no-transform forbids intermediaries to re-encode: it is honoured."""
    sent = _call(_body_app(headers={"cache-control": "public, no-transform"}))
    _assert_untouched(sent)


def test_disabled_passes_through() -> None:
    """enabled: false leaves every response alone."""
    sent = _call(_body_app(config=_config(enabled=False)))
    _assert_untouched(sent)
    assert sent.header("vary") is None


@pytest.mark.parametrize(
    ("existing", "merged"),
    [
        (None, ["Accept-Encoding"]),
        ("Origin", ["Origin, Accept-Encoding"]),
        ("Origin, accept-encoding", ["Origin, accept-encoding"]),
        ("*", ["*"]),
    ],
)
def test_vary_merged(existing: str | None, merged: list[str]) -> None:
    """Vary gains Accept-Encoding once, merged into an existing Vary rather than duplicated."""
    headers = {"vary": existing} if existing else None
    sent = _call(_body_app(headers=headers))
    assert sent.header("content-encoding") == "gzip"
    assert sent.headers("vary") == merged


def test_strong_etag_weakened() -> None:
    """A strong ETag becomes weak on a compressed body (its bytes differ); a weak one stays."""
    sent = _call(_body_app(headers={"etag": '"v1"'}))
    assert sent.header("etag") == 'W/"v1"'
    sent = _call(_body_app(headers={"etag": 'W/"v1"'}))
    assert sent.header("etag") == 'W/"v1"'


def _record(into: list[tuple[int, str]]) -> Callable[[int, str], None]:
    return lambda saved, encoding: into.append((saved, encoding))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_on_saved_reports_exact_difference(encoding: str) -> None:
    """on_saved is called once with the uncompressed minus the compressed body size."""
    saved: list[tuple[int, str]] = []
    sent = _call(_body_app(on_saved=_record(saved)), accept_encoding=encoding)
    assert saved == [(len(PAYLOAD) - len(sent.body), encoding)]


def test_on_saved_not_called_when_not_compressed() -> None:
    """Responses sent as they are report nothing."""
    saved: list[tuple[int, str]] = []
    _call(_body_app(on_saved=_record(saved)), accept_encoding="identity")
    _call(_body_app(PAYLOAD[:10], on_saved=_record(saved)))
    assert saved == []


def test_failing_on_saved_does_not_break_the_response(caplog: pytest.LogCaptureFixture) -> None:
    """An exception from on_saved is logged once and the responses still go out."""

    def broken(saved: int, encoding: str) -> None:
        raise RuntimeError("counter gone")

    app = _body_app(on_saved=broken)
    with caplog.at_level(logging.ERROR, logger="otelperf.http"):
        first = _call(app)
        second = _call(app)
    assert gzip.decompress(first.body) == gzip.decompress(second.body) == PAYLOAD
    assert [r.getMessage() for r in caplog.records] == ["compression: the on_saved callback failed"]


def test_large_body_compressed_off_the_loop_round_trips() -> None:
    """A body above the worker-thread threshold is compressed in a thread and decodes intact."""
    big = PAYLOAD * (THREAD_MIN_SIZE // len(PAYLOAD) + 2)
    assert len(big) >= THREAD_MIN_SIZE
    sent = _call(_body_app(big))
    assert sent.header("content-length") == str(len(sent.body))
    assert gzip.decompress(sent.body) == big


# --- streams -------------------------------------------------------------------------


def _stream_app(
    chunks: Sequence[bytes],
    events: list[str],
    media_type: str = "application/x-ndjson",
    **kwargs: Any,
) -> Starlette:
    async def produce() -> AsyncIterator[bytes]:
        for i, chunk in enumerate(chunks):
            if i:
                await asyncio.sleep(0.02)
            events.append(f"produced {i}")
            yield chunk

    async def endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(produce(), media_type=media_type)

    return _app(endpoint, **kwargs)


CHUNKS = [json.dumps({"line": i, "text": "x" * 200}).encode() + b"\n" for i in range(4)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_stream_compressed_incrementally(encoding: str) -> None:
    """Each chunk reaches the client compressed and decodable before the next is produced."""
    events: list[str] = []
    decode = _decoder(encoding)
    decoded: list[bytes] = []

    def on_send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            decoded.append(decode(message["body"]))
            events.append(f"delivered {len(decoded) - 1}")

    sent = _call(_stream_app(CHUNKS, events), accept_encoding=encoding, on_send=on_send)
    assert sent.header("content-encoding") == encoding
    assert sent.header("content-length") is None
    assert sent.header("vary") == "Accept-Encoding"
    # Every chunk was delivered, decoded in full, before the app produced the next one.
    assert events[:8] == [f"{what} {i}" for i in range(4) for what in ("produced", "delivered")]
    assert decoded[:4] == CHUNKS
    assert b"".join(decoded) == b"".join(CHUNKS)
    assert sent.bodies[-1]["more_body"] is False


def test_stream_content_length_removed() -> None:
    """A streamed response that declared a Content-Length loses it once compressed."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b"".join(CHUNKS)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        for chunk in CHUNKS:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    sent = _call(CompressionMiddleware(app, config=_config()), accept_encoding="gzip")
    assert sent.header("content-length") is None
    assert gzip.decompress(sent.body) == b"".join(CHUNKS)


def test_stream_on_saved_called_once_with_totals() -> None:
    """A compressed stream reports once, at its end, the difference of its total sizes."""
    saved: list[tuple[int, str]] = []
    chunks = [PAYLOAD[i : i + 2000] for i in range(0, len(PAYLOAD), 2000)]
    sent = _call(_stream_app(chunks, [], on_saved=_record(saved)))
    assert saved == [(len(PAYLOAD) - len(sent.body), "gzip")]


def test_small_first_chunk_of_stream_still_compressed() -> None:
    """min_size applies to whole bodies: a stream starting with a tiny chunk is compressed."""
    sent = _call(_stream_app([b"{", b"}" * 1000], []))
    assert sent.header("content-encoding") == "gzip"
    assert gzip.decompress(sent.body) == b"{" + b"}" * 1000


def test_event_stream_untouched() -> None:
    """Server-sent events pass through chunk for chunk, never compressed."""
    events: list[str] = []
    chunks = [b"data: %d\n\n" % i * 100 for i in range(3)]
    sent = _call(_stream_app(chunks, events, media_type="text/event-stream"))
    assert sent.header("content-encoding") is None
    assert sent.header("vary") is None
    assert [m["body"] for m in sent.bodies[:3]] == chunks


# --- scopes, state and optional libraries --------------------------------------------


def test_non_http_scopes_pass_straight_through() -> None:
    """A lifespan or websocket scope reaches the app with the original receive and send."""
    seen: list[tuple[str, Receive, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope["type"], receive, send))

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    middleware = CompressionMiddleware(app, config=_config())
    for kind in ("lifespan", "websocket"):
        asyncio.run(middleware({"type": kind}, receive, send))
    assert seen == [("lifespan", receive, send), ("websocket", receive, send)]


def test_concurrent_requests_keep_their_own_state() -> None:
    """Interleaved streams through one middleware each get their own encoding and bytes."""
    app = _stream_app(CHUNKS, [])

    async def both() -> list[Sent]:
        return await asyncio.gather(
            *(_acall(app, accept_encoding=enc) for enc in (*ENCODINGS, "identity"))
        )

    results = asyncio.run(both())
    for enc, sent in zip((*ENCODINGS, "identity"), results, strict=True):
        if enc == "identity":
            assert sent.header("content-encoding") is None
            assert sent.body == b"".join(CHUNKS)
        else:
            assert sent.header("content-encoding") == enc
            assert _decode(enc, sent.body) == b"".join(CHUNKS)


def _hide(monkeypatch: pytest.MonkeyPatch, modules: Iterable[str]) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_missing_optional_libraries_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without zstd and brotli libraries, gzip is chosen even when the client prefers them."""
    _hide(monkeypatch, _OPTIONAL_LIBS)
    assert available_encodings() == ("gzip",)
    sent = _call(_body_app(), accept_encoding="zstd, br, gzip;q=0.1")
    assert sent.header("content-encoding") == "gzip"


def test_only_missing_algorithms_configured_means_no_compression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A config naming only uninstalled algorithms leaves responses alone, without error."""
    _hide(monkeypatch, _OPTIONAL_LIBS)
    sent = _call(_body_app(config=_config(algorithms=["zstd", "br"])), accept_encoding="*")
    _assert_untouched(sent)


def test_json_response_through_httpx_with_every_encoding() -> None:
    """httpx, advertising what it can decode, gets a body it decodes to the same JSON."""
    data = json.loads(PAYLOAD)

    async def endpoint(request: Request) -> JSONResponse:
        return JSONResponse(data)

    response = _through_httpx(_app(endpoint), {})
    assert response.json() == data
    assert response.headers["content-encoding"] in ENCODINGS
