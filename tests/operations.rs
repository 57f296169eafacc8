//! Operations, over real sockets and signals: hot reload (file change, ConfigMap-style symlink
//! swap, SIGHUP, broken file), graceful shutdown, and the `test-rules` command.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const RULES_V1: &str = r#"
[[rules]]
name = "alias"
kind = "rename"
paths = ["type"]
map = { execute_agent = "start_agent" }
"#;

const RULES_V2: &str = r#"
[[rules]]
name = "alias"
kind = "rename"
paths = ["type"]
map = { execute_agent = "run_agent" }
"#;

fn signal(wsnorm: &Wsnorm, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &wsnorm.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `wsnorm_config_reloads_total{result=...}` reaches `n`.
async fn wait_reloads(wsnorm: &Wsnorm, result: &str, n: f64) {
    let series = format!("wsnorm_config_reloads_total{{result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if metric(&wsnorm.metrics().await, &series) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} never reached {n}; logs:\n{}", wsnorm.logs());
}

/// Replaces a file the way editors and `kubectl cp` do: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn sent_type(ws: &mut Ws) -> String {
    send(ws, r#"{"type":"execute_agent","payload":{}}"#).await;
    let raw = backend_saw(ws).await;
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v["type"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_open_connection_picks_up_changed_rules_without_a_drop() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), RULES_V1).await;
    let mut ws = connected(&wsnorm).await;
    assert_eq!(sent_type(&mut ws).await, "start_agent");
    next_text(&mut ws).await; // ack
    next_text(&mut ws).await; // agent_started

    replace(&wsnorm.config_path(), RULES_V2);
    wait_reloads(&wsnorm, "ok", 1.0).await;
    assert_eq!(sent_type(&mut ws).await, "run_agent");

    // A broken file is refused; the rules in force stay.
    replace(
        &wsnorm.config_path(),
        "[[rules]]\nname = \"alias\"\nkind = \"rename\"\npaths = [\"type\"]\nmapp = {}\n",
    );
    wait_reloads(&wsnorm, "error", 1.0).await;
    next_text(&mut ws).await; // ack of run_agent
    assert_eq!(sent_type(&mut ws).await, "run_agent");
    let ready = http_request(
        wsnorm.admin,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ready.contains(r#""last_reload":{"#), "{ready}");
    assert!(ready.contains(r#""ok":false"#), "{ready}");
    let logs = wsnorm.logs();
    assert!(logs.contains("Configuration reload failed"), "{logs}");
    assert!(logs.contains("line 5"), "the error names the line: {logs}");
    assert!(logs.contains("mapp"), "the error names the key: {logs}");
}

#[tokio::test]
async fn sighup_reloads_and_listener_changes_need_a_restart() {
    let backend = start_backend().await;
    let wsnorm = Wsnorm::start(&backend.to_string(), RULES_V1).await;
    let text = format!("[server]\nthreads = 2\n{RULES_V2}");
    // Written in place, then signalled: whichever sees it first, one reload applies it.
    std::fs::write(wsnorm.config_path(), text).unwrap();
    signal(&wsnorm, "HUP");
    wait_reloads(&wsnorm, "ok", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = wsnorm.logs();
    // The keys that changed, not a dump of the whole section.
    assert!(
        logs.contains("[server] changes need a restart: threads; the running values stay"),
        "{logs}"
    );
    assert!(!logs.contains("ServerConfig"), "{logs}");
    let ready = http_request(
        wsnorm.admin,
        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        ready.contains("applied; [server] changes need a restart: threads"),
        "{ready}"
    );
    let mut ws = connected(&wsnorm).await;
    assert_eq!(sent_type(&mut ws).await, "run_agent");
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let backend = start_backend().await;
    let dir = TempDir::new();
    // The layout kubelet gives a mounted ConfigMap.
    let v1 = dir.0.join("..2026_11_22_01");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("wsnorm.toml"), RULES_V1).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_01", dir.0.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/wsnorm.toml", dir.0.join("wsnorm.toml")).unwrap();
    let wsnorm =
        Wsnorm::start_with_config_file(&backend.to_string(), &dir.0.join("wsnorm.toml")).await;
    let mut ws = connected(&wsnorm).await;
    assert_eq!(sent_type(&mut ws).await, "start_agent");
    next_text(&mut ws).await;
    next_text(&mut ws).await;

    let v2 = dir.0.join("..2026_11_22_02");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("wsnorm.toml"), RULES_V2).unwrap();
    std::os::unix::fs::symlink("..2026_11_22_02", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    wait_reloads(&wsnorm, "ok", 1.0).await;
    assert_eq!(sent_type(&mut ws).await, "run_agent");
}

#[tokio::test]
async fn sigterm_closes_open_websockets_with_1001_and_exits_0() {
    let backend = start_backend().await;
    // No spread: every WebSocket is closed at once.
    let config = "[server]\ndrain_spread_secs = 0\n";
    let mut wsnorm = Wsnorm::start(&backend.to_string(), config).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connected(&wsnorm).await);
    }
    // A message already received is delivered before the close.
    send(
        &mut clients[0],
        r#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01Z"}"#,
    )
    .await;
    assert!(backend_saw(&mut clients[0]).await.contains("start_agent"));
    signal(&wsnorm, "TERM");
    for ws in &mut clients {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap_or_else(|_| panic!("no close within 5 s; logs:\n{}", wsnorm.logs()))
            {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.unwrap().code, CloseCode::Away);
    }
    drop(clients);
    exits_0(&mut wsnorm, Duration::from_secs(15)).await;
}

/// Waits for the process to exit and asserts it exited 0.
async fn exits_0(wsnorm: &mut Wsnorm, within: Duration) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = wsnorm.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < within, "wsnorm did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        wsnorm.logs()
    );
}

