#!/usr/bin/env python3
"""Helpers for tests/prometheus/run.sh (standard library only: no pip, no network).

Subcommands:
  ports N                        print N free loopback TCP ports
  wait-http URL SECONDS          wait until URL answers 200
  traffic HOST:PORT [TAG]        drive WebSocket and HTTP traffic through wsnorm (raw client)
  hold HOST:PORT SECONDS         keep one WebSocket open through wsnorm (until killed or SECONDS)
  wait-prom PROM SECONDS EXPR..  wait until every EXPR returns a sample > 0
  check PROM DASHBOARD ALERTS    lint the dashboard, evaluate every expression, check the rules

Every check prints one line starting with "ok: " or "FAIL: "; run.sh counts them.
The exit status is 1 when a check failed, 0 otherwise.
"""

import base64
import hashlib
import http.client
import json
import os
import re
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

FAILED = 0


def ok(msg):
    print(f"ok: {msg}", flush=True)


def fail(msg):
    global FAILED
    FAILED += 1
    print(f"FAIL: {msg}", flush=True)


def check(cond, msg, detail=""):
    if cond:
        ok(msg)
    else:
        fail(f"{msg}{': ' + detail if detail else ''}")
    return cond


# ------------------------------------------------------------------------------------------------
# ports / wait-http
# ------------------------------------------------------------------------------------------------

def cmd_ports(n):
    socks = []
    for _ in range(int(n)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def cmd_wait_http(url, seconds):
    deadline = time.monotonic() + float(seconds)
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(url)
            if status == 200:
                return 0
            last = f"HTTP {status} {body[:200]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    print(f"timed out waiting for {url}: {last}", file=sys.stderr)
    return 1


# ------------------------------------------------------------------------------------------------
# A minimal RFC 6455 client (enough for the test: masked frames out, unfragmented or
# fragmented frames in, close handshake).
# ------------------------------------------------------------------------------------------------

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOKEN = "prometheus-test-token-0123456789"


class WsClient:
    def __init__(self, addr, path, headers, timeout=5.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {addr}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
        ]
        if not any(h.lower().startswith("sec-websocket-version:") for h in headers):
            lines.append("Sec-WebSocket-Version: 13")
        lines += headers
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            if ":" in line:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        self.body = b""
        if self.status == 101:
            expect = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            if self.headers.get("sec-websocket-accept") != expect:
                raise RuntimeError("bad Sec-WebSocket-Accept")
        else:
            n = int(self.headers.get("content-length", "0"))
            self.body = self._read_exact(n) if n else b""
            self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self):
        """One message: (opcode, payload). Control frames are returned as they come."""
        data, first_op = b"", None
        while True:
            b0, b1 = self._read_exact(2)
            fin, op = b0 & 0x80, b0 & 0x0F
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if b1 & 0x80 else None
            payload = self._read_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op >= 0x8:
                if op == 0x9:  # ping: answer it
                    self.send(0xA, payload)
                    continue
                return op, payload
            if first_op is None:
                first_op = op
            data += payload
            if fin:
                return first_op, data

    def recv_until(self, pred, limit=20):
        """Messages until pred(opcode, payload) is true or a close arrives; returns them all."""
        got = []
        for _ in range(limit):
            op, payload = self.recv()
            got.append((op, payload))
            if op == 0x8 or pred(op, payload):
                break
        return got

    def close(self, code=1000, reason=b""):
        try:
            self.send(0x8, struct.pack("!H", code) + reason)
        except OSError:
            pass
        self.sock.close()


def texts(msgs):
    out = []
    for op, payload in msgs:
        if op == 0x1:
            try:
                out.append(json.loads(payload))
            except ValueError:
                out.append(payload.decode("utf-8", "replace"))
    return out


def received_raw(msgs):
    """The `raw` of the backend's `received` replies, parsed."""
    raws = []
    for m in texts(msgs):
        if isinstance(m, dict) and m.get("type") == "received":
            raws.append(json.loads(m["raw"]))
    return raws


