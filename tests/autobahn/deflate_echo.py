"""An echo server that negotiates permessage-deflate: python `websockets` at its defaults, the
backend's own stack. tests/autobahn/run.sh puts it behind wsnorm so both legs are compressed.

    deflate_echo.py PORT

Echoes every message as one message; up to 64 MiB (Autobahn's 9.* cases send 16 MiB).
"""
import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except Exception:  # A case that breaks the protocol on purpose ends its connection.
        pass


async def main(port):
    async with serve(echo, "127.0.0.1", port, max_size=64 << 20, max_queue=4,
                     ping_interval=None):
        print("listening on 127.0.0.1:%d" % port, flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
