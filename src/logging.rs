//! Structured logs with `tracing`: JSON by default (text on a terminal), filtered by `RUST_LOG`.
//! pingora's own `log` records are bridged in.
//!
//! Every line, whichever library emitted it, reaches stderr through [`RedactedStderr`], which
//! takes out query strings and the values of credential headers first: libraries put request
//! lines and raw heads into their messages (pingora's `Fail to proxy: … GET /path?query`, its
//! dumps of heads it could not parse), so filtering by target alone cannot keep tokens out.
//! Dependency targets that dump whole requests or message contents below info are also capped
//! at info, so those are not even formatted.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::cli::LogFormat;

/// Targets that log request headers, bodies or message contents below info.
const CAPPED_TARGETS: [&str; 4] = [
    "pingora_proxy",
    "pingora_core",
    "tungstenite",
    "tokio_tungstenite",
];

/// Installs the subscriber; the returned handle changes its filter at run time (`/logging`).
/// `None` when logging was set up already (then there is nothing to change).
pub fn init(format: Option<LogFormat>) -> Option<LogFilter> {
    let spec = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
    let filter = capped_filter(&spec).unwrap_or_else(|e| {
        eprintln!("wsnorm: RUST_LOG={spec:?} is not valid ({e}); logging at info");
        capped_filter("info").unwrap_or_default()
    });
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let (filter, handle) = reload::Layer::new(filter);
    // Colour codes only for a person at a terminal: a file or a log pipeline gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let writer = RedactedStderr { format };
    let (json, text) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(writer),
            ),
        ),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init();
    match result {
        Ok(()) => {
            std::panic::set_hook(Box::new(log_panic));
            Some(LogFilter { handle })
        }
        Err(e) => {
            eprintln!("wsnorm: logging already initialised: {e}");
            None
        }
    }
}

/// `spec` (`RUST_LOG` syntax, empty for `info`) with the [`CAPPED_TARGETS`] held at info
/// whatever it asks.
fn capped_filter(spec: &str) -> Result<EnvFilter, String> {
    let spec = if spec.trim().is_empty() { "info" } else { spec };
    let mut filter = EnvFilter::builder()
        .parse(spec)
        .map_err(|e| e.to_string())?;
    for target in CAPPED_TARGETS {
        let directive = format!("{target}=info")
            .parse()
            .map_err(|e| format!("capping {target}: {e}"))?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

/// The live log filter.
pub struct LogFilter {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogFilter {
    /// The filter in `RUST_LOG` syntax.
    pub fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }

    /// Replaces the filter with `spec` (`RUST_LOG` syntax), dependency caps kept.
    pub fn set(&self, spec: &str) -> Result<(), String> {
        let filter = capped_filter(spec)?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// A panic as one event (one JSON line), not the default hook's lines on stderr.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    let backtrace = std::backtrace::Backtrace::capture();
    let stacktrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| backtrace.to_string());
    tracing::error!(
        exception.message = message,
        code.filepath = info.location().map(|l| l.file()),
        code.lineno = info.location().map(|l| l.line()),
        exception.stacktrace = stacktrace,
        thread.name = std::thread::current().name(),
        "Panic."
    );
}

/// Header names whose values are credentials, matched anywhere (after `\n` in a dump too),
/// ignoring case and `_` against `-` ([`same_name`]): `Set-Cookie`, `Proxy-Authorization` and a
/// field `proxy_authorization` too. `Sec-WebSocket-Protocol` carries token subprotocols.
const SECRET_NAMES: [&[u8]; 3] = [b"cookie", b"authorization", b"sec-websocket-protocol"];

const REDACTED: &str = "<redacted>";

/// stderr, with every line passed through [`redact_line`] first. tracing-subscriber formats an
/// event whole and writes it with one `write_all` to a writer made for that event, so each
/// [`RedactedLine`] holds exactly one line and a secret is never split between two writes.
struct RedactedStderr {
    format: LogFormat,
}

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> RedactedLine {
        RedactedLine {
            format: self.format,
            buf: Vec::new(),
        }
    }
}

/// One formatted line, written redacted when dropped (never on `flush`, which could cut it).
struct RedactedLine {
    format: LogFormat,
    buf: Vec<u8>,
}

impl Write for RedactedLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.buf);
        let line = redact_line(&line, self.format);
        let line = match self.format {
            LogFormat::Json => without_fields(&line, &LOG_LOCATION_FIELDS),
            LogFormat::Text => Cow::Borrowed(&*line),
        };
        // A failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Where in a dependency's source a bridged `log` record was written: the build machine's
