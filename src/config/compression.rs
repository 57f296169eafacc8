//! `[websocket.compression]`: permessage-deflate (RFC 7692) on each leg. A sub-table of its
//! own: every key has a default (below, with its reason, and in `config/wsnorm.toml`).

use super::locate::{Document, KeyPath};
use serde::Deserialize;

/// `[websocket.compression]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Accept a client's `permessage-deflate` offer. On: browsers always offer it, and agent
    /// output (JSON with the same keys over and over) shrinks several times on the client's
    /// network, the slow and metered one.
    pub client: bool,
    /// Offer `permessage-deflate` to the backend. On: the backend's `websockets` stack accepts
    /// it by default, and with it the backend sends fewer bytes and wsnorm reads fewer.
    pub backend: bool,
    /// The LZ77 window, 9 to 15 (2^bits bytes), of what wsnorm compresses and what it asks its
    /// peers to compress with where the offer lets it. 15: the best ratio, what peers use when
    /// nothing is asked; smaller windows save the peers' memory more than wsnorm's.
    pub window_bits: u8,
    /// Keep each direction's compression context from one message to the next. On: chat
    /// messages are small and alike, and a message compresses mostly by referring to the last
    /// ones. Off: each message is compressed on its own, in both directions of both legs
    /// (wsnorm asks its peers too), so no compression memory stays allocated between messages;
    /// small messages then barely shrink.
    pub context_takeover: bool,
    /// zlib level, 0 (stored) to 9. 7: the lowest at which zlib-rs (a zlib-ng port) compresses
    /// agent output as well as the backend's zlib at its default, 6 (zlib-rs's 6 uses a faster
    /// matcher: 5 % more bytes on an agent run).
    pub level: u32,
    /// Messages shorter than this are sent uncompressed (RSV1 is set per message). 32: below it
    /// deflate's few bytes of framing rarely pay off and the CPU is wasted.
    pub min_message_bytes: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            client: true,
            backend: true,
            window_bits: 15,
            context_takeover: true,
            level: 7,
            min_message_bytes: 32,
        }
    }
}

impl CompressionConfig {
    pub(super) fn validate(&self, doc: &Document, problems: &mut Vec<String>) {
        if !(9..=15).contains(&self.window_bits) {
            let key = KeyPath::of("websocket.compression.window_bits");
            problems.push(doc.problem(&key, "must be between 9 and 15"));
        }
        if self.level > 9 {
            let key = KeyPath::of("websocket.compression.level");
            problems.push(doc.problem(&key, "must be between 0 and 9"));
        }
    }

    /// The settings line of `wsnorm check`, in the file's spelling.
    pub(super) fn describe(&self) -> String {
        format!(
            "compression: client = {}, backend = {}, window_bits = {}, context_takeover = {}, \
             level = {}, min_message_bytes = {}\n",
            self.client,
            self.backend,
            self.window_bits,
            self.context_takeover,
            self.level,
            self.min_message_bytes
        )
    }
}
