//! Property tests (proptest, 256 cases each) of every parser in iogate-lb that sees client or
//! backend bytes: the Engine.IO request classification and its query reader, the open-packet
//! reader fed in arbitrary chunks, the long-polling fast path's request and response heads and
//! its chunked-body scanner, the cookie reader, the HTTPS redirect's Location, and the config
//! loader. Each says
//! what must hold for every input, not only for the examples in the unit tests; arbitrary input
//! must never panic.

use std::time::Duration;

use bytes::Bytes;
use iogate_lb::config::LbConfig;
use iogate_lb::engineio::{EioRequest, OpenLearner, parse_open, query_pairs};
use iogate_lb::polling::{head, response};
use iogate_lb::redirect::location;
use iogate_lb::request::cookie;
use pingora_http::RequestHeader;
use proptest::prelude::*;

proptest! {
    #![proptest_config(iogate_testkit::proptest_config())]

    #[test]
    fn classify_never_panics_and_only_the_prefix_is_engineio(path in ".{0,64}", query in proptest::option::of(".{0,128}")) {
        let r = EioRequest::classify(&path, query.as_deref(), "/socket.io");
        let on = path == "/socket.io" || path.starts_with("/socket.io/");
        prop_assert_eq!(r.on_path, on);
        if !on {
            prop_assert_eq!(r, EioRequest::default());
        }
    }

    #[test]
    fn a_sid_in_the_query_is_read_back_exactly(sid in "[^\u{0}]{1,40}", ws in any::<bool>(), extra in "[a-z]{1,8}") {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("EIO", "4");
        q.append_pair(&extra, "x");
        q.append_pair("transport", if ws { "websocket" } else { "polling" });
        q.append_pair("sid", &sid);
        let q = q.finish();
        let r = EioRequest::classify("/socket.io/", Some(&q), "/socket.io");
        prop_assert_eq!(r.sid.as_deref(), Some(sid.as_str()));
        prop_assert_eq!(r.websocket, ws);
        prop_assert!(!r.is_handshake());
    }

    #[test]
    fn the_query_reader_decodes_as_form_urlencoded_does(q in "[a-z0-9%+=&A-F\u{e9} ]{0,80}") {
        let ours: Vec<(String, String)> =
            query_pairs(&q).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let theirs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn the_fast_paths_head_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = head::parse(&bytes, "/socket.io", None, false, Some("x-key"));
        let _ = response::parse(&bytes, false);
        let _ = response::parse(&bytes, true);
        let _ = response::Chunked::default().feed(&bytes, Some(&mut Vec::new()));
    }

    #[test]
    fn a_chunked_body_ends_where_it_ends_whatever_the_chunking(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..5),
        trailer in any::<bool>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(if trailer { &b"0\r\nX-T: 1\r\n\r\n"[..] } else { b"0\r\n\r\n" });
        let end = body.len();
        body.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        points.push(0);
        points.push(body.len());
        points.sort_unstable();
        points.dedup();
        let mut scanner = response::Chunked::default();
        let mut data = Vec::new();
        let mut found = None;
        for w in points.windows(2) {
            if let Some(n) = scanner.feed(&body[w[0]..w[1]], Some(&mut data)).map_err(|e| TestCaseError::fail(e.to_string()))? {
                found = Some(w[0] + n);
                break;
            }
        }
        prop_assert_eq!(found, Some(end));
        prop_assert_eq!(data, chunks.concat());
    }

    #[test]
    fn parse_open_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_open(&body);
    }

    #[test]
    fn the_open_packet_is_learned_whatever_the_chunking(
        sid in "[A-Za-z0-9_.-]{1,32}",
        interval in 1u64..100_000,
        timeout in 1u64..100_000,
        v3 in any::<bool>(),
        tail in "[^\u{0}]{0,64}",
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let open = format!(r#"0{{"sid":"{sid}","upgrades":["websocket"],"pingInterval":{interval},"pingTimeout":{timeout},"maxPayload":1000000}}"#);
        let body = if v3 {
            format!("{}:{open}", open.chars().count())
        } else {
            format!("{open}\u{1e}4{tail}")
        };
        let bytes = body.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.push(0);
        points.push(bytes.len());
        points.sort_unstable();
        points.dedup();
        let mut learner = OpenLearner::default();
        let mut relayed = Vec::new();
        let mut found = None;
        for (i, w) in points.windows(2).enumerate() {
            let last = i + 2 == points.len();
            let mut chunk = Some(Bytes::copy_from_slice(&bytes[w[0]..w[1]]));
            // As the proxy does: the learner sees chunks until it has answered, then the rest
            // of the body is relayed as it comes.
            if found.is_none() {
                found = learner.feed(&mut chunk, last);
            }
            if let Some(c) = chunk {
                relayed.extend_from_slice(&c);
            }
        }
        let open = found.flatten();
        prop_assert!(open.is_some(), "not learned from {:?}", body);
        let open = open.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(open.sid, sid);
        prop_assert_eq!(open.heartbeat, Duration::from_millis(interval + timeout));
        prop_assert_eq!(relayed, bytes.to_vec(), "the body is relayed whole and in order");
    }

    #[test]
    fn cookie_reader_never_panics(value in "[ -~]{0,200}", name in "[ -~]{0,16}") {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap_or_else(|_| unreachable!());
        if req.insert_header("cookie", value.as_str()).is_ok() {
            let _ = cookie(&req, &name);
        }
    }

    #[test]
    fn the_first_cookie_of_a_name_is_found(
        pairs in proptest::collection::vec(("[a-z]{1,6}", "[A-Za-z0-9._-]{0,12}"), 1..8),
        pick in any::<prop::sample::Index>(),
    ) {
        let header = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap_or_else(|_| unreachable!());
        req.insert_header("cookie", header.as_str()).unwrap_or_else(|_| unreachable!());
        let name = &pairs[pick.index(pairs.len())].0;
        let first = pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        prop_assert_eq!(cookie(&req, name), first);
    }

    #[test]
    fn a_redirect_location_is_https_to_a_plain_host(host in ".{0,64}", path in ".{0,64}", port in 1u16..) {
        if let Some(l) = location(&host, &path, port) {
            prop_assert!(l.starts_with("https://"), "{}", l);
            let authority = l["https://".len()..].split('/').next().unwrap_or("");
            prop_assert!(
                authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b)),
                "{}", l
            );
            prop_assert!(!l.chars().any(char::is_control), "{:?}", l);
        }
    }

    #[test]
    fn the_config_loader_never_panics(text in "(?s).{0,400}") {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("lb.yaml");
        std::fs::write(&path, &text).unwrap_or_else(|_| unreachable!());
        let _ = LbConfig::load(&path);
    }

    #[test]
    fn a_cut_shipped_config_loads_or_names_a_line(cut in any::<prop::sample::Index>()) {
        let example = include_str!("../../config/lb.yaml");
        let mut end = cut.index(example.len() + 1);
        while !example.is_char_boundary(end) {
            end -= 1;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("lb.yaml");
        std::fs::write(&path, &example[..end]).unwrap_or_else(|_| unreachable!());
        // Any prefix of the example either loads or is refused with messages that name the file.
        if let Err(e) = LbConfig::load(&path) {
            prop_assert!(!e.errors.is_empty());
            prop_assert!(e.errors.iter().all(|fe| !fe.message.is_empty()));
            prop_assert!(e.to_string().contains("lb.yaml"), "{}", e);
        }
    }
}