/// paths (`/root/.cargo/registry/...`), of no use to whoever reads the logs. `log.target` is
/// `target` again.
const LOG_LOCATION_FIELDS: [&str; 4] = ["log.file", "log.line", "log.module_path", "log.target"];

/// A JSON line (as tracing-subscriber writes it: one flat object, no spaces) without the
/// top-level fields named `names`. Their key pattern `,"name":` cannot occur inside a string,
/// where quotes are escaped.
fn without_fields<'a>(line: &'a str, names: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(line);
    for name in names {
        let key = format!(",\"{name}\":");
        let Some(at) = out.find(&key) else {
            continue;
        };
        let bytes = out.as_bytes();
        let value = at + key.len();
        let end = if bytes.get(value) == Some(&b'"') {
            string_end(bytes, value).map(|close| close + 1)
        } else {
            bytes[value..]
                .iter()
                .position(|&c| c == b',' || c == b'}')
                .map(|p| value + p)
        };
        if let Some(end) = end {
            out = Cow::Owned(format!("{}{}", &out[..at], &out[end..]));
        }
    }
    out
}

/// `line` without query strings or credential header values. A JSON line has each of its
/// strings redacted and re-encoded, so it stays valid JSON.
pub fn redact_line(line: &str, format: LogFormat) -> Cow<'_, str> {
    match format {
        LogFormat::Json => redact_json(line),
        LogFormat::Text => redact(line),
    }
}

/// Replaces what follows a `?` up to whitespace (a query string: `/path?<redacted>`) and the
/// value after a credential header's name and its `:` or `=` (or `,` after a quoted name, as in
/// a pair) up to the end of the line. The value's end is only trusted at a real line break:
/// inside a dump that escapes them (`\r\n` as text) the rest of the text goes, because an
/// escaped-looking sequence could be part of the value itself.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !might_hold_secret(text.as_bytes()) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let secret = if bytes[i] == b'?' {
            let start = i + 1;
            Some((start, query_end(bytes, start)))
        } else {
            secret_header_value(bytes, i)
        };
        match secret {
            // Both ends are at ASCII bytes or the end of the text: char boundaries.
            Some((start, end)) if end > start => {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn might_hold_secret(bytes: &[u8]) -> bool {
    bytes.contains(&b'?')
        || SECRET_NAMES
            .iter()
            .any(|name| bytes.windows(name.len()).any(|w| same_name(w, name)))
}

/// A query string runs to whitespace or a control byte (a line break, an ANSI colour).
fn query_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        .map_or(bytes.len(), |p| from + p)
}

/// Where the value is, if a credential header's name starts at `at` and a separator follows.
fn secret_header_value(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let name = SECRET_NAMES.iter().find(|name| {
        bytes
            .get(at..at + name.len())
            .is_some_and(|w| same_name(w, name))
    })?;
    let mut i = at + name.len();
    // Between a name and its separator: a closing quote (`"cookie": …`, `\"cookie\"`), spaces,
    // and the ANSI styling the text format puts around field names.
    let mut quoted = false;
    loop {
        match bytes.get(i) {
            Some(b'"' | b'\'' | b'\\') => {
                quoted = true;
                i += 1;
            }
            Some(b' ' | b'\t') => i += 1,
            Some(0x1b) => i = ansi_end(bytes, i),
            _ => break,
        }
    }
    match bytes.get(i) {
        Some(b':' | b'=') => {}
        Some(b',') if quoted => {}
        _ => return None,
    }
    i += 1;
    while let Some(&c @ (b' ' | b'\t' | 0x1b)) = bytes.get(i) {
        i = if c == 0x1b { ansi_end(bytes, i) } else { i + 1 };
    }
    let end = bytes[i..]
        .iter()
        .position(|&c| c == b'\r' || c == b'\n')
        .map_or(bytes.len(), |p| i + p);
    Some((i, end))
}

/// The end of an ANSI escape sequence starting at `esc` (`ESC [ params final-byte`).
fn ansi_end(bytes: &[u8], esc: usize) -> usize {
    if bytes.get(esc + 1) != Some(&b'[') {
        return esc + 1;
    }
    bytes
        .get(esc + 2..)
        .and_then(|rest| rest.iter().position(|c| (0x40..=0x7e).contains(c)))
        .map_or(bytes.len(), |p| esc + 3 + p)
}

/// [`redact`] applied to every string of a JSON line, keys and values; a string value whose key
/// names a credential header (a field called `authorization`) is replaced whole.
fn redact_json(line: &str) -> Cow<'_, str> {
    if !might_hold_secret(line.as_bytes()) {
        return Cow::Borrowed(line);
    }
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let (mut copied, mut from) = (0, 0);
    let mut after_secret_key = false;
    while let Some(open) = bytes[from..]
        .iter()
        .position(|&c| c == b'"')
        .map(|p| from + p)
    {
        let Some(close) = string_end(bytes, open) else {
            // Not JSON as the formatter writes it: redact the rest as text.
            out.push_str(&line[copied..open]);
            out.push_str(&redact(&line[open..]));
            return Cow::Owned(out);
        };
        let literal = &line[open..=close];
        let is_key = bytes[close + 1..].iter().find(|c| !c.is_ascii_whitespace()) == Some(&b':');
        let replacement = if after_secret_key && !is_key {
            Some(format!("\"{REDACTED}\""))
        } else {
            redact_json_string(literal)
        };
        if let Some(replacement) = replacement {
            out.push_str(&line[copied..open]);
            out.push_str(&replacement);
            copied = close + 1;
        }
        after_secret_key = is_key && names_secret(&bytes[open + 1..close]);
        from = close + 1;
    }
    if copied == 0 {
        return Cow::Borrowed(line);
    }
    out.push_str(&line[copied..]);
    Cow::Owned(out)
}

