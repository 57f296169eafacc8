//! Configuration: the TOML file (or the embedded default), command-line/env overrides, and
//! validation. Everything here is checked once at load time; the running proxy only ever sees a
//! validated [`Config`] and [`CompiledRules`].

mod route;

pub use route::{Route, RouteConfig, RouteSet, UpstreamSubprotocols, UNROUTED};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::rules::{
    self, CompiledRules, EngineSettings, JsonDialect, OnOversizedRewrite, RuleConfig,
};

/// The documented example in `config/wsnorm.toml`; it doubles as the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../config/wsnorm.toml");

/// The largest `max_message_bytes` accepted: a message is held whole while it is relayed, so a
/// limit beyond this would let a few connections take the host's memory.
const MAX_MESSAGE_BYTES_LIMIT: usize = 256 << 20;

/// The most worker threads `server.threads` may ask for: more than a sidecar's host has cores,
/// few enough that a typo (`100000`) fails the check instead of starting that many threads.
const MAX_THREADS: usize = 1024;
/// The deepest `max_json_depth` accepted: far past any Python parser's default, while the
/// engine's per-message depth bookkeeping stays a few KiB.
const MAX_JSON_DEPTH_LIMIT: usize = 100_000;

/// Why a configuration could not be used. Every message names the file and, where the parser
/// knows it, the line and key; the caller should print it and keep the previous config (or exit).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type or form.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// Values that parse but do not make sense together; one line per problem.
    #[error("{file}: invalid configuration:\n{}", problems.join("\n"))]
    Invalid { file: String, problems: Vec<String> },
}

/// The whole file. Unknown keys anywhere are errors: a typo in a rules file must not go live
/// silently.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    upstream: UpstreamConfig,
    #[serde(default)]
    websocket: WebSocketConfig,
    #[serde(default)]
    rules: Option<Vec<Spanned<RuleConfig>>>,
    #[serde(default)]
    log: LogConfig,
}

/// `[log]`: what is logged besides events. Applies on reload.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One line per plain HTTP request (README "Logs"). On by default: ops teams expect one,
    /// as from Envoy or nginx.
    pub access_log: bool,
    /// Log one plain HTTP request in this many (1: every one), for busy endpoints.
    pub access_log_sample_one_in: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            access_log: true,
            access_log_sample_one_in: 1,
        }
    }
}

/// `[server]`: listeners and process-wide limits. These cannot change without a restart.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Checked while parsing, so the error points at the line.
    #[serde(deserialize_with = "threads")]
    pub threads: usize,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub drain_timeout_secs: u64,
    /// Peers whose `X-Forwarded-*` / `Forwarded` / `X-Real-IP` headers are believed.
    #[serde(deserialize_with = "addresses_or_blocks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            threads: 1,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            drain_timeout_secs: 10,
            trusted_proxies: Vec::new(),
        }
    }
}

fn threads<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let threads = usize::deserialize(d)?;
    if (1..=MAX_THREADS).contains(&threads) {
        Ok(threads)
    } else {
        Err(serde::de::Error::custom(format!(
            "server.threads: must be between 1 and {MAX_THREADS}, not {threads}"
        )))
    }
}

/// `[upstream]`: the one backend wsnorm talks to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub address: Upstream,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            address: Upstream {
                host: "127.0.0.1".into(),
                port: 8000,
            },
        }
    }
}

