//! Structured logs with `tracing`: JSON by default (text on a terminal), filtered by `RUST_LOG`.
//! pingora's own `log` records are bridged in.
//!
//! Some dependencies dump whole requests at debug level (pingora's proxy logs request headers
//! with `Cookie` and `Authorization`, and response bodies; tungstenite logs message contents at
//! trace). Those targets are capped at info whatever `RUST_LOG` says: credentials never reach
//! the logs.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Targets that log request headers, bodies or message contents below info.
const CAPPED_TARGETS: [&str; 4] = [
    "pingora_proxy",
    "pingora_core",
    "tungstenite",
    "tokio_tungstenite",
];

pub fn init(format: Option<LogFormat>) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CAPPED_TARGETS {
        match format!("{target}=info").parse() {
            Ok(directive) => filter = filter.add_directive(directive),
            Err(e) => eprintln!("wsnorm: bad log directive for {target}: {e}"),
        }
    }
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("wsnorm: logging already initialised: {e}");
    }
}
