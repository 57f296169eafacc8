"""An echo server on python `websockets` at its defaults (permessage-deflate accepted, as
uvicorn's `websockets` backend does): bench/deflate.sh's reference for memory per idle
compressed connection, one leg.

    python bench/websockets_echo.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
