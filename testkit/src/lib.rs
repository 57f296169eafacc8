//! Demo and test peers that imitate the fragile agent_chat backend wsnorm sits in front of, and
//! a client that shows the incident.
//!
//! * [`backend`] is a *strict* imitation of the Python FastAPI chat backend: it negotiates no
//!   WebSocket subprotocol (so strict clients such as Chrome or tungstenite fail when they offer
//!   `agent_chat` directly), refuses handshakes without a token with HTTP 403, closes the
//!   connection with 1011 when a message carries an ISO string `timestamp`, and silently drops
//!   `execute_agent` messages. Every JSON object it receives is first answered with
//!   `{"type":"received","raw":"<exact text>"}`, so tests (and newcomers) can see the exact bytes
//!   that reached it. It also serves a few plain HTTP routes (`/health`, `/api/echo`,
//!   `/api/status/{code}`, `/api/stream`) for proxy tests.
//! * [`client`] is a tiny demo client that offers `agent_chat`, sends the incident message
//!   (`execute_agent` with a naive ISO timestamp) and prints what the backend actually received.
//!   Run it through wsnorm to see the rewrite; run it directly against the backend to see the
//!   incident.
//!
//! Both are run by the `wsnorm-demo backend` / `wsnorm-demo client` commands (the first-run demo
//! of `scripts/run.sh`) and, started in-process on port 0, as the real server in wsnorm's
//! integration tests.
//!
//! [`deflate_ws`] is the load tool's permessage-deflate path (a client and an echo), beside
//! tungstenite, which cannot carry compressed frames.

pub mod backend;
pub mod client;
pub mod deflate_ws;
pub mod oracle;
