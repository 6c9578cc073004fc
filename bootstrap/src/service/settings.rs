//! Account settings: do-not-disturb, muted conversations, blocked users and groups. The bootstrap
//! keeps one [`AccountSettings`] per account, the same for every device of it; each change is one
//! transaction that raises the version by one and tells every device of the account
//! ([`Notification::SettingsChanged`]). A change that changes nothing (muting what is muted
//! already, ...) answers the settings as they are, with the same version, and tells nobody.
//!
//! Addresses are stored canonical, so that a device compares them as strings: `user:<username>`
//! (normalised), `group:<32 lowercase hex>`, `peer:<base58 peer id>` and `broadcast`. Any of the
//! four may be muted (at most [`MAX_MUTED`]); only users and groups may be blocked (at most
//! [`MAX_BLOCKED`]), and nobody blocks themselves.
//!
//! Do-not-disturb and muting are for the devices to apply (the bootstrap stores messages the same
//! way); blocking is enforced by the bootstrap, which refuses or drops, with the identity always
//! from the authenticated connection:
//! - `Deposit` ([`super`]): a direct message to someone who blocked its author is refused
//!   (`NotAllowed`, "`<to>` does not accept your messages") and nothing is stored;
//! - `Receipt`: refused the same way when the messages' author blocked the reporter;
//! - `FriendAdd`: refused (`NotAllowed`) when the other blocked the asker; no request is stored
//!   or told;
//! - `Devices`: an empty list when the user blocked the requester (as for a stranger);
//! - `GroupCreate` ([`super::groups`]): refused (`NotAllowed`, naming the member) when a member
//!   named blocked the creator; nothing is written;
//! - `GroupInvite`: refused (`NotAllowed`) when the invitee blocked the inviter or the group;
//! - `GroupPost`: a member who blocked the group stays a member, but nothing of the group's
//!   messages is stored for it (the author always gets its own copy).
//!
//! Not affected: delivered receipts written during a sync, group roster changes and their
//! notifications, and everything stored before the block.

use std::fmt;

use confab_protocol::bootstrap::{
    AccountSettings, BootstrapResponse, ErrorCode, Notification, normalize_username,
};
use confab_protocol::group::is_group_id;
use confab_protocol::limits::{MAX_ADDRESS_BYTES, MAX_BLOCKED, MAX_MUTED};
use libp2p::PeerId;

use super::{Effect, Outcome, Refusal, Service, unknown_user};
use crate::store::Tx;

/// A conversation address, parsed and canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Address {
    /// `user:<normalised username>`.
    User(String),
    /// `group:<32 lowercase hex digits>`.
    Group(String),
    /// `peer:<base58 peer id>`.
    Peer(String),
    /// `broadcast`.
    Broadcast,
}

impl Address {
    /// Parses one of the four kinds; `Invalid` (or `TooLarge`) otherwise.
    pub(super) fn parse(text: &str) -> Result<Address, Refusal> {
        if text.len() > MAX_ADDRESS_BYTES {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("an address is at most {MAX_ADDRESS_BYTES} bytes"),
            ));
        }
        let invalid = || {
            Refusal::new(
                ErrorCode::Invalid,
                format!(
                    "{:?} is no conversation address (user:<name>, group:<id>, peer:<id> or \
                     broadcast)",
                    text.chars().take(80).collect::<String>()
                ),
            )
        };
        if text == "broadcast" {
            return Ok(Address::Broadcast);
        }
        let (kind, rest) = text.split_once(':').ok_or_else(invalid)?;
        match kind {
            "user" => normalize_username(rest)
                .map(Address::User)
                .map_err(|_| invalid()),
            "group" if is_group_id(rest) => Ok(Address::Group(rest.to_owned())),
            "peer" => rest
                .parse::<PeerId>()
                .map(|p| Address::Peer(p.to_base58()))
                .map_err(|_| invalid()),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::User(u) => write!(f, "user:{u}"),
            Address::Group(g) => write!(f, "group:{g}"),
            Address::Peer(p) => write!(f, "peer:{p}"),
            Address::Broadcast => f.write_str("broadcast"),
        }
    }
}

/// The address under which an account is blocked: `user:<user>`.
pub(super) fn user_address(user: &str) -> String {
    format!("user:{user}")
}

