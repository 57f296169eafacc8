//! Assembles the process: pingora's server with the proxy service, the admin service and the
//! config reloader, and the shutdown sequence.
//!
//! Shutdown (SIGTERM or SIGINT): new WebSocket upgrades get 503 and `/readyz` fails; every
//! relayed WebSocket is closed on both legs with 1001; once none is left (or the drain timeout
//! passes) pingora stops its listeners and the process exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::TcpSocketOptions;
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, SignalKind};

use crate::admin::{Admin, BackendProbe, BACKEND_CHECK_INTERVAL};
use crate::config::{Overrides, ServerConfig};
use crate::logging::LogFilter;
use crate::proxy::{HeadTimeout, Proxy};
use crate::reload::ReloadService;
use crate::state::AppState;

/// The addresses the listeners serve on, found before anything starts.
pub struct Listeners {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Port-0 addresses, bound but not listening until the process ends: the port the system
    /// chose stays ours, and pingora joins it with `SO_REUSEPORT`.
    reserved: Vec<socket2::Socket>,
}

impl Listeners {
    /// Binds every listener's address once, so a busy or forbidden port stops the start at once
    /// with one clear error: pingora retries a busy port for ~30 s and then panics in its own
    /// thread, which left a process that listened nowhere while its admin port answered ready.
    /// A port of 0 is given one by the system, kept reserved, and reported back.
    pub fn bind(server: &ServerConfig) -> Result<Listeners, String> {
        let mut reserved = Vec::new();
        let mut bind = |key: &str, addr: SocketAddr| {
            let fail = |e: std::io::Error| format!("cannot listen on {addr} ({key}): {e}");
            if addr.port() != 0 {
                return std::net::TcpListener::bind(addr)
                    .map(|_| addr)
                    .map_err(fail);
            }
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .map_err(fail)?;
            socket.set_reuse_port(true).map_err(fail)?;
            socket.bind(&addr.into()).map_err(fail)?;
            let bound = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| format!("cannot read the port given to {key} ({addr})"))?;
            reserved.push(socket);
            Ok(bound)
        };
        let listen = bind("server.listen", server.listen.socket)?;
        let admin = bind("server.admin", server.admin.socket)?;
        Ok(Listeners {
            listen,
            admin,
            reserved,
        })
    }

    /// Socket options for pingora's listener on `addr`: shared with our reservation when the
    /// port was chosen by the system.
    fn options(&self, addr: SocketAddr) -> TcpSocketOptions {
        let shared = self
            .reserved
            .iter()
            .any(|s| s.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr));
        let mut options = TcpSocketOptions::default();
        options.so_reuseport = shared.then_some(true);
        options
    }
}

/// Starts every service and blocks until the process has shut down.
pub fn run(
    state: Arc<AppState>,
    listeners: Listeners,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    log_filter: Option<LogFilter>,
) {
    let config = state.config_full();
    let conf = ServerConf {
        threads: config.server.threads,
        // One thread has nobody to steal from; the non-stealing runtime wakes tasks cheaper.
        work_stealing: config.server.threads > 1,
        // The drain happens before pingora is told to stop (see `Signals`).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let pingora_proxy =
        pingora::proxy::http_proxy(&server.configuration, Proxy::new(state.clone()));
    let mut proxy = Service::new(
        "wsnorm proxy".to_string(),
        HeadTimeout {
            inner: Arc::new(pingora_proxy),
            state: state.clone(),
        },
    );
    // No L4 read buffer: pingora's default (64 KiB per connection) would live as long as each
    // WebSocket and cost a copy per read; pingora's HTTP/1 code and tungstenite buffer reads
    // themselves. The small write buffer stays, so a response head and body go out together.
    proxy.add_listener(
        pingora::listeners::ListenerConfig::tcp(listeners.listen.to_string())
            .tcp_socket_options(listeners.options(listeners.listen))
            .l4_buffer(pingora::listeners::L4BufferSettings::default().read(0)),
    );

    let backend = BackendProbe::new(state.clone());
    let mut admin = Service::new(
        "wsnorm admin".to_string(),
        HeadTimeout {
            inner: Arc::new(Admin::new(
                state.clone(),
                backend.clone(),
                listeners.listen,
                log_filter,
            )),
            state: state.clone(),
        },
    );
    admin.add_tcp_with_settings(
        &listeners.admin.to_string(),
        listeners.options(listeners.admin),
    );
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service(
        "wsnorm backend probe",
        Periodic {
            interval: BACKEND_CHECK_INTERVAL,
            job: move || {
                let backend = backend.clone();
                // The probe logs the backend's state when it changes.
                async move {
                    let _ = backend.check().await;
                }
            },
        },
    ));
    server.add_service(background_service(
        "wsnorm memory trim",
        Periodic {
            interval: TRIM_INTERVAL,
            job: || async { trim() },
        },
    ));
    if let Some(path) = config_path {
        server.add_service(background_service(
            "wsnorm config reload",
            ReloadService {
                state: state.clone(),
                path,
                overrides,
            },
        ));
    }
    tracing::info!(
        listen = %listeners.listen,
        admin = %listeners.admin,
        backend = %config.backend.address,
        config = %config.source,
        "wsnorm starting."
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { state }),
    });
    tracing::info!("wsnorm stopped.");
}

/// Turns SIGTERM and SIGINT into a drained, graceful shutdown.
struct Signals {
    state: Arc<AppState>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Cannot listen for SIGTERM/SIGINT; shutting down.");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let server = &self.state.config().server;
        let drain = Duration::from_secs(server.drain_timeout_secs);
        tracing::info!(
            signal = name,
            open_connections = self.state.open_connections(),
            drain_timeout_secs = drain.as_secs(),
            drain_spread_secs = server.drain_spread_secs,
            "Shutting down: closing WebSockets with 1001, spread over drain_spread_secs."
        );
        self.state.shutdown.send_replace(true);
        let started = Instant::now();
        while self.state.open_connections() > 0 && started.elapsed() < drain {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!(
            open_connections = self.state.open_connections(),
            drained_ms = started.elapsed().as_millis() as u64,
            "Drain finished."
        );
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs `job` every `interval` until the process shuts down.
struct Periodic<F> {
    interval: Duration,
    job: F,
}

#[async_trait]
impl<F, Fut> BackgroundService for Periodic<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = ()> + Send,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => (self.job)().await,
            }
        }
    }
}

/// How often freed memory is returned; a trim walks the heap, so not on every close.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Hands memory freed by closed connections back to the system. glibc's allocator keeps freed
/// chunks in its arenas, so without this the RSS after a burst of connections stays at its peak
/// even when they are all gone.
#[cfg(target_env = "gnu")]
fn trim() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: malloc_trim only releases free memory inside glibc's allocator; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
