"""A python `websockets` client and backend, both compressing (their defaults), through wsnorm;
byte-counting TCP relays in front of wsnorm and of the backend see what crosses each socket.

    deflate_chat.py WSNORM_BIN

Checks: permessage-deflate negotiated on both legs; every message arrives rewritten exactly as
the default rules say (and untouched ones byte-identical); a 240 KB repetitive agent response
crosses both legs as a small fraction of its size. Measures the bytes a synthesized agent run
(agent_chat events, token by token) puts on the client's socket directly from the backend and
through wsnorm (written to target/deflate-stream-bytes.txt). Prints `N passed, M failed`; exit 1
on a failure.
"""
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

RESULTS = []


def check(ok, what, detail=""):
    RESULTS.append(bool(ok))
    print("%s: %s%s" % ("ok" if ok else "FAIL", what, (" (%s)" % detail) if detail and not ok else ""))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def wait_listening(port):
    """Waits (up to 10 s) until something accepts on 127.0.0.1:port."""
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            await asyncio.sleep(0.1)


class Counter:
    """A TCP relay to 127.0.0.1:target counting bytes each way."""

    def __init__(self, target):
        self.target = target
        self.up = 0  # towards the target
        self.down = 0  # from the target

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src, dst, up):
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, t_writer, True), pipe(t_reader, writer, False))


def agent_run():
    """The backend's side of one agent run, as agent_chat envelopes."""
    ts = "2025-09-08T16:50:%02d.%06d"
    out = [{"type": "agent_started", "data": {"run_id": "r1", "agent_name": "triage"},
            "timestamp": ts % (2, 100), "critical": True}]
    words = ("the p99 latency rose after the deploy because the cache hit ratio dropped while "
             "the new index was built so requests fell through to the database").split()
    for i in range(400):
        out.append({"type": "agent_thinking", "data": {"run_id": "r1", "token": words[i % len(words)] + " ",
                    "seq": i}, "timestamp": 1757350202.0 + i * 0.013})
    out.append({"type": "tool_executing", "data": {"run_id": "r1", "tool": "query_metrics",
                "args": {"metric": "http_p99", "window": "1h"}}, "timestamp": ts % (9, 500)})
    out.append({"type": "tool_completed", "data": {"run_id": "r1", "tool": "query_metrics", "result": [
        {"t": 1757350200 + 60 * i, "p99_ms": 180 + (i * 37) % 90, "route": "/api/search"} for i in range(120)]},
        "timestamp": ts % (11, 250)})
    out.append({"type": "agent_completed", "data": {"run_id": "r1", "status": "ok"}, "timestamp": ts % (12, 0)})
    return [json.dumps(m, separators=(",", ":")) for m in out]


async def stream_bytes(url, counter, n):
    """Bytes the backend's agent run puts on the socket `counter` watches, client side."""
    async with connect(url, subprotocols=["agent_chat"], max_size=4 << 20) as ws:
        before = counter.down
        await ws.send("send-stream")
        for _ in range(n):
            await asyncio.wait_for(ws.recv(), 10)
        await asyncio.sleep(0.2)
        return counter.down - before


