use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use wsnorm::cli::{Cli, Command};
use wsnorm::config::Config;
use wsnorm::metrics::Metrics;
use wsnorm::rules::UnixTime;
use wsnorm::state::AppState;
use wsnorm::{fixtures, logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => run(&cli),
        Some(Command::Check) => check(&cli),
        Some(Command::TestRules { files }) => test_rules(&cli, files),
        Some(Command::Rewrite { direction }) => rewrite(&cli, direction),
        Some(Command::Health { addr }) => health(&cli, addr.as_ref().map(|a| a.socket)),
    }
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    Config::load(cli.config.as_deref(), &cli.overrides()).map_err(|e| {
        eprintln!("wsnorm: {e}");
        ExitCode::FAILURE
    })
}

fn check(cli: &Cli) -> ExitCode {
    match load(cli) {
        Ok(config) => {
            print!("{}", config.describe());
            println!("OK");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(cli: &Cli) -> ExitCode {
    let log_filter = logging::init(cli.log_format);
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "Configuration is invalid; not starting.");
            eprintln!("wsnorm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match Metrics::new() {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => {
            eprintln!("wsnorm: cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match server::Listeners::bind(&config.server) {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(error = %e, "A listener cannot be bound; not starting.");
            eprintln!("wsnorm: {e}");
            return ExitCode::FAILURE;
        }
    };
    server::run(
        AppState::new(config, metrics),
        listeners,
        cli.config.clone(),
        cli.overrides(),
        log_filter,
    );
    ExitCode::SUCCESS
}

fn test_rules(cli: &Cli, files: &[std::path::PathBuf]) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (mut passed, mut failed) = (0, 0);
    for file in files {
        let (cases, now) = match fixtures::load_cases(file) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wsnorm: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = fixtures::run_cases(&config.rules, &cases, now);
        println!(
            "{}: {} passed, {} failed",
            file.display(),
            result.passed,
            result.failures.len()
        );
        for failure in &result.failures {
            println!("  FAILED {}\n{}", failure.name, indent(&failure.report, 4));
        }
        passed += result.passed;
        failed += result.failures.len();
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

fn rewrite(cli: &Cli, direction: &str) -> ExitCode {
    let config = match load(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = match fixtures::parse_direction(direction) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("wsnorm: {e}");
            return ExitCode::FAILURE;
        }
    };
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("wsnorm: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        };
        let outcome = config
            .rules
            .apply(dir, line.as_bytes(), UnixTime::now, &mut ());
        println!("{}", fixtures::describe(&line, &outcome));
    }
    ExitCode::SUCCESS
}

fn health(cli: &Cli, addr: Option<SocketAddr>) -> ExitCode {
    let addr = match addr {
        Some(a) => a,
        None => match load(cli) {
            Ok(c) => c.server.admin.socket,
            Err(code) => return code,
        },
    };
    match probe(addr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsnorm: unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /healthz` over a plain socket: the runtime image has no curl.
fn probe(addr: SocketAddr) -> Result<(), String> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(3);
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: wsnorm\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&head).into_owned())
    }
}
