"""Response compression (zstd, br, gzip) negotiated from Accept-Encoding, as plain ASGI.

`CompressionMiddleware` wraps ``send``: it holds the ``http.response.start`` message
until the first body message shows whether the whole body is there (compress it in
one go and set ``Content-Length``) or a stream begins (compress each chunk and flush,
so a client sees every chunk as soon as the application sends it). Everything it
learns about a response lives in a `_Responder` made for that request.

gzip is always offered (stdlib ``zlib``); zstd when ``compression.zstd`` (Python 3.14),
``backports.zstd`` or ``zstandard`` imports; br when ``brotli`` or ``brotlicffi`` imports.
A configured algorithm whose library is missing is skipped without a word: those
libraries are optional extras.
"""

from __future__ import annotations

import importlib
import logging
import zlib
from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import anyio
import anyio.lowlevel
import anyio.to_thread

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from otelperf.config._schema import HttpCompression

__all__ = ["CompressionMiddleware", "available_encodings"]

_log = logging.getLogger("otelperf.http")

ZSTD_LEVEL: Final = 3
"""zstd level: zstd's own default; its window (2 MiB) stays under browsers' 8 MiB limit."""

BROTLI_QUALITY: Final = 4
"""br quality: brotli's default (11) costs tens of ms per 100 KiB, too slow for live responses."""

THREAD_MIN_SIZE: Final = 128 * 1024
"""Chunks at least this large are compressed in a worker thread, off the event loop."""

_THREAD_LIMIT: Final = 40

# Media types that are compressed already, or that must reach the client untouched.
_EXCLUDED_TYPES: Final = frozenset(
    {
        b"application/gzip",
        b"application/grpc",
        b"application/vnd.rar",
        b"application/x-7z-compressed",
        b"application/x-bzip2",
        b"application/x-gzip",
        b"application/x-rar-compressed",
        b"application/x-xz",
        b"application/zip",
        b"application/zstd",
        b"font/woff",
        b"font/woff2",
        b"text/event-stream",
    }
)
_EXCLUDED_PREFIXES: Final = (b"image/", b"video/", b"audio/", b"application/grpc+")
_COMPRESSIBLE_IMAGES: Final = frozenset(
    {b"image/svg+xml", b"image/bmp", b"image/x-icon", b"image/vnd.microsoft.icon"}
)
_UNCOMPRESSIBLE_STATUS: Final = frozenset({204, 206, 304})


# --- codecs --------------------------------------------------------------------------


class _Stream(Protocol):
    """One response's incremental compressor."""

    def feed(self, data: bytes, last: bool) -> bytes:
        """Compress ``data`` and flush, so the output decodes up to here; end on ``last``."""
        ...


class _Codec:
    """An encoding the middleware can produce: a one-shot compressor and a stream factory."""

    __slots__ = ("compress", "name", "stream")

    def __init__(
        self, name: str, compress: Callable[[bytes], bytes], stream: Callable[[], _Stream]
    ) -> None:
        self.name = name
        self.compress = compress
        self.stream = stream


class _GzipStream:
    __slots__ = ("_zlib",)

    def __init__(self, level: int) -> None:
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, last: bool) -> bytes:
        out = self._zlib.compress(data)
        return out + self._zlib.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _gzip_compress(level: int, data: bytes) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _gzip(level: int) -> _Codec:
    return _Codec("gzip", partial(_gzip_compress, level), partial(_GzipStream, level))


# The optional libraries are described by protocols and looked up with importlib, so
# the module type-checks the same whether or not they are installed.


class _StdZstdCompressor(Protocol):
    FLUSH_BLOCK: int
    FLUSH_FRAME: int

    def compress(self, data: bytes, mode: int) -> bytes: ...


class _StdZstdModule(Protocol):
    """``compression.zstd`` (Python 3.14) and its backport ``backports.zstd``."""

    def ZstdCompressor(self, level: int) -> _StdZstdCompressor: ...  # noqa: N802

    def compress(self, data: bytes, level: int) -> bytes: ...


