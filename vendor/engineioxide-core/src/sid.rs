use std::{fmt, str::FromStr, sync::RwLock};

use base64::Engine;
use rand::RngExt;

// iogate patch (vendor/engineioxide-core/PATCHED.md): a session id may carry a short node tag
// before its 96 random bits, `{tag}.{16 random chars}`, so a load balancer can route a session it
// has never seen to the node that minted it. Untagged ids (16 chars) are what upstream generates
// and still parse.

/// Longest node tag a session id may carry (iogate patch).
pub const MAX_TAG_LEN: usize = 8;
const RANDOM_LEN: usize = 16;
const MAX_LEN: usize = MAX_TAG_LEN + 1 + RANDOM_LEN;

/// The tag [`Sid::new_session`] puts in front of new session ids (iogate patch).
static SESSION_TAG: RwLock<Option<([u8; MAX_TAG_LEN], u8)>> = RwLock::new(None);

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A session id made of 96 random bits, represented as a 16 char url-safe base64 string,
/// optionally preceded by a node tag and a dot (iogate patch).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid {
    buf: [u8; MAX_LEN],
    len: u8,
}

impl Sid {
    /// A zeroed session id
    pub const ZERO: Self = Self {
        buf: [0u8; MAX_LEN],
        len: RANDOM_LEN as u8,
    };
    /// Generate a new random session id (base64 16 chars)
    pub fn new() -> Self {
        Self::default()
    }

    /// Get the session id as a string
    pub const fn as_str(&self) -> &str {
        let (id, _) = self.buf.split_at(self.len as usize);
        // SAFETY: SID is always an ASCII string (base64 chars, tag chars and a dot)
        unsafe { std::str::from_utf8_unchecked(id) }
    }

    /// Set the node tag of the session ids [`Sid::new_session`] generates from now on (iogate
    /// patch). `None` goes back to untagged ids. A tag is 1 to [`MAX_TAG_LEN`] url-safe base64
    /// characters (`A-Z a-z 0-9 _ -`).
    pub fn set_session_tag(tag: Option<&str>) -> Result<(), SidDecodeError> {
        let value = match tag {
            None => None,
            Some(t) => {
                if t.is_empty() || t.len() > MAX_TAG_LEN {
                    return Err(SidDecodeError::InvalidLength);
                }
                if !t.bytes().all(is_id_byte) {
                    return Err(SidDecodeError::InvalidBase64String);
                }
                let mut buf = [0u8; MAX_TAG_LEN];
                buf[..t.len()].copy_from_slice(t.as_bytes());
                Some((buf, t.len() as u8))
            }
        };
        match SESSION_TAG.write() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
        Ok(())
    }

    /// A new id for an Engine.IO session: `{tag}.{random}` when a tag is set with
    /// [`Sid::set_session_tag`], else the same as [`Sid::new`] (iogate patch).
    pub fn new_session() -> Self {
        let tag = match SESSION_TAG.read() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        };
        let random = Self::default();
        let Some((tag, tag_len)) = tag else {
            return random;
        };
        let tag_len = tag_len as usize;
        let mut id = Self {
            buf: [0u8; MAX_LEN],
            len: (tag_len + 1 + RANDOM_LEN) as u8,
        };
        id.buf[..tag_len].copy_from_slice(&tag[..tag_len]);
        id.buf[tag_len] = b'.';
        id.buf[tag_len + 1..tag_len + 1 + RANDOM_LEN].copy_from_slice(random.as_str().as_bytes());
        id
    }

    /// The node tag of a tagged id (iogate patch).
    pub fn tag(&self) -> Option<&str> {
        self.as_str().split_once('.').map(|(tag, _)| tag)
    }
}

/// Error type for [`Sid::from_str`]
#[derive(Debug)]
pub enum SidDecodeError {
    /// Invalid base64 string
    InvalidBase64String,
    /// Invalid length
    InvalidLength,
}
impl fmt::Display for SidDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SidDecodeError::InvalidBase64String => write!(f, "Invalid url base64 string"),
            SidDecodeError::InvalidLength => write!(f, "Invalid sid length"),
        }
    }
}
impl std::error::Error for SidDecodeError {}

