"""How `lenet5 serve` takes connections: spread over its workers, and never held forever.

Spreading. Workers that share one listening socket all wake for a new connection and the
first awake accepts every connection waiting, so keep-alive clients often all landed on one
worker (benchmarks/results/load_test_32_clients.md). Here every worker, once it has loaded
the model, also listens on a socket of its own bound to the same port with SO_REUSEPORT, and
the kernel hands each new connection to one socket of that group: a small classic-BPF program
attached to the port picks a worker's socket at random, never the parent's. The parent's
socket listens from the start, so clients queue there while the workers load, and the kernel
falls back on choosing by hash among all the sockets (the parent's included) while some worker
is not listening yet; every worker serves the parent's socket too. Where SO_REUSEPORT is not
available (not Linux), the workers share the one socket as before.

Deadlines. uvicorn closes idle keep-alive connections, but a client that connects and then
sends its headers or body slowly (slowloris) was held without limit. `GuardedHttpToolsProtocol`
gives every request HEADER_TIMEOUT_S for its headers and BODY_TIMEOUT_S for its body, then
answers 408 and closes the connection.

One write per answer. uvicorn writes an answer's headers and its body in two writes, and each
woke the client; `_AnswerInOneWrite` joins them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import socket
import struct
import sys

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 5.0
"""Time for a request's headers, from the connection or from the request's first byte (a
browser sends them in one packet; uvicorn closes an idle keep-alive connection after 5 s too)."""
BODY_TIMEOUT_S = 60.0
"""Time for a request's body once its headers are in: 5 MB at about 0.7 Mbit/s."""
BACKLOG = 2048
"""Connections the kernel queues on each listening socket (uvicorn's default)."""

REUSEPORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
"""Whether workers get sockets of their own: Linux spreads connections over SO_REUSEPORT
sockets (BSDs and macOS give them all to the last one bound)."""
SO_ATTACH_REUSEPORT_CBPF = 51
"""setsockopt option (asm-generic/socket.h): a classic BPF program choosing the socket."""
_BPF_LD_W_ABS, _BPF_ALU_MOD_K, _BPF_ALU_ADD_K, _BPF_RET_A = 0x20, 0x94, 0x04, 0x16
_SKF_AD_RANDOM = -0x1000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: load a random 32-bit number


def bind_shared(family: int, address: tuple) -> socket.socket:
    """A TCP socket bound to `address`, with SO_REUSEPORT where workers will join it."""
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections
    # only then, and without it Nagle's algorithm delays every answer by ~40 ms
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if REUSEPORT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class OwnSocket:
    """Stands in the socket list uvicorn sends to every worker process (by pickling) for a
    socket of that worker's own: unpickled in the worker, it becomes a new socket bound to the
    same address with SO_REUSEPORT. uvicorn makes it listen once the worker has loaded the
    model and starts serving; until then the kernel hands new connections to the sockets
    already listening, so none waits on a worker that is still starting."""

    def __init__(self, shared: socket.socket):
        self.family = shared.family
        self.address = shared.getsockname()

    def __reduce__(self) -> tuple:
        return bind_shared, (self.family, self.address)


def worker_sockets(shared: socket.socket, workers: int) -> list:
    """What each of `workers` worker processes serves: the shared socket, and where the kernel
    can spread connections (Linux), one of its own, with the random choice attached."""
    if not REUSEPORT:
        return [shared]
    with contextlib.suppress(OSError):  # an old kernel without reuseport BPF: the kernel's
        steer_past_first(shared, workers)  # hash then gives the shared socket a share as well
    return [shared, OwnSocket(shared)]


def steer_past_first(sock: socket.socket, workers: int) -> None:
    """Attach to `sock`'s SO_REUSEPORT group a program choosing, for each new connection,
    socket 1 + random % workers: one of the workers' own sockets, never the first (the shared
    one, listening since before the workers). The kernel takes an index past the group's end,
    while workers start, as "choose by hash" over all its sockets."""
    program = [(_BPF_LD_W_ABS, 0, 0, _SKF_AD_RANDOM & 0xFFFFFFFF),  # A = random
               (_BPF_ALU_MOD_K, 0, 0, workers),  # A %= workers
               (_BPF_ALU_ADD_K, 0, 0, 1),  # A += 1
               (_BPF_RET_A, 0, 0, 0)]  # return A
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def _json_answer(status: bytes, error: str) -> bytes:
    """A whole HTTP answer that closes the connection, its body {"error": ...} as the API's
    own errors are, for what the protocol answers before the app sees a request."""
    body = json.dumps({"error": error}).encode()
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, len(body), body))


REQUEST_TIMEOUT = _json_answer(b"408 Request Timeout", "the request did not arrive in time "
                              f"(headers within {HEADER_TIMEOUT_S:.0f} s, the body within "
                              f"{BODY_TIMEOUT_S:.0f} s); send it again.")
NOT_HTTP = _json_answer(b"400 Bad Request", "the request is not valid HTTP/1.1 (a malformed "
                       "request line or header, such as a Content-Length that is not a number "
                       "a server can take); send a well-formed request.")


class _AnswerInOneWrite:
    """A transport that holds each write back until the next one, and sends the two together,
    or until the event loop's next turn, a close, or the client's end of input: uvicorn writes
    an answer's headers and its body separately, and each write over loopback woke the client
    (and often took the core from the worker) -- 7% of a worker's time at 32 clients.
    Everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(self._held + data)
            self._held = None

    def flush(self) -> None:
        """Send what is held, if the connection is still open."""
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def writelines(self, lines: list[bytes]) -> None:
        self.flush()
        self._transport.writelines(lines)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines: a request's headers must arrive
    within HEADER_TIMEOUT_S (of the connection, or of the request's first byte) and its body
    within BODY_TIMEOUT_S of the headers; a late client gets 408 and is disconnected."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _AnswerInOneWrite(transport, self.loop)  # type: ignore[assignment]
        self._arm(HEADER_TIMEOUT_S)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a keep-alive connection
            self._arm(HEADER_TIMEOUT_S)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(BODY_TIMEOUT_S)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def send_400_response(self, msg: str) -> None:
        """What the HTTP parser could not read is answered in JSON, as every other error
        (uvicorn's own answer is plain text)."""
        self.transport.write(NOT_HTTP)
        self.transport.close()

    def eof_received(self) -> bool | None:
        """The client is done sending: an answer held back leaves now, before uvicorn lets the
        transport close (uvloop reads the end of input before the loop's next turn)."""
        self.transport.flush()  # type: ignore[attr-defined]
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)  # no answer is on its way: say why
        self.transport.close()
