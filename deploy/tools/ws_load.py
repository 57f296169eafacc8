#!/usr/bin/env python3
"""Opens many WebSocket connections through wsnorm and holds them, to size the sidecar.

Used for the figures in deploy/README.md ("Sizing"). Needs `pip install websockets` (>= 13).
Only ever point it at a wsnorm you run yourself (loopback).

    python3 deploy/tools/ws_load.py --url ws://127.0.0.1:8080/ws --connections 200 --hold 10
    python3 deploy/tools/ws_load.py --connections 200 --messages 50   # then 50 messages each

Stages, each announced on stdout with a line starting with `STAGE` (flushed, so a driver script
can read process figures at that moment): `STAGE open N` once every connection is open and idle,
`STAGE sent M` after the message round, `STAGE big` after the large messages, `STAGE closed` after a clean close (1000) of all.
"""

import argparse
import asyncio
import json
import sys
import time

from websockets.asyncio.client import connect

MESSAGE = {
    "type": "chat_message",
    "payload": {"text": "hello from ws_load", "timestamp": "2025-09-08T16:50:01.447585"},
    "timestamp": "2025-09-08T16:50:01.447585",
}


def stage(text):
    print(f"STAGE {text}", flush=True)


async def open_one(url, token):
    return await connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=["agent_chat"],
        ping_interval=None,  # idle really means idle: no keep-alive pings from this side
        open_timeout=30,
        max_size=2**20,
    )


async def converse(ws, n, conn_id, pad=0):
    """Sends n messages one after the other, each time waiting for the backend's ack."""
    for i in range(n):
        msg = dict(MESSAGE, message_id=f"c{conn_id}-m{i}")
        if pad:
            msg["payload"] = dict(MESSAGE["payload"], text="x" * pad)
        await ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("type") == "ack":
                break
            if reply.get("type") in ("error_message", "VALIDATION_ERROR"):
                raise RuntimeError(f"unexpected reply: {reply}")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    ap.add_argument("--token", default="ws-load-test-token")  # the demo backend wants >= 10 chars
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50, help="connections opened concurrently")
    ap.add_argument("--hold", type=float, default=10.0, help="seconds to stay idle once open")
    ap.add_argument("--messages", type=int, default=0, help="messages per connection after the hold")
    ap.add_argument("--big", type=int, default=0,
                    help="then one message of about this many bytes per connection, all at once")
    ap.add_argument("--after", type=float, default=3.0, help="seconds to stay open after messages")
    args = ap.parse_args()

    conns = []
    for start in range(0, args.connections, args.batch):
        count = min(args.batch, args.connections - start)
        conns += await asyncio.gather(*(open_one(args.url, args.token) for _ in range(count)))
    protocols = {c.subprotocol for c in conns}
    stage(f"open {len(conns)} subprotocols={sorted(str(p) for p in protocols)}")
    await asyncio.sleep(args.hold)

    if args.messages:
        t0 = time.monotonic()
        await asyncio.gather(*(converse(c, args.messages, i) for i, c in enumerate(conns)))
        took = time.monotonic() - t0
        total = args.messages * len(conns)
        stage(f"sent {total} in {took:.2f}s ({total / took:.0f} msg/s)")
        await asyncio.sleep(args.after)

    if args.big:
        t0 = time.monotonic()
        await asyncio.gather(*(converse(c, 1, i, pad=args.big) for i, c in enumerate(conns)))
        stage(f"big {len(conns)} x {args.big} bytes in {time.monotonic() - t0:.2f}s")
        await asyncio.sleep(args.after)

    await asyncio.gather(*(c.close() for c in conns))
    codes = {c.close_code for c in conns}
    stage(f"closed codes={sorted(codes)}")
    await asyncio.sleep(args.after)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