impl FromStr for Sid {
    type Err = SidDecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use SidDecodeError::*;

        // `{random}` or `{tag}.{random}` (iogate patch)
        let (tag, random) = match s.split_once('.') {
            Some((tag, random)) => (Some(tag), random),
            None => (None, s),
        };

        // Verify the length of the string
        if random.len() != RANDOM_LEN
            || tag.is_some_and(|t| t.is_empty() || t.len() > MAX_TAG_LEN)
        {
            return Err(InvalidLength);
        }

        // Verify that the string is a valid base64 url safe string without padding
        if !tag.unwrap_or("").bytes().chain(random.bytes()).all(is_id_byte) {
            return Err(InvalidBase64String);
        }
        let mut id = Self {
            buf: [0u8; MAX_LEN],
            len: s.len() as u8,
        };
        id.buf[..s.len()].copy_from_slice(s.as_bytes());
        Ok(id)
    }
}

impl Default for Sid {
    fn default() -> Self {
        let mut random = [0u8; 12]; // 12 bytes = 16 chars base64
        let mut id = Self::ZERO;

        rand::rng().fill(&mut random);

        base64::prelude::BASE64_URL_SAFE_NO_PAD
            .encode_slice(random, &mut id.buf[..RANDOM_LEN])
            .unwrap();

        id
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}
impl serde::Serialize for Sid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

struct SidVisitor;
impl serde::de::Visitor<'_> for SidVisitor {
    type Value = Sid;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a valid sid")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Sid::from_str(v).map_err(serde::de::Error::custom)
    }
}
impl<'de> serde::Deserialize<'de> for Sid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(SidVisitor)
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sid_is_96_bits_encoded_as_16_chars() {
        use base64::Engine;
        let sid = super::Sid::new();
        assert_eq!(sid.as_str().len(), 16);
        let decoded = base64::prelude::BASE64_URL_SAFE_NO_PAD
            .decode(sid.as_str())
            .unwrap();
        assert_eq!(decoded.len() * 8, 96);
    }

    use std::str::FromStr;

    use crate::sid::Sid;

    #[test]
    fn tagged_session_ids() {
        // iogate patch
        assert!(Sid::set_session_tag(Some("toolongtag")).is_err());
        assert!(Sid::set_session_tag(Some("a.b")).is_err());
        Sid::set_session_tag(Some("n1")).unwrap();
        let id = Sid::new_session();
        assert_eq!(id.tag(), Some("n1"));
        assert_eq!(id.as_str().len(), 2 + 1 + 16);
        assert_eq!(Sid::from_str(id.as_str()).unwrap(), id);
        // Request ids and server ids stay untagged.
        assert_eq!(Sid::new().tag(), None);
        Sid::set_session_tag(None).unwrap();
        assert_eq!(Sid::new_session().tag(), None);
        assert!(Sid::from_str(".AA9AAA0AAzAAAAHs").is_err());
        assert!(Sid::from_str("123456789.AA9AAA0AAzAAAAHs").is_err());
        assert!(Sid::from_str("a b.AA9AAA0AAzAAAAHs").is_err());
        assert_eq!(Sid::from_str("tag.AA9AAA0AAzAAAAHs").unwrap().tag(), Some("tag"));
    }

    #[test]
    fn test_sid_from_str() {
        let id = Sid::new();
        let id2 = Sid::from_str(&id.to_string()).unwrap();
        assert_eq!(id, id2);
        let id = Sid::from_str("AA9AAA0AAzAAAAHs").unwrap();
        assert_eq!(id.to_string(), "AA9AAA0AAzAAAAHs");
    }

    #[test]
    fn test_sid_from_str_invalid() {
        let id = Sid::from_str("*$^ùù!").unwrap_err();
        assert_eq!(id.to_string(), "Invalid sid length");
        let id = Sid::from_str("aoassaAZDoin#zd{").unwrap_err();
        assert_eq!(id.to_string(), "Invalid url base64 string");
        let id = Sid::from_str("aoassaAZDoinazd<").unwrap_err();
        assert_eq!(id.to_string(), "Invalid url base64 string");
    }
}
