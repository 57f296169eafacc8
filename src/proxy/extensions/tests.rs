use super::*;

fn config() -> CompressionConfig {
    CompressionConfig::default()
}

/// The default, but the peers keep their context too (`peer_context_takeover = true`).
fn peers_keep_context() -> CompressionConfig {
    CompressionConfig {
        peer_context_takeover: true,
        ..config()
    }
}

fn window(bits: u8, no_context_takeover: bool) -> Window {
    Window {
        bits,
        no_context_takeover,
    }
}

/// The backend offer's header when no passthrough is planned.
fn offer(config: &CompressionConfig) -> String {
    backend_offer(config, None).unwrap().header()
}

/// The backend's answer checked against that offer.
fn answer<'a>(
    values: impl IntoIterator<Item = &'a str>,
    config: &CompressionConfig,
) -> Result<Option<Agreed>, String> {
    check_backend_answer(values, backend_offer(config, None).as_ref())
}

fn accept(offer: &str) -> Option<Agreed> {
    accept_client_offer([offer], &peers_keep_context())
}

#[test]
fn what_browsers_and_python_offer_is_accepted() {
    // Chrome and Firefox.
    let chrome = accept("permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(chrome.header, "permessage-deflate");
    assert_eq!(
        chrome.deflate,
        LegDeflate {
            send: window(15, false),
            receive: window(15, false)
        }
    );
    // python websockets' client.
    let python =
        accept("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12").unwrap();
    assert_eq!(
        python.header,
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    );
    assert_eq!(python.deflate.send, window(12, false));
    assert_eq!(python.deflate.receive, window(12, false));
    // Plain, as curl-style clients and Safari send it.
    assert_eq!(
        accept("permessage-deflate").unwrap().header,
        "permessage-deflate"
    );
}

#[test]
fn the_first_offer_that_can_be_honoured_is_taken() {
    let agreed = accept(
        "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, \
         permessage-deflate; foo, permessage-deflate; client_max_window_bits; client_max_window_bits, \
         permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    )
    .unwrap();
    assert_eq!(
        agreed.header,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(agreed.deflate.send, window(15, true));
    assert_eq!(agreed.deflate.receive, window(15, true));
    // Offers spread over two header lines count as one list.
    let two = accept_client_offer(
        ["foo", "permessage-deflate; server_max_window_bits=10"],
        &peers_keep_context(),
    )
    .unwrap();
    assert_eq!(two.deflate.send, window(10, false));
}

#[test]
fn invalid_offers_are_declined() {
    for offer in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=1x",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; mystery",
        "permessage-deflate; client_max_window_bits=\"1 5\"",
        "permessage-deflate; =",
        "permessage-deflate foo",
        "x-webkit-deflate-frame",
        "",
    ] {
        assert_eq!(accept(offer), None, "{offer}");
    }
    // A quoted value is the value.
    assert_eq!(
        accept("permessage-deflate; client_max_window_bits=\"10\"")
            .unwrap()
            .deflate
            .receive,
        window(10, false)
    );
}

#[test]
fn the_config_bounds_the_answer() {
    let small = CompressionConfig {
        window_bits: 11,
        context_takeover: false,
        ..config()
    };
    let agreed =
        accept_client_offer(["permessage-deflate; client_max_window_bits"], &small).unwrap();
    assert_eq!(
        agreed.header,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=11; client_max_window_bits=11"
    );
    // Without client_max_window_bits in the offer, the client's window cannot be bounded.
    let agreed = accept_client_offer(["permessage-deflate"], &small).unwrap();
    assert_eq!(agreed.deflate.receive, window(15, true));
    assert!(!agreed.header.contains("client_max_window_bits"));
    // server_max_window_bits=8 is honoured (compressed with a 9-bit window, see deflate.rs).
    let eight = accept("permessage-deflate; server_max_window_bits=8").unwrap();
    assert_eq!(eight.deflate.send, window(8, false));
    let off = CompressionConfig {
        client: false,
        ..config()
    };
    assert_eq!(accept_client_offer(["permessage-deflate"], &off), None);
}

#[test]
fn by_default_peers_are_asked_to_compress_each_message_on_its_own() {
    // The client leg: asked in the answer whatever the offer said (RFC 7692 §7.1.1.2).
    let chrome =
        accept_client_offer(["permessage-deflate; client_max_window_bits"], &config()).unwrap();
    assert_eq!(
        chrome.header,
        "permessage-deflate; client_no_context_takeover"
    );
    assert_eq!(
        chrome.deflate,
        LegDeflate {
            send: window(15, false),
            receive: window(15, true)
        }
    );
    // The backend leg: asked in the offer, and an answer without it fails.
    assert_eq!(
        offer(&config()),
        "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    );
    let agreed = answer(
        ["permessage-deflate; server_no_context_takeover"],
        &config(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(agreed.deflate.send, window(15, false));
    assert_eq!(agreed.deflate.receive, window(15, true));
    assert!(answer(["permessage-deflate"], &config()).is_err());
}

#[test]
fn the_backend_offer_follows_the_config() {
    assert_eq!(
        offer(&peers_keep_context()),
        "permessage-deflate; client_max_window_bits"
    );
    let small = CompressionConfig {
        window_bits: 10,
        context_takeover: false,
        ..config()
    };
    assert_eq!(
        offer(&small),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits"
    );
    let off = CompressionConfig {
        backend: false,
        ..config()
    };
    assert_eq!(backend_offer(&off, None), None);
}

#[test]
fn the_backend_answer_must_keep_to_the_offer() {
    let check = |value: &str| answer([value], &peers_keep_context());
    assert_eq!(answer([], &config()), Ok(None));
    let python = check("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
        .unwrap()
        .unwrap();
    assert_eq!(python.deflate.send, window(12, false));
    assert_eq!(python.deflate.receive, window(12, false));
    let plain = check("permessage-deflate").unwrap().unwrap();
    assert_eq!(plain.deflate.send, window(15, false));
    let no_context =
        check("permessage-deflate; client_no_context_takeover; server_no_context_takeover")
            .unwrap()
            .unwrap();
    assert_eq!(no_context.deflate.send, window(15, true));
    assert_eq!(no_context.deflate.receive, window(15, true));
    for bad in [
        "x-custom",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; mystery=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; =",
    ] {
        assert!(check(bad).is_err(), "{bad}");
    }
    // What was asked for must be in the answer.
    let small = CompressionConfig {
        window_bits: 10,
        context_takeover: false,
        ..config()
    };
    let both = "permessage-deflate; server_no_context_takeover; server_max_window_bits=10";
    assert!(answer([both], &small).unwrap().is_some());
    for bad in [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
    ] {
        assert!(answer([bad], &small).is_err(), "{bad}");
    }
    // Nothing offered: any extension fails.
    let off = CompressionConfig {
        backend: false,
        ..config()
    };
    assert!(answer(["permessage-deflate"], &off).is_err());
}

#[test]
fn passthrough_offers_the_backend_what_the_client_reads() {
    // The client agreed to read a 12-bit window with context: so may the backend write.
    let client = window(12, false);
    let offered = backend_offer(&config(), Some(client)).unwrap();
    assert_eq!(
        offered.header(),
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits"
    );
    let agreed = check_backend_answer(
        ["permessage-deflate; server_max_window_bits=12"],
        Some(&offered),
    )
    .unwrap()
    .unwrap();
    assert_eq!(agreed.deflate.receive, window(12, false));
    assert!(check_backend_answer(["permessage-deflate"], Some(&offered)).is_err());
    // A client that asked for no context: the backend is asked the same.
    let offered = backend_offer(&config(), Some(window(15, true))).unwrap();
    assert_eq!(
        offered.header(),
        "permessage-deflate; server_no_context_takeover; client_max_window_bits"
    );
    assert!(check_backend_answer(["permessage-deflate"], Some(&offered)).is_err());
    // A client that reads 8 bits: not passed through (zlib cannot write raw 8-bit streams).
    let eight = accept("permessage-deflate; server_max_window_bits=8").unwrap();
    assert_eq!(passthrough_window(&eight), None);
    let twelve = accept("permessage-deflate; server_max_window_bits=12").unwrap();
    assert_eq!(passthrough_window(&twelve), Some(window(12, false)));
}
