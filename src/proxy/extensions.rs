//! `permessage-deflate` negotiation (RFC 7692 §5, §7.1) on each leg, on its own: which client
//! offer wsnorm accepts and what it answers, what it offers the backend and whether the
//! backend's answer keeps to that offer. Pure functions over header values, tested without
//! sockets.

use crate::config::CompressionConfig;
use crate::relay::deflate::{LegDeflate, Window};

const PERMESSAGE_DEFLATE: &str = "permessage-deflate";
const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";
/// The window peers use when nothing was negotiated.
const MAX_WINDOW_BITS: u8 = 15;

/// One element of a `Sec-WebSocket-Extensions` list: a name and its parameters, values unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// The extensions of every `Sec-WebSocket-Extensions` value, in order (RFC 6455 §9.1); an
/// element that does not follow the grammar is `None`.
fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Option<Extension>> {
    values
        .into_iter()
        .flat_map(|v| split_outside_quotes(v, ','))
        .filter(|element| !element.trim().is_empty())
        .map(|element| parse_extension(&element))
        .collect()
}

fn parse_extension(element: &str) -> Option<Extension> {
    let mut parts = split_outside_quotes(element, ';').into_iter();
    let name = parts.next()?.trim().to_string();
    if !crate::config::is_token(&name) {
        return None;
    }
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (part.trim(), None),
        };
        if !crate::config::is_token(key) {
            return None;
        }
        params.push((key.to_string(), value));
    }
    Some(Extension { name, params })
}

/// A parameter value: a token, or a quoted string whose content is one (RFC 6455 §9.1).
fn unquote(value: &str) -> Option<String> {
    let inner = match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?.replace('\\', ""),
        None => value.to_string(),
    };
    crate::config::is_token(&inner).then_some(inner)
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// A `*_max_window_bits` value: 8 to 15, in decimal without leading zeros (RFC 7692 §7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// The parameters of a `permessage-deflate` element, each known, valid and given once; `None`
/// otherwise (such an offer is declined, such an answer fails the handshake).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    /// `Some(None)`: given without a value (only allowed for `client_max_window_bits`).
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Each element of `Sec-WebSocket-Extensions` values, in order: the parameters of a valid
/// `permessage-deflate` one, `None` for any other (another extension, bad syntax, unknown,
/// repeated or invalid parameters). For peers written outside wsnorm (the load tool).
pub fn deflate_elements<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Option<Params>> {
    parse(values)
        .into_iter()
        .map(|e| {
            e.filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
                .and_then(|e| Params::read(&e))
        })
        .collect()
}

impl Params {
    fn read(extension: &Extension) -> Option<Params> {
        let mut params = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &extension.params {
            if seen.contains(&key.as_str()) {
                return None;
            }
            seen.push(key);
            match (key.as_str(), value.as_deref()) {
                (SERVER_NO_CONTEXT_TAKEOVER, None) => params.server_no_context_takeover = true,
                (CLIENT_NO_CONTEXT_TAKEOVER, None) => params.client_no_context_takeover = true,
                (SERVER_MAX_WINDOW_BITS, Some(v)) => {
                    params.server_max_window_bits = Some(window_bits(v)?)
                }
                (CLIENT_MAX_WINDOW_BITS, None) => params.client_max_window_bits = Some(None),
                (CLIENT_MAX_WINDOW_BITS, Some(v)) => {
                    params.client_max_window_bits = Some(Some(window_bits(v)?))
                }
                _ => return None,
            }
        }
        Some(params)
    }

    /// The header value, parameters in a fixed order.
    pub fn render(&self) -> String {
        let mut out = PERMESSAGE_DEFLATE.to_string();
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(Some(bits)) => out.push_str(&format!("; client_max_window_bits={bits}")),
            Some(None) => out.push_str("; client_max_window_bits"),
            None => {}
        }
        out
    }
}

/// permessage-deflate agreed on one leg: how each direction is compressed, and the header value
/// that says so (the answer wsnorm wrote, or the backend's answer as wsnorm read it), for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub deflate: LegDeflate,
    pub header: String,
}

/// The client leg: the first `permessage-deflate` offer wsnorm can honour, and the answer for
/// the 101. Offers with unknown, repeated or invalid parameters (and elements that are not
/// valid syntax) are declined, as RFC 7692 §5 asks; `None` when none is left or compression
/// with clients is off.
pub fn accept_client_offer<'a>(
    values: impl IntoIterator<Item = &'a str>,
    config: &CompressionConfig,
) -> Option<Agreed> {
    if !config.client {
        return None;
    }
    let offer = parse(values)
        .into_iter()
        .flatten()
        .filter(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|e| Params::read(&e))?;
    let ours = config.window_bits;
    // wsnorm is the server here: `server_*` is what it sends.
    let send = Window {
        bits: offer
            .server_max_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .min(ours),
        no_context_takeover: offer.server_no_context_takeover || !config.context_takeover,
    };
    // The client's window can only be bounded when it said it supports the parameter.
    let client_bits = offer
        .client_max_window_bits
        .map(|offered| offered.unwrap_or(MAX_WINDOW_BITS).min(ours));
    let receive = Window {
        bits: client_bits.unwrap_or(MAX_WINDOW_BITS),
        // A server may always ask this (§7.1.1.2): every client can start each message afresh.
        no_context_takeover: offer.client_no_context_takeover || !config.peer_context_takeover,
    };
    let answer = Params {
        server_no_context_takeover: send.no_context_takeover,
        client_no_context_takeover: receive.no_context_takeover,
        // Required when offered (§7.1.2.1); otherwise said only when it bounds something.
        server_max_window_bits: (offer.server_max_window_bits.is_some()
            || send.bits < MAX_WINDOW_BITS)
            .then_some(send.bits),
        client_max_window_bits: client_bits
            .filter(|bits| *bits < MAX_WINDOW_BITS || offer.client_max_window_bits != Some(None))
            .map(Some),
    };
    Some(Agreed {
        deflate: LegDeflate { send, receive },
        header: answer.render(),
    })
}