class _StdZstdStream:
    __slots__ = ("_zstd",)

    def __init__(self, module: _StdZstdModule) -> None:
        self._zstd = module.ZstdCompressor(level=ZSTD_LEVEL)

    def feed(self, data: bytes, last: bool) -> bytes:
        zstd = self._zstd
        return zstd.compress(data, zstd.FLUSH_FRAME if last else zstd.FLUSH_BLOCK)


class _ZstandardObj(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self, flush_mode: int = ...) -> bytes: ...


class _ZstandardCompressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def compressobj(self) -> _ZstandardObj: ...


class _ZstandardModule(Protocol):
    """The ``zstandard`` package."""

    COMPRESSOBJ_FLUSH_BLOCK: int

    def ZstdCompressor(self, level: int) -> _ZstandardCompressor: ...  # noqa: N802


class _ZstandardStream:
    __slots__ = ("_block", "_zstd")

    def __init__(self, module: _ZstandardModule) -> None:
        self._zstd = module.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        self._block = module.COMPRESSOBJ_FLUSH_BLOCK

    def feed(self, data: bytes, last: bool) -> bytes:
        out = self._zstd.compress(data)
        return out + (self._zstd.flush() if last else self._zstd.flush(self._block))


def _zstandard_compress(module: _ZstandardModule, data: bytes) -> bytes:
    # One compressor per body: zstandard compressors must not be shared between threads.
    return module.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


class _BrotliCompressor(Protocol):
    def process(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def finish(self) -> bytes: ...


class _BrotliModule(Protocol):
    """``brotli`` and ``brotlicffi``, which share this API."""

    def Compressor(self, quality: int) -> _BrotliCompressor: ...  # noqa: N802

    def compress(self, data: bytes, quality: int) -> bytes: ...


class _BrotliStream:
    __slots__ = ("_brotli",)

    def __init__(self, module: _BrotliModule) -> None:
        self._brotli = module.Compressor(quality=BROTLI_QUALITY)

    def feed(self, data: bytes, last: bool) -> bytes:
        out = self._brotli.process(data)
        return out + (self._brotli.finish() if last else self._brotli.flush())


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _zstd() -> _Codec | None:
    for name in ("compression.zstd", "backports.zstd"):
        std = cast("_StdZstdModule | None", _import(name))
        if std is not None:
            return _Codec(
                "zstd", partial(std.compress, level=ZSTD_LEVEL), partial(_StdZstdStream, std)
            )
    zstandard = cast("_ZstandardModule | None", _import("zstandard"))
    if zstandard is not None:
        return _Codec(
            "zstd", partial(_zstandard_compress, zstandard), partial(_ZstandardStream, zstandard)
        )
    return None


def _brotli() -> _Codec | None:
    for name in ("brotli", "brotlicffi"):
        module = cast("_BrotliModule | None", _import(name))
        if module is not None:
            return _Codec(
                "br",
                partial(module.compress, quality=BROTLI_QUALITY),
                partial(_BrotliStream, module),
            )
    return None


def _load_codec(name: str, level: int) -> _Codec | None:
    if name == "gzip":
        return _gzip(level)
    if name == "zstd":
        return _zstd()
    if name == "br":
        return _brotli()
    return None


def available_encodings() -> tuple[str, ...]:
    """The encodings this process can produce, in the default preference order.

    >>> "gzip" in available_encodings()
    True
    """
    return tuple(name for name in ("zstd", "br", "gzip") if _load_codec(name, 6) is not None)


# --- decisions (no I/O) --------------------------------------------------------------


@lru_cache(maxsize=256)
def _negotiate(accept_encoding: str, offered: tuple[str, ...]) -> str | None:
    """The offered encoding the client weights highest (q-value), ties going to ``offered``'s order.

    ``q=0`` refuses an encoding, ``*`` stands for every encoding not named, and an
    encoding neither named nor covered by ``*`` is refused (identity is always acceptable
    as the fallback, so refusing everything is not an error).
    """
    weights: dict[str, float] = {}
    for member in accept_encoding.split(","):
        token, _, params = member.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        if token == "x-gzip":  # RFC 9110 §8.4.1.3: an alias of gzip
            token = "gzip"
        q: float | None = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                q = _qvalue(value.strip())
        if q is not None:
            weights.setdefault(token, q)
    wildcard = weights.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for name in offered:
        q = weights.get(name, wildcard)
        if q > best_q:
            best, best_q = name, q
    return best


def _qvalue(text: str) -> float | None:
    """A q-value per RFC 9110 §12.4.2, or None for garbage (the member is then ignored)."""
    try:
        q = float(text)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None  # also rejects nan


@lru_cache(maxsize=128)
def _excluded_type(content_type: bytes) -> bool:
    media_type = content_type.partition(b";")[0].strip().lower()
    if media_type in _EXCLUDED_TYPES:
        return True
    return media_type.startswith(_EXCLUDED_PREFIXES) and media_type not in _COMPRESSIBLE_IMAGES


def _compressible(start: Message) -> bool:
    """Whether a response may be compressed, judged from its ``http.response.start``."""
    status: int = start["status"]
    if status < 200 or status in _UNCOMPRESSIBLE_STATUS:
        return False
    for name, value in start.get("headers", ()):
        lowered = name.lower()
        if lowered == b"content-encoding":
            return False
        if lowered == b"content-type" and _excluded_type(value):
            return False
        if lowered == b"cache-control" and b"no-transform" in value.lower():
            return False
    return True


def _headers(
    raw: Iterable[tuple[bytes, bytes]], encoding: bytes | None, length: int | None
) -> list[tuple[bytes, bytes]]:
    """Response headers with ``Vary: Accept-Encoding`` merged in.

    With an ``encoding``: ``Content-Encoding`` set, ``Content-Length`` replaced by
    ``length`` (dropped when None), and a strong ETag made weak, since the bytes differ
    from the identity representation's.
    """
    headers: list[tuple[bytes, bytes]] = []
    vary_at = -1
    vary_done = False
    for name, value in raw:
        lowered = name.lower()
        if encoding is not None:
            if lowered == b"content-length":
                continue
            if lowered == b"etag" and not value.startswith(b"W/"):
                value = b"W/" + value
        if lowered == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            vary_done = vary_done or b"*" in tokens or b"accept-encoding" in tokens
            vary_at = len(headers)
        headers.append((name, value))
    if not vary_done:
        if vary_at < 0:
            headers.append((b"vary", b"Accept-Encoding"))
        else:
            name, value = headers[vary_at]
            value = value.strip()
            headers[vary_at] = (name, value + b", Accept-Encoding" if value else b"Accept-Encoding")
    if encoding is not None:
        headers.append((b"content-encoding", encoding))
        if length is not None:
            headers.append((b"content-length", b"%d" % length))
    return headers


# --- the middleware ------------------------------------------------------------------

_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar(
    "otelperf_compression_limiter"
)


def _thread_limiter() -> anyio.CapacityLimiter:
    # A limiter of our own (one per event loop) so large bodies cannot starve the
    # default thread pool that sync endpoints run in.
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_THREAD_LIMIT)
        _limiter.set(limiter)
        return limiter