/// The address under which a group is blocked: `group:<id>`.
pub(super) fn group_address(group: &str) -> String {
    format!("group:{group}")
}

/// Adds `address` to `list` (at most `max` long) or takes it out; whether the list changed.
/// `full` is the refusal's message when there is no room.
fn toggle(
    list: &mut Vec<String>,
    address: String,
    on: bool,
    max: usize,
    full: impl FnOnce() -> String,
) -> Result<bool, Refusal> {
    let present = list.contains(&address);
    match (on, present) {
        (true, true) | (false, false) => Ok(false),
        (true, false) => {
            if list.len() >= max {
                return Err(Refusal::new(ErrorCode::NotAllowed, full()));
            }
            list.push(address);
            Ok(true)
        }
        (false, true) => {
            list.retain(|a| *a != address);
            Ok(true)
        }
    }
}

impl Service {
    /// The requester's settings.
    pub(super) async fn settings_get(&self, device: PeerId) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let settings = self
            .blocking(move |s| s.read(|tx| Ok::<_, Refusal>(tx.settings(&me)?)))
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::Settings(settings),
            effects: Vec::new(),
        })
    }

    /// Applies `change` to `me`'s settings in one transaction; `change` says whether it changed
    /// anything. A change raises the version, is stored, and is told to every device of `me`.
    async fn change_settings(
        &self,
        me: String,
        change: impl FnOnce(&Tx, &mut AccountSettings) -> Result<bool, Refusal> + Send + 'static,
    ) -> Result<Outcome, Refusal> {
        let user = me.clone();
        let (settings, changed) = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                if tx.user(&user)?.is_none() {
                    return Err(Refusal::new(ErrorCode::NotLoggedIn, "the account is gone"));
                }
                let mut settings = tx.settings(&user)?;
                if !change(tx, &mut settings)? {
                    return Ok((settings, false));
                }
                settings.version += 1;
                tx.put_settings(&user, &settings)?;
                Ok((settings, true))
            })
            .await?;
        let effects = if changed {
            vec![Effect::Notify {
                user: me,
                note: Notification::SettingsChanged {
                    version: settings.version,
                },
            }]
        } else {
            Vec::new()
        };
        Ok(Outcome {
            response: BootstrapResponse::Settings(settings),
            effects,
        })
    }

    /// Turns do-not-disturb on or off.
    pub(super) async fn set_dnd(&self, device: PeerId, enabled: bool) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        self.change_settings(me, move |_, settings| {
            let changed = settings.dnd != enabled;
            settings.dnd = enabled;
            Ok(changed)
        })
        .await
    }

    /// Mutes or unmutes a conversation (any of the four address kinds).
    pub(super) async fn set_muted(
        &self,
        device: PeerId,
        conversation: String,
        muted: bool,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let address = Address::parse(&conversation)?.to_string();
        self.change_settings(me, move |_, settings| {
            toggle(&mut settings.muted, address, muted, MAX_MUTED, || {
                format!(
                    "you mute {MAX_MUTED} conversations already, the most one account may; \
                     unmute one first"
                )
            })
        })
        .await
    }

    /// Blocks or unblocks a user or a group. Blocking needs the user to exist; unblocking does
    /// not (so an address left by a deleted account can still be taken off the list).
    pub(super) async fn set_blocked(
        &self,
        device: PeerId,
        target: String,
        blocked: bool,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let address = Address::parse(&target)?;
        let user = match &address {
            Address::User(user) if *user == me => {
                return Err(Refusal::new(ErrorCode::Invalid, "nobody blocks themselves"));
            }
            Address::User(user) => Some(user.clone()),
            Address::Group(_) => None,
            Address::Peer(_) | Address::Broadcast => {
                return Err(Refusal::new(
                    ErrorCode::Invalid,
                    "only users (user:<name>) and groups (group:<id>) are blocked",
                ));
            }
        };
        let address = address.to_string();
        self.change_settings(me, move |tx, settings| {
            if let Some(user) = user
                && blocked
                && tx.user(&user)?.is_none()
            {
                return Err(unknown_user(&user));
            }
            toggle(&mut settings.blocked, address, blocked, MAX_BLOCKED, || {
                format!(
                    "you block {MAX_BLOCKED} users and groups already, the most one account \
                     may; unblock one first"
                )
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, mailbox, reg, service};
    use confab_protocol::ChatMessage;
    use confab_protocol::bootstrap::{BootstrapRequest as R, ErrorCode as E};
    use confab_protocol::group::Roster;

    fn settings_of(out: &Outcome) -> AccountSettings {
        match &out.response {
            BootstrapResponse::Settings(settings) => settings.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn changed(user: &str, version: u64) -> Vec<Effect> {
        vec![Effect::Notify {
            user: user.into(),
            note: Notification::SettingsChanged { version },
        }]
    }

    fn mute(conversation: &str, muted: bool) -> R {
        R::SetMuted {
            conversation: conversation.into(),
            muted,
        }
    }

    fn block(target: &str, blocked: bool) -> R {
        R::SetBlocked {
            target: target.into(),
            blocked,
        }
    }

    fn dm(to: &str, author: &str, text: &str) -> R {
        R::Deposit {
            to: to.into(),
            message: ChatMessage::text(author, text, 1),
        }
    }

    fn roster_of(out: &Outcome) -> Roster {
        match &out.response {
            BootstrapResponse::Group(roster) => roster.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn message_of(out: &Outcome) -> String {
        match &out.response {
            BootstrapResponse::Error { message, .. } => message.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Registers each `(device, user)`.
    async fn users<const N: usize>(s: &Service, names: [&str; N]) -> [PeerId; N] {
        let devices = [(); N].map(|_| PeerId::random());
        for (device, user) in devices.iter().zip(names) {
            s.handle(*device, None, reg(user, PW)).await;
        }
        devices
    }

    #[tokio::test]
    async fn settings_round_trip_with_versions_and_notifications() {
        let (s, _dir, _) = service().await;
        let [ann, ben] = users(&s, ["ann", "ben"]).await;
        let ann2 = PeerId::random();
        s.handle(ann2, None, crate::service::tests::login("ann", PW))
            .await;
        let peer = PeerId::random();
        let group = "0123456789abcdef".repeat(2);

        let out = s.handle(ann, None, R::Settings).await;
        assert_eq!(settings_of(&out), AccountSettings::default());
        assert!(out.effects.is_empty());

        let out = s.handle(ann, None, R::SetDnd { enabled: true }).await;
        assert!(settings_of(&out).dnd);
        assert_eq!(settings_of(&out).version, 1);
        assert_eq!(out.effects, changed("ann", 1));

        // Every kind of address is muted, stored canonical.
        let mut version = 1;
        for (given, stored) in [
            ("user:Ben", "user:ben".to_owned()),
            (&format!("group:{group}"), format!("group:{group}")),
            (
                &format!("peer:{peer}"),
                format!("peer:{}", peer.to_base58()),
            ),
            ("broadcast", "broadcast".to_owned()),
        ] {
            let out = s.handle(ann, None, mute(given, true)).await;
            version += 1;
            let settings = settings_of(&out);
            assert_eq!(settings.version, version);
            assert_eq!(settings.muted.last(), Some(&stored));
            assert_eq!(out.effects, changed("ann", version));
        }
        let out = s.handle(ann, None, mute("user:ben", false)).await;
        version += 1;
        assert!(!settings_of(&out).muted.contains(&"user:ben".to_owned()));
        assert_eq!(out.effects, changed("ann", version));

        let out = s.handle(ann, None, block("user:BEN", true)).await;
        version += 1;
        assert_eq!(settings_of(&out).blocked, ["user:ben"]);
        assert_eq!(out.effects, changed("ann", version));
        let out = s
            .handle(ann, None, block(&format!("group:{group}"), true))
            .await;
        version += 1;
        assert_eq!(
            settings_of(&out).blocked,
            ["user:ben".to_owned(), format!("group:{group}")]
        );

        // Another device of the account reads the same; another account has its own.
        let out = s.handle(ann2, None, R::Settings).await;
        let want = AccountSettings {
            version,
            dnd: true,
            muted: vec![
                format!("group:{group}"),
                format!("peer:{}", peer.to_base58()),
                "broadcast".into(),
            ],
            blocked: vec!["user:ben".into(), format!("group:{group}")],
        };
        assert_eq!(settings_of(&out), want);
        assert_eq!(
            settings_of(&s.handle(ben, None, R::Settings).await),
            AccountSettings::default()
        );

        // Nobody logged in has settings.
        for request in [
            R::Settings,
            R::SetDnd { enabled: true },
            mute("broadcast", true),
            block("user:ann", true),
        ] {
            let out = s.handle(PeerId::random(), None, request).await;
            assert_eq!(code(&out), Some(E::NotLoggedIn));
        }
    }

    #[tokio::test]
    async fn changes_that_change_nothing_keep_the_version_and_tell_nobody() {
        let (s, _dir, _) = service().await;
        let [ann, _ben] = users(&s, ["ann", "ben"]).await;
        for request in [
            R::SetDnd { enabled: false },
            mute("broadcast", false),
            block("user:ben", false),
        ] {
            let out = s.handle(ann, None, request).await;
            assert_eq!(settings_of(&out), AccountSettings::default());
            assert!(out.effects.is_empty());
        }
        assert_eq!(s.store().read(|tx| tx.settings("ann")).unwrap().version, 0);
        for request in [
            R::SetDnd { enabled: true },
            mute("broadcast", true),
            block("user:ben", true),
        ] {
            let first = s.handle(ann, None, request.clone()).await;
            assert_eq!(first.effects.len(), 1);
            let again = s.handle(ann, None, request).await;
            assert_eq!(settings_of(&again), settings_of(&first));
            assert!(again.effects.is_empty());
        }
        // The same user under another spelling is the same address.
        let out = s.handle(ann, None, block(" user:Ben", true)).await;
        assert_eq!(code(&out), Some(E::Invalid), "no space before the kind");
        let out = s.handle(ann, None, block("user: Ben ", true)).await;
        assert_eq!(settings_of(&out).version, 3);
        assert!(out.effects.is_empty());
    }

    #[tokio::test]
    async fn invalid_addresses_are_refused() {
        let (s, _dir, _) = service().await;
        let [ann] = users(&s, ["ann"]).await;
        let group = "a".repeat(32);
        for bad in [
            "",
            "alice",
            "user:",
            "user:a b",
            "user:-x",
            "group:",
            "group:xyz",
            &format!("group:{}", "A".repeat(32)),
            &format!("group:{}", "a".repeat(31)),
            "peer:",
            "peer:not-base58-0OIl",
            "chan:general",
            "Broadcast",
            "broadcast:",
        ] {
            let out = s.handle(ann, None, mute(bad, true)).await;
            assert_eq!(code(&out), Some(E::Invalid), "{bad:?}");
            assert!(out.effects.is_empty());
        }
        let long = format!("user:{}", "a".repeat(MAX_ADDRESS_BYTES));
        assert_eq!(
            code(&s.handle(ann, None, mute(&long, true)).await),
            Some(E::TooLarge)
        );
        // Blocking takes users and groups only, never oneself, never a user that does not exist.
        let peer = format!("peer:{}", PeerId::random());
        for bad in [peer.as_str(), "broadcast", "user:ann", "user:ANN"] {
            let out = s.handle(ann, None, block(bad, true)).await;
            assert_eq!(code(&out), Some(E::Invalid), "{bad:?}");
        }
        let out = s.handle(ann, None, block("user:nobody", true)).await;
        assert_eq!(code(&out), Some(E::UnknownUser));
        // A group is blocked whether or not it exists (so that it cannot invite).
        let out = s
            .handle(ann, None, block(&format!("group:{group}"), true))
            .await;
        assert_eq!(settings_of(&out).blocked, [format!("group:{group}")]);
        assert_eq!(settings_of(&out).version, 1, "only the group changed it");
    }

    #[tokio::test]
    async fn mute_and_block_lists_are_bounded() {
        let (s, _dir, _) = service().await;
        let [ann] = users(&s, ["ann"]).await;
        let group = |i: usize| format!("group:{i:032x}");
        for i in 0..MAX_MUTED {
            let out = s.handle(ann, None, mute(&group(i), true)).await;
            assert_eq!(settings_of(&out).muted.len(), i + 1);
        }
        let out = s.handle(ann, None, mute("broadcast", true)).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(message_of(&out).contains("unmute one first"));
        // What is muted already stays a no-op, and unmuting makes room.
        let out = s.handle(ann, None, mute(&group(0), true)).await;
        assert_eq!(settings_of(&out).version, MAX_MUTED as u64);
        s.handle(ann, None, mute(&group(0), false)).await;
        let out = s.handle(ann, None, mute("broadcast", true)).await;
        assert_eq!(settings_of(&out).muted.len(), MAX_MUTED);

        for i in 0..MAX_BLOCKED {
            let out = s.handle(ann, None, block(&group(i), true)).await;
            assert_eq!(settings_of(&out).blocked.len(), i + 1);
        }
        let out = s.handle(ann, None, block(&group(MAX_BLOCKED), true)).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(message_of(&out).contains("unblock one first"));
        let stored = s.store().read(|tx| tx.settings("ann")).unwrap();
        assert_eq!(
            (stored.muted.len(), stored.blocked.len()),
            (MAX_MUTED, MAX_BLOCKED)
        );
    }

    #[tokio::test]
    async fn a_blocked_user_reaches_the_blocker_no_more() {
        let (s, _dir, _) = service().await;
        let [ann, ben, cal] = users(&s, ["ann", "ben", "cal"]).await;
        // Ann and ben are friends, with a message each way, before she blocks him.
        s.handle(ben, None, R::FriendAdd { user: "ann".into() })
            .await;
        s.handle(ann, None, R::FriendAccept { user: "ben".into() })
            .await;
        s.handle(ben, None, dm("ann", "ben", "hi")).await;
        let out = s.handle(ann, None, block("user:ben", true)).await;
        assert_eq!(settings_of(&out).blocked, ["user:ben"]);
        assert_eq!(mailbox(&s, "ann").len(), 1);

        // His direct messages are refused, and nothing is stored on either side.
        let out = s.handle(ben, None, dm("ANN", "ben", "hello?")).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert_eq!(message_of(&out), "ann does not accept your messages");
        assert!(out.effects.is_empty());
        assert_eq!((mailbox(&s, "ann").len(), mailbox(&s, "ben").len()), (1, 1));
        // So are his receipts about her messages.
        let sent = ChatMessage::text("ann", "yo", 1);
        let id = sent.id;
        s.handle(
            ann,
            None,
            R::Deposit {
                to: "ben".into(),
                message: sent,
            },
        )
        .await;
        let read = R::Receipt {
            to: "ann".into(),
            state: confab_protocol::bootstrap::ReceiptState::Read,
            ids: vec![id],
        };
        let out = s.handle(ben, None, read).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert_eq!((mailbox(&s, "ann").len(), mailbox(&s, "ben").len()), (2, 2));
        // She still writes to him, and others still write to her.
        let out = s.handle(cal, None, dm("ann", "cal", "hey")).await;
        assert!(matches!(out.response, BootstrapResponse::Deposited { .. }));

        // He no longer sees her devices, though they are friends.
        s.presence.device_online(ann, "ann");
        let out = s.handle(ben, None, R::Devices { user: "ann".into() }).await;
        assert_eq!(
            out.response,
            BootstrapResponse::Devices {
                user: "ann".into(),
                devices: Vec::new()
            }
        );

        // Friend requests: his are refused (after she ended the friendship), cal's are not.
        s.handle(ann, None, R::FriendRemove { user: "ben".into() })
            .await;
        let out = s
            .handle(ben, None, R::FriendAdd { user: "ann".into() })
            .await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(out.effects.is_empty());
        assert_eq!(
            s.store().read(|tx| tx.relation("ann", "ben")).unwrap(),
            crate::store::Relation::None
        );
        let out = s
            .handle(cal, None, R::FriendAdd { user: "ann".into() })
            .await;
        assert_eq!(out.response, BootstrapResponse::Done);

        // He creates no group with her in it, and invites her to none.
        let create = |members: &[&str]| R::GroupCreate {
            name: "team".into(),
            members: members.iter().map(|m| (*m).into()).collect(),
        };
        let out = s.handle(ben, None, create(&["cal", "ann"])).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(message_of(&out).contains("ann"), "{out:?}");
        assert!(out.effects.is_empty());
        for user in ["ann", "ben", "cal"] {
            assert!(
                s.store()
                    .read(|tx| tx.user_groups(user))
                    .unwrap()
                    .is_empty()
            );
        }
        let g = roster_of(&s.handle(ben, None, create(&["cal"])).await).group;
        let invite = R::GroupInvite {
            group: g.clone(),
            user: "ann".into(),
        };
        let out = s.handle(ben, None, invite).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(out.effects.is_empty());
        assert!(
            roster_of(&s.handle(ben, None, R::GroupInfo { group: g }).await)
                .role_of("ann")
                .is_none()
        );

        // Unblocked, he writes to her again.
        let out = s.handle(ann, None, block("user:ben", false)).await;
        assert!(settings_of(&out).blocked.is_empty());
        let out = s
            .handle(ben, None, dm("ann", "ben", "friends again?"))
            .await;
        assert!(
            matches!(out.response, BootstrapResponse::Deposited { .. }),
            "{out:?}"
        );
        assert_eq!(
            mailbox(&s, "ann")
                .last()
                .and_then(|e| e.message().and_then(|m| m.text.clone())),
            Some("friends again?".into())
        );
    }

    #[tokio::test]
    async fn a_blocked_group_stores_nothing_for_the_blocker() {
        let (s, _dir, _) = service().await;
        let [ann, _ben, cal, dee] = users(&s, ["ann", "ben", "cal", "dee"]).await;
        let create = R::GroupCreate {
            name: "team".into(),
            members: vec!["ben".into(), "cal".into()],
        };
        let g = roster_of(&s.handle(ann, None, create).await).group;
        s.handle(cal, None, block(&format!("group:{g}"), true))
            .await;
        let post = |author: &str, text: &str| R::GroupPost {
            group: g.clone(),
            message: ChatMessage::text(author, text, 1),
        };

        // Ann's post reaches ben and herself, not cal, who is still a member.
        let out = s.handle(ann, None, post("ann", "hi team")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        let told: Vec<String> = out
            .effects
            .iter()
            .map(|e| match e {
                Effect::Notify { user, .. } => user.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(told, ["ben", "ann"]);
        assert_eq!((mailbox(&s, "ann").len(), mailbox(&s, "ben").len()), (1, 1));
        assert!(mailbox(&s, "cal").is_empty());
        let roster = roster_of(&s.handle(cal, None, R::GroupInfo { group: g.clone() }).await);
        assert!(roster.role_of("cal").is_some());

        // Cal's own post: he keeps his own copy, the others get it.
        let out = s.handle(cal, None, post("cal", "still here")).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert_eq!(mailbox(&s, "cal").len(), 1);
        assert_eq!((mailbox(&s, "ann").len(), mailbox(&s, "ben").len()), (2, 2));

        // Dee blocked the group: she cannot be invited into it.
        s.handle(dee, None, block(&format!("group:{g}"), true))
            .await;
        let invite = R::GroupInvite {
            group: g.clone(),
            user: "dee".into(),
        };
        let out = s.handle(ann, None, invite).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert!(out.effects.is_empty());
    }

    #[tokio::test]
    async fn deleting_the_account_removes_its_settings() {
        let (s, _dir, _) = service().await;
        let [ann, _ben] = users(&s, ["ann", "ben"]).await;
        s.handle(ann, None, block("user:ben", true)).await;
        s.handle(ann, None, R::SetDnd { enabled: true }).await;
        assert!(s.store().read(|tx| tx.blocks("ann", "user:ben")).unwrap());
        let out = s
            .handle(
                ann,
                None,
                R::DeleteAccount {
                    password: PW.into(),
                },
            )
            .await;
        assert_eq!(out.response, BootstrapResponse::Done);
        assert_eq!(
            s.store().read(|tx| tx.settings("ann")).unwrap(),
            AccountSettings::default()
        );
        assert!(!s.store().read(|tx| tx.blocks("ann", "user:ben")).unwrap());
        // A new account of that name starts with the defaults.
        let again = PeerId::random();
        s.handle(again, None, reg("ann", PW)).await;
        assert_eq!(
            settings_of(&s.handle(again, None, R::Settings).await),
            AccountSettings::default()
        );
    }
}
