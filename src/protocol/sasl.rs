//! SASL PLAIN (RFC 4616) payloads, as carried by binary SASL_AUTH.
//!
//! The message is `authzid \0 authcid \0 passwd`. memgate never acts as
//! someone else, so the authorisation identity is parsed (clients may send
//! one) but the username is what the node authenticates.

use std::fmt;

/// The only mechanism memgate offers and uses.
pub const PLAIN: &str = "PLAIN";

/// The three fields of a PLAIN message.
///
/// `Debug` redacts the password so that logging a request or an error can
/// never leak a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Authorisation identity; usually empty.
    pub authzid: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parse a PLAIN initial response.
///
/// Exactly two NUL separators are required: a payload with fewer is
/// malformed, and one with more (say a trailing NUL) is rejected rather than
/// guessed at, so a password never silently gains or loses a byte. As RFC
/// 4616 requires, the fields must be UTF-8 and the username and password
/// non-empty.
pub fn parse_plain(data: &[u8]) -> Option<PlainCredentials> {
    let mut fields = data.split(|&b| b == 0);
    let authzid = fields.next()?;
    let username = fields.next()?;
    let password = fields.next()?;
    if fields.next().is_some() || username.is_empty() || password.is_empty() {
        return None;
    }
    Some(PlainCredentials {
        authzid: String::from_utf8(authzid.to_vec()).ok()?,
        username: String::from_utf8(username.to_vec()).ok()?,
        password: String::from_utf8(password.to_vec()).ok()?,
    })
}

/// Build a PLAIN initial response with an empty authzid, as clients send it.
pub fn encode_plain(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + username.len() + password.len());
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds(authzid: &str, username: &str, password: &str) -> PlainCredentials {
        PlainCredentials {
            authzid: authzid.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn parses_empty_authzid() {
        assert_eq!(
            parse_plain(b"\0alice\0s3cret"),
            Some(creds("", "alice", "s3cret"))
        );
    }

    #[test]
    fn parses_authzid() {
        assert_eq!(
            parse_plain(b"admin\0alice\0s3cret"),
            Some(creds("admin", "alice", "s3cret"))
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"alice\0s3cret",
            b"\0alice\0s3cret\0",
            b"\0alice\0s3\0cret",
            b"\0\0s3cret",
            b"\0alice\0",
            b"\0al\xffice\0s3cret",
        ] {
            assert_eq!(parse_plain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_with_empty_authzid() {
        assert_eq!(encode_plain("alice", "s3cret"), b"\0alice\0s3cret");
    }

    #[test]
    fn debug_redacts_password() {
        let shown = format!("{:?}", creds("", "alice", "hunter2"));
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    proptest! {
        #[test]
        fn encode_parse_round_trips(user in "[^\0]{1,40}", pass in "[^\0]{1,40}") {
            prop_assert_eq!(parse_plain(&encode_plain(&user, &pass)), Some(creds("", &user, &pass)));
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_plain(&data);
        }
    }
}