/// Plays ping-pong on `ws` (one message in flight, each answered before the next) until the
/// close comes. Returns when it came after `signalled`, its code, and how many messages were
/// answered after `signalled`.
async fn ping_pong_until_closed(mut ws: Ws, signalled: Instant) -> (Duration, u16, usize) {
    let mut answered_after = 0;
    for n in 0.. {
        let sent = format!(r#"{{"type":"user_message","content":"m{n}"}}"#);
        if ws.send(Message::text(sent.clone())).await.is_err() {
            panic!("the client leg failed before its close");
        }
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an answer or a close within 10 s");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["type"] == "received" {
                        // Nothing skipped: the answer is to the message just sent.
                        assert_eq!(v["raw"], sent.as_str());
                        if Instant::now() > signalled {
                            answered_after += 1;
                        }
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return (signalled.elapsed(), code, answered_after);
                }
                Some(Ok(_)) => {}
                other => panic!("expected an answer or a close, got {other:?}"),
            }
        }
    }
    unreachable!()
}

#[tokio::test]
async fn sigterm_spreads_the_closes_over_drain_spread_secs_and_relays_until_each_close() {
    let backend = start_backend().await;
    let config = "[server]\ndrain_timeout_secs = 6\ndrain_spread_secs = 3\n";
    let mut wsnorm = Wsnorm::start(&backend.to_string(), config).await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        clients.push(connected(&wsnorm).await);
    }
    let signalled = Instant::now();
    let players: Vec<_> = clients
        .into_iter()
        .map(|ws| tokio::spawn(ping_pong_until_closed(ws, signalled)))
        .collect();
    signal(&wsnorm, "TERM");
    let mut closed_at = Vec::new();
    for player in players {
        let (at, code, answered_after) = player.await.unwrap();
        assert_eq!(code, 1001, "logs:\n{}", wsnorm.logs());
        assert!(
            answered_after > 0,
            "a connection stopped relaying before its close"
        );
        closed_at.push(at);
    }
    closed_at.sort();
    let (first, last) = (closed_at[0], closed_at[closed_at.len() - 1]);
    // Spread over the window, not all at once, and all within it.
    assert!(
        last - first >= Duration::from_millis(1500),
        "closes not spread: {closed_at:?}"
    );
    assert!(
        last < Duration::from_millis(4000),
        "closes too late: {closed_at:?}"
    );
    let in_first_second = closed_at
        .iter()
        .filter(|at| **at < Duration::from_secs(1))
        .count();
    assert!(in_first_second < closed_at.len() / 2, "{closed_at:?}");
    exits_0(&mut wsnorm, Duration::from_secs(10)).await;
}

