//! Configuration: the TOML file (or the embedded default), command-line/env overrides, and
//! validation. Everything here is checked once at load time; the running proxy only ever sees a
//! validated [`Config`] and [`CompiledRules`].

mod address;
mod compression;
mod locate;
mod route;
mod wording;

pub use address::Address;
pub use compression::CompressionConfig;
pub use route::{BackendOffer, Route, RouteConfig, RouteSet, UNROUTED};
pub(crate) use wording::{friendly, read_toml};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::rules::{
    self, CompiledRules, EngineSettings, JsonDialect, OnOversizedRewrite, RuleError, RuleTable,
};
use locate::{Document, KeyPath};

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

/// Why a configuration could not be used. Every message names the file and, for a key written
/// in it, the line and the key; the caller should print it and keep the previous config (or
/// exit).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type or form:
    /// `line N, column M: key: what`, then the line quoted.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// Values that parse but do not make sense (alone or together); one `line N: key: what`
    /// per problem.
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
    /// `[upstream]` is its old name.
    #[serde(alias = "upstream")]
    backend: BackendConfig,
    #[serde(default)]
    websocket: WebSocketConfig,
    /// Read as written; turned into rules after parsing, so that an error in one names its own
    /// line (see [`crate::rules::RuleTable`]).
    #[serde(default)]
    rules: Option<Vec<RuleTable>>,
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
    pub listen: Address,
    pub admin: Address,
    /// Checked while parsing, so the error points at the line.
    #[serde(deserialize_with = "threads")]
    pub threads: usize,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub drain_timeout_secs: u64,
    /// The first part of the drain over which WebSockets are closed, spread evenly, so their
    /// clients do not all reconnect elsewhere in the same second.
    pub drain_spread_secs: u64,
    /// Peers whose `X-Forwarded-*` / `Forwarded` / `X-Real-IP` headers are believed.
    #[serde(deserialize_with = "addresses_or_blocks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Address::from_socket(SocketAddr::from(([0, 0, 0, 0], 8080))),
            admin: Address::from_socket(SocketAddr::from(([127, 0, 0, 1], 9090))),
            threads: 1,
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            drain_timeout_secs: 10,
            drain_spread_secs: 5,
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
            "must be between 1 and {MAX_THREADS}, not {threads}"
        )))
    }
}

/// `[backend]`: the one backend wsnorm talks to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `host:port`, `http://host:port` or `ws://host:port`.
    #[serde(deserialize_with = "address::backend_address")]
    pub address: Address,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            address: Address::from_socket(SocketAddr::from(([127, 0, 0, 1], 8000))),
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
    pub fn drain_spread(&self) -> Duration {
        Duration::from_secs(self.drain_spread_secs)
    }

    /// Whether `peer` is a proxy whose forwarding headers are kept (and extended).
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// The keys whose values differ between `self` and `other`, as spelt in the file.
    pub fn changed_keys(&self, other: &ServerConfig) -> Vec<&'static str> {
        // Destructured so that a new field cannot be left out of the comparison.
        let ServerConfig {
            listen,
            admin,
            threads,
            max_connections,
            max_header_bytes,
            drain_timeout_secs,
            drain_spread_secs,
            trusted_proxies,
        } = self;
        [
            ("listen", *listen != other.listen),
            ("admin", *admin != other.admin),
            ("threads", *threads != other.threads),
            ("max_connections", *max_connections != other.max_connections),
            (
                "max_header_bytes",
                *max_header_bytes != other.max_header_bytes,
            ),
            (
                "drain_timeout_secs",
                *drain_timeout_secs != other.drain_timeout_secs,
            ),
            (
                "drain_spread_secs",
                *drain_spread_secs != other.drain_spread_secs,
            ),
            ("trusted_proxies", *trusted_proxies != other.trusted_proxies),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
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
    pub compression: CompressionConfig,
    pub routes: Vec<RouteConfig>,
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
            compression: CompressionConfig::default(),
            routes: ["/ws", "/ws/*", "/api/v1/websocket"]
                .map(RouteConfig::drop_unknown)
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
    pub listen: Option<Address>,
    pub admin: Option<Address>,
    pub backend: Option<Address>,
}