def is_type(t):
    def pred(op, payload):
        if op != 0x1:
            return False
        try:
            return json.loads(payload).get("type") == t
        except (ValueError, AttributeError):
            return False
    return pred


def cmd_traffic(addr, tag=""):
    def chk(cond, msg, detail=""):
        return check(cond, f"{tag}: {msg}" if tag else msg, detail)

    auth = [f"Authorization: Bearer {TOKEN}", "Sec-WebSocket-Protocol: agent_chat"]

    # 1. A full conversation that ends with the backend closing 1011.
    ws = WsClient(addr, "/ws?case=prometheus", auth)
    chk(ws.status == 101 and ws.headers.get("sec-websocket-protocol") == "agent_chat",
          "handshake through wsnorm: 101 with agent_chat",
          f"status {ws.status}, headers {ws.headers}")

    ws.send(0x1, '{"type":"ping","timestamp":"2025-09-08T16:50:01.447585","message_id":"p1"}')
    msgs = ws.recv_until(is_type("pong"))
    raws = received_raw(msgs)
    chk(raws and raws[0].get("timestamp") == 1757350201.447585,
          "naive ISO timestamp converted to unix seconds", f"backend got {raws}")

    ws.send(0x1, '{"type":"ping","timestamp":"not a timestamp at all"}')
    msgs = ws.recv_until(is_type("pong"))
    raws = received_raw(msgs)
    chk(raws and isinstance(raws[0].get("timestamp"), (int, float)),
          "invalid timestamp replaced (on_invalid = now), connection stays open",
          f"backend got {raws}")

    ws.send(0x1, '{"type":"ping","timestamp":1757350201447}')
    ws.recv_until(is_type("pong"))

    ws.send(0x1, "this is not JSON")
    msgs = ws.recv_until(is_type("error_message"))
    chk(any(isinstance(m, dict) and m.get("error_code") == "INVALID_JSON" for m in texts(msgs)),
          "non-JSON text relayed unchanged", f"replies {texts(msgs)}")

    ws.send(0x2, b"\x00\x01binary\xff")
    op, payload = ws.recv()
    chk(op == 0x2 and payload == b"\x00\x01binary\xff", "binary message echoed through wsnorm")

    ws.send(0x1, '{"type":"close_with","payload":{"code":1011,"reason":"prometheus test"}}')
    msgs = ws.recv_until(lambda op, p: False)
    op, payload = msgs[-1]
    code = struct.unpack("!H", payload[:2])[0] if op == 0x8 and len(payload) >= 2 else None
    chk(code == 1011, "backend close 1011 relayed to the client", f"last frame {msgs[-1]!r}")
    ws.close(1011)

    # 2. A client that vanishes without a close frame (1006).
    ws = WsClient(addr, "/ws", auth)
    ws.send(0x1, '{"type":"ping"}')
    ws.recv_until(is_type("pong"))
    ws.sock.close()

    # 3. Handshakes that fail, each with its own result label.
    ws = WsClient(addr, "/ws", ["Sec-WebSocket-Protocol: agent_chat"])
    chk(ws.status == 403, "handshake without a token: backend's 403 passed through",
          f"status {ws.status}")
    ws = WsClient(addr, "/ws/fail500", auth)
    chk(ws.status == 500, "handshake on /ws/fail500: backend's 500 passed through",
          f"status {ws.status}")
    ws = WsClient(addr, "/ws", auth + ["Sec-WebSocket-Version: 8"])
    chk(ws.status == 426, "handshake with Sec-WebSocket-Version 8: 426", f"status {ws.status}")

    # 4. Plain HTTP pass-through.
    host, port = addr.rsplit(":", 1)
    for path, want in (("/health", 200), ("/no-such-page", 404)):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        chk(status == want, f"plain HTTP GET {path}: {want}", f"got {status}")
    return 1 if FAILED else 0


