//! Property tests of the protocol parser over arbitrary and near-valid bytes: no panic, `consumed` within the
//! input, keys and values within the limits, a swallow never larger than the value limit, and
//! compose-then-parse round trips. Bounded (case counts below) to run in a few seconds; for a longer
//! run, `PROPTEST_CASES=200000 cargo test --release -p cache-node --test protocol_fuzz` sets the count.
//!
//! How these fail without the protections: remove the `key.len() <= max_key_len` check in
//! `protocol::valid_key` and `keys_within_limits` finds a long key within a few cases; make `split_line` search
//! the whole buffer instead of the bounded window and `endless_lines_are_bounded` fails (Incomplete instead of
//! LineTooLong, i.e. the connection would buffer without bound).

use bytes::BytesMut;
use cache_node::protocol::{
    decode_key, parse_landed_request, parse_long_get_rest, parse_request, parse_response,
    valid_key, Keys, Limits, LongGetLine, Parsed, ParsedResponse, ProtocolError, Request,
    StoreMode, Swallow, MAX_KEY_LEN,
};
use proptest::prelude::*;

/// The cases each property runs: `default`, or `PROPTEST_CASES` when set (proptest reads it itself
/// only where a test sets no count of its own).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn small_limits() -> Limits {
    Limits {
        max_key_len: 16,
        max_value_len: 64,
        max_line_len: 128,
    }
}

/// Parses the next request as a connection does: within a long get line (`long_get`), its next part.
fn parse_next<'a>(input: &'a [u8], long_get: Option<LongGetLine>, limits: &Limits) -> Parsed<'a> {
    match long_get {
        Some(line) => parse_long_get_rest(input, line, limits),
        None => parse_request(input, limits),
    }
}

fn check_request(input: &[u8], long_get: Option<LongGetLine>, limits: &Limits) {
    match parse_next(input, long_get, limits) {
        Parsed::Incomplete => {
            // Incomplete only while no line end is within the line bound, or a data block is pending.
            let window = &input[..input.len().min(limits.max_line_len + 2)];
            if !window.contains(&b'\n') {
                assert!(
                    input.len() <= limits.max_line_len + 1,
                    "unbounded line buffering"
                );
            }
        }
        Parsed::IncompleteData {
            key,
            line_len,
            data_len,
            ..
        } => {
            // The line is in, the announced data block and its "\r\n" are not: the server may hold room for
            // `data_len` bytes, so it must be within the value limit, and the key is on the line.
            assert!(input[..line_len].ends_with(b"\n"));
            assert!(line_len + data_len + 2 > input.len());
            assert!(data_len <= limits.max_value_len, "announced {data_len}");
            assert!(!key.is_empty() && input[..line_len].windows(key.len()).any(|w| w == key));
        }
        Parsed::GetLinePart { keys, consumed, .. } => {
            // A part of a line too long to buffer: at most a line's worth, ending after a space,
            // within the line, with at least one key and every key within the limits.
            assert!(consumed > 0 && consumed <= limits.max_line_len && consumed <= input.len());
            assert_eq!(input[consumed - 1], b' ');
            assert!(!input[..consumed].contains(&b'\n'));
            check_limits(
                &Request::Get {
                    with_cas: false,
                    touch: None,
                    keys,
                },
                false,
                limits,
            );
        }
        Parsed::Request { request, consumed } => {
            assert!(consumed > 0 && consumed <= input.len());
            check_limits(&request, long_get.is_some(), limits);
        }
        Parsed::Error {
            error,
            consumed,
            swallow,
            unlinks,
            ..
        } => {
            assert!(consumed > 0 && consumed <= input.len());
            if let Some((key, base64)) = unlinks {
                // Only a too-large set or ms removes an item, and then under a key within the limits.
                assert_eq!(error, ProtocolError::TooLarge);
                let mut decoded = [0u8; MAX_KEY_LEN];
                let raw = decode_key(key, base64, &mut decoded).expect("decodes");
                // A base64 key may decode to any bytes (that is what it is for), within the length.
                assert!(
                    if base64 {
                        !raw.is_empty() && raw.len() <= limits.max_key_len
                    } else {
                        valid_key(raw, limits.max_key_len)
                    },
                    "unlinks {key:?}"
                );
            }
            if let Swallow::Bytes(n) = swallow {
                // A swallow is the refused data block: the byte count the client sent, plus "\r\n", and
                // never more than memcached's bound on that count.
                assert!((2..=cache_node::protocol::MAX_DATA_LEN_FIELD + 2).contains(&n));
            }
        }
    }
}

