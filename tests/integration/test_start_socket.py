"""``compozy start`` listens on a socket whose connections send small writes at once: a
keep-alive client otherwise waits ~40 ms (a delayed ACK) on every response, since uvicorn
writes the headers and the body separately."""

from __future__ import annotations

import asyncio
import socket

from compozy.cli.start import _listen


def test_connections_of_the_listener_have_nagle_off() -> None:
    listener = _listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    class Record(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def serve_one() -> None:
        server = await asyncio.get_running_loop().create_server(Record, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(serve_one())
    assert seen == [1]
