"""A small HTTP/1.1 client for the benchmark's observers: keep-alive connections on asyncio
with httptools' C parser (a pinned dependency of the services), each carrying one request at a
time, kept in a pool for the next.

The benchmark shares two cores with what it measures, so its client must cost little. httpx's
connection pool scans every connection for every request it assigns (``is_idle`` and
``has_expired`` on each): watching a few dozen projects at once, the freshness row's observer
spent about 1.4 ms of CPU per submission in it, a fifth of the machine at that row's rate."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def ask(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        assert self._answer is None
        self._answer = asyncio.get_running_loop().create_future()
        self._body = []
        self._transport.write(request)
        return self._answer

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.closed = True  # answered, and not to be asked again
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("the server closed the connection"))

    def close(self) -> None:
        self._fail(ConnectionError("closed by the client"))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)


class HttpClient:
    """GET requests to one server with fixed headers, over a pool of keep-alive connections."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self._host = host
        self._port = port
        fields = {"Host": f"{host}:{port}", **headers}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []

    async def get(self, path: str) -> tuple[int, bytes]:
        """The status and body of ``GET path``."""
        connection = None
        while self._idle and connection is None:
            candidate = self._idle.pop()
            connection = None if candidate.closed else candidate
        if connection is None:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, self._host, self._port
            )
            self._all.append(connection)
        answer = await connection.ask(f"GET {path} HTTP/1.1\r\n{self._head}\r\n".encode())
        if connection.closed:
            connection.close()
            self._all.remove(connection)
        else:
            self._idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()
