use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml("test.toml", text, &Overrides::default())
}

#[test]
fn embedded_default_matches_the_documented_defaults() {
    let config = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(config.source, "<embedded default>");
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.backend, BackendConfig::default());
    let ws = WebSocketConfig::default();
    assert_eq!(config.websocket.subprotocols, ws.subprotocols);
    assert_eq!(config.websocket.max_message_bytes, 1 << 20);
    assert_eq!(
        config.websocket.token_subprotocol_prefixes,
        ws.token_subprotocol_prefixes
    );
    let names: Vec<&str> = config.rules.rule_names().collect();
    assert_eq!(names, ["iso-timestamps", "agent-aliases"]);
    assert!(config.routes.find("/ws").is_some());
    assert!(config.routes.find("/ws/factory").is_some());
    assert!(config.routes.find("/api/v1/websocket").is_some());
    assert!(config.routes.find("/wsx").is_none());
    assert!(config.routes.find("/api/v1/other").is_none());
}

#[test]
fn an_empty_file_gives_the_same_defaults_as_no_file() {
    let empty = load("").unwrap();
    let embedded = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(empty.server, embedded.server);
    assert_eq!(empty.websocket.routes.len(), 3);
    assert_eq!(empty.rules.describe(), embedded.rules.describe());
}

