//! End-to-end encryption with MLS (RFC 9420): the cipher suites Confab allows, the sealed form of
//! a chat message, and what the bootstrap keeps of an encrypted conversation (it orders commits and
//! stores opaque bytes; it never holds a key).
//!
//! An encrypted conversation is one MLS group whose members are *devices*: every device of every
//! user in the conversation. Its MLS group id is [`mls_group_id`] of its bootstrap name
//! ([`dm_conversation`] for two users, `group:<id>` for a group).

use serde::{Deserialize, Serialize};

use crate::ids::MessageId;
use crate::message::Attachment;

/// The cipher suites Confab allows: vetted MLS suites, chosen once per conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suite {
    /// `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519` (0x0001): the default.
    X25519Aes128Gcm,
    /// `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519` (0x0003): for CPUs without AES
    /// instructions.
    X25519ChaCha20Poly1305,
    /// `MLS_128_DHKEMP256_AES128GCM_SHA256_P256` (0x0002).
    P256Aes128Gcm,
}

impl Suite {
    /// Every allowed suite, the default first.
    pub const ALL: [Suite; 3] = [
        Suite::X25519Aes128Gcm,
        Suite::X25519ChaCha20Poly1305,
        Suite::P256Aes128Gcm,
    ];

    /// The default suite.
    pub const DEFAULT: Suite = Suite::X25519Aes128Gcm;

    /// Its IANA code point.
    pub fn code(self) -> u16 {
        match self {
            Suite::X25519Aes128Gcm => 0x0001,
            Suite::P256Aes128Gcm => 0x0002,
            Suite::X25519ChaCha20Poly1305 => 0x0003,
        }
    }

    /// The allowed suite with this code point, if it is one.
    pub fn from_code(code: u16) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Its RFC 9420 name, e.g. `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::X25519Aes128Gcm => "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
            Suite::X25519ChaCha20Poly1305 => "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
            Suite::P256Aes128Gcm => "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
        }
    }

    /// Parses a suite's RFC name (also the `HPKEX25519` spelling, case-insensitive) or its code
    /// point (`0x0001`, `1`).
    pub fn parse(text: &str) -> Option<Suite> {
        let t = text
            .trim()
            .to_ascii_uppercase()
            .replace("HPKEX25519", "DHKEMX25519");
        if let Some(s) = Suite::ALL
            .into_iter()
            .find(|s| s.name().to_ascii_uppercase() == t)
        {
            return Some(s);
        }
        let code = match t.strip_prefix("0X") {
            Some(hex) => u16::from_str_radix(hex, 16).ok()?,
            None => t.parse().ok()?,
        };
        Suite::from_code(code)
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A message of an encrypted conversation on the wire: an MLS `PrivateMessage` whose plaintext
/// is a [`SealedContent`]. Travels as [`crate::ChatMessage::sealed`] on every transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The conversation's suite code point (a receiver refuses any other).
    pub suite: u16,
    /// The TLS-encoded `MLSMessage` (a `PrivateMessage`), at most [`MAX_SEALED_BYTES`].
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The largest [`Sealed::ciphertext`]: the largest plaintext (text, attachment description and
/// thumbnail) with room for MLS framing and padding.
pub const MAX_SEALED_BYTES: usize =
    crate::limits::MAX_TEXT_BYTES + crate::limits::MAX_THUMBNAIL_BYTES + 8 * 1024;

/// What a sealed message holds once decrypted. The id is repeated inside so that a ciphertext
/// cannot be replayed under another message's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedContent {
    /// Must equal the outer message id.
    pub id: MessageId,
    /// The author's display name at sending.
    pub sender_name: String,
    /// The text, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The attachment's description; its file is encrypted with `file_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<Attachment>>,
    /// The per-file key of the attachment (the file on the wire and at the bootstrap is
    /// ciphertext; `attachment.hash` names the ciphertext).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    pub file_key: Option<Vec<u8>>,
}

/// One device in an encrypted conversation: its account and its peer id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MlsDevice {
    /// The account.
    pub user: String,
    /// The device's peer id (multihash bytes).
    #[serde(with = "serde_bytes")]
    pub device: Vec<u8>,
}