/// `last_part`: the request ends a long get line, and may name no key.
fn check_limits(request: &Request<'_>, last_part: bool, limits: &Limits) {
    let key_ok = |k: &[u8]| assert!(valid_key(k, limits.max_key_len), "bad key {k:?}");
    match *request {
        Request::Get { keys, .. } => {
            let mut n = 0;
            for k in keys.iter() {
                key_ok(k);
                n += 1;
            }
            assert!(n > 0 || last_part);
        }
        Request::Store { key, data, .. } | Request::LeaseSet { key, data, .. } => {
            key_ok(key);
            assert!(data.len() <= limits.max_value_len);
        }
        Request::Delete { key, .. }
        | Request::Arith { key, .. }
        | Request::Touch { key, .. }
        | Request::LeaseGet { key } => key_ok(key),
        Request::Meta {
            key, flags, data, ..
        } => {
            if flags.base64_key {
                let mut out = [0u8; cache_node::protocol::MAX_KEY_LEN];
                let k = cache_node::protocol::decode_key(key, true, &mut out).expect("decodes");
                assert!(!k.is_empty() && k.len() <= limits.max_key_len);
            } else {
                key_ok(key);
            }
            assert!(data.len() <= limits.max_value_len);
        }
        _ => {}
    }
}

/// Parses a whole buffer as a connection would (requests one after another, honouring swallows).
fn parse_stream(mut input: &[u8], limits: &Limits) {
    let mut guard = 0;
    let mut long_get = None;
    while !input.is_empty() {
        guard += 1;
        assert!(guard < 10_000);
        check_request(input, long_get, limits);
        match parse_next(input, long_get, limits) {
            Parsed::Incomplete | Parsed::IncompleteData { .. } => return,
            Parsed::GetLinePart { line, consumed, .. } => {
                long_get = Some(line);
                input = &input[consumed..];
            }
            Parsed::Request { consumed, .. } => {
                long_get = None;
                input = &input[consumed..];
            }
            Parsed::Error {
                consumed, swallow, ..
            } => {
                long_get = None;
                input = &input[consumed..];
                match swallow {
                    Swallow::Nothing => {}
                    Swallow::Bytes(n) => input = &input[n.min(input.len())..],
                    Swallow::ThroughNewline => match input.iter().position(|b| *b == b'\n') {
                        Some(p) => input = &input[p + 1..],
                        None => return,
                    },
                }
            }
        }
    }
}

