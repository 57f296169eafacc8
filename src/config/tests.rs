use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml("test.toml", text, &Overrides::default())
}

#[test]
fn embedded_default_matches_the_documented_defaults() {
    let config = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(config.source, "<embedded default>");
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.upstream, UpstreamConfig::default());
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
    let err = load("\n[upstream]\naddress = \"ftp://x:1\"\n")
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
upstream_subprotocols = "fixed"
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains("websocket.routes[0] (line 2).path"),
        "{problems:?}"
    );
    assert!(problems[1].contains("routes[1]"), "{problems:?}");
    assert!(
        problems[2].contains("fixed_subprotocol: required"),
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
        upstream: Some("ws://backend:9000/".parse().unwrap()),
    };
    let config = Config::from_toml("t", "[server]\nlisten = \"0.0.0.0:1\"\n", &overrides).unwrap();
    assert_eq!(config.server.listen.port(), 1234);
    assert_eq!(config.upstream.address.authority(), "backend:9000");
    assert_eq!(config.server.admin, ServerConfig::default().admin);
}

#[test]
fn upstream_accepts_host_port_and_urls() {
    let ok = |s: &str| s.parse::<Upstream>().unwrap().authority();
    assert_eq!(ok("127.0.0.1:8000"), "127.0.0.1:8000");
    assert_eq!(ok("http://api:80"), "api:80");
    assert_eq!(ok("[::1]:8000"), "[::1]:8000");
    for bad in [
        "nohost",
        ":80",
        "h:notaport",
        "http://h:1/path",
        "https://h:1",
    ] {
        assert!(bad.parse::<Upstream>().is_err(), "{bad}");
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
    assert!(err.contains("line 3"), "{err}");
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
fn upstream_addresses_are_names_or_ips_only() {
    for bad in ["user:pass@host:80", "ho st:80", "host\r\nX: y:80", "h/x:80"] {
        assert!(bad.parse::<Upstream>().is_err(), "{bad}");
    }
    for good in [
        "backend:8000",
        "127.0.0.1:8000",
        "[::1]:8000",
        "http://my-svc.ns.svc:80",
    ] {
        assert!(good.parse::<Upstream>().is_ok(), "{good}");
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
    assert!(
        text.contains("upstream_subprotocols: drop_unknown"),
        "{text}"
    );
    assert!(!text.contains("DropUnknown"), "{text}");
}
