//! Offsets: the Redis stream entry ids that order every tracked packet of a namespace
//! (`<milliseconds>-<sequence>`), and how one rides on an event as its last argument.

use std::fmt;
use std::str::FromStr;

use socketioxide::socket::Sid;
use socketioxide_core::{Str, Value};

/// A stream entry id. Ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl Offset {
    /// `0-0`: before every entry.
    pub const ZERO: Offset = Offset { ms: 0, seq: 0 };
}

/// Not a stream entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a stream offset (<ms>-<seq>)")]
pub struct BadOffset(pub String);

impl FromStr for Offset {
    type Err = BadOffset;
    fn from_str(s: &str) -> Result<Offset, BadOffset> {
        let bad = || BadOffset(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Offset {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The event `data` (a JSON array `["event", args…]`, attachments aside) with `offset` appended
/// as its last argument — what socket.io-client reads as the offset of the last event it
/// processed. `None` for data that is not a JSON array (the msgpack parser's binary form).
pub fn with_offset(data: &Value, offset: Offset) -> Option<Value> {
    let Value::Str(json, bins) = data else {
        return None;
    };
    let text = json.as_str().trim_end();
    let body = text.strip_suffix(']')?;
    if !text.starts_with('[') {
        return None;
    }
    let sep = if body.trim_end() == "[" { "" } else { "," };
    let appended = format!("{body}{sep}\"{offset}\"]");
    Some(Value::Str(Str::from(appended), bins.clone()))
}

/// A new private session id: 128 random bits, URL-safe.
pub fn new_pid() -> String {
    // Two engine session ids' worth of randomness, without their tag.
    let a = Sid::new();
    let b = Sid::new();
    format!("{}{}", a.as_str(), &b.as_str()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_order_and_print() {
        let a: Offset = "1732765432123-0".parse().expect("offset");
        let b: Offset = "1732765432123-7".parse().expect("offset");
        let c: Offset = "1732765432124-0".parse().expect("offset");
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1732765432123-7");
        for bad in [
            "",
            "12",
            "a-1",
            "1-",
            "-1",
            "1-2-3",
            "99999999999999999999999-1",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_offset_is_the_last_argument() {
        let o: Offset = "5-1".parse().expect("offset");
        let v = Value::Str(Str::from(r#"["chat:message",{"a":1}]"#.to_string()), None);
        let Some(Value::Str(s, None)) = with_offset(&v, o) else {
            panic!("not a string value");
        };
        assert_eq!(s.as_str(), r#"["chat:message",{"a":1},"5-1"]"#);
        let bins = Some(std::collections::VecDeque::from([
            bytes::Bytes::from_static(b"x"),
        ]));
        let v = Value::Str(
            Str::from(r#"["bin",{"_placeholder":true,"num":0}]"#.to_string()),
            bins.clone(),
        );
        let Some(Value::Str(s, b)) = with_offset(&v, o) else {
            panic!("not a string value");
        };
        assert_eq!(s.as_str(), r#"["bin",{"_placeholder":true,"num":0},"5-1"]"#);
        assert_eq!(b, bins);
        assert!(with_offset(&Value::Bytes(bytes::Bytes::from_static(b"\x91")), o).is_none());
        assert!(with_offset(&Value::Str(Str::from("{}".to_string()), None), o).is_none());
    }

    #[test]
    fn pids_are_long_and_distinct() {
        let (a, b) = (new_pid(), new_pid());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
