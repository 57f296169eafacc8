//! Bytes of data messages on each leg, as payload (inflated) and as on the wire (compressed
//! where permessage-deflate is on), so the compression ratio can be graphed per leg and
//! direction. Not by route: the ratio is a property of the traffic, and the label would double
//! the series for no question an operator asks.

use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::metrics::counter_vec;
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
    /// By direction: compressed bytes passed through, in neither count above.
    passed: [IntCounter; 2],
}

impl WireBytes {
    pub fn register(registry: &mut Registry) -> Result<WireBytes, prometheus::Error> {
        let by_leg = |vec: IntCounterVec| {
            ["client", "backend"]
                .map(|leg| Direction::ALL.map(|d| vec.with_label_values(&[leg, d.as_str()])))
        };
        let labels = &["leg", "direction"];
        Ok(WireBytes {
            payload: by_leg(counter_vec(
                registry,
                "wsnorm_payload_bytes_total",
                "Payload bytes of data messages on each leg (read from it or written to it), \
                 uncompressed, by leg and direction.",
                labels,
            )?),
            wire: by_leg(counter_vec(
                registry,
                "wsnorm_wire_bytes_total",
                "The same data messages' payload bytes as they crossed the leg's socket \
                 (compressed where permessage-deflate is on; frame headers not counted), by \
                 leg and direction.",
                labels,
            )?),
            passed: {
                let vec = counter_vec(
                    registry,
                    "wsnorm_passthrough_bytes_total",
                    "Compressed data bytes relayed as they came, never inflated \
                     ([websocket.compression] passthrough), by direction; not counted in \
                     wsnorm_payload_bytes_total or wsnorm_wire_bytes_total, whose ratio is what \
                     wsnorm compressed itself.",
                    &["direction"],
                )?;
                Direction::ALL.map(|d| vec.with_label_values(&[d.as_str()]))
            },
        })
    }

    /// Counts one frame's worth of a message on `leg`: `payload` bytes, `wire` on the socket.
    pub fn count(&self, leg: WireLeg, dir: Direction, payload: usize, wire: usize) {
        let (l, d) = (leg as usize, dir.index());
        self.payload[l][d].inc_by(payload as u64);
        self.wire[l][d].inc_by(wire as u64);
    }

    /// Counts one frame of a compressed message passed through as it came.
    pub fn passed(&self, dir: Direction, wire: usize) {
        self.passed[dir.index()].inc_by(wire as u64);
    }
}
