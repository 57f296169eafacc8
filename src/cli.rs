//! Command line: `wsnorm` runs the proxy; subcommands check a config, test and try rules, and
//! probe a running instance.
//! Runtime settings given here (or in `WSNORM_*` variables) override the config file.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Address, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "wsnorm",
    version,
    about = "WebSocket normalization sidecar: agent_chat negotiation and JSON rewrite rules in front of a chat backend."
)]
pub struct Cli {
    /// Config file (TOML). Without one, the embedded default (config/wsnorm.toml) applies.
    #[arg(long, global = true, env = "WSNORM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Proxy listen address (host:port; a name is resolved at start), overriding `server.listen`.
    #[arg(long, global = true, env = "WSNORM_LISTEN", value_parser = Address::resolve)]
    pub listen: Option<Address>,
    /// Backend address (host:port or http:// / ws:// URL), overriding `backend.address`.
    /// `--upstream` is its old name.
    #[arg(long, global = true, alias = "upstream", env = "WSNORM_BACKEND", value_parser = Address::resolve_backend)]
    pub backend: Option<Address>,
    /// `WSNORM_BACKEND`'s old name, still read so deployments written for it keep working.
    #[arg(long = "backend-env-compat", hide = true, global = true, env = "WSNORM_UPSTREAM", value_parser = Address::resolve_backend)]
    backend_old_env: Option<Address>,
    /// Admin listen address (host:port), overriding `server.admin`.
    #[arg(long, global = true, env = "WSNORM_ADMIN", value_parser = Address::resolve)]
    pub admin: Option<Address>,
    /// Log format; default json, or text when standard error is a terminal.
    #[arg(long, global = true, env = "WSNORM_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and print the effective settings and rules; exit 0 if valid, 1 if not.
    Check,
    /// Run rule fixture files against the configured rules; print a diff per failure; exit 0/1.
    TestRules {
        /// Fixture files (TOML, or JSON lines with .jsonl); see config/tests/.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Read messages from stdin (one per line) and print what the rules make of them.
    Rewrite {
        /// client_to_backend or backend_to_client.
        #[arg(long, default_value = "client_to_backend")]
        direction: String,
    },
    /// Ask a running wsnorm's admin listener for /healthz; exit 0 when healthy (for HEALTHCHECK).
    Health {
        /// Admin address (host:port); default: the config's `server.admin` (or --admin).
        #[arg(long = "addr", value_parser = Address::resolve)]
        addr: Option<Address>,
    },
}

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            admin: self.admin.clone(),
            backend: self
                .backend
                .clone()
                .or_else(|| self.backend_old_env.clone()),
        }
    }
}