#[test]
fn an_unknown_key_names_file_line_and_key() {
    let err = load("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("test.toml: "), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn a_bad_value_names_line_and_key() {
    let err = load("\n[backend]\naddress = \"ftp://x:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("address"), "{err}");
    assert!(err.contains("scheme `ftp`"), "{err}");
}

#[test]
fn route_problems_are_all_reported_with_their_line() {
    let text = r#"
[[websocket.routes]]
path = "ws"

[[websocket.routes]]
path = "/a/*/b"

[[websocket.routes]]
path = "/c"
backend_offer = "fixed"
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("line 3: websocket.routes[0].path: "),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("line 6: websocket.routes[1].path: "),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with(
            "line 10: websocket.routes[2].backend_offer: \"fixed\" needs `fixed_subprotocol`"
        ),
        "{problems:?}"
    );
}

#[test]
fn semantic_limits_are_checked() {
    let err = load(
        "[websocket]\nmax_message_bytes = 10\nsubprotocols = [\"a b\"]\n[server]\nmax_connections = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.max_connections"), "{err}");
    assert!(err.contains("websocket.max_message_bytes"), "{err}");
    assert!(err.contains("websocket.subprotocols[0]"), "{err}");
    let err = load("[websocket]\nmax_message_bytes = 1_000_000_000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("websocket.max_message_bytes"), "{err}");
}

#[test]
fn threads_are_bounded_and_a_bad_count_names_line_and_key() {
    for bad in ["0", "1025", "100000"] {
        let err = load(&format!("\n[server]\nthreads = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("test.toml: "), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("server.threads: must be between 1 and 1024"),
            "{err}"
        );
    }
    for good in [1, 1024] {
        let config = load(&format!("[server]\nthreads = {good}\n")).unwrap();
        assert_eq!(config.server.threads, good);
    }
}

#[test]
fn overrides_win_over_the_file() {
    let overrides = Overrides {
        listen: Some("127.0.0.1:1234".parse().unwrap()),
        admin: None,
        backend: Some(Address::resolve_backend("ws://localhost:9000/").unwrap()),
    };
    let config = Config::from_toml("t", "[server]\nlisten = \"0.0.0.0:1\"\n", &overrides).unwrap();
    assert_eq!(config.server.listen.socket.port(), 1234);
    assert_eq!(config.backend.address.authority(), "localhost:9000");
    assert_eq!(config.server.admin, ServerConfig::default().admin);
}

#[test]
fn backend_accepts_host_port_and_urls() {
    let ok = |s: &str| Address::resolve_backend(s).unwrap().authority();
    assert_eq!(ok("127.0.0.1:8000"), "127.0.0.1:8000");
    assert_eq!(ok("http://localhost:80"), "localhost:80");
    assert_eq!(ok("[::1]:8000"), "[::1]:8000");
    for bad in [
        "nohost",
        ":80",
        "h:notaport",
        "http://h:1/path",
        "https://h:1",
        "127.0.0.1:0",
    ] {
        assert!(Address::resolve_backend(bad).is_err(), "{bad}");
    }
}

#[test]
fn custom_rules_replace_the_defaults() {
    let text = r#"
[[rules]]
name = "backend-ts"
kind = "timestamp"
direction = "backend_to_client"
paths = ["data.timestamp"]
"#;
    let config = load(text).unwrap();
    let names: Vec<&str> = config.rules.rule_names().collect();
    assert_eq!(names, ["backend-ts"]);
}

#[test]
fn a_bad_rule_is_reported_with_its_line() {
    let text = "\n\n[[rules]]\nname = \"x\"\nkind = \"rename\"\npaths = [\"type\"]\nmap = {}\n";
    let err = load(text).unwrap_err().to_string();
    assert!(
        err.contains("line 7: rules[0].map (rule \"x\"): must contain at least one entry"),
        "{err}"
    );
}

#[test]
fn trusted_proxies_take_addresses_and_blocks() {
    let config = Config::from_toml(
        "t.toml",
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\"]\n",
        &Overrides::default(),
    )
    .unwrap();
    assert!(config.server.trusts("10.200.0.1".parse().unwrap()));
    assert!(config.server.trusts("192.168.1.7".parse().unwrap()));
    assert!(!config.server.trusts("192.168.1.8".parse().unwrap()));
    assert!(config.server.trusts("::1".parse().unwrap()));
    let err = Config::from_toml(
        "t.toml",
        "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("trusted_proxies") && err.contains("10.0.0.0/33"),
        "{err}"
    );
}

#[test]
fn backend_addresses_are_names_or_ips_only() {
    for bad in ["user:pass@host:80", "ho st:80", "host\r\nX: y:80", "h/x:80"] {
        assert!(Address::resolve_backend(bad).is_err(), "{bad}");
    }
    // Checked without resolving (these names exist only where they are deployed).
    for good in [
        "backend:8000",
        "my-svc.ns.svc:80",
        "127.0.0.1:8000",
        "[::1]:8000",
    ] {
        assert!(address::split_host_port(good).is_ok(), "{good}");
    }
}

#[test]
fn json_settings_default_validate_and_show() {
    let config = load("").unwrap();
    let ws = &config.websocket;
    assert_eq!(ws.json_dialect, JsonDialect::Python);
    assert_eq!(ws.max_json_depth, 1000);
    let settings = config.rules.settings();
    assert_eq!(settings.json_dialect, JsonDialect::Python);
    assert_eq!(settings.max_json_depth, 1000);
    let text = config.describe();
    for needle in [
        "json_dialect: python",
        "max_json_depth: 1000",
        "leap_second: reject",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }

    let config = load("[websocket]\njson_dialect = \"strict\"\nmax_json_depth = 64\n").unwrap();
    let settings = config.rules.settings();
    assert_eq!(settings.json_dialect, JsonDialect::Strict);
    assert_eq!(settings.max_json_depth, 64);

    for (text, key) in [
        ("[websocket]\nmax_json_depth = 0\n", "websocket.max_json_depth"),
        ("[websocket]\nmax_json_depth = 100001\n", "websocket.max_json_depth"),
        ("[websocket]\njson_dialect = \"json5\"\n", "json_dialect"),
        (
            "[[rules]]\nname = \"t\"\nkind = \"timestamp\"\npaths = [\"ts\"]\nleap_second = \"smear\"\n",
            "leap_second",
        ),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn oversized_rewrite_setting_defaults_validates_and_shows() {
    let config = load("").unwrap();
    assert_eq!(
        config.websocket.on_oversized_rewrite,
        OnOversizedRewrite::Reject
    );
    assert_eq!(config.rules.settings().max_output_bytes, 1 << 20);
    assert!(config.describe().contains("on_oversized_rewrite: reject"));

    let config =
        load("[websocket]\nmax_message_bytes = 4096\non_oversized_rewrite = \"close\"\n").unwrap();
    assert_eq!(
        config.websocket.on_oversized_rewrite,
        OnOversizedRewrite::Close
    );
    assert_eq!(config.rules.settings().max_output_bytes, 4096);

    let err = load("[websocket]\non_oversized_rewrite = \"truncate\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("on_oversized_rewrite"), "{err}");
}

#[test]
fn check_prints_every_setting_in_the_files_spelling() {
    let config = load("").unwrap();
    let text = config.describe();
    let file: toml::Table = toml::from_str(DEFAULT_CONFIG_TOML).unwrap();
    for section in ["server", "websocket", "log"] {
        for key in file[section].as_table().unwrap().keys() {
            if key == "routes" {
                continue;
            }
            assert!(
                text.contains(&format!("\n{key}: ")),
                "{key} missing:\n{text}"
            );
        }
    }
    assert!(text.contains("backend_offer: drop_unknown"), "{text}");
    assert!(!text.contains("DropUnknown"), "{text}");
}

/// Three rules; the third (its header on line 15) is wrong in ways found while it is read
/// (by serde) and after (by the rule checks): each error names line and key of the third.
const THREE_RULES: &str = include_str!("../../tests/configs/three_rules.toml");

#[test]
fn an_error_in_the_third_rule_names_its_own_line_and_key() {
    for (extra, want) in [
        (
            "naive_timezone = \"Europe/Paris\"\n",
            "line 19: rules[2].naive_timezone (rule \"c\"): expected \"UTC\"",
        ),
        (
            "map = { a = \"b\" }\n",
            "line 19: rules[2].map (rule \"c\"): does not apply to kind = \"timestamp\"",
        ),
        (
            "outpt = \"unix_millis\"\n",
            "line 19, column 1: rules[2]: unknown key `outpt`, did you mean `output`?",
        ),
        (
            "types = \"x\"\n",
            "line 19, column 9: rules[2].types: expected a list ([...]), found the string \"x\"",
        ),
    ] {
        let err = load(&format!("{THREE_RULES}{extra}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let renamed = THREE_RULES.replace("name = \"c\"", "name = \"bad name\"");
    let err = load(&renamed).unwrap_err().to_string();
    assert!(
        err.contains("line 16: rules[2].name (rule \"bad name\")"),
        "{err}"
    );
    let missing = THREE_RULES.replace("paths = [\"ts\"]\n", "");
    let err = load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("line 15, column 1: rules[2]: missing key `paths`"),
        "{err}"
    );
    let duplicate = THREE_RULES.replace("name = \"c\"", "name = \"a\"");
    let err = load(&duplicate).unwrap_err().to_string();
    assert!(
        err.contains("line 16: rules[2].name (rule \"a\"): duplicate rule name"),
        "{err}"
    );
    let rename_missing_map = THREE_RULES.replace("kind = \"timestamp\"", "kind = \"rename\"");
    let err = load(&rename_missing_map).unwrap_err().to_string();
    assert!(
        err.contains("line 15: rules[2].map (rule \"c\"): is required for kind = \"rename\""),
        "{err}"
    );
}

#[test]
fn values_of_the_wrong_type_are_described_in_the_files_words() {
    for (text, want) in [
        (
            "[server]\nthreads = \"x\"\n",
            "server.threads: expected a whole number (0 or more), found the string \"x\"",
        ),
        (
            "[server]\nmax_connections = -1\n",
            "server.max_connections: expected a whole number (0 or more), found the number -1",
        ),
        (
            "[websocket]\ntokens_to_authorization = 1\n",
            "websocket.tokens_to_authorization: expected true or false, found the number 1",
        ),
        (
            "[websocket]\nsubprotocols = \"agent_chat\"\n",
            "websocket.subprotocols: expected a list ([...]), found the string \"agent_chat\"",
        ),
        (
            "[websocket]\nsubprotocols = [1]\n",
            "websocket.subprotocols[0]: expected a string, found the number 1",
        ),
        (
            "server = 1\n",
            "server: expected a table, found the number 1",
        ),
        (
            "[rules]\nname = \"x\"\n",
            "rules: expected a list ([...]), found a table (a list of tables is written [[name]]",
        ),
        (
            "[server]\nlisten = 1979-05-27\n",
            "server.listen: expected a string, found a date",
        ),
        (
            "[websocket]\nhandshake_timeout_ms = 18446744073709551616\n",
            "found the number 18446744073709551616, which is too large",
        ),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
        for rust in ["usize", "u64", "a boolean", "sequence", "struct ", "i128"] {
            assert!(!err.contains(rust), "{text}: {err}");
        }
    }
}

#[test]
fn a_misspelt_key_or_value_suggests_the_closest_valid_one() {
    for (text, want) in [
        (
            "[server]\nlistn = \"127.0.0.1:1\"\n",
            "line 2, column 1: server: unknown key `listn`, did you mean `listen`?",
        ),
        (
            "[serv]\n",
            "line 1, column 2: unknown key `serv`, did you mean `server`?",
        ),
        (
            "[websocket]\nMax_Message_Bytes = 1\n",
            "unknown key `Max_Message_Bytes`, did you mean `max_message_bytes`?",
        ),
        (
            "[websocket]\nno_common_subprotocol = \"acept\"\n",
            "websocket.no_common_subprotocol: unknown value \"acept\", did you mean \"accept\"? \
             (one of \"accept\", \"reject\")",
        ),
        (
            "[websocket]\njson_dialect = \"json5\"\n",
            "unknown value \"json5\": expected one of \"python\", \"strict\"",
        ),
        (
            "[server]\nlisten_port = 3\n",
            "unknown key `listen_port`; the keys here are listen, admin, threads",
        ),
    ] {
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn wording_rewrites_serde_forms_and_leaves_others() {
    use super::wording::{closest, friendly};
    assert_eq!(
        friendly("invalid type: string \"x\", expected u64"),
        "expected a whole number (0 or more), found the string \"x\""
    );
    assert_eq!(
        friendly("invalid type: boolean `true`, expected a string"),
        "expected a string, found true"
    );
    assert_eq!(
        friendly("invalid type: sequence, expected struct ServerConfig"),
        "expected a table, found a list"
    );
    assert_eq!(
        friendly("unknown field `x`, there are no fields"),
        "unknown key `x`: this table has none"
    );
    assert_eq!(
        friendly("missing field `paths`"),
        "missing key `paths` (it is required)"
    );
    assert_eq!(
        friendly("must be between 1 and 1024, not 0"),
        "must be between 1 and 1024, not 0"
    );
    assert_eq!(closest("mapp", &["map", "paths"]), Some("map"));
    assert_eq!(closest("zzz", &["map", "paths"]), None);
}

#[test]
fn listen_addresses_take_names_and_say_what_is_wrong() {
    let config =
        load("[server]\nlisten = \"localhost:18080\"\nadmin = \"localhost:18090\"\n").unwrap();
    // Several addresses: the first IPv4 one, where probes and clients of `localhost` look.
    assert_eq!(
        config.server.listen.socket,
        "127.0.0.1:18080".parse().unwrap()
    );
    assert_eq!(config.server.admin.socket.port(), 18090);
    assert!(
        config
            .describe()
            .contains("\nlisten: localhost:18080 (127.0.0.1:18080)\n"),
        "{}",
        config.describe()
    );
    for (value, want) in [
        (
            ":80800",
            "`:80800` has no host: write 127.0.0.1:PORT (this machine only) or 0.0.0.0:PORT \
             (every interface); and port 80800 is out of range: ports are 0 to 65535",
        ),
        (
            ":8080",
            "`:8080` has no host: write 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 \
             (every interface)",
        ),
        (
            "0.0.0.0:80800",
            "port 80800 is out of range: ports are 0 to 65535",
        ),
        (
            "localhost",
            "`localhost` has no port: write host:port, like localhost:8080",
        ),
        (
            "::1:80",
            "`::1:80`: an IPv6 address goes in brackets, like [::1]:80",
        ),
        ("[::1]", "`[::1]` has no port"),
        (
            "host:http",
            "`http` is not a port number (ports are 0 to 65535)",
        ),
        ("", "empty: write host:port"),
    ] {
        let err = load(&format!("[server]\nlisten = \"{value}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("line 2, column 10: server.listen: {want}")),
            "{value}: {err}"
        );
    }
}

#[test]
fn clashing_addresses_are_refused_naming_both_keys() {
    let problems =
        |text: &str, overrides: &Overrides| match Config::from_toml("t.toml", text, overrides) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("{text}: {other:?}"),
        };
    let p = problems(
        "[server]\nlisten = \"127.0.0.1:9000\"\nadmin = \"127.0.0.1:9000\"\n",
        &Overrides::default(),
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "server.admin (line 3): 127.0.0.1:9000 and server.listen (line 2): 127.0.0.1:9000 \
             cannot both listen on port 9000"
        ),
        "{p:?}"
    );
    // A wildcard listener takes the port on every address.
    let p = problems(
        "[server]\nlisten = \"0.0.0.0:9000\"\nadmin = \"localhost:9000\"\n",
        &Overrides::default(),
    );
    assert!(p[0].contains("cannot both listen on port 9000"), "{p:?}");
    // The backend is wsnorm itself: every request would come back.
    let p = problems(
        "[server]\nlisten = \"0.0.0.0:8000\"\n",
        &Overrides::default(),
    );
    assert!(
        p[0].starts_with(
            "backend.address (default): 127.0.0.1:8000 is wsnorm's own proxy listener \
             (server.listen (line 2): 0.0.0.0:8000): every request would loop back"
        ),
        "{p:?}"
    );
    let p = problems(
        "[backend]\naddress = \"http://localhost:9090\"\n",
        &Overrides::default(),
    );
    assert!(
        p[0].starts_with("backend.address (line 2): localhost:9090 (127.0.0.1:9090) is wsnorm's own admin listener"),
        "{p:?}"
    );
    // Values from the command line are named by their flag.
    let overrides = Overrides {
        listen: Some("127.0.0.1:7000".parse().unwrap()),
        admin: None,
        backend: Some(Address::resolve_backend("127.0.0.1:7000").unwrap()),
    };
    let p = problems("", &overrides);
    assert!(
        p[0].starts_with("backend.address (--backend): 127.0.0.1:7000 is wsnorm's own proxy listener (server.listen (--listen)"),
        "{p:?}"
    );
    // Different ports, or a backend on another host with the same port, are fine.
    load("[server]\nlisten = \"0.0.0.0:8080\"\n[backend]\naddress = \"10.0.0.7:8080\"\n").unwrap();
    load("[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n").unwrap();
}

#[test]
fn server_changes_are_listed_by_key() {
    let old = load("").unwrap().server;
    let new = load("[server]\nlisten = \"0.0.0.0:8081\"\nthreads = 2\n")
        .unwrap()
        .server;
    assert_eq!(old.changed_keys(&new), ["listen", "threads"]);
    assert!(old.changed_keys(&old).is_empty());
}

#[test]
fn key_paths_are_found_in_the_file() {
    let text = "[server]\nthreads = 1\n[[websocket.routes]]\npath = \"/a\"\n\n[[websocket.routes]]\npath = \"/b\"\nallowed_origins = [\"x\", \"y\"]\n";
    let doc = Document::new(text, toml::de::DeTable::parse(text).unwrap());
    let routes = KeyPath::of("websocket.routes");
    assert_eq!(doc.line_of(&KeyPath::of("server.threads")), Some(2));
    assert_eq!(doc.line_of(&routes.clone().index(1)), Some(6));
    assert_eq!(doc.line_of(&routes.clone().index(1).key("path")), Some(7));
    assert_eq!(doc.line_of(&KeyPath::of("server.listen")), None);
    let y = text.find("\"y\"").unwrap();
    let path = doc.path_at(&(y..y + 3));
    assert_eq!(path.to_string(), "websocket.routes[1].allowed_origins[1]");
    assert_eq!(
        KeyPath::of("rules")
            .index(0)
            .key("map")
            .key("é")
            .to_string(),
        "rules[0].map.\"é\""
    );
}

#[test]
fn compression_defaults_and_limits() {
    let config = load("").unwrap();
    assert_eq!(config.websocket.compression, CompressionConfig::default());
    assert!(config.websocket.compression.client && config.websocket.compression.backend);
    let off =
        load("[websocket.compression]\nclient = false\nwindow_bits = 9\nlevel = 0\n").unwrap();
    assert!(!off.websocket.compression.client);
    assert!(off.websocket.compression.backend);
    assert_eq!(off.websocket.compression.window_bits, 9);
    for bad in ["window_bits = 8", "window_bits = 16", "level = 10"] {
        let err = load(&format!("[websocket.compression]\n{bad}\n")).unwrap_err();
        let key = bad.split(' ').next().unwrap();
        assert!(
            err.to_string()
                .contains(&format!("websocket.compression.{key}")),
            "{err}"
        );
    }
    let err = load("[websocket.compression]\nwindow_bit = 9\n").unwrap_err();
    assert!(err.to_string().contains("window_bit"), "{err}");
}