/// Near-valid requests: command words, keys, numbers and flags glued with spaces and line ends.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"get".to_vec()),
        Just(b"gets".to_vec()),
        Just(b"gat".to_vec()),
        Just(b"set".to_vec()),
        Just(b"cas".to_vec()),
        Just(b"append".to_vec()),
        Just(b"incr".to_vec()),
        Just(b"delete".to_vec()),
        Just(b"touch".to_vec()),
        Just(b"flush_all".to_vec()),
        Just(b"mg".to_vec()),
        Just(b"ms".to_vec()),
        Just(b"md".to_vec()),
        Just(b"ma".to_vec()),
        Just(b"mn".to_vec()),
        Just(b"lease-get".to_vec()),
        Just(b"lease-set".to_vec()),
        Just(b"noreply".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        "[a-zA-Z0-9:_]{1,24}".prop_map(|s| s.into_bytes()),
        "[0-9]{1,3}".prop_map(|s| s.into_bytes()),
        "-?[0-9]{1,21}".prop_map(|s| s.into_bytes()),
        "[vkcfhlqstuObNRTCEFIMDJx][A-Za-z0-9=+/]{0,4}".prop_map(|s| s.into_bytes()),
        prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(token(), 0..40).prop_map(|ts| {
        let mut out = Vec::new();
        for (i, t) in ts.iter().enumerate() {
            if i > 0 && !t.starts_with(b"\r") && !t.starts_with(b"\n") {
                out.push(b' ');
            }
            out.extend_from_slice(t);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(800), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
        parse_stream(&input, &small_limits());
        parse_stream(&input, &Limits::default());
        let _ = parse_response(&input, &small_limits());
    }

    /// A landed block beside any bytes: no panic, and what is consumed is within the buffer.
    #[test]
    fn landed_blocks_never_panic(input in near_valid(), data in prop::collection::vec(any::<u8>(), 0..80)) {
        for limits in [small_limits(), Limits::default()] {
            match parse_landed_request(&input, &data, &limits) {
                Parsed::Request { consumed, .. } | Parsed::Error { consumed, .. } => {
                    prop_assert!(consumed <= input.len());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn keys_within_limits(input in near_valid()) {
        parse_stream(&input, &small_limits());
        let mut rest = &input[..];
        while let ParsedResponse::Response { consumed, .. } = parse_response(rest, &small_limits()) {
            prop_assert!(consumed > 0 && consumed <= rest.len());
            rest = &rest[consumed..];
        }
    }

    #[test]
    fn endless_lines_are_bounded(len in 129usize..2000, byte in 0x21u8..0x7f) {
        let input = vec![byte; len];
        match parse_request(&input, &small_limits()) {
            Parsed::Error { swallow: Swallow::ThroughNewline, consumed, .. } => prop_assert_eq!(consumed, len),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// A get line of any length is read in parts of at most a line each, whatever the reads it
    /// arrives in, and they name every key of the line in order; a bad key refuses the rest of the
    /// line only (its CLIENT_ERROR after the values of the parts before it), and the request after
    /// the line is read as itself. Fails if a part drops or repeats the key cut at a read or window
    /// edge, or if the rest of a long line is read as requests of its own.
    #[test]
    fn long_get_lines_name_every_key(
        keys in prop::collection::vec("[a-z0-9]{1,16}", 1..300),
        spaces in prop::collection::vec(1usize..4, 300),
        command in prop_oneof![Just(("get", None)), Just(("gets", None)), Just(("gat", Some(10))), Just(("gats", Some(-1)))],
        bad_at in prop::option::of(0usize..300),
        reads in prop::collection::vec(1usize..200, 1..50),
    ) {
        let limits = small_limits();
        let (verb, touch) = command;
        let with_cas = verb.ends_with('s');
        let mut keys: Vec<Vec<u8>> = keys.into_iter().map(String::into_bytes).collect();
        let bad_at = bad_at.filter(|&b| b < keys.len());
        if let Some(b) = bad_at {
            keys[b] = vec![b'x'; limits.max_key_len + 1];
        }
        let mut input = verb.as_bytes().to_vec();
        if let Some(t) = touch {
            input.extend_from_slice(format!(" {t}").as_bytes());
        }
        for (key, n) in keys.iter().zip(&spaces) {
            input.extend(std::iter::repeat_n(b' ', *n));
            input.extend_from_slice(key);
        }
        input.extend_from_slice(b"\r\nversion\r\n");

        // Read as a connection does: parse what has arrived, honour swallows, carry the line's state.
        let (mut named, mut outcomes) = (Vec::new(), Vec::new());
        let (mut pos, mut arrived, mut long_get, mut swallowing) = (0, 0, None, false);
        let mut reads = reads.iter().cycle();
        while pos < input.len() {
            prop_assert!(arrived < input.len(), "stuck at {} of {}", pos, input.len());
            arrived = (arrived + reads.next().unwrap()).min(input.len());
            loop {
                if swallowing {
                    match input[pos..arrived].iter().position(|b| *b == b'\n') {
                        Some(i) => (pos, swallowing) = (pos + i + 1, false),
                        None => pos = arrived,
                    }
                }
                if pos == arrived {
                    break;
                }
                match parse_next(&input[pos..arrived], long_get, &limits) {
                    Parsed::Incomplete => break,
                    Parsed::GetLinePart { line, keys, consumed } => {
                        prop_assert_eq!(line, LongGetLine { with_cas, touch });
                        named.extend(keys.iter().map(<[u8]>::to_vec));
                        long_get = Some(line);
                        pos += consumed;
                    }
                    Parsed::Request { request: Request::Get { with_cas: c, touch: t, keys }, consumed } => {
                        prop_assert_eq!((c, t), (with_cas, touch));
                        named.extend(keys.iter().map(<[u8]>::to_vec));
                        outcomes.push("END".to_string());
                        long_get = None;
                        pos += consumed;
                    }
                    Parsed::Request { request: Request::Version, consumed } => {
                        outcomes.push("version".to_string());
                        pos += consumed;
                    }
                    Parsed::Error { error, consumed, swallow, .. } => {
                        outcomes.push(format!("{error:?}"));
                        long_get = None;
                        pos += consumed;
                        swallowing = swallow == Swallow::ThroughNewline;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
        match bad_at {
            None => {
                prop_assert_eq!(&named, &keys);
                prop_assert_eq!(outcomes, ["END", "version"]);
            }
            Some(b) => {
                prop_assert!(keys[..b].starts_with(&named), "{} keys named before key {}", named.len(), b);
                prop_assert_eq!(outcomes, ["BadKey", "version"]);
            }
        }
    }

    #[test]
    fn storage_round_trips(
        key in "[a-zA-Z0-9:_.-]{1,16}",
        flags in any::<u32>(),
        exptime in -100i64..5_000_000_000,
        data in prop::collection::vec(any::<u8>(), 0..64),
        cas in any::<u64>(),
        noreply in any::<bool>(),
        mode in 0usize..6,
    ) {
        let mode = [StoreMode::Set, StoreMode::Add, StoreMode::Replace, StoreMode::Append,
            StoreMode::Prepend, StoreMode::Cas][mode];
        let request = Request::Store {
            mode, key: key.as_bytes(), flags, exptime,
            cas_unique: if mode == StoreMode::Cas { cas } else { 0 }, data: &data, noreply,
        };
        let mut out = BytesMut::new();
        request.compose(&mut out);
        // Every strict prefix is incomplete: a request split anywhere waits for the rest. Once the line is in,
        // the outcome says how long the data block is.
        let line_len = out.len() - data.len() - 2;
        for cut in [out.len() / 3, out.len() / 2, out.len() - 1] {
            let expected = if cut < line_len {
                Parsed::Incomplete
            } else {
                Parsed::IncompleteData {
                    key: key.as_bytes(), line_len, data_len: data.len(), flags, noreply,
                    unlinks: (mode == StoreMode::Set).then_some((key.as_bytes(), false)),
                }
            };
            prop_assert_eq!(parse_request(&out[..cut], &small_limits()), expected);
        }
        // The block read elsewhere (into its item's memory) gives the same request, the buffer
        // holding only the line and the `\r\n`; while part of the block is missing, it waits.
        let without_block = [&out[..line_len], b"\r\n"].concat();
        prop_assert_eq!(
            parse_landed_request(&without_block, &data, &small_limits()),
            Parsed::Request { request, consumed: line_len + 2 }
        );
        if !data.is_empty() {
            let incomplete = matches!(
                parse_landed_request(&without_block, &data[..data.len() - 1], &small_limits()),
                Parsed::IncompleteData { .. }
            );
            prop_assert!(incomplete);
        }
        prop_assert_eq!(
            parse_request(&out, &small_limits()),
            Parsed::Request { request, consumed: out.len() }
        );
    }

    #[test]
    fn only_a_too_large_set_or_ms_with_a_good_key_unlinks(
        command in 0usize..8,
        key in prop_oneof![
            "[a-zA-Z0-9:_]{1,16}",
            "[a-z]{17,20}",
            "[a-z]{1,4}\x01[a-z]{0,4}",
        ],
        len in 60usize..70,
        noreply in any::<bool>(),
        base64 in any::<bool>(),
    ) {
        let limits = small_limits();
        let commands = ["set", "add", "replace", "append", "prepend", "cas", "ms", "lease-set"];
        let noreply = if noreply { " noreply" } else { "" };
        let line = match commands[command] {
            "cas" => format!("cas {key} 0 0 {len} 1{noreply}\r\n"),
            "lease-set" => format!("lease-set {key} 7 0 0 {len}\r\n"),
            "ms" if base64 => {
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&key);
                format!("ms {encoded} {len} b\r\n")
            }
            "ms" => format!("ms {key} {len}\r\n"),
            mode => format!("{mode} {key} 0 0 {len}{noreply}\r\n"),
        };
        let outcome = parse_request(line.as_bytes(), &limits);
        parse_stream(line.as_bytes(), &limits);
        // A base64 key is bounded as sent, before decoding, as memcached bounds it.
        let key_ok = if commands[command] == "ms" && base64 {
            key.len().div_ceil(3) * 4 <= limits.max_key_len
        } else {
            valid_key(key.as_bytes(), limits.max_key_len)
        };
        let unlinks = matches!(commands[command], "set" | "ms") && key_ok && len > limits.max_value_len;
        match outcome {
            Parsed::Error { error: ProtocolError::TooLarge, unlinks: Some(_), .. } => {
                prop_assert!(unlinks, "{}", line)
            }
            Parsed::Error { unlinks: None, .. } | Parsed::IncompleteData { .. } => {
                prop_assert!(!unlinks, "{}", line)
            }
            other => prop_assert!(false, "{}: {:?}", line, other),
        }
    }

    #[test]
    fn get_and_meta_round_trip(keys in prop::collection::vec("[a-z0-9]{1,16}", 1..10), ttl in 0i64..1000) {
        let joined = keys.join(" ");
        let request = Request::Get { with_cas: true, touch: Some(ttl), keys: Keys::from_raw(joined.as_bytes()) };
        let mut out = BytesMut::new();
        request.compose(&mut out);
        // Up to 9 keys of 16 bytes: longer than small_limits' 128-byte line, so allow a longer line here.
        let limits = Limits { max_line_len: 4096, ..small_limits() };
        prop_assert_eq!(parse_request(&out, &limits), Parsed::Request { request, consumed: out.len() });

        let raw = format!("v c t T{ttl} N{ttl} Oq{ttl}");
        let line = format!("mg {} {raw}\r\n", keys[0]);
        let Parsed::Request { request, consumed } = parse_request(line.as_bytes(), &small_limits()) else {
            panic!("{line}")
        };
        prop_assert_eq!(consumed, line.len());
        let Request::Meta { flags, .. } = request else { panic!() };
        prop_assert_eq!(flags.ttl, Some(ttl));
        prop_assert_eq!(flags.vivify_ttl, Some(ttl));
        prop_assert!(flags.return_value && flags.return_cas && flags.return_ttl);
        let mut again = BytesMut::new();
        request.compose(&mut again);
        prop_assert_eq!(&again[..], line.as_bytes());
    }
}
