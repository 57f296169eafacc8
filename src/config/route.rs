//! `[[websocket.routes]]`: which paths are WebSocket endpoints and what each offers backend.

use serde::Deserialize;

use super::locate::{Document, KeyPath};

/// What subprotocols to offer the backend on a route.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BackendOffer {
    /// Offer only the client's protocols listed in `backend_subprotocols` (and token-bearing ones).
    DropUnknown,
    /// Offer the client's list as it came.
    Forward,
    /// Offer exactly `fixed_subprotocol` (and token-bearing ones).
    Fixed,
}

impl BackendOffer {
    /// As spelt in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendOffer::DropUnknown => "drop_unknown",
            BackendOffer::Forward => "forward",
            BackendOffer::Fixed => "fixed",
        }
    }
}

/// One route as written in the file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `/exact` or `/prefix/*`.
    pub path: String,
    #[serde(default = "default_policy")]
    /// `upstream_subprotocols` is its old name.
    #[serde(alias = "upstream_subprotocols")]
    pub backend_offer: BackendOffer,
    #[serde(default)]
    pub backend_subprotocols: Vec<String>,
    #[serde(default)]
    pub fixed_subprotocol: Option<String>,
    /// Origins (`https://chat.example.com`) browsers may open this route from; empty: any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_policy() -> BackendOffer {
    BackendOffer::DropUnknown
}

impl RouteConfig {
    pub(super) fn drop_unknown(path: &str) -> Self {
        Self {
            path: path.to_string(),
            backend_offer: BackendOffer::DropUnknown,
            backend_subprotocols: Vec::new(),
            fixed_subprotocol: None,
            allowed_origins: Vec::new(),
        }
    }
}

/// The route name of an upgrade on no configured route (in logs and the `route` label).
pub const UNROUTED: &str = "(unrouted)";

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pattern as configured, used as the `route` field of the connection span.
    pub pattern: String,
    matcher: Matcher,
    pub policy: BackendOffer,
    pub backend_subprotocols: Vec<String>,
    pub fixed_subprotocol: Option<String>,
    pub allowed_origins: Vec<String>,
    /// An upgrade on no configured route, relayed as the backend answers it: no rules, the
    /// client's subprotocols offered as they came, the backend's choice echoed.
    pub transparent: bool,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    /// `/ws/*` keeps `/ws/`: it matches `/ws/x` but not `/ws` or `/wsx`.
    Prefix(String),
}

impl Route {
    /// The route of `unrouted_upgrades = "relay"`.
    pub fn unrouted() -> Route {
        Route {
            pattern: UNROUTED.into(),
            matcher: Matcher::Exact(String::new()),
            policy: BackendOffer::Forward,
            backend_subprotocols: Vec::new(),
            fixed_subprotocol: None,
            allowed_origins: Vec::new(),
            transparent: true,
        }
    }

    /// `path` is normalised (decoded, no dot segments, no empty segments, no trailing slash).
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact(p) => path == p,
            Matcher::Prefix(p) => path.len() > p.len() && path.starts_with(p.as_str()),
        }
    }

    /// The subprotocols to offer the backend, from the client's offer. Token-bearing protocols
    /// are decided by the caller; `offer` holds only the others.
    pub fn backend_offer<'a>(&'a self, offer: &[&'a str]) -> Vec<&'a str> {
        match self.policy {
            BackendOffer::Forward => offer.to_vec(),
            BackendOffer::DropUnknown => offer
                .iter()
                .copied()
                .filter(|p| self.backend_subprotocols.iter().any(|b| b == p))
                .collect(),
            BackendOffer::Fixed => self.fixed_subprotocol.as_deref().into_iter().collect(),
        }
    }
}

/// All routes, matched in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteSet {
    routes: Vec<Route>,
}

