//! The bridge to the rules: a text message in, where it goes (and as what) out.

use std::time::Instant;

use tracing::debug;

use super::buffers::free_if_large;
use super::frames;
use super::metrics::MessageKind;
use super::RelayContext;
use crate::rules::{Direction, OnOversizedRewrite, Outcome, UnixTime};

thread_local! {
    /// The buffer the rules wrote the last rewritten message into, lent to the next: it is
    /// copied into the leg's output at once, so one per thread does for every connection.
    static REWRITE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Where a text message goes after the rules.
pub(super) enum Forward {
    /// To the other leg, as received.
    Original,
    /// To the other leg, rewritten.
    Rewritten(Vec<u8>),
    /// Back to the sender (a rejected message).
    Back(Vec<u8>),
    /// Nowhere: the sender's leg is closed with 1009 (a rewrite over the size limit).
    Close,
}

impl Forward {
    /// A reply of the engine to the sender, as valid UTF-8 whatever happens: it goes in a text
    /// frame.
    fn back(reply: Vec<u8>) -> Forward {
        Forward::Back(String::from_utf8_lossy(&reply).into_owned().into_bytes())
    }
}

/// Applies the rules of `dir` to a text message.
pub(super) fn transform(text: &str, dir: Direction, ctx: &RelayContext) -> Forward {
    let rules = ctx.rules.as_ref().filter(|_| !ctx.deflate.passes(dir));
    let rules = rules.map(|rules| rules.load());
    let Some(rules) = rules.filter(|rules| rules.applies_to(dir)) else {
        // No rule for this direction: not parsed, so not known to be JSON.
        ctx.route_metrics
            .message(dir, MessageKind::Text, text.len());
        return Forward::Original;
    };
    let started = Instant::now();
    let outcome = rules.apply_text_into(
        dir,
        text,
        UnixTime::now,
        &mut ctx.metrics.rules.observer(),
        REWRITE_BUFFER.take(),
    );
    let kind = if matches!(outcome, Outcome::NotJson) {
        debug!(parent: &ctx.log.span(), direction = dir.as_str(), bytes = text.len(), "Message is not JSON the rules can read; forwarded unchanged.");
        MessageKind::Text
    } else {
        ctx.metrics
            .rules
            .conversion(dir, started.elapsed().as_secs_f64());
        MessageKind::Json
    };
    ctx.route_metrics.message(dir, kind, text.len());
    match outcome {
        Outcome::Unchanged | Outcome::NotJson => Forward::Original,
        // The engine splices UTF-8 into UTF-8; should that ever break, send the original.
        Outcome::Rewritten(bytes) if frames::utf8(&bytes).is_ok() => Forward::Rewritten(bytes),
        Outcome::Rewritten(_) => Forward::Original,
        Outcome::Rejected { reply, rule } => {
            debug!(parent: &ctx.log.span(), rule = %rule, direction = dir.as_str(), "Message rejected by a rule; the sender was told.");
            Forward::back(reply)
        }
        Outcome::TooLarge { reply, len } => {
            let settings = rules.settings();
            let policy = settings.on_oversized_rewrite;
            debug!(parent: &ctx.log.span(), direction = dir.as_str(), bytes = len, limit = settings.max_output_bytes, policy = policy.as_str(), "Rewritten message would exceed max_message_bytes; not forwarded.");
            match policy {
                OnOversizedRewrite::Reject => Forward::back(reply),
                OnOversizedRewrite::Close => Forward::Close,
            }
        }
    }
}

/// Lends the buffer of a rewritten message, once relayed, to the next rewrite on this thread.
pub(super) fn recycle(mut bytes: Vec<u8>) {
    free_if_large(&mut bytes);
    REWRITE_BUFFER.set(bytes);
}
