//! `wsnorm-demo`: the strict demo backend and the incident client, for the first-run demo and
//! for trying wsnorm by hand.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsnorm_testkit::{backend, client};

#[derive(Parser)]
#[command(
    name = "wsnorm-demo",
    about = "The peers of wsnorm's demo: a strict backend and a client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the strict demo backend (the fragile backend wsnorm exists for).
    Backend {
        /// Where the demo backend listens.
        #[arg(long = "bind", default_value = "127.0.0.1:8000")]
        bind: SocketAddr,
        /// Do not print every received message.
        #[arg(long)]
        quiet: bool,
    },
    /// Send the incident message through wsnorm and show what the backend received.
    Client {
        /// WebSocket URL to connect to (wsnorm's listen address).
        #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
        url: String,
        /// Bearer token to send (the demo backend refuses connections without one).
        #[arg(long, default_value = client::DEMO_TOKEN)]
        token: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Backend { bind, quiet } => serve(bind, quiet).await,
        Command::Client { url, token } => client::run(&url, Some(&token)).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsnorm-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(bind: SocketAddr, quiet: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!(
        "demo backend listening on {bind} (strict: wants timestamp as a number, drops execute_agent, no subprotocol)"
    );
    backend::serve(listener, backend::BackendOptions { verbose: !quiet }).await?;
    Ok(())
}
