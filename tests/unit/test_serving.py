"""The sockets the sandbox and the ingest serve on."""

import asyncio
import socket

from zonepurge.serving import bind


def test_accepted_connections_send_without_waiting_for_acks():
    # Without TCP_NODELAY, every answer after a connection's first waited some 40 ms for the
    # client's delayed ACK: the HTTP ingest and the sandbox answered kept-alive calls slowly.
    async def nodelay_of_an_accepted_connection() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listening = bind("127.0.0.1", 0)
        server = await asyncio.start_server(accepted, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname())
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    assert asyncio.run(nodelay_of_an_accepted_connection()) != 0