async def _run(function: Callable[[bytes], bytes], data: bytes) -> bytes:
    if len(data) < THREAD_MIN_SIZE:
        return function(data)
    return await anyio.to_thread.run_sync(function, data, limiter=_thread_limiter())


class CompressionMiddleware:
    """Compress HTTP responses with the best encoding both sides support.

    >>> from starlette.applications import Starlette
    >>> from otelperf.config._schema import HttpCompression
    >>> app = CompressionMiddleware(Starlette(), config=HttpCompression(algorithms=["gzip"]))

    ``on_saved(bytes_saved, encoding)`` is called once per compressed response with the
    uncompressed minus the compressed body size. A single-message body is sent compressed
    only when that shrinks it, so the figure is then positive; a stream of tiny chunks,
    each flushed, can come out larger and report a negative figure. An exception from
    ``on_saved`` is logged and never reaches the response.

    Left as they are: non-HTTP scopes, HEAD requests, statuses 1xx/204/206/304, bodies
    below ``min_size`` sent in one message, responses that already have a
    ``Content-Encoding`` or ``Cache-Control: no-transform``, compressed media types
    (images but SVG, audio, video, archives, woff), ``text/event-stream``, and requests
    that accept none of the configured encodings (these still get ``Vary``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: HttpCompression,
        on_saved: Callable[[int, str], None] | None = None,
    ) -> None:
        self.app = app
        self._on_saved = on_saved
        self._callback_failed = False
        self._min_size = config.min_size
        codecs: dict[str, _Codec] = {}
        for name in dict.fromkeys(config.algorithms):
            codec = _load_codec(name, config.level)
            if codec is not None:
                codecs[name] = codec
            else:
                _log.debug("compression: %s is not installed, not offered", name)
        self._codecs = codecs
        self._offered = tuple(codecs)
        self._enabled = config.enabled and bool(codecs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        accept_encoding = b", ".join(
            value for name, value in scope["headers"] if name.lower() == b"accept-encoding"
        )
        encoding = (
            _negotiate(accept_encoding.decode("latin-1"), self._offered)
            if accept_encoding
            else None
        )
        codec = self._codecs[encoding] if encoding is not None else None
        responder = _Responder(self, send, codec)
        await self.app(scope, receive, responder.send)

    def _report(self, saved: int, encoding: str) -> None:
        if self._on_saved is None:
            return
        try:
            self._on_saved(saved, encoding)
        except Exception:
            # Telemetry never breaks a response; say so once, not once per request.
            if not self._callback_failed:
                self._callback_failed = True
                _log.exception("compression: the on_saved callback failed")


_WAITING, _HELD, _PASSING, _STREAMING = range(4)


class _Responder:
    """One response's compression state: what was held back, the stream, the byte counts."""

    __slots__ = ("_codec", "_middleware", "_send", "_sizes", "_start", "_state", "_stream")

    def __init__(self, middleware: CompressionMiddleware, send: Send, codec: _Codec | None) -> None:
        self._middleware = middleware
        self._send = send
        self._codec = codec
        self._state = _WAITING
        self._start: Message = {}
        self._stream: _Stream | None = None
        self._sizes = [0, 0]  # bytes in, bytes out, of a compressed stream

    async def send(self, message: Message) -> None:
        state = self._state
        if state == _PASSING:
            await self._send(message)
            return
        kind = message["type"]
        if kind == "http.response.start":
            if _compressible(message):
                self._start = message
                self._state = _HELD
            else:
                self._state = _PASSING
                await self._send(message)
        elif kind == "http.response.body" and state == _HELD:
            await self._first_body(message)
        elif kind == "http.response.body" and state == _STREAMING:
            await self._next_body(message)
        elif state == _HELD:
            # pathsend, zerocopysend or anything new: the body is not ours to transform.
            self._state = _PASSING
            await self._send(self._start)
            await self._send(message)
        else:
            await self._send(message)  # early hints before the start, trailers after the body

    async def _first_body(self, message: Message) -> None:
        start = self._start
        codec = self._codec
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        self._state = _PASSING
        if not more_body and len(body) < self._middleware._min_size:
            await self._send(start)
            await self._send(message)
            return
        if codec is None:
            await self._send({**start, "headers": _headers(start.get("headers", ()), None, None)})
            await self._send(message)
            return
        encoding = codec.name.encode("ascii")
        trailers = bool(start.get("trailers", False))
        if more_body:
            self._state = _STREAMING
            self._stream = codec.stream()
            headers = _headers(start.get("headers", ()), encoding, None)
            await self._send({**start, "headers": headers})
            await self._next_body(message)
            return
        compressed = await _run(codec.compress, body)
        if len(compressed) >= len(body):
            await self._send({**start, "headers": _headers(start.get("headers", ()), None, None)})
            await self._send(message)
            return
        length = None if trailers else len(compressed)
        await self._send({**start, "headers": _headers(start.get("headers", ()), encoding, length)})
        await self._send({**message, "body": compressed})
        self._middleware._report(len(body) - len(compressed), codec.name)

    async def _next_body(self, message: Message) -> None:
        stream = cast("_Stream", self._stream)
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if more_body and not body:
            await self._send(message)  # nothing to flush; an empty flush still costs bytes
            return
        out = await _run(partial(stream.feed, last=not more_body), body)
        sizes = self._sizes
        sizes[0] += len(body)
        sizes[1] += len(out)
        await self._send({**message, "body": out})
        if not more_body:
            self._state = _PASSING
            self._middleware._report(sizes[0] - sizes[1], cast("_Codec", self._codec).name)
