//! Bytes of data messages on each leg, as payload (inflated) and as on the wire (compressed
//! where permessage-deflate is on), so the compression ratio can be graphed per leg and
//! direction. Self-contained: [`WireBytes::register`] adds its two counters to a registry.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::metrics::dir_index;
use crate::rules::Direction;

/// A leg of a proxied connection, as the `leg` label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireLeg {
    Client,
    Backend,
}

/// `wsnorm_payload_bytes_total` and `wsnorm_wire_bytes_total`, children resolved once: leg,
/// then direction.
pub struct WireBytes {
    payload: [[IntCounter; 2]; 2],
    wire: [[IntCounter; 2]; 2],
}

impl WireBytes {
    pub fn register(registry: &Registry) -> Result<WireBytes, prometheus::Error> {
        let family = |name: &str, help: &str| -> Result<[[IntCounter; 2]; 2], prometheus::Error> {
            let vec = IntCounterVec::new(Opts::new(name, help), &["leg", "direction"])?;
            registry.register(Box::new(vec.clone()))?;
            let child = |leg: &str, dir: Direction| vec.with_label_values(&[leg, dir.as_str()]);
            Ok([
                [
                    child("client", Direction::ClientToBackend),
                    child("client", Direction::BackendToClient),
                ],
                [
                    child("backend", Direction::ClientToBackend),
                    child("backend", Direction::BackendToClient),
                ],
            ])
        };
        Ok(WireBytes {
            payload: family(
                "wsnorm_payload_bytes_total",
                "Payload bytes of data messages on each leg (read from it or written to it), \
                 uncompressed, by leg and direction.",
            )?,
            wire: family(
                "wsnorm_wire_bytes_total",
                "The same data messages' payload bytes as they crossed the leg's socket \
                 (compressed where permessage-deflate is on; frame headers not counted), by \
                 leg and direction.",
            )?,
        })
    }

    /// Counts one frame's worth of a message on `leg`: `payload` bytes, `wire` on the socket.
    pub fn count(&self, leg: WireLeg, dir: Direction, payload: usize, wire: usize) {
        let (l, d) = (leg as usize, dir_index(dir));
        self.payload[l][d].inc_by(payload as u64);
        self.wire[l][d].inc_by(wire as u64);
    }
}