impl RouteSet {
    pub(super) fn build(
        configs: &[RouteConfig],
        doc: &Document,
        problems: &mut Vec<String>,
    ) -> RouteSet {
        let mut routes = Vec::new();
        for (i, rc) in configs.iter().enumerate() {
            let route = KeyPath::of("websocket.routes").index(i);
            let mut found = Vec::new();
            let mut problem = |at: KeyPath, message: String| found.push(doc.problem(&at, message));
            let path = route.clone().key("path");
            if !rc.path.starts_with('/') {
                problem(path.clone(), format!("`{}` must start with `/`", rc.path));
            }
            let dot_segment = rc.path.split('/').any(|seg| seg == "." || seg == "..");
            if rc.path.contains('%')
                || rc.path.contains("//")
                || dot_segment
                || (rc.path.len() > 1 && rc.path.ends_with('/'))
            {
                problem(
                    path.clone(),
                    format!(
                        "`{}`: write the path decoded, without `%`, `//`, dot segments or a \
                         trailing slash (requests are matched in that form)",
                        rc.path
                    ),
                );
            }
            for (j, p) in rc.backend_subprotocols.iter().enumerate() {
                if !super::is_token(p) {
                    problem(
                        route.clone().key("backend_subprotocols").index(j),
                        format!("`{}` is not a valid subprotocol token", p.escape_debug()),
                    );
                }
            }
            for (j, o) in rc.allowed_origins.iter().enumerate() {
                if let Err(e) = super::validate_origin(o) {
                    problem(route.clone().key("allowed_origins").index(j), e);
                }
            }
            let matcher = match rc.path.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('/') => Some(Matcher::Prefix(prefix.to_string())),
                Some(_) => {
                    problem(
                        path,
                        format!(
                            "`{}`: `*` is only allowed as a last segment (`/x/*`)",
                            rc.path
                        ),
                    );
                    None
                }
                None if rc.path.contains('*') || rc.path.contains('?') => {
                    problem(
                        path,
                        format!(
                            "`{}`: only a trailing `/*` wildcard is allowed, and no query",
                            rc.path
                        ),
                    );
                    None
                }
                None => Some(Matcher::Exact(rc.path.clone())),
            };
            let fixed = route.clone().key("fixed_subprotocol");
            match (rc.backend_offer, &rc.fixed_subprotocol) {
                (BackendOffer::Fixed, None) => problem(
                    route.clone().key("backend_offer"),
                    "\"fixed\" needs `fixed_subprotocol`, which is missing".into(),
                ),
                (BackendOffer::Fixed, Some(p)) if !super::is_token(p) => problem(
                    fixed,
                    format!("`{}` is not a valid subprotocol token", p.escape_debug()),
                ),
                (BackendOffer::Fixed, Some(_)) | (_, None) => {}
                (_, Some(_)) => problem(fixed, "only used with backend_offer = \"fixed\"".into()),
            }
            match matcher {
                Some(matcher) if found.is_empty() => routes.push(Route {
                    pattern: rc.path.clone(),
                    matcher,
                    policy: rc.backend_offer,
                    backend_subprotocols: rc.backend_subprotocols.clone(),
                    fixed_subprotocol: rc.fixed_subprotocol.clone(),
                    allowed_origins: rc.allowed_origins.clone(),
                    transparent: false,
                }),
                _ => problems.append(&mut found),
            }
        }
        RouteSet { routes }
    }

    /// The first route whose pattern matches `path` (normalised, see [`crate::proxy::path`]).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(path))
    }

    /// Every value a `route` label can take: the configured patterns and [`UNROUTED`].
    pub fn patterns(&self) -> Vec<&str> {
        let configured = self.routes.iter().map(|r| r.pattern.as_str());
        configured.chain([UNROUTED]).collect()
    }

    pub(super) fn describe(&self) -> String {
        let mut out = String::from("websocket routes:\n");
        for r in &self.routes {
            out.push_str(&format!(
                "  {} -> backend_offer: {}",
                r.pattern,
                r.policy.as_str()
            ));
            match r.policy {
                BackendOffer::DropUnknown => {
                    out.push_str(&format!(" (backend knows {:?})", r.backend_subprotocols))
                }
                BackendOffer::Fixed => out.push_str(&format!(
                    " ({:?})",
                    r.fixed_subprotocol.as_deref().unwrap_or("")
                )),
                BackendOffer::Forward => {}
            }
            if !r.allowed_origins.is_empty() {
                out.push_str(&format!(", allowed origins {:?}", r.allowed_origins));
            }
            out.push('\n');
        }
        out
    }
}
