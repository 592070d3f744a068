"""Connections to the challenge server, limited before the app sees a request: uvicorn's HTTP/1.1 protocol with
deadlines for a request's headers and a minimum rate for its body, and a cap on one client's open connections.

    uvicorn.Server(server_config(app, challenge.config, host, port)).run()

A client that sends its headers a byte at a time, trickles a body, or opens hundreds of half-open connections
would otherwise hold the server's sockets for as long as it likes. Each limit is answered with one sentence as
JSON and the security headers, then the connection is closed; an upload cut off mid-body reaches the app as a
disconnect, and is refused and audited there (refusals.py). Behind a reverse proxy every client has the proxy's
address: set the proxy's own limits, and raise `max_connections_per_client` to what the proxy opens.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ChallengeConfig
from .refusals import SECURITY_HEADERS

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 1000  # all clients together (uvicorn answers 503 past it)
MAX_HEADER_BYTES = 16 * 2**10  # a request line and headers; ours are a few hundred bytes
KEEP_ALIVE_SECONDS = 5


def raw_refusal(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response refusing a request, for a connection the app never saw."""
    body = json.dumps({"detail": message}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), "Connection": "close",
               **SECURITY_HEADERS}
    return (f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode() + body


def guarded_protocol(config: ChallengeConfig) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the challenge's connection limits; one per server (it counts its clients)."""
    header_seconds, min_rate = config.header_timeout_seconds, config.min_upload_bytes_per_second
    per_client = config.max_connections_per_client
    tick = min(1.0, header_seconds / 4)
    open_connections: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.host = self.client[0] if self.client else ""
            open_connections[self.host] = open_connections.get(self.host, 0) + 1
            self.received = 0
            self.waiting_since = self.loop.time()  # for this request's headers
            self.window: tuple[float, int] | None = None  # (start, bytes received by then) of the body's rate window
            self.watch: Any = None
            if open_connections[self.host] > per_client:
                self.refuse(429, "Too Many Requests", f"more than {per_client} connections at once from one client; "
                                                      "close some and try again")
            else:
                self.watch = self.loop.call_later(tick, self.check)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.watch is not None:
                self.watch.cancel()
                self.watch = None
            if self.host is not None:
                open_connections[self.host] -= 1
                if not open_connections[self.host]:
                    del open_connections[self.host]
                self.host = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            self.received += len(data)
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.waiting_since, self.window = self.loop.time(), None

        def refuse(self, status: int, reason: str, message: str) -> None:
            logger.warning("%s: %s", self.host, message)
            if not self.transport.is_closing():
                if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE) and not (self.cycle and self.cycle.response_started):
                    self.transport.write(raw_refusal(status, reason, message))
                self.transport.close()

        def check(self) -> None:
            """Every tick: cut off a request whose headers are late, or whose body arrives too slowly."""
            self.watch = None
            if self.transport.is_closing():
                return
            now = self.loop.time()
            if self.conn.their_state is h11.IDLE and now - self.waiting_since > header_seconds:
                if self.conn.trailing_data[0] or self.received == 0 or self.cycle is None:
                    self.refuse(408, "Request Timeout", f"the request's headers did not arrive within {header_seconds} s")
                else:  # an idle keep-alive connection: nothing to answer
                    self.transport.close()
                return
            if self.conn.their_state is h11.SEND_BODY:
                if self.window is None or self.flow.read_paused:  # a paused read is the app's doing, not the client's
                    self.window = (now, self.received)
                elif now - self.window[0] >= header_seconds:
                    rate = (self.received - self.window[1]) / (now - self.window[0])
                    if rate < min_rate:
                        self.refuse(408, "Request Timeout", f"the request body arrived at {rate:.0f} bytes/s, slower "
                                                            f"than the {min_rate} bytes/s this server needs")
                        return
                    self.window = (now, self.received)
            self.watch = self.loop.call_later(tick, self.check)

    return GuardedH11Protocol


def server_config(app: Any, config: ChallengeConfig, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for the challenge server: the guarded protocol and the limits above."""
    return uvicorn.Config(app, host=host, port=port, http=guarded_protocol(config), limit_concurrency=MAX_CONNECTIONS,
                          timeout_keep_alive=KEEP_ALIVE_SECONDS, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          **options)