/// A backend address as `host:port`; `http://` and `ws://` URLs are accepted and reduced to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// `host:port`, as dialled and as sent in `Host`.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A list of IP addresses (`10.1.2.3`) and CIDR blocks (`10.0.0.0/8`).
fn addresses_or_blocks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{}` is not an IP address or CIDR block (like 10.0.0.0/8)",
                        s.escape_debug()
                    ))
                })
        })
        .collect()
}

impl ServerConfig {
    /// Whether `peer` is a proxy whose forwarding headers are kept (and extended).
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = match s.split_once("://") {
            Some(("http" | "ws", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "upstream `{s}`: scheme `{scheme}` is not supported (use host:port, http:// or ws://)"
                ))
            }
            None => s,
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(format!(
                "upstream `{s}`: give host:port only, without a path"
            ));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("upstream `{s}`: expected host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("upstream `{s}`: empty host"));
        }
        // The host goes into `Host` headers and is dialled: a name or an IP address, nothing
        // else (no `user:pass@`, no control characters, no spaces).
        let is_name = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !is_name && host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "upstream `{}`: `{}` is not a host name or IP address (credentials, spaces \
                 and control characters are not accepted)",
                s.escape_debug(),
                host.escape_debug()
            ));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("upstream `{s}`: `{port}` is not a port number"))?;
        Ok(Upstream {
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What to do when a client offers subprotocols and none is in `websocket.subprotocols`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NoCommonSubprotocol {
    /// Complete the handshake without `Sec-WebSocket-Protocol` (RFC 6455 behaviour).
    Accept,
    /// Refuse with HTTP 400.
    Reject,
}

impl NoCommonSubprotocol {
    pub fn as_str(self) -> &'static str {
        match self {
            NoCommonSubprotocol::Accept => "accept",
            NoCommonSubprotocol::Reject => "reject",
        }
    }
}

/// What to do with a WebSocket upgrade on a path that is no configured route.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UnroutedUpgrades {
    /// Terminate and relay it without rules: counted, limited and logged like any WebSocket.
    Relay,
    /// Answer 404.
    Refuse,
}

impl UnroutedUpgrades {
    pub fn as_str(self) -> &'static str {
        match self {
            UnroutedUpgrades::Relay => "relay",
            UnroutedUpgrades::Refuse => "refuse",
        }
    }
}

/// `[websocket]`: handshake and relay settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    pub subprotocols: Vec<String>,
    pub no_common_subprotocol: NoCommonSubprotocol,
    pub token_subprotocol_prefixes: Vec<String>,
    pub tokens_to_authorization: bool,
    pub handshake_timeout_ms: u64,
    pub max_message_bytes: usize,
    pub on_oversized_rewrite: OnOversizedRewrite,
    pub json_dialect: JsonDialect,
    pub max_json_depth: usize,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub unrouted_upgrades: UnroutedUpgrades,
    pub routes: Vec<Spanned<RouteConfig>>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            subprotocols: vec!["agent_chat".into()],
            no_common_subprotocol: NoCommonSubprotocol::Accept,
            token_subprotocol_prefixes: ["jwt.", "jwt-auth.", "bearer.", "staging-auth."]
                .map(String::from)
                .to_vec(),
            tokens_to_authorization: false,
            handshake_timeout_ms: 10_000,
            max_message_bytes: 1 << 20,
            on_oversized_rewrite: OnOversizedRewrite::Reject,
            json_dialect: JsonDialect::Python,
            max_json_depth: rules::DEFAULT_MAX_JSON_DEPTH,
            ping_interval_secs: 20,
            idle_timeout_secs: 60,
            unrouted_upgrades: UnroutedUpgrades::Relay,
            routes: ["/ws", "/ws/*", "/api/v1/websocket"]
                .map(|p| Spanned::new(0..0, RouteConfig::drop_unknown(p)))
                .to_vec(),
        }
    }
}

impl WebSocketConfig {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// How the rules read messages, and the limit their output keeps to.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            json_dialect: self.json_dialect,
            max_json_depth: self.max_json_depth,
            max_output_bytes: self.max_message_bytes,
            on_oversized_rewrite: self.on_oversized_rewrite,
        }
    }

    /// True when `protocol` carries a credential and so must never be echoed or logged.
    pub fn is_token_subprotocol(&self, protocol: &str) -> bool {
        self.token_subprotocol_prefixes
            .iter()
            .any(|p| protocol.starts_with(p.as_str()))
    }
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub upstream: Option<Upstream>,
}

/// A loaded, validated configuration with its rules compiled.
#[derive(Debug)]
pub struct Config {
    /// Where it came from: a path, or `<embedded default>`.
    pub source: String,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub websocket: WebSocketConfig,
    pub routes: RouteSet,
    /// Shared with the relays, which read it on every message.
    pub rules: Arc<CompiledRules>,
    pub log: LogConfig,
}

impl Config {
    /// Loads `path`, or the embedded default when `None`, and applies `overrides`.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&path.display().to_string(), &text, overrides)
            }
            None => Self::from_toml("<embedded default>", DEFAULT_CONFIG_TOML, overrides),
        }
    }

    /// Parses and validates `text`; `file` names it in error messages.
    pub fn from_toml(file: &str, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let parsed: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut server = parsed.server;
        let mut upstream = parsed.upstream;
        if let Some(listen) = overrides.listen {
            server.listen = listen;
        }
        if let Some(admin) = overrides.admin {
            server.admin = admin;
        }
        if let Some(address) = &overrides.upstream {
            upstream.address = address.clone();
        }

        let line_of = |span: std::ops::Range<usize>| line_number(text, span.start);
        let mut problems = Vec::new();
        validate(&server, &parsed.websocket, &mut problems);
        if parsed.log.access_log_sample_one_in == 0 {
            problems.push("log.access_log_sample_one_in: must be at least 1".into());
        }
        let routes = RouteSet::build(&parsed.websocket.routes, &line_of, &mut problems);
        let settings = parsed.websocket.engine_settings();
        let rules = match parsed.rules {
            None => CompiledRules::compile_with(&rules::default_rules(), settings)
                .map_err(|e| e.to_string()),
            Some(spanned) => {
                let lines: Vec<usize> = spanned.iter().map(|r| line_of(r.span())).collect();
                let plain: Vec<RuleConfig> = spanned.into_iter().map(Spanned::into_inner).collect();
                CompiledRules::compile_with(&plain, settings).map_err(|e| {
                    // The engine names the rule by index; add where it starts in the file.
                    match e.rule_index().and_then(|i| lines.get(i)) {
                        Some(line) => format!("{e} (rules entry at line {line})"),
                        None => e.to_string(),
                    }
                })
            }
        };
        let rules = match rules {
            Ok(rules) => Some(rules),
            Err(e) => {
                problems.push(e);
                None
            }
        };
        match (rules, problems.is_empty()) {
            (Some(rules), true) => Ok(Config {
                source: file.to_string(),
                server,
                upstream,
                websocket: parsed.websocket,
                routes,
                rules: Arc::new(rules),
                log: parsed.log,
            }),
            _ => Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            }),
        }
    }

    /// A readable summary of the effective settings and rules, for `wsnorm check`.
    pub fn describe(&self) -> String {
        let ws = &self.websocket;
        let mut out = format!(
            "config: {}\nlisten: {}\nadmin: {}\nupstream: {}\nthreads: {}\nmax_connections: {}\n\
             max_header_bytes: {}\ndrain_timeout_secs: {}\n\
             subprotocols: {:?}\nno_common_subprotocol: {}\ntoken_subprotocol_prefixes: {:?}\n\
             tokens_to_authorization: {}\nhandshake_timeout_ms: {}\nmax_message_bytes: {}\n\
             on_oversized_rewrite: {}\njson_dialect: {}\nmax_json_depth: {}\n\
             ping_interval_secs: {}\nidle_timeout_secs: {}\nunrouted_upgrades: {}\n\
             trusted_proxies: {:?}\n",
            self.source,
            self.server.listen,
            self.server.admin,
            self.upstream.address.authority(),
            self.server.threads,
            self.server.max_connections,
            self.server.max_header_bytes,
            self.server.drain_timeout_secs,
            ws.subprotocols,
            ws.no_common_subprotocol.as_str(),
            ws.token_subprotocol_prefixes,
            ws.tokens_to_authorization,
            ws.handshake_timeout_ms,
            ws.max_message_bytes,
            ws.on_oversized_rewrite.as_str(),
            ws.json_dialect.as_str(),
            ws.max_json_depth,
            ws.ping_interval_secs,
            ws.idle_timeout_secs,
            ws.unrouted_upgrades.as_str(),
            self.server.trusted_proxies,
        );
        out.push_str(&format!(
            "access_log: {}\naccess_log_sample_one_in: {}\n",
            self.log.access_log, self.log.access_log_sample_one_in
        ));
        out.push_str(&self.routes.describe());
        out.push_str(&format!("rules ({}):\n", self.rules.len()));
        out.push_str(&self.rules.describe());
        out
    }
}

fn validate(server: &ServerConfig, ws: &WebSocketConfig, problems: &mut Vec<String>) {
    if server.drain_timeout_secs > 3600 {
        problems.push("server.drain_timeout_secs: at most 3600".into());
    }
    if server.max_header_bytes < 1024 {
        problems.push("server.max_header_bytes: must be at least 1024".into());
    }
    if server.max_connections == 0 {
        problems.push("server.max_connections: must be at least 1".into());
    }
    if ws.handshake_timeout_ms == 0 {
        problems.push("websocket.handshake_timeout_ms: must be greater than 0".into());
    }
    if ws.ping_interval_secs == 0 {
        problems.push("websocket.ping_interval_secs: must be at least 1".into());
    }
    if ws.idle_timeout_secs <= ws.ping_interval_secs {
        problems.push(format!(
            "websocket.idle_timeout_secs: must be longer than ping_interval_secs ({})",
            ws.ping_interval_secs
        ));
    }
    if !(125..=MAX_MESSAGE_BYTES_LIMIT).contains(&ws.max_message_bytes) {
        problems.push(format!(
            "websocket.max_message_bytes: must be between 125 and {MAX_MESSAGE_BYTES_LIMIT}"
        ));
    }
    if !(1..=MAX_JSON_DEPTH_LIMIT).contains(&ws.max_json_depth) {
        problems.push(format!(
            "websocket.max_json_depth: must be between 1 and {MAX_JSON_DEPTH_LIMIT}"
        ));
    }
    for (i, p) in ws.subprotocols.iter().enumerate() {
        if !is_token(p) {
            problems.push(format!(
                "websocket.subprotocols[{i}]: `{p}` is not a valid subprotocol token"
            ));
        }
    }
    for (i, p) in ws.token_subprotocol_prefixes.iter().enumerate() {
        if p.is_empty() {
            problems.push(format!(
                "websocket.token_subprotocol_prefixes[{i}]: must not be empty"
            ));
        }
    }
}

/// An `Origin` value as browsers send it: `scheme://host[:port]`, nothing after.
fn validate_origin(origin: &str) -> Result<(), String> {
    let shown = origin.escape_debug();
    let uri: http::Uri = origin
        .parse()
        .map_err(|_| format!("`{shown}` is not an origin (scheme://host[:port])"))?;
    let plain = uri.scheme().is_some()
        && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
        && !origin.ends_with('/')
        && uri.path() == "/"
        && uri.query().is_none();
    if plain {
        Ok(())
    } else {
        Err(format!(
            "`{shown}` is not an origin: give scheme://host[:port] only, as browsers send it"
        ))
    }
}

/// RFC 7230 `token`: what a subprotocol name may contain.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn line_number(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
