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
    /// Keep wsnorm's compression context from one message it sends to the next. On: agent
    /// output is small messages alike, and one compresses mostly by referring to the last ones
    /// (the client's wire is where bytes cost). The context is freed while a leg is quiet and
    /// a fresh one started when it speaks again. Off: each message is compressed on its own.
    pub context_takeover: bool,
    /// Let the peers keep theirs. Off: wsnorm asks the client (`client_no_context_takeover`)
    /// and the backend (`server_no_context_takeover`) to compress each message on its own, so
    /// it inflates each with a per-thread stream and a quiet connection holds no compression
    /// memory; on, it must keep each peer's window (~40 KiB per leg at 15 bits) for the
    /// connection's life, quiet or not. What it costs: what clients send (short prompts)
    /// shrinks less, and what the backend sends only crosses the pod's loopback.
    pub peer_context_takeover: bool,
    /// Pass the backend's compressed messages to the client as they came, never inflated, where
    /// that is sound: both legs compressed and no rule for backend-to-client messages when the
    /// connection opens (the backend is then offered the client's window and context). On: the
    /// client's wire carries exactly the backend's own compression, and wsnorm spends no CPU
    /// and keeps no memory on that direction's deflate. What it gives up for those messages:
    /// the size limit applies to their compressed frames, their UTF-8 is left to the client
    /// to check, and rules for that direction added by a reload apply to connections opened
    /// after it.
    pub passthrough: bool,
    /// Compress what wsnorm sends the backend. Off: the backend leg is the pod's loopback, where
    /// compressing only costs CPU at both ends; messages go to it uncompressed (RSV1 clear, as
    /// RFC 7692 allows per message) and no deflater is kept for it. The backend still compresses
    /// what it sends, and with `passthrough` that is what the client gets. On: for a backend
    /// across a network.
    pub compress_to_backend: bool,
    /// zlib level, 0 (stored) to 9. 7: the lowest at which zlib-ng compresses agent output as
    /// well as the backend's zlib at its default, 6 (zlib-ng's 6 uses a faster
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
            peer_context_takeover: false,
            passthrough: true,
            compress_to_backend: false,
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
             peer_context_takeover = {}, passthrough = {}, compress_to_backend = {}, level = {}, \
             min_message_bytes = {}\n",
            self.client,
            self.backend,
            self.window_bits,
            self.context_takeover,
            self.peer_context_takeover,
            self.passthrough,
            self.compress_to_backend,
            self.level,
            self.min_message_bytes
        )
    }
}