/// The index of the quote closing the JSON string opened at `open`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The redacted, re-encoded form of a JSON string literal, or `None` when nothing changes.
fn redact_json_string(literal: &str) -> Option<String> {
    if !might_hold_secret(literal.as_bytes()) {
        return None;
    }
    let text = match serde_json::from_str::<String>(literal) {
        Ok(text) => match redact(&text) {
            Cow::Borrowed(_) => return None,
            Cow::Owned(redacted) => redacted,
        },
        // Cannot be read, so cannot be checked: drop it.
        Err(_) => REDACTED.to_string(),
    };
    Some(serde_json::to_string(&text).unwrap_or_else(|_| format!("\"{REDACTED}\"")))
}

/// Whether a field name ends in a credential header's name (`authorization`, `proxy_authorization`).
fn names_secret(name: &[u8]) -> bool {
    SECRET_NAMES.iter().any(|secret| {
        name.len()
            .checked_sub(secret.len())
            .is_some_and(|start| same_name(&name[start..], secret))
    })
}

/// Header names compared as HTTP and tracing fields spell them: any case, `_` for `-`.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: &u8| match c.to_ascii_lowercase() {
        b'_' => b'-',
        c => c,
    };
    a.len() == b.len() && a.iter().map(fold).eq(b.iter().map(fold))
}

/// The fields that name one WebSocket connection in its log events, kept instead of a live
/// span. tracing's registry keeps an open span in a slot whose allocations it reuses rather
/// than frees; one slot per open connection, allocated between the connections' buffers,
/// pinned ~12 MiB of heap pages after a burst of 5,000 connections had closed (RSS after close
/// 10.6 MiB without the span, 22.6 MiB with it). A span made for each event (a connection
/// logs a handful) is released at once. Events take it as `parent: &log.span()`; the macro
/// only makes the span when the event is enabled. Field names: README "Logs".
#[derive(Debug, Default)]
pub struct ConnectionLog {
    pub id: u64,
    /// The configured route pattern.
    pub route: String,
    /// The request path as received, without its query string.
    pub path: String,
    pub subprotocol: Option<String>,
    pub peer: Option<SocketAddr>,
    /// The client's W3C `traceparent`, when it had a valid one.
    pub traceparent: Option<String>,
}

impl ConnectionLog {
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "connection",
            wsnorm.connection.id = self.id,
            http.route = %self.route,
            url.path = %self.path,
            wsnorm.subprotocol = self.subprotocol.as_deref().unwrap_or(""),
            network.peer.address = self.peer.map(|p| tracing::field::display(p.ip())),
            network.peer.port = self.peer.map(|p| p.port()),
            http.request.header.traceparent = self.traceparent.as_deref(),
        )
    }
}

/// A duration in milliseconds, rounded to the microsecond: `0.742`, not `0.7423949999999999`.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A `traceparent` header's value if it has the W3C form (`00-<32 hex>-<16 hex>-<2 hex>`), so
/// whatever a client puts there cannot reach a log unchecked.
pub fn traceparent(value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    let fields: Vec<&[u8]> = value.split(|&b| b == b'-').collect();
    let widths = [2, 32, 16, 2];
    let well_formed = fields.len() == widths.len()
        && fields.iter().zip(widths).all(|(field, width)| {
            field.len() == width
                && field
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        });
    well_formed.then(|| String::from_utf8_lossy(value).into_owned())
}