def cmd_hold(addr, seconds):
    ws = WsClient(addr, "/ws?case=hold", [f"Authorization: Bearer {TOKEN}",
                                          "Sec-WebSocket-Protocol: agent_chat"])
    if ws.status != 101:
        print(f"hold: handshake failed with {ws.status}", file=sys.stderr)
        return 1
    ws.sock.settimeout(float(seconds))
    try:
        ws.recv_until(lambda op, p: False, limit=1000)
    except (OSError, EOFError):
        pass
    ws.close(1000)
    return 0


# ------------------------------------------------------------------------------------------------
# Prometheus queries
# ------------------------------------------------------------------------------------------------

def prom_query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def values(resp):
    """Sample values of a vector or scalar result, as floats."""
    data = resp.get("data", {})
    if data.get("resultType") == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data.get("result", [])]


def cmd_wait_prom(prom, seconds, *exprs):
    deadline = time.monotonic() + float(seconds)
    pending = list(exprs)
    while time.monotonic() < deadline and pending:
        pending = [e for e in pending
                   if not any(v > 0 for v in values(prom_query(prom, e)))]
        if pending:
            time.sleep(0.5)
    if pending:
        print(f"timed out waiting for: {pending}", file=sys.stderr)
        return 1
    return 0


# Grafana's macros and this dashboard's variables, as the test evaluates them.
SUBSTITUTIONS = [
    ("$__rate_interval", "1m"),
    ("${__rate_interval}", "1m"),
    ("$__range", "5m"),
    ("${__range}", "5m"),
    ("$__interval", "15s"),
]
# Every variable at "All" (allValue ".*", which also matches a label the scrape does not set,
# as namespace and pod outside Kubernetes).
VARIABLES = ["job", "namespace", "pod", "instance", "route"]
SUBSTITUTIONS += [(f"${{{v}}}", ".*") for v in VARIABLES] + [(f"${v}", ".*") for v in VARIABLES]
# Metrics with a route label: the dashboard filters them on route=~"$route".
ROUTED = {"wsnorm_handshakes_total", "wsnorm_handshake_duration_seconds_bucket",
          "wsnorm_messages_total", "wsnorm_message_bytes_total",
          "wsnorm_message_bytes_sent_total", "wsnorm_closes_total", "wsnorm_connections_active",
          "wsnorm_connection_duration_seconds_bucket"}
FILTER = 'job=~"$job", namespace=~"$namespace", pod=~"$pod", instance=~"$instance"'

SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
RANGE = re.compile(r"\[([^\]]+)\]")