/// A loaded, validated configuration with its rules compiled.
#[derive(Debug)]
pub struct Config {
    /// Where it came from: a path, or `<embedded default>`.
    pub source: String,
    pub server: ServerConfig,
    pub backend: BackendConfig,
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
        let (parsed, doc) =
            wording::read_toml::<FileConfig>(text).map_err(|message| ConfigError::Parse {
                file: file.to_string(),
                message,
            })?;
        let mut server = parsed.server;
        let mut backend = parsed.backend;
        if let Some(listen) = &overrides.listen {
            server.listen = listen.clone();
        }
        if let Some(admin) = &overrides.admin {
            server.admin = admin.clone();
        }
        if let Some(address) = &overrides.backend {
            backend.address = address.clone();
        }

        let mut problems = Vec::new();
        validate(&server, &parsed.websocket, &parsed.log, &doc, &mut problems);
        check_clashes(&server, &backend, overrides, &doc, &mut problems);
        let routes = RouteSet::build(&parsed.websocket.routes, &doc, &mut problems);
        let settings = parsed.websocket.engine_settings();
        let rules = match parsed.rules {
            None => CompiledRules::compile_with(&rules::default_rules(), settings)
                .map_err(|e| problems.push(e.to_string()))
                .ok(),
            Some(tables) => {
                let count = tables.len();
                let configs: Vec<_> = tables
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, table)| {
                        table
                            .into_rule(Some(i))
                            .map_err(|e| problems.push(rule_problem(&doc, &e)))
                            .ok()
                    })
                    .collect();
                // Cross-rule checks only on the whole list: indexes must match the file's.
                if configs.len() == count {
                    CompiledRules::compile_with(&configs, settings)
                        .map_err(|e| problems.push(rule_problem(&doc, &e)))
                        .ok()
                } else {
                    None
                }
            }
        };
        match (rules, problems.is_empty()) {
            (Some(rules), true) => Ok(Config {
                source: file.to_string(),
                server,
                backend,
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
            "config: {}\nlisten: {}\nadmin: {}\nbackend: {}\nthreads: {}\nmax_connections: {}\n\
             max_header_bytes: {}\ndrain_timeout_secs: {}\ndrain_spread_secs: {}\n\
             subprotocols: {:?}\nno_common_subprotocol: {}\ntoken_subprotocol_prefixes: {:?}\n\
             tokens_to_authorization: {}\nhandshake_timeout_ms: {}\nmax_message_bytes: {}\n\
             on_oversized_rewrite: {}\njson_dialect: {}\nmax_json_depth: {}\n\
             ping_interval_secs: {}\nidle_timeout_secs: {}\nunrouted_upgrades: {}\n\
             trusted_proxies: {:?}\n",
            self.source,
            self.server.listen,
            self.server.admin,
            self.backend.address,
            self.server.threads,
            self.server.max_connections,
            self.server.max_header_bytes,
            self.server.drain_timeout_secs,
            self.server.drain_spread_secs,
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
        out.push_str(&ws.compression.describe());
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

fn validate(
    server: &ServerConfig,
    ws: &WebSocketConfig,
    log: &LogConfig,
    doc: &Document,
    problems: &mut Vec<String>,
) {
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            problems.push(doc.problem(&KeyPath::of(key), message));
        }
    };
    check(
        log.access_log_sample_one_in >= 1,
        "log.access_log_sample_one_in",
        "at least 1".into(),
    );
    check(
        server.drain_timeout_secs <= 3600,
        "server.drain_timeout_secs",
        "at most 3600".into(),
    );
    // The last closes need some of the drain for their close handshakes.
    check(
        server.drain_spread_secs == 0 || server.drain_spread_secs < server.drain_timeout_secs,
        "server.drain_spread_secs",
        format!(
            "must be less than drain_timeout_secs ({}), or 0 to close every WebSocket at once",
            server.drain_timeout_secs
        ),
    );
    check(
        server.max_header_bytes >= 1024,
        "server.max_header_bytes",
        "must be at least 1024".into(),
    );
    check(
        server.max_connections > 0,
        "server.max_connections",
        "must be at least 1".into(),
    );
    check(
        ws.handshake_timeout_ms > 0,
        "websocket.handshake_timeout_ms",
        "must be greater than 0".into(),
    );
    check(
        ws.ping_interval_secs > 0,
        "websocket.ping_interval_secs",
        "must be at least 1".into(),
    );
    check(
        ws.idle_timeout_secs > ws.ping_interval_secs,
        "websocket.idle_timeout_secs",
        format!(
            "must be longer than ping_interval_secs ({})",
            ws.ping_interval_secs
        ),
    );
    check(
        (125..=MAX_MESSAGE_BYTES_LIMIT).contains(&ws.max_message_bytes),
        "websocket.max_message_bytes",
        format!("must be between 125 and {MAX_MESSAGE_BYTES_LIMIT}"),
    );
    check(
        (1..=MAX_JSON_DEPTH_LIMIT).contains(&ws.max_json_depth),
        "websocket.max_json_depth",
        format!("must be between 1 and {MAX_JSON_DEPTH_LIMIT}"),
    );
    for (i, p) in ws.subprotocols.iter().enumerate() {
        if !is_token(p) {
            problems.push(doc.problem(
                &KeyPath::of("websocket.subprotocols").index(i),
                format!("`{}` is not a valid subprotocol token", p.escape_debug()),
            ));
        }
    }
    ws.compression.validate(doc, problems);
    for (i, p) in ws.token_subprotocol_prefixes.iter().enumerate() {
        if p.is_empty() {
            problems.push(doc.problem(
                &KeyPath::of("websocket.token_subprotocol_prefixes").index(i),
                "must not be empty",
            ));
        }
    }
}

/// Listeners that cannot both be bound, and a backend that is wsnorm itself.
fn check_clashes(
    server: &ServerConfig,
    backend: &BackendConfig,
    overrides: &Overrides,
    doc: &Document,
    problems: &mut Vec<String>,
) {
    // A value from the command line has no line in the file; its flag is named instead.
    let name = |key: &str, flag: Option<&str>| match flag {
        Some(flag) => format!("{key} ({flag})"),
        None => match doc.line_of(&KeyPath::of(key)) {
            Some(line) => format!("{key} (line {line})"),
            None => format!("{key} (default)"),
        },
    };
    let listen = name(
        "server.listen",
        overrides.listen.as_ref().map(|_| "--listen"),
    );
    let admin = name("server.admin", overrides.admin.as_ref().map(|_| "--admin"));
    let backend_name = name(
        "backend.address",
        overrides.backend.as_ref().map(|_| "--backend"),
    );
    let (l, a, u) = (&server.listen, &server.admin, &backend.address);
    if address::binds_clash(l.socket, a.socket) {
        problems.push(format!(
            "{admin}: {a} and {listen}: {l} cannot both listen on port {}: give the admin \
             listener its own port",
            a.port
        ));
    }
    for (own, at, what) in [
        (&listen, l, "proxy listener"),
        (&admin, a, "admin listener"),
    ] {
        if address::dials_listener(u.socket, at.socket) {
            problems.push(format!(
                "{backend_name}: {u} is wsnorm's own {what} ({own}: {at}): every request would \
                 loop back into wsnorm; give the backend's address"
            ));
        }
    }
}

/// A rule's problem at the line of its key (of its `[[rules]]` header when the key is not
/// written, as for a missing `map`).
fn rule_problem(doc: &Document, e: &RuleError) -> String {
    let Some(index) = e.rule_index() else {
        return e.to_string();
    };
    let table = KeyPath::of("rules").index(index);
    let key = table.clone().key(e.key());
    let at = if doc.line_of(&key).is_some() {
        &key
    } else {
        &table
    };
    doc.problem_shown(at, format!("{key} (rule {:?})", e.rule().name), e.reason())
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

#[cfg(test)]
mod tests;
