"""Headless Chromium (Debian's `chromium`) through wsnorm to a compressing backend (python
`websockets` at its defaults): the page opens an agent_chat WebSocket, sends the incident message
and a large repetitive one, and writes what it saw into the DOM, which `--dump-dom` prints. The
page is served here and its last bytes are held back until the backend has answered both
messages: `--dump-dom` waits for the load event, so the DOM is read once the page has seen all.

    browser_chat.py WSNORM_BIN CHROMIUM

Checks: the page's `ws.extensions` is permessage-deflate and `ws.protocol` agent_chat; the
backend receives the message rewritten exactly; both echoes reach the page; the large message
crossed the browser's socket compressed (bytes counted by a relay). Prints `N passed, M failed`.
"""
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile

from websockets.asyncio.server import serve

from deflate_chat import RESULTS, Counter, check, free_port, wait_listening

INCIDENT = '{"type":"execute_agent","agent_id":"a1","timestamp":"2025-09-08T16:50:01.447585","message_id":"m1"}'
REWRITTEN = '{"type":"start_agent","agent_id":"a1","timestamp":1757350201.447585,"message_id":"m1"}'
BIG = json.dumps({"type": "tool_result", "rows": [{"key": "value", "n": i % 10} for i in range(8000)]})

PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
const seen = {echoes: []};
const ws = new WebSocket("ws://127.0.0.1:%(port)d/ws", ["agent_chat"]);
ws.onopen = () => {
  seen.extensions = ws.extensions;
  seen.protocol = ws.protocol;
  ws.send(%(incident)s);
  ws.send(%(big)s);
};
ws.onmessage = (e) => {
  seen.echoes.push(e.data.length > 200 ? "length " + e.data.length : e.data);
  if (seen.echoes.length === 2) { out.textContent = JSON.stringify(seen); ws.close(1000); }
};
ws.onerror = () => { out.textContent = "error " + JSON.stringify(seen); };
</script>
"""


async def main(wsnorm_bin, chromium):
    received = []
    answered = asyncio.Event()

    async def backend(ws):
        async for message in ws:
            received.append(message)
            await ws.send(message)
            if len(received) == 2:
                answered.set()

    async def page_server(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"GET /chat.html "):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nConnection: close\r\n\r\n")
        writer.write(page.encode())
        await writer.drain()
        try:
            await asyncio.wait_for(answered.wait(), 30)
        except asyncio.TimeoutError:
            pass
        # Time for the page to handle the echoes before the document ends.
        await asyncio.sleep(1)
        writer.write(b"</body></html>\n")
        await writer.drain()
        writer.close()

    backend_port = free_port()
    async with serve(backend, "127.0.0.1", backend_port, max_size=4 << 20):
        listen, admin = free_port(), free_port()
        proc = subprocess.Popen(
            [wsnorm_bin, "--listen", "127.0.0.1:%d" % listen, "--admin", "127.0.0.1:%d" % admin,
             "--backend", "127.0.0.1:%d" % backend_port], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            await wait_listening(listen)
            counter = Counter(listen)
            port = await counter.start()
            page = PAGE % {"port": port, "incident": json.dumps(INCIDENT), "big": json.dumps(BIG)}
            http = await asyncio.start_server(page_server, "127.0.0.1", 0)
            http_port = http.sockets[0].getsockname()[1]
            with tempfile.TemporaryDirectory(prefix="wsnorm-chromium-") as tmp:
                browser = await asyncio.create_subprocess_exec(
                    chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--user-data-dir=" + os.path.join(tmp, "profile"),
                    "--dump-dom", "http://127.0.0.1:%d/chat.html" % http_port,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                dom, _ = await asyncio.wait_for(browser.communicate(), 120)
            http.close()
        finally:
            proc.terminate()
            proc.wait(10)
    dom = dom.decode()
    start, end = dom.find('<pre id="out">'), dom.find("</pre>")
    shown = dom[start + len('<pre id="out">'):end] if start >= 0 else dom[:300]
    try:
        seen = json.loads(shown.replace("&quot;", '"').replace("&amp;", "&"))
    except ValueError:
        seen = {}
    check(seen.get("extensions", "").startswith("permessage-deflate"), "the page's ws.extensions is permessage-deflate", shown[:300])
    check(seen.get("protocol") == "agent_chat", "the page's ws.protocol is agent_chat", shown[:300])
    check(received[:1] == [REWRITTEN], "the backend got the incident message rewritten exactly", received[:1])
    check(len(received) == 2 and received[1] == BIG, "the large message reached the backend unchanged")
    check(seen.get("echoes") == [REWRITTEN, "length %d" % len(BIG)], "both echoes reached the page", seen.get("echoes"))
    print("large message: %d bytes; wsnorm wrote %d bytes to the browser in all" % (len(BIG), counter.down))
    echoed = seen.get("echoes", [])[1:] == ["length %d" % len(BIG)]
    check(echoed and counter.down * 10 < len(BIG), "the browser's socket carried it compressed", counter.down)


if __name__ == "__main__":
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    passed, failed = RESULTS.count(True), RESULTS.count(False)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)