/// The window the backend would be offered for its compressed messages to pass to the client as
/// they are: the client leg's sending window, unless that is 8 bits, which zlib-based backends
/// cannot be asked for (python's zlib refuses a raw 8-bit deflater).
pub fn passthrough_window(client: &Agreed) -> Option<Window> {
    let send = client.deflate.send;
    (send.bits > 8).then_some(send)
}

/// The permessage-deflate offer wsnorm makes the backend, and so what its answer may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateOffer {
    params: Params,
    /// The largest window wsnorm compresses with (`window_bits`), whatever the backend allows.
    send_bits: u8,
}

/// The backend leg's offer (`None` when compression with the backend is off). `passthrough`
/// is the client leg's sending window when the backend's compressed messages are to reach the
/// client as they are: the backend is then asked for no more than the client agreed to read
/// (its window, and no context takeover if the client asked), and may keep its context
/// whatever `peer_context_takeover` says, since wsnorm keeps no inflater for them.
pub fn backend_offer(
    config: &CompressionConfig,
    passthrough: Option<Window>,
) -> Option<DeflateOffer> {
    if !config.backend {
        return None;
    }
    let bits = passthrough.map_or(config.window_bits, |client| client.bits);
    let params = Params {
        server_no_context_takeover: passthrough.map_or(!config.peer_context_takeover, |client| {
            client.no_context_takeover
        }),
        client_no_context_takeover: !config.context_takeover,
        server_max_window_bits: (bits < MAX_WINDOW_BITS).then_some(bits),
        // wsnorm can compress with any window the backend asks for.
        client_max_window_bits: Some(None),
    };
    Some(DeflateOffer {
        params,
        send_bits: config.window_bits,
    })
}

impl DeflateOffer {
    /// The `Sec-WebSocket-Extensions` value.
    pub fn header(&self) -> String {
        self.params.render()
    }
}

/// Checks the backend's `Sec-WebSocket-Extensions` answer against what wsnorm offered (RFC 7692
/// §5, §7.1): `Ok(None)` when it accepted nothing; an error for an extension that was not
/// offered, more than one, or parameters the offer did not allow.
pub fn check_backend_answer<'a>(
    values: impl IntoIterator<Item = &'a str>,
    offer: Option<&DeflateOffer>,
) -> Result<Option<Agreed>, String> {
    let mut extensions = parse(values);
    if extensions.len() > 1 {
        return Err("backend enabled more than one extension".into());
    }
    let (answer, offer, send_bits) = match (extensions.pop(), offer) {
        (None, _) => return Ok(None),
        (Some(Some(e)), Some(offer)) if e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) => {
            (e, &offer.params, offer.send_bits)
        }
        _ => return Err("backend enabled an extension that was not offered".into()),
    };
    let params = Params::read(&answer).ok_or_else(|| {
        "backend answered permessage-deflate with unknown, repeated or invalid parameters"
            .to_string()
    })?;
    if offer.server_no_context_takeover && !params.server_no_context_takeover {
        return Err("backend ignored server_no_context_takeover, which was offered".into());
    }
    match (offer.server_max_window_bits, params.server_max_window_bits) {
        (Some(_), None) => {
            return Err("backend ignored server_max_window_bits, which was offered".into())
        }
        (Some(asked), Some(bits)) if bits > asked => {
            return Err(format!(
                "backend answered server_max_window_bits={bits}, more than the {asked} offered"
            ))
        }
        _ => {}
    }
    let client_bits = match params.client_max_window_bits {
        Some(Some(bits)) => bits,
        Some(None) => return Err("backend answered client_max_window_bits without a value".into()),
        None => MAX_WINDOW_BITS,
    };
    let deflate = LegDeflate {
        // wsnorm is the client here: `client_*` is what it sends.
        send: Window {
            bits: client_bits.min(send_bits),
            no_context_takeover: params.client_no_context_takeover
                || offer.client_no_context_takeover,
        },
        receive: Window {
            bits: params.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
            no_context_takeover: params.server_no_context_takeover,
        },
    };
    Ok(Some(Agreed {
        deflate,
        header: params.render(),
    }))
}

#[cfg(test)]
mod tests;