fn wsnorm_cmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn the_shipped_fixtures_pass_against_the_default_rules() {
    let mut fixtures: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tests"))
            .unwrap()
            .map(|e| format!("config/tests/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 2, "{fixtures:?}");
    let mut args = vec!["test-rules"];
    args.extend(fixtures.iter().map(String::as_str));
    let out = wsnorm_cmd(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(!stdout.contains(" 0 passed"), "{stdout}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let dir = TempDir::new();
    let file = dir.0.join("wrong.toml");
    std::fs::write(
        &file,
        r#"
[[case]]
name = "wrong on purpose"
input = '{"type":"execute_agent"}'
output = '{"type":"execute_agent"}'

[[case]]
name = "right"
input = '{"type":"EXECUTE_AGENT"}'
output = '{"type":"start_agent"}'
"#,
    )
    .unwrap();
    let out = wsnorm_cmd(&["test-rules", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED wrong on purpose"), "{stdout}");
    assert!(
        stdout.contains(r#"- expected: {"type":"execute_agent"}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"+ actual:   {"type":"start_agent"}"#),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn rewrite_shows_what_the_rules_make_of_stdin() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .arg("rewrite")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"execute_agent\",\"timestamp\":\"2025-09-08T16:50:01.447585\"}\nnot json\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"type\":\"start_agent\",\"timestamp\":1757350201.447585}\nnot json\n"
    );
}

#[test]
fn check_validates_and_prints_the_effective_rules() {
    let out = wsnorm_cmd(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("iso-timestamps"), "{stdout}");
    assert!(stdout.contains("agent-aliases"), "{stdout}");
    let dir = TempDir::new();
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[websocket]\nmax_mesage_bytes = 1\n").unwrap();
    let out = wsnorm_cmd(&["check", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("max_mesage_bytes"), "{stderr}");
}

/// A second wsnorm on a port already in use must not start and look ready: it exits non-zero
/// at once with one clear line (pingora alone retried for ~30 s, then its proxy thread died
/// while `/readyz` answered 200).
#[tokio::test]
async fn a_listener_that_cannot_bind_stops_the_start_at_once() {
    let backend = start_backend().await;
    let first = Wsnorm::start(&backend.to_string(), "").await;
    let any_port = "127.0.0.1:0".to_string();
    for (listen, admin, key) in [
        (first.listen.to_string(), any_port.clone(), "server.listen"),
        (any_port.clone(), first.admin.to_string(), "server.admin"),
    ] {
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_wsnorm"))
                .args([
                    "--listen",
                    &listen,
                    "--admin",
                    &admin,
                    "--log-format",
                    "json",
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(stderr.contains(&format!("({key})")), "{stderr}");
        assert!(stderr.contains("cannot listen on"), "{stderr}");
    }
    // The first instance is untouched.
    let mut ws = connected(&first).await;
    ws.close(None).await.unwrap();
}

/// Text logs written to a file or a pipe carry no terminal colour codes.
#[tokio::test]
async fn text_logs_off_a_terminal_have_no_colour_codes() {
    let dir = TempDir::new();
    let log = dir.0.join("text.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--log-format", "text"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("INFO") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("INFO"), "no log line written: {text:?}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}