async def main(wsnorm_bin):
    received = asyncio.Queue()
    backend_extensions = []
    big = json.dumps({"type": "agent_response", "data": {"text": "the agent says the same thing again, " * 6500}})

    async def backend(ws):
        backend_extensions.append(ws.request.headers.get("Sec-WebSocket-Extensions", ""))
        async for message in ws:
            await received.put(message)
            if message == "send-big":
                await ws.send(big)
            elif message == "send-stream":
                for event in agent_run():
                    await ws.send(event)
            else:
                await ws.send(message)

    backend_port = free_port()
    async with serve(backend, "127.0.0.1", backend_port, max_size=4 << 20):
        backend_counter = Counter(backend_port)
        backend_side = await backend_counter.start()
        listen, admin = free_port(), free_port()
        log = tempfile.NamedTemporaryFile(prefix="wsnorm-python-", suffix=".log", delete=False)
        proc = subprocess.Popen(
            [wsnorm_bin, "--listen", "127.0.0.1:%d" % listen, "--admin", "127.0.0.1:%d" % admin,
             "--backend", "127.0.0.1:%d" % backend_side, "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=log)
        try:
            await wait_listening(listen)
            client_counter = Counter(listen)
            client_side = await client_counter.start()
            async with connect("ws://127.0.0.1:%d/ws" % client_side, subprotocols=["agent_chat"],
                               max_size=4 << 20) as ws:
                answered = ws.response.headers.get("Sec-WebSocket-Extensions", "")
                check(answered.startswith("permessage-deflate"), "client leg negotiated permessage-deflate", answered)
                check(ws.subprotocol == "agent_chat", "agent_chat echoed", ws.subprotocol)
                cases = [
                    ('{"type":"execute_agent","agent_id":"a1","timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}',
                     '{"type":"start_agent","agent_id":"a1","timestamp":1757350201.447585,"message_id":"m1"}'),
                    ('{"type":"user_message", "text": "unchanged \\u00e9 bytes"  }',
                     '{"type":"user_message", "text": "unchanged \\u00e9 bytes"  }'),
                    ("not json at all", "not json at all"),
                ]
                cases += [('{"type":"token","seq":%d,"text":"tok%d"}' % (i, i),) * 2 for i in range(50)]
                for sent, expected in cases:
                    await ws.send(sent)
                    got = await asyncio.wait_for(received.get(), 10)
                    check(got == expected, "rewritten exactly: %s" % sent[:40], got)
                    echo = await asyncio.wait_for(ws.recv(), 10)
                    check(echo == expected, "echo reaches the client: %s" % sent[:40], echo)
                check(backend_extensions and backend_extensions[0].startswith("permessage-deflate"),
                      "wsnorm offered permessage-deflate to the backend", backend_extensions)
                before_client, before_backend = client_counter.down, backend_counter.down
                await ws.send("send-big")
                await asyncio.wait_for(received.get(), 10)
                got = await asyncio.wait_for(ws.recv(), 10)
                check(got == big, "the large message arrives whole", len(got))
                await asyncio.sleep(0.2)
                on_backend_leg = backend_counter.down - before_backend
                on_client_leg = client_counter.down - before_client
                print("large message: %d bytes; backend leg %d bytes on the wire, client leg %d"
                      % (len(big), on_backend_leg, on_client_leg))
                check(on_backend_leg * 20 < len(big), "compressed on the backend leg", on_backend_leg)
                check(on_client_leg * 20 < len(big), "compressed on the client leg", on_client_leg)
            n = len(agent_run())
            raw = sum(len(m) for m in agent_run())
            direct = await stream_bytes("ws://127.0.0.1:%d/ws" % backend_side, backend_counter, n)
            proxied = await stream_bytes("ws://127.0.0.1:%d/ws" % client_side, client_counter, n)
            figure = ("agent run (%d messages, %d payload bytes) on the client's socket: directly from "
                      "the backend %d bytes, through wsnorm %d bytes (%.3f x)"
                      % (n, raw, direct, proxied, proxied / direct))
            print(figure)
            with open(os.path.join(os.path.dirname(__file__), "..", "..", "target",
                                   "deflate-stream-bytes.txt"), "w") as f:
                f.write(figure + "\n")
            check(proxied * 2 < raw, "the agent run is compressed on the client's socket", figure)
        finally:
            proc.terminate()
            proc.wait(10)
        logs = open(log.name).read()
        connected = [l for l in logs.splitlines() if "WebSocket connected." in l]
        check(connected and '"wsnorm.client.extension":"permessage-deflate' in connected[0]
              and '"wsnorm.backend.extension":"permessage-deflate' in connected[0],
              "the connection log names both legs' extension", connected[:1])
        os.unlink(log.name)


if __name__ == "__main__":
    # wsnorm's backend check connects without a request: not worth a traceback.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    started = time.time()
    asyncio.run(main(sys.argv[1]))
    passed, failed = RESULTS.count(True), RESULTS.count(False)
    print("python websockets through wsnorm took %.1f s" % (time.time() - started))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