def substitute(expr):
    for k, v in SUBSTITUTIONS:
        expr = expr.replace(k, v)
    return expr


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def lint_dashboard(dash):
    check(isinstance(dash.get("schemaVersion"), int) and dash["schemaVersion"] >= 39,
          f"dashboard schemaVersion {dash.get('schemaVersion')} >= 39")
    check("panels" in dash and "templating" in dash and "elements" not in dash,
          "dashboard uses the classic JSON model (panels, templating)")
    tvars = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = tvars.get("datasource", {})
    check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
          "variable datasource: type datasource, query prometheus")
    for name in VARIABLES:
        var = tvars.get(name, {})
        q = var.get("query")
        qtext = q.get("query") if isinstance(q, dict) else q
        source = "wsnorm_handshakes_total" if name == "route" else "wsnorm_build_info"
        want = f"label_values({source}, {name})"
        check(var.get("type") == "query" and qtext == want
              and var.get("multi") is True and var.get("includeAll") is True
              and var.get("allValue") == ".*"
              and var.get("datasource", {}).get("uid") == "${datasource}",
              f"variable {name}: {want}, multi, include all (.*)")

    panels = list(walk_panels(dash.get("panels", [])))
    rows = [p.get("title") for p in panels if p.get("type") == "row"]
    want_rows = ["Overview", "Traffic", "Errors", "Latency", "Rules", "Config",
                 "Backend and process", "Compression"]
    check(rows == want_rows, ", ".join(want_rows), f"rows {rows}")
    # The overview row leads: stat panels only, side by side at the top.
    top = [p for p in panels if p.get("type") != "row" and p["gridPos"]["y"] == 1]
    check(len(top) >= 5 and all(p.get("type") == "stat" for p in top),
          f"the top row is stat panels ({[p.get('title') for p in top]})")
    ids = [p.get("id") for p in panels]
    check(len(ids) == len(set(ids)), "panel ids unique")

    problems = []
    for p in panels:
        if p.get("type") == "row":
            continue
        title = p.get("title")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"{title}: panel datasource is not ${{datasource}}")
        if p.get("type") == "timeseries" and not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{title}: no unit")
        if not p.get("targets"):
            problems.append(f"{title}: no targets")
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{title}/{t.get('refId')}: target datasource is not ${{datasource}}")
            for name, matchers in SELECTOR.findall(expr):
                if FILTER not in matchers:
                    problems.append(f"{title}: selector {name}{{{matchers}}} lacks {FILTER}")
                if name in ROUTED and 'route=~"$route"' not in matchers:
                    problems.append(f"{title}: selector {name}{{{matchers}}} lacks route=~\"$route\"")
            bare = [m for m in re.findall(r"\b(wsnorm_[a-z_]+|up)\b(?!\s*\{)", expr)]
            if bare:
                problems.append(f"{title}: unfiltered metric(s) {bare}")
            for rng in RANGE.findall(expr):
                if rng not in ("$__rate_interval", "$__range"):
                    problems.append(f"{title}: range [{rng}] instead of $__rate_interval")
    check(not problems,
          "every panel and target uses ${datasource}, filters on job, namespace, pod, instance "
          "(and route where there is one), "
          "uses $__rate_interval, has a unit", "; ".join(problems))


