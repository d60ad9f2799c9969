//! The session-id tag contract between iogate-node and iogate-lb: a session id may be
//! `{tag}.{random}`, the tag naming the node that minted it (engineioxide is patched to issue such
//! ids, see vendor/PATCHED.md; Node.js socket.io does with a `generateId` hook). The LB routes a
//! sid by its tag before anything else.

/// Longest tag.
pub const MAX_TAG_LEN: usize = 8;

/// Whether `tag` is a valid tag: 1 to [`MAX_TAG_LEN`] of `A-Z a-z 0-9 _ -` (URL-safe, no `.`).
pub fn valid_tag(tag: &str) -> bool {
    (1..=MAX_TAG_LEN).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tag of a sid (`tag.random`), if it has one.
pub fn tag_of(sid: &str) -> Option<&str> {
    let (tag, rest) = sid.split_once('.')?;
    (!tag.is_empty() && !rest.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(valid_tag("node-1") && valid_tag("a_B9"));
        assert!(!valid_tag("") && !valid_tag("a.b") && !valid_tag("ninechars"));
        assert_eq!(tag_of("n1.AA9AAA0AAzAAAAHs"), Some("n1"));
        assert_eq!(tag_of("AA9AAA0AAzAAAAHs"), None);
        assert_eq!(tag_of(".AA9AAA0AAzAAAAHs"), None);
        assert_eq!(tag_of("n1."), None);
    }
}
