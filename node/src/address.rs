//! Conversation addresses: `peer:<peer id>`, `user:<username>`, `group:<group id>`, `broadcast`.

use std::fmt;
use std::str::FromStr;

use confab_protocol::bootstrap::normalize_username;
use libp2p::PeerId;

/// Where a message goes, or which conversation a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Conversation {
    /// A direct conversation with one peer (by its peer id, base58).
    Peer(String),
    /// A direct conversation with a user account (all of its devices), by canonical username
    /// (parsing `user:Bob` gives `bob`).
    User(String),
    /// A group.
    Group(String),
    /// Everyone on the LAN and on the bootstrap.
    Broadcast,
}

/// The text is not a conversation address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {input:?} (expected peer:<peer id>, user:<name>, group:<id> or broadcast)")]
pub struct AddressError {
    /// What was given (cut to 100 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Conversation {
    /// The direct conversation with `peer`.
    pub(crate) fn peer(peer: &PeerId) -> Self {
        Conversation::Peer(peer.to_base58())
    }

    /// The peer id of a `peer:` address (already validated at parse time).
    pub(crate) fn peer_id(&self) -> Option<PeerId> {
        match self {
            Conversation::Peer(p) => p.parse().ok(),
            _ => None,
        }
    }
}

impl fmt::Display for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conversation::Peer(p) => write!(f, "peer:{p}"),
            Conversation::User(u) => write!(f, "user:{u}"),
            Conversation::Group(g) => write!(f, "group:{g}"),
            Conversation::Broadcast => f.write_str("broadcast"),
        }
    }
}

impl FromStr for Conversation {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddressError {
            input: s.chars().take(100).collect(),
            reason,
        };
        if s == "broadcast" {
            return Ok(Conversation::Broadcast);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| err("no address kind"))?;
        if rest.is_empty() || rest.len() > 128 || rest.chars().any(char::is_whitespace) {
            return Err(err("empty, too long or contains spaces"));
        }
        match kind {
            "peer" => {
                let id: PeerId = rest.parse().map_err(|_| err("not a peer id"))?;
                Ok(Conversation::Peer(id.to_base58()))
            }
            // Usernames ignore case: `user:Bob` is `user:bob`.
            "user" => normalize_username(rest)
                .map(Conversation::User)
                .map_err(|_| err("not a valid username")),
            "group" => Ok(Conversation::Group(rest.to_owned())),
            _ => Err(err("unknown address kind")),
        }
    }
}

impl serde::Serialize for Conversation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print() {
        let peer = PeerId::random();
        for text in [
            format!("peer:{peer}"),
            "user:alice".to_owned(),
            "group:g1".to_owned(),
            "broadcast".to_owned(),
        ] {
            assert_eq!(text.parse::<Conversation>().unwrap().to_string(), text);
        }
        assert_eq!(
            "user:Bob".parse::<Conversation>().unwrap(),
            Conversation::User("bob".into())
        );
        for bad in [
            "",
            "peer:",
            "peer:xyz",
            "bob",
            "mars:x",
            "user:a b",
            "broadcast:x",
            "user:a",
            "user:-x-",
        ] {
            assert!(bad.parse::<Conversation>().is_err(), "{bad}");
        }
    }
}
