//! Config errors as an operator meets them: `wsnorm check` (the real binary) on files written
//! to disk, each wrong in one place. Every message names the file, the exact line and the key,
//! in the config's words (no Rust type names), suggests the key meant, and host names are
//! accepted where an address is expected.

mod common;

use std::process::Command;

use common::*;

/// Runs `wsnorm check` on `text` written to a file; returns (exit code, stdout, stderr, file).
fn check(text: &str, args: &[&str]) -> (Option<i32>, String, String, String) {
    let dir = TempDir::new();
    let file = dir.0.join("wsnorm.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .args(args)
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

/// Asserts that `text` is refused with `want` on the first line of the message, after the
/// file's name.
fn refused(text: &str, want: &str) -> String {
    let (code, _, stderr, file) = check(text, &[]);
    assert_eq!(code, Some(1), "{text}: {stderr}");
    assert!(
        stderr.starts_with(&format!("wsnorm: {file}: ")),
        "{text}: {stderr}"
    );
    assert!(stderr.contains(want), "{text}: want {want:?} in\n{stderr}");
    for rust in [
        "usize",
        "u64",
        "u16",
        "a boolean",
        "a sequence",
        "struct ",
        "SocketAddr",
    ] {
        assert!(!stderr.contains(rust), "{text}: Rust's words in\n{stderr}");
    }
    stderr
}

/// The third of three rules starts on line 15; a key appended on line 19 is wrong.
const THREE_RULES: &str = include_str!("configs/three_rules.toml");

#[test]
fn an_error_in_the_third_rule_is_reported_at_its_own_line_not_the_first_rules() {
    for (line_19, want) in [
        (
            "naive_timezone = \"Europe/Paris\"",
            "line 19: rules[2].naive_timezone (rule \"c\"): expected \"UTC\" or a fixed offset",
        ),
        (
            "map = { a = \"b\" }",
            "line 19: rules[2].map (rule \"c\"): does not apply to kind = \"timestamp\"",
        ),
        (
            "on_invalid = \"explode\"",
            "line 19, column 14: rules[2].on_invalid: unknown value \"explode\": expected one of \
             \"now\", \"keep\", \"remove\", \"reject\"",
        ),
        (
            "outpt = \"unix_millis\"",
            "line 19, column 1: rules[2]: unknown key `outpt`, did you mean `output`?",
        ),
    ] {
        let stderr = refused(&format!("{THREE_RULES}{line_19}\n"), want);
        assert!(!stderr.contains("line 4"), "{stderr}");
    }
    // A missing key is reported at the rule's own header (line 15).
    refused(
        &THREE_RULES.replace("paths = [\"ts\"]\n", ""),
        "line 15, column 1: rules[2]: missing key `paths` (it is required)",
    );
}

#[test]
fn a_nested_table_error_names_its_element_and_key() {
    refused(
        "[[websocket.routes]]\npath = \"/a\"\n\n[[websocket.routes]]\npath = \"b\"\n",
        "line 5: websocket.routes[1].path: `b` must start with `/`",
    );
    refused(
        "[[websocket.routes]]\npath = \"/a\"\n[[websocket.routes]]\npath = \"/b\"\nallowed_origins = [\"https://ok.example\", 7]\n",
        "line 5, column 42: websocket.routes[1].allowed_origins[1]: expected a string, found the number 7",
    );
}

#[test]
fn values_of_the_wrong_type_are_described_in_the_configs_words() {
    refused(
        "[server]\nthreads = \"x\"\n",
        "line 2, column 11: server.threads: expected a whole number (0 or more), found the string \"x\"",
    );
    refused(
        "[websocket]\nmax_message_bytes = -5\n",
        "line 2, column 21: websocket.max_message_bytes: expected a whole number (0 or more), found the number -5",
    );
    refused(
        "[websocket]\ntokens_to_authorization = \"yes\"\n",
        "websocket.tokens_to_authorization: expected true or false, found the string \"yes\"",
    );
    refused(
        "[websocket]\nsubprotocols = \"agent_chat\"\n",
        "websocket.subprotocols: expected a list ([...]), found the string \"agent_chat\"",
    );
}

#[test]
fn a_misspelt_key_or_value_suggests_the_closest_valid_one() {
    let stderr = refused(
        "[server]\nlistn = \"127.0.0.1:8080\"\n",
        "line 2, column 1: server: unknown key `listn`, did you mean `listen`?",
    );
    // The line is quoted with the key underlined.
    assert!(
        stderr.contains("2 | listn = \"127.0.0.1:8080\"\n  | ^^^^^"),
        "{stderr}"
    );
    refused(
        "[websocket]\nmax_mesage_bytes = 1\n",
        "unknown key `max_mesage_bytes`, did you mean `max_message_bytes`?",
    );
    refused(
        "[websocket]\nunrouted_upgrades = \"refuze\"\n",
        "websocket.unrouted_upgrades: unknown value \"refuze\", did you mean \"refuse\"?",
    );
}

#[test]
fn host_names_are_accepted_and_bad_addresses_say_what_is_accepted() {
    let (code, stdout, stderr, _) = check(
        "[server]\nlisten = \"localhost:18080\"\n[backend]\naddress = \"http://localhost:18000\"\n",
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("\nlisten: localhost:18080 (127.0.0.1:18080)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nbackend: localhost:18000 (127.0.0.1:18000)\n"),
        "{stdout}"
    );
    refused(
        "[server]\nlisten = \":80800\"\n",
        "line 2, column 10: server.listen: `:80800` has no host: write 127.0.0.1:PORT (this \
         machine only) or 0.0.0.0:PORT (every interface); and port 80800 is out of range: ports \
         are 0 to 65535",
    );
    refused(
        "[server]\nadmin = \"localhost:80800\"\n",
        "line 2, column 9: server.admin: port 80800 is out of range: ports are 0 to 65535",
    );
    refused(
        "[backend]\naddress = \"no-such-host.invalid:8000\"\n",
        "line 2, column 11: backend.address: `no-such-host.invalid` does not resolve",
    );
    // The same words for the command line.
    let (code, _, stderr, _) = check("", &["--listen", ":80800"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--listen <LISTEN>': `:80800` has no host"),
        "{stderr}"
    );
}

#[test]
fn clashing_listeners_and_a_backend_that_is_wsnorm_itself_are_refused() {
    refused(
        "[server]\nlisten = \"127.0.0.1:9000\"\nadmin = \"127.0.0.1:9000\"\n",
        "server.admin (line 3): 127.0.0.1:9000 and server.listen (line 2): 127.0.0.1:9000 cannot \
         both listen on port 9000",
    );
    refused(
        "[server]\nlisten = \"0.0.0.0:8080\"\n\n[backend]\naddress = \"127.0.0.1:8080\"\n",
        "backend.address (line 5): 127.0.0.1:8080 is wsnorm's own proxy listener \
         (server.listen (line 2): 0.0.0.0:8080): every request would loop back into wsnorm",
    );
}

/// Names work end to end: wsnorm listens on `localhost:…` (127.0.0.1) and dials its backend by
/// name.
#[tokio::test]
async fn wsnorm_runs_with_host_names_for_its_listeners_and_backend() {
    let backend = start_backend().await;
    let wsnorm =
        Wsnorm::start_on_host("localhost", &format!("localhost:{}", backend.port()), "").await;
    let mut ws = connected(&wsnorm).await;
    send(&mut ws, r#"{"type":"execute_agent","payload":{}}"#).await;
    assert!(backend_saw(&mut ws).await.contains("start_agent"));
    let logs = wsnorm.logs();
    // The listeners were given as localhost:0; the start-up line names what was bound.
    assert_eq!(wsnorm.listen.ip().to_string(), "127.0.0.1");
    assert!(
        logs.contains(&format!("localhost:{} (127.0.0.1:", backend.port())),
        "{logs}"
    );
}

/// Rule fixture files get the same wording as config files.
#[test]
fn a_fixture_file_error_is_worded_as_config_errors_are() {
    let dir = TempDir::new();
    for (name, text, want) in [
        (
            "cases.toml",
            "[[case]]\ninput = '{}'\n\n[[case]]\ninput = '{}'\noutpt = '{}'\n",
            "line 6, column 1: case[1]: unknown key `outpt`, did you mean `output`?",
        ),
        (
            "cases.jsonl",
            "{\"input\": \"{}\", \"rejected\": \"yes\"}\n",
            "line 1, column 33: expected true or false, found the string \"yes\"",
        ),
    ] {
        let file = dir.0.join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
            .arg("test-rules")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{}: {want}", file.display())),
            "{stderr}"
        );
    }
}

/// Files, flags and environments written when the backend was called the upstream keep working,
/// and an error in such a file still names its line.
#[test]
fn the_old_upstream_spellings_are_still_accepted() {
    let old = "[upstream]\naddress = \"127.0.0.1:8123\"\n\n[[websocket.routes]]\npath = \"/ws\"\n\
               upstream_subprotocols = \"forward\"\n";
    let (code, stdout, stderr, _) = check(old, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("backend: 127.0.0.1:8123"), "{stdout}");
    assert!(stdout.contains("/ws -> backend_offer: forward"), "{stdout}");

    let (code, stdout, stderr, _) = check("", &["--upstream", "127.0.0.1:8124"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("backend: 127.0.0.1:8124"), "{stdout}");

    let dir = TempDir::new();
    let file = dir.0.join("wsnorm.toml");
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsnorm"))
        .env_remove("WSNORM_BACKEND")
        .env("WSNORM_UPSTREAM", "127.0.0.1:8125")
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("backend: 127.0.0.1:8125"), "{stdout}");

    refused(
        "[server]\nthreads = 1\n\n[upstream]\naddress = \"127.0.0.1:8080\"\n",
        "backend.address (line 5): 127.0.0.1:8080 is wsnorm's own proxy listener",
    );
}