/// A key package handed out by [`crate::bootstrap::BootstrapRequest::MlsClaim`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// Whose device it is.
    #[serde(with = "serde_bytes")]
    pub device: Vec<u8>,
    /// The TLS-encoded `KeyPackage`.
    #[serde(with = "serde_bytes")]
    pub key_package: Vec<u8>,
}

/// What the bootstrap knows of an encrypted conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlsConversation {
    /// Its bootstrap name (`group:<id>` or `dm:<a>:<b>`).
    pub conversation: String,
    /// Its suite's code point, fixed when encryption started.
    pub suite: u16,
    /// The epoch after the last stored commit.
    pub epoch: u64,
    /// Whether the asking device is a member now.
    pub member: bool,
}

/// A Welcome waiting for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlsWelcome {
    /// The conversation it joins.
    pub conversation: String,
    /// The epoch it joins at.
    pub epoch: u64,
    /// The TLS-encoded `MLSMessage` (a `Welcome`).
    #[serde(with = "serde_bytes")]
    pub welcome: Vec<u8>,
}

/// The bootstrap name of the direct conversation between two users (order does not matter).
pub fn dm_conversation(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{a}:{b}")
}

/// The two users of a `dm:` conversation name.
pub fn dm_users(conversation: &str) -> Option<(&str, &str)> {
    let rest = conversation.strip_prefix("dm:")?;
    let (a, b) = rest.split_once(':')?;
    (!a.is_empty() && !b.is_empty() && a < b).then_some((a, b))
}

/// The MLS group id of a conversation (its bootstrap name, tagged).
pub fn mls_group_id(conversation: &str) -> Vec<u8> {
    format!("confab/1/{conversation}").into_bytes()
}

/// The MLS credential identity of a device: `user` and the peer id in base58, separated by a
/// newline (neither can contain one).
pub fn credential_identity(user: &str, peer_base58: &str) -> Vec<u8> {
    format!("{user}\n{peer_base58}").into_bytes()
}

/// The user and base58 peer id of an identity made by [`credential_identity`].
pub fn parse_credential_identity(identity: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(identity).ok()?;
    text.split_once('\n')
}

/// The largest key package accepted.
pub const MAX_KEY_PACKAGE_BYTES: usize = 4 * 1024;
/// Key packages kept per device and suite.
pub const MAX_KEY_PACKAGES_PER_DEVICE: usize = 64;
/// The largest commit, Welcome or GroupInfo accepted (a 256-member group's tree fits).
pub const MAX_MLS_BLOB_BYTES: usize = 160 * 1024;
/// Commits handed out per [`crate::bootstrap::BootstrapRequest::MlsCommits`] answer.
pub const MAX_COMMITS_PAGE: usize = 16;
/// Devices one commit may add or remove.
pub const MAX_COMMIT_DEVICES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_by_name_spelling_and_code() {
        for s in Suite::ALL {
            assert_eq!(Suite::parse(s.name()), Some(s));
            assert_eq!(Suite::from_code(s.code()), Some(s));
            assert_eq!(Suite::parse(&format!("0x{:04x}", s.code())), Some(s));
        }
        assert_eq!(
            Suite::parse("mls_128_hpkex25519_chacha20poly1305_sha256_ed25519"),
            Some(Suite::X25519ChaCha20Poly1305)
        );
        assert_eq!(
            Suite::parse("MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448"),
            None
        );
        assert_eq!(Suite::parse("4"), None);
    }

    #[test]
    fn dm_names_are_symmetric() {
        assert_eq!(dm_conversation("bob", "alice"), "dm:alice:bob");
        assert_eq!(dm_conversation("alice", "bob"), "dm:alice:bob");
        assert_eq!(dm_users("dm:alice:bob"), Some(("alice", "bob")));
        assert_eq!(dm_users("dm:bob:alice"), None);
        assert_eq!(dm_users("group:x"), None);
        let id = credential_identity("alice", "12D3Koo");
        assert_eq!(parse_credential_identity(&id), Some(("alice", "12D3Koo")));
    }
}
