//! Groups: who is in them, as the bootstrap (the authority on membership) signs it.
//!
//! A group is named by a [`GroupId`] the bootstrap chooses. Its membership at one moment is a
//! [`Roster`]: every member with a [`Role`], a version that grows with every change, signed by the
//! bootstrap. A member's node keeps the newest roster of each of its groups and checks every
//! gossip message on the group's topic against it: the author (the gossipsub `source`, proved by
//! a device certificate to be a user's device) must be a member, or the message is rejected.

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_GROUP_MEMBERS, MAX_NAME_BYTES, MAX_USERNAME_CHARS};

/// The gossipsub topic of a group's messages.
pub fn group_topic(group: &str) -> String {
    format!("/confab/group/1/{group}")
}

/// Whether `text` has the form of a group id: 32 lowercase hex digits.
pub fn is_group_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A group id: 32 lowercase hex digits (16 random bytes chosen by the bootstrap).
pub type GroupId = String;

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Created the group: everything an admin may, and promotes or demotes admins.
    Owner,
    /// Invites and removes members (not the owner nor other admins), renames, recalls others'
    /// messages.
    Admin,
    /// Posts and reads.
    Member,
    /// A role this version does not know (treated as a plain member).
    #[serde(other)]
    Unknown,
}

impl Role {
    /// The name used on the RPC interface.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member | Role::Unknown => "member",
        }
    }

    /// Owner or admin.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The account (canonical username).
    pub user: String,
    /// What it may do.
    pub role: Role,
}

/// A group's membership at one version, signed by the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The group.
    pub group: GroupId,
    /// Its name (at most [`MAX_NAME_BYTES`]).
    pub name: String,
    /// Grows by at least one with every change (members, roles, name).
    pub version: u64,
    /// Every member, at most [`MAX_GROUP_MEMBERS`], each once.
    pub members: Vec<Member>,
    /// When the bootstrap signed it (unix ms).
    pub issued_at: u64,
    /// The signing bootstrap's peer id (multihash bytes).
    #[serde(with = "serde_bytes")]
    pub issuer: Vec<u8>,
    /// The issuer's signature over [`Roster::to_be_signed`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Roster {
    /// The bytes the issuer signs: a domain tag and every field but the signature.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let members: Vec<(&str, Role)> = self
            .members
            .iter()
            .map(|m| (m.user.as_str(), m.role))
            .collect();
        let fields = (
            "confab-group-roster/1",
            self.group.as_str(),
            self.name.as_str(),
            self.version,
            members,
            self.issued_at,
            serde_bytes::Bytes::new(&self.issuer),
        );
        // Encoding strings, integers and unit enums into a Vec cannot fail.
        cbor4ii::serde::to_vec(Vec::new(), &fields).unwrap_or_default()
    }

    /// The role of `user`, if a member.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.members.iter().find(|m| m.user == user).map(|m| m.role)
    }

    /// Checks the limits the types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if !is_group_id(&self.group) {
            return Err("not a group id".into());
        }
        if self.name.len() > MAX_NAME_BYTES {
            return Err(format!("group name is {} bytes", self.name.len()));
        }
        if self.members.len() > MAX_GROUP_MEMBERS {
            return Err(format!("{} members", self.members.len()));
        }
        if self
            .members
            .iter()
            .any(|m| m.user.len() > MAX_USERNAME_CHARS)
        {
            return Err("a member's name is too long".into());
        }
        Ok(())
    }
}

/// One of a user's groups, by version (to find which rosters are stale).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersion {
    /// The group.
    pub group: GroupId,
    /// Its roster's version now.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_and_topics() {
        assert!(is_group_id("0123456789abcdef0123456789abcdef"));
        for bad in ["", "0123", "0123456789ABCDEF0123456789abcdef", "g1"] {
            assert!(!is_group_id(bad), "{bad}");
        }
        assert_eq!(group_topic("ab"), "/confab/group/1/ab");
    }

    #[test]
    fn the_signature_covers_every_field() {
        let roster = Roster {
            group: "0123456789abcdef0123456789abcdef".into(),
            name: "team".into(),
            version: 3,
            members: vec![Member {
                user: "ann".into(),
                role: Role::Owner,
            }],
            issued_at: 9,
            issuer: vec![1, 2],
            signature: vec![],
        };
        let signed = roster.to_be_signed();
        let mut other = roster.clone();
        other.members[0].role = Role::Admin;
        assert_ne!(other.to_be_signed(), signed);
        let mut other = roster.clone();
        other.version = 4;
        assert_ne!(other.to_be_signed(), signed);
        let mut other = roster.clone();
        other.name = "teem".into();
        assert_ne!(other.to_be_signed(), signed);
        let mut other = roster.clone();
        other.signature = vec![7];
        assert_eq!(other.to_be_signed(), signed, "the signature is not signed");
        assert!(roster.validate().is_ok());
    }
}