/// What a client claimed in `X-Forwarded-For`, for the access log: its value as received when
/// it is printable ASCII and no longer than a head may make it useful, else nothing.
pub fn forwarded_for(value: Option<&[u8]>) -> Option<String> {
    const MAX: usize = 512;
    let value = value.filter(|v| v.len() <= MAX)?;
    value
        .iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| String::from_utf8_lossy(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(line: &str) -> String {
        redact_line(line, LogFormat::Text).into_owned()
    }

    fn json(line: &str) -> serde_json::Value {
        let out = redact_line(line, LogFormat::Json);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// The hook, installed as `init` installs it, turns a panic into one JSON event with its
    /// message and place (wsnorm has no panic a real run can reach, so it is driven here).
    #[test]
    fn a_panic_is_one_json_event() {
        use std::sync::{Arc, Mutex};
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || SharedBuffer(sink.clone()))
            .finish();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(log_panic));
        let caught = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| panic!("bad state: {}", 7))
        });
        std::panic::set_hook(previous);
        assert!(caught.is_err());
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "ERROR");
        assert_eq!(event["message"], "Panic.");
        assert_eq!(event["exception.message"], "bad state: 7");
        assert_eq!(event["code.filepath"], file!());
        assert!(event["code.lineno"].as_u64().is_some(), "{event}");
    }

    struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pingora_request_summaries_lose_their_query() {
        let line = "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1, retry: false, \
                    GET /api/threads?access_token=SECRET&x=1, Host: 127.0.0.1:8080";
        assert_eq!(
            text(line),
            "Fail to proxy: Upstream ConnectRefused, status: 502, tries: 1, retry: false, \
             GET /api/threads?<redacted> Host: 127.0.0.1:8080"
        );
        assert_eq!(
            text("GET http://h/p?a=SECRET HTTP/1.1"),
            "GET http://h/p?<redacted> HTTP/1.1"
        );
    }

    #[test]
    fn escaped_head_dumps_lose_credentials_and_the_rest() {
        // pingora's `buf: {escape_ascii}` of a response it could not parse, here an echo.
        let dump = r"context: buf: \x00NOT HTTP\r\nGET /a?access_token=Q1 HTTP/1.1\r\nHost: a\r\nCookie: c=C1\r\nAuthorization: Bearer A1\r\n\r\n cause: invalid HTTP version";
        let out = text(dump);
        for secret in ["Q1", "C1", "A1"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.starts_with(r"context: buf: \x00NOT HTTP\r\nGET /a?<redacted> HTTP/1.1\r\nHost: a\r\nCookie: <redacted>"), "{out}");
        // Debug form: an escaped quote inside a value does not end it.
        let out = text(r#"buf: "GET / HTTP/1.1\r\nCookie: a=\"x\"; t=C2\r\nX: y""#);
        assert_eq!(out, r#"buf: "GET / HTTP/1.1\r\nCookie: <redacted>"#);
    }

    #[test]
    fn header_maps_pairs_raw_heads_and_fields_lose_credential_values() {
        let cases = [
            (
                r#"headers: {"host": "a", "cookie": "c=C", "proxy-authorization": "Basic P"}"#,
                r#"headers: {"host": "a", "cookie": <redacted>"#,
            ),
            (
                r#"[("Authorization", "Bearer A"), ("x", "y")]"#,
                r#"[("Authorization", <redacted>"#,
            ),
            (
                "Set-Cookie: s=S; Path=/\r\nHost: keep\r\n",
                "Set-Cookie: <redacted>\r\nHost: keep\r\n",
            ),
            (
                "sec-websocket-protocol: agent_chat, jwt.T\nnext line",
                "sec-websocket-protocol: <redacted>\nnext line",
            ),
            (
                "\x1b[3mproxy_authorization\x1b[0m\x1b[2m=\x1b[0mBearer A \x1b[3mpeer\x1b[0m",
                "\x1b[3mproxy_authorization\x1b[0m\x1b[2m=\x1b[0m<redacted>",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(text(line), want, "{line}");
        }
    }

    #[test]
    fn lines_without_credentials_stay_as_they_are() {
        for line in [
            "Moved the token into Authorization.",
            "Is the backend up?",
            "cookies=3, authorizations: 2",
            "{\"level\":\"INFO\",\"message\":\"wsnorm starting.\"}",
        ] {
            assert!(matches!(redact(line), Cow::Borrowed(_)), "{line}");
            assert_eq!(text(line), line);
        }
    }

    #[test]
    fn json_lines_stay_json_and_lose_credentials_in_keys_values_and_spans() {
        let line = serde_json::json!({
            "timestamp": "t",
            "level": "ERROR",
            "message": "Fail to proxy: … GET /é/ß?access_token=Q€ HTTP/1.1\r\nCookie: c=C\"\r\nHost: h",
            "authorization": "Bearer A",
            "proxy_authorization": "Basic P",
            "count": 3,
            "span": { "route": "/ws", "cookie": "c=C2" },
            "log.target": "pingora_proxy",
        })
        .to_string();
        let v = json(&line);
        let out = v.to_string();
        for secret in ["Q€", "C\\\"", "c=C", "Bearer A", "Basic P", "C2"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert_eq!(
            v["message"],
            "Fail to proxy: … GET /é/ß?<redacted> HTTP/1.1\r\nCookie: <redacted>\r\nHost: h"
        );
        assert_eq!(v["authorization"], REDACTED);
        assert_eq!(v["proxy_authorization"], REDACTED);
        assert_eq!(v["span"]["cookie"], REDACTED);
        assert_eq!(v["span"]["route"], "/ws");
        assert_eq!(v["count"], 3);
        assert_eq!(v["log.target"], "pingora_proxy");
    }

    #[test]
    fn durations_are_rounded_to_the_microsecond() {
        assert_eq!(millis(Duration::from_nanos(742_394)), 0.742);
        assert_eq!(millis(Duration::from_nanos(742_500)).to_string(), "0.743");
        assert_eq!(millis(Duration::from_secs(3)), 3000.0);
    }

    #[test]
    fn only_well_formed_traceparents_and_printable_forwarded_for_are_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(good.as_bytes())).as_deref(), Some(good));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx",
            "",
        ] {
            assert_eq!(traceparent(Some(bad.as_bytes())), None, "{bad}");
        }
        assert_eq!(traceparent(None), None);
        assert_eq!(
            forwarded_for(Some(b"203.0.113.7, 10.0.0.1")).as_deref(),
            Some("203.0.113.7, 10.0.0.1")
        );
        assert_eq!(forwarded_for(Some(b"1.2.3.4\x1b[31m")), None);
        assert_eq!(forwarded_for(Some(&[b'1'; 513])), None);
    }

    #[test]
    fn bridged_log_records_lose_their_source_location() {
        let line = r#"{"timestamp":"t","level":"INFO","message":"Server starting, \"log.file\":x","log.target":"pingora_core::server","log.module_path":"pingora_core::server","log.file":"/root/.cargo/registry/src/pingora-core/src/server/mod.rs","log.line":643,"target":"pingora_core::server"}"#;
        let out = without_fields(line, &LOG_LOCATION_FIELDS);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            out,
            r#"{"timestamp":"t","level":"INFO","message":"Server starting, \"log.file\":x","target":"pingora_core::server"}"#
        );
        assert_eq!(v["target"], "pingora_core::server");
        let own = r#"{"level":"INFO","message":"m","target":"wsnorm"}"#;
        assert!(matches!(
            without_fields(own, &LOG_LOCATION_FIELDS),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let line = "GET /a?b=1 Cookie: x\nAuthorization=y";
        let once = text(line);
        assert_eq!(text(&once), once);
    }

    proptest! {
        #[test]
        fn any_json_line_stays_json(message in any::<String>(), key in "[a-z_]{1,24}") {
            let line = serde_json::json!({ "message": &message, key: &message }).to_string();
            let out = redact_line(&line, LogFormat::Json);
            prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{}", out);
        }

        #[test]
        fn credentials_never_survive_in_common_shapes(
            secret in "SECRET[A-Z0-9]{8}",
            path in "/[a-z/]{0,12}",
            query in "[a-z,;=&%]{0,12}",
            before in "[a-z ,;=]{0,12}",
            after in "[a-z ,;=&\"]{0,12}",
        ) {
            let shapes = [
                // A request target has no spaces.
                format!("GET {path}?{query}access_token={secret}{query} HTTP/1.1"),
                format!("{before}\r\nCookie: {before}{secret}{after}\r\nHost: h"),
                format!(r"buf: {path}\r\nauthorization: Bearer {secret}{after}\r\n"),
                format!(r#"{{"Proxy-Authorization": "{before}{secret}{after}"}}"#),
            ];
            for shape in shapes {
                let line = serde_json::json!({ "message": &shape }).to_string();
                prop_assert!(!text(&shape).contains(&secret), "{}", shape);
                prop_assert!(!redact_line(&line, LogFormat::Json).contains(&secret), "{}", line);
            }
        }
    }
}