def cmd_check(prom, dashboard_path, alerts_path):
    with open(dashboard_path) as f:
        dash = json.load(f)
    lint_dashboard(dash)

    # The instance variable's query must find the scraped instance.
    url = f"{prom}/api/v1/label/instance/values?" + urllib.parse.urlencode(
        {"match[]": "wsnorm_build_info"})
    with urllib.request.urlopen(url, timeout=10) as r:
        instances = json.load(r).get("data", [])
    check(len(instances) >= 1, f"label_values(wsnorm_build_info, instance) = {instances}")

    # Every dashboard expression must evaluate and, given the traffic the test sent (two rounds,
    # one WebSocket held open), have a sample > 0: a misspelt metric or label evaluates fine but
    # returns nothing or zeros.
    exprs = []
    for p in walk_panels(dash["panels"]):
        for t in p.get("targets", []):
            if t.get("expr"):
                # The prometheus crate counts process CPU in whole seconds: a run this short
                # uses less than one, so the CPU panel is at zero (render.py checks its series).
                must_have_data = p["title"] != "CPU"
                exprs.append((f"panel {p['title']!r} {t['refId']}", t["expr"], must_have_data))

    # Every alert expression, as Prometheus loaded it from alerts.yml.
    with urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    with open(alerts_path) as f:
        in_file = re.findall(r"^\s*-\s*alert:\s*(\S+)", f.read(), re.M)
    loaded = [r["name"] for r in rules if r["type"] == "alerting"]
    check(sorted(loaded) == sorted(in_file) and loaded,
          f"Prometheus loaded all {len(in_file)} alerts from alerts.yml",
          f"file {in_file}, loaded {loaded}")
    for r in rules:
        exprs.append((f"alert {r['name']}", r["query"], False))
        check(r.get("health") == "ok" and not r.get("lastError"),
              f"alert {r['name']}: rule health ok (state {r.get('state')})",
              f"health {r.get('health')}, error {r.get('lastError')!r}")
        labels, ann = r.get("labels", {}), r.get("annotations", {})
        check(labels.get("severity") in ("critical", "warning", "info")
              and ann.get("summary") and ann.get("description"),
              f"alert {r['name']}: severity label, summary and description")

    errors = 0
    selectors_missing = []
    for what, expr, must_have_data in exprs:
        q = substitute(expr)
        resp = prom_query(prom, q)
        if resp.get("status") != "success":
            errors += 1
            fail(f"{what}: {resp.get('errorType')} {resp.get('error')} -- {q}")
            continue
        vals = values(resp)
        shown = ", ".join(f"{v:.6g}" for v in vals[:4]) + (" ..." if len(vals) > 4 else "")
        if must_have_data and not any(v > 0 for v in vals):
            errors += 1
            fail(f"{what}: no sample > 0 ({len(vals)} series [{shown}]) -- {q}")
            continue
        ok(f"{what}: {len(vals)} series [{shown}]")
        # Each selector must match real series (catches misspelt metric and label names that
        # evaluate fine but return nothing, e.g. inside an alert that is not firing).
        for name, matchers in SELECTOR.findall(q):
            sel = f"{name}{{{matchers}}}"
            if not values(prom_query(prom, f"count({sel})")):
                selectors_missing.append(f"{what}: {sel}")
    check(not selectors_missing, "every selector in every expression matches scraped series",
          "; ".join(selectors_missing))
    print(f"{len(exprs)} expressions evaluated, {errors} errors", flush=True)

    # The key series.
    v = values(prom_query(prom, 'sum(wsnorm_conversion_duration_seconds_count{job="wsnorm"})'))
    check(v and v[0] > 0, f"wsnorm_conversion_duration_seconds_count > 0 ({v})")
    v = values(prom_query(prom, 'sum(wsnorm_closes_total{job="wsnorm",code="1011"})'))
    check(v and v[0] > 0, f'wsnorm_closes_total{{code="1011"}} > 0 ({v})')
    v = values(prom_query(prom, 'sum(wsnorm_closes_total{job="wsnorm",code="1011",initiator="backend"})'))
    check(v and v[0] > 0, f'1011 counted with initiator="backend" ({v})')
    v = values(prom_query(prom, 'sum(wsnorm_timestamp_inputs_total{job="wsnorm",format="invalid"})'))
    check(v and v[0] > 0, f'wsnorm_timestamp_inputs_total{{format="invalid"}} > 0 ({v})')
    v = values(prom_query(prom, 'sum(wsnorm_config_reloads_total{job="wsnorm",result="error"})'))
    check(v and v[0] > 0, f'wsnorm_config_reloads_total{{result="error"}} > 0 ({v})')
    # WsnormDown's target selection finds wsnorm under any job name, the annotation-based one too.
    resp = prom_query(prom, "up and on (job, instance) max_over_time(wsnorm_build_info[1h])")
    jobs = {s["metric"].get("job") for s in resp.get("data", {}).get("result", [])}
    check({"wsnorm", "kubernetes-pods"} <= jobs,
          f"the alerts' wsnorm targets include job=kubernetes-pods ({sorted(jobs)})")
    return 1 if FAILED else 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        return cmd_ports(*args) or 0
    if cmd == "wait-http":
        return cmd_wait_http(*args)
    if cmd == "traffic":
        return cmd_traffic(*args)
    if cmd == "hold":
        return cmd_hold(*args)
    if cmd == "wait-prom":
        return cmd_wait_prom(*args)
    if cmd == "check":
        return cmd_check(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # noqa: BLE001 -- any crash is a failed check, with its reason
        fail(f"{sys.argv[1] if len(sys.argv) > 1 else 'helper'} crashed: {type(e).__name__}: {e}")
        sys.exit(1)
