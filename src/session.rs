//! The rules node and proxy sessions share: how a session ends abnormally,
//! and what a session answers itself, without a store or a node behind it.
//!
//! When each answer is given is the caller's rule: the proxy answers all of
//! them at once, the node lists SASL mechanisms before login and answers the
//! rest only to a logged-in client.

use crate::protocol::{self, sasl, Command, Frame, Response};

/// Why a client session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("client protocol: {0}")]
    Protocol(#[from] protocol::ProtocolError),
    /// Only the node has a login deadline; the proxy's clients never log in.
    #[error("client did not log in within {0:?}")]
    AuthTimeout(std::time::Duration),
}

/// The answer to a command that needs no store: `version` (answered with
/// `version`), `verbosity` (accepted and ignored), `noop` and the SASL
/// mechanism list. `None` for every other command.
pub fn local_answer(command: &Command, version: &str) -> Option<Response> {
    match command {
        Command::Version => Some(Response::Version(version.to_string())),
        Command::Verbosity => Some(Response::Ok),
        Command::Noop => Some(Response::Noop),
        Command::SaslList => Some(sasl_mechanisms()),
        _ => None,
    }
}

/// The SASL mechanisms offered: PLAIN only.
pub fn sasl_mechanisms() -> Response {
    Response::SaslMechs(sasl::PLAIN.to_string())
}

/// The reply to `quit`, after which the session closes: binary QUIT is
/// acknowledged (QUITQ's quiet frame drops the reply), text `quit` closes
/// silently.
pub fn quit_reply(frame: &Frame) -> Response {
    match frame {
        Frame::Binary { .. } => Response::Ok,
        Frame::Text(_) | Frame::Meta(_) => Response::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::TextFrame;

    #[test]
    fn quit_is_acknowledged_only_in_binary() {
        let binary = Frame::Binary {
            opcode: 0x07,
            opaque: 0,
        };
        assert_eq!(quit_reply(&binary), Response::Ok);
        assert_eq!(
            quit_reply(&Frame::Text(TextFrame::default())),
            Response::Silent
        );
        assert_eq!(quit_reply(&Frame::Meta(Box::default())), Response::Silent);
    }

    #[test]
    fn local_answers_need_no_store() {
        assert_eq!(
            local_answer(&Command::Version, "1.6.18"),
            Some(Response::Version("1.6.18".into()))
        );
        assert_eq!(local_answer(&Command::Verbosity, ""), Some(Response::Ok));
        assert_eq!(local_answer(&Command::Noop, ""), Some(Response::Noop));
        assert_eq!(
            local_answer(&Command::SaslList, ""),
            Some(Response::SaslMechs("PLAIN".into()))
        );
        assert_eq!(local_answer(&Command::Quit, ""), None);
        assert_eq!(local_answer(&Command::FlushAll { delay: 0 }, ""), None);
    }
}
