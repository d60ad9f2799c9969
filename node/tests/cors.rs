//! CORS on the Engine.IO endpoint: none by default (same origin only), `*` without
//! credentials, a list of origins with credentials — checked on the response headers of a real
//! node, preflight and handshake.

use iogate_testkit::{Node, http_raw};

fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn handshake(port: u16, origin: &str) -> String {
    http_raw(
        port,
        &format!(
            "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
        ),
    )
}

fn preflight(port: u16, origin: &str) -> String {
    http_raw(
        port,
        &format!(
            "OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        ),
    )
}

#[test]
fn cors_is_off_by_default_star_has_no_credentials_and_a_list_has() {
    let evil = "https://evil.example";
    let app = "https://app.example";

    let none = Node::start("cors0", &["--redis-url", "none"]);
    let r = handshake(none.port, evil);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
    assert_eq!(header(&r, "access-control-allow-credentials"), None, "{r}");

    let star = Node::start_with_config(
        "cors1",
        &["--redis-url", "none"],
        Some("engineio:\n  cors_origins: [\"*\"]\n"),
    );
    for r in [handshake(star.port, evil), preflight(star.port, evil)] {
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"), "{r}");
        assert_eq!(header(&r, "access-control-allow-credentials"), None, "{r}");
    }

    let list = Node::start_with_config(
        "cors2",
        &["--redis-url", "none"],
        Some(&format!("engineio:\n  cors_origins: [\"{app}\"]\n")),
    );
    for r in [handshake(list.port, app), preflight(list.port, app)] {
        assert_eq!(header(&r, "access-control-allow-origin"), Some(app), "{r}");
        assert_eq!(
            header(&r, "access-control-allow-credentials"),
            Some("true"),
            "{r}"
        );
    }
    for r in [handshake(list.port, evil), preflight(list.port, evil)] {
        assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
    }
}
