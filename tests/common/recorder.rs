//! A recording WebSocket backend for tests.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// What a [`Recorder`] backend saw at the end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEnd {
    /// A close frame with this code and reason (`None`: no code).
    Close(Option<(u16, String)>),
    /// The TCP connection ended without a close frame.
    Eof,
    Error(String),
}

/// A tiny WebSocket backend: accepts an upgrade on any path, greets with the request's path and
/// headers, echoes every data message unchanged and reports how each connection ended (keyed
/// by the request path).
pub struct Recorder {
    pub addr: SocketAddr,
    pub ends: mpsc::UnboundedReceiver<(String, BackendEnd)>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, ends) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    let mut headers = serde_json::Map::new();
                    // The Err type is dictated by tungstenite's Callback trait.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, resp: Response| {
                        path = req.uri().to_string();
                        for (name, value) in req.headers() {
                            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            headers.insert(name.as_str().to_string(), value.into());
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    let hello = serde_json::json!({
                        "type": "connection_established",
                        "data": { "path": path, "headers": headers },
                    });
                    if ws.send(Message::text(hello.to_string())).await.is_err() {
                        return;
                    }
                    let mut end = None;
                    while let Some(msg) = ws.next().await {
                        match msg {
                            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                                let _ = ws.send(m).await;
                            }
                            Ok(Message::Close(frame)) => {
                                end.get_or_insert(BackendEnd::Close(
                                    frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                                ));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                end.get_or_insert(BackendEnd::Error(e.to_string()));
                                break;
                            }
                        }
                    }
                    let _ = tx.send((path, end.unwrap_or(BackendEnd::Eof)));
                });
            }
        });
        Recorder { addr, ends }
    }

    /// How the connection on `path` ended, waiting at most `limit`; ends of other paths are
    /// skipped.
    pub async fn end_of(&mut self, path: &str, limit: Duration) -> Option<BackendEnd> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ends.recv()).await {
                Ok(Some((p, end))) if p == path => return Some(end),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }
}
