"""A real OTLP receiver for tests, and two collectors that misbehave.

:class:`OtlpReceiver` serves OTLP/gRPC and OTLP/HTTP (protobuf, optionally gzip)
with the official protocol definitions from ``opentelemetry-proto``, and keeps
every request it decodes. :class:`BlackHole` accepts TCP connections and never
answers. Everything binds to 127.0.0.1 on a port the OS picks: a test run never
listens on a public interface and never fights another run for a port.

>>> with OtlpReceiver() as receiver:
...     endpoint = receiver.grpc_endpoint  # or receiver.http_endpoint
"""

from __future__ import annotations

import gzip
import http.server
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = [
    "BlackHole",
    "OtlpReceiver",
    "Received",
    "attributes",
    "free_port",
]

HOST = "127.0.0.1"

# signal -> (request type, response type), shared by both transports.
_MESSAGES: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


def free_port() -> int:
    """A port nothing listens on: bound by the OS, then released.

    Connecting to it is refused (until something else happens to bind it,
    which the OS makes unlikely by not handing the same port out again soon).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def value(any_value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue``."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    """OTLP attributes (repeated ``KeyValue``) as a plain dict."""
    pairs: list[KeyValue] = list(key_values)
    return {pair.key: value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Received:
    """One export request as the receiver decoded it."""

    signal: str
    """``traces``, ``metrics`` or ``logs``."""
    transport: str
    """``grpc`` or ``http``."""
    request: Any
    """The ``Export*ServiceRequest`` message."""
    headers: dict[str, str] = field(default_factory=dict)
    """Request headers (gRPC: metadata), keys lower-cased."""
    content_encoding: str | None = None
    """HTTP ``Content-Encoding`` as sent (``gzip``), None when absent or over gRPC."""


class OtlpReceiver:
    """An OTLP/gRPC and OTLP/HTTP receiver on 127.0.0.1 that keeps what it receives.

    Thread-safe: the servers record from their own threads while a test reads.
    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self) -> None:
        self._received: list[Received] = []
        self._changed = threading.Condition()
        self._grpc_server: grpc.Server | None = None
        self._http_server: http.server.ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Listen on two ephemeral ports of 127.0.0.1, one per transport."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-rx")
        )
        # The generated *_pb2_grpc modules carry no annotations.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _TraceService(self), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _MetricsService(self), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            _LogsService(self), server
        )
        self.grpc_port = server.add_insecure_port(f"{HOST}:0")
        if not self.grpc_port:
            raise RuntimeError(f"could not bind the OTLP/gRPC receiver on {HOST}")
        server.start()
        self._grpc_server = server

        handler = type("_Handler", (_HttpHandler,), {"receiver": self})
        self._http_server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self._http_server.daemon_threads = True
        self.http_port = self._http_server.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-rx-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop both servers; requests in flight are cut off."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the gRPC server (``http``: no TLS)."""
        return f"http://{HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` of the HTTP server; signals are under ``/v1/``."""
        return f"http://{HOST}:{self.http_port}"

    # --- recording -----------------------------------------------------------

    def _record(self, received: Received) -> None:
        with self._changed:
            self._received.append(received)
            self._changed.notify_all()

    def received(self, signal: str | None = None) -> list[Received]:
        """A snapshot of the requests received so far, oldest first."""
        with self._changed:
            return [r for r in self._received if signal is None or r.signal == signal]

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._changed:
            self._received.clear()

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` is true, re-checking on every request received.

        Returns the last truth value rather than raising, so the caller's assert
        can say what was received instead.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if predicate():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))

    # --- views -----------------------------------------------------------------

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every span received, each with the attributes of its resource."""
        return list(self._iter_spans())

    def _iter_spans(self) -> Iterator[tuple[dict[str, Any], Span]]:
        for received in self.received("traces"):
            for resource_spans in received.request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        yield resource, span

    def span_names(self) -> list[str]:
        """Names of the spans received, in arrival order."""
        return [span.name for _, span in self._iter_spans()]

    def metrics(self) -> list[tuple[dict[str, Any], Metric]]:
        """Every metric received (one entry per metric per export), with its resource."""
        found = []
        for received in self.received("metrics"):
            for resource_metrics in received.request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        found.append((resource, metric))
        return found

    def metric_names(self) -> set[str]:
        """Names of the metrics received."""
        return {metric.name for _, metric in self.metrics()}

    def resource_attributes(self, signal: str | None = None) -> list[dict[str, Any]]:
        """The attributes of every resource received, one dict per resource entry."""
        found: list[dict[str, Any]] = []
        for received in self.received(signal):
            request = received.request
            for batch in (
                getattr(request, "resource_spans", ()),
                getattr(request, "resource_metrics", ()),
                getattr(request, "resource_logs", ()),
            ):
                found.extend(attributes(entry.resource.attributes) for entry in batch)
        return found


# --- gRPC ------------------------------------------------------------------------


def _grpc_export(
    receiver: OtlpReceiver, signal: str, request: Message, context: grpc.ServicerContext
) -> Message:
    headers = {key.lower(): str(val) for key, val in context.invocation_metadata()}
    receiver._record(Received(signal, "grpc", request, headers))
    return _MESSAGES[signal][1]()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        return _grpc_export(self._receiver, "traces", request, context)


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        return _grpc_export(self._receiver, "metrics", request, context)


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        return _grpc_export(self._receiver, "logs", request, context)


# --- HTTP ------------------------------------------------------------------------


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    receiver: OtlpReceiver
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' sessions expect

    def do_POST(self) -> None:
        signal = self.path.split("?", 1)[0].removeprefix("/v1/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if signal not in _MESSAGES:
            self._reply(404, b"unknown OTLP path", "text/plain")
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/x-protobuf":
            self._reply(415, b"only application/x-protobuf is supported", "text/plain")
            return
        encoding = self.headers.get("Content-Encoding")
        request_type, response_type = _MESSAGES[signal]
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in (None, "identity"):
                self._reply(415, b"unsupported Content-Encoding", "text/plain")
                return
            request = request_type.FromString(body)
        except (OSError, EOFError, DecodeError) as exc:
            self._reply(400, f"bad OTLP body: {exc}".encode(), "text/plain")
            return
        headers = {key.lower(): val for key, val in self.headers.items()}
        self.receiver._record(Received(signal, "http", request, headers, encoding))
        self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output for the test's own prints


# --- a collector that never answers ------------------------------------------------


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections, reads and discards, never answers.

    To a gRPC client it is an HTTP/2 peer that never sends its SETTINGS; to an
    HTTP client a server that never sends a status line. ``connections`` counts
    accepted connections, so a test can prove the client did reach it.
    """

    def __init__(self) -> None:
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.connections = 0
        self.port = 0

    def start(self) -> BlackHole:
        self._listener = socket.create_server((HOST, 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _serve(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        try:
                            conn, _ = sock.accept()
                        except OSError:
                            continue
                        conn.setblocking(False)
                        selector.register(conn, selectors.EVENT_READ)
                        with self._lock:
                            self.connections += 1
                        continue
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:  # the client gave up
                        selector.unregister(sock)
                        sock.close()
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._listener = None

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
