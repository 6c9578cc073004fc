//! Groups: named sets of accounts that chat together. The bootstrap is the authority on who is in
//! a group: it stores each group ([`GroupRecord`]), checks every change against the rules below,
//! and answers with a [`Roster`] it signs, so that members' nodes can check gossip on the group's
//! topic against it. Every change raises the group's version by one and tells every account
//! concerned ([`Notification::GroupChanged`]), which then asks for the new roster.
//!
//! Who may do what (identity always from the authenticated connection):
//! - anyone logged in creates a group and is its **owner**; the members named become **members**;
//! - the owner and **admins** invite, rename, and remove: the owner anyone but itself, an admin
//!   plain members only; a member removes nobody;
//! - only the owner makes a member an admin or an admin a member (ownership is not handed over by
//!   request);
//! - anyone leaves; an owner leaving hands the group to its oldest admin, else its oldest member,
//!   and the last member leaving ends the group (so does account deletion, by the same rules);
//! - only members see a group (its roster, its messages): to anyone else a group does not exist
//!   (`NotFound`, never `NotAllowed`), so outsiders cannot learn which ids are in use.
//!
//! Limits: [`MAX_GROUP_MEMBERS`] members per group, [`MAX_GROUPS_PER_USER`] groups per account.
//!
//! A group message (`GroupPost`) is stored like a direct one: in the mailbox of every member, the
//! author's own included (marked outgoing, for its other devices), under the conversation
//! `group:<id>`, deduplicated by author and message id. A member whose mailbox is full misses it
//! (logged); only the author's own full mailbox refuses the post. Once the group's conversation is
//! end-to-end encrypted (see [`super::mls`]), a post must be sealed.
//!
//! Blocking (see [`super::settings`]): a group is not created with a member who blocked the
//! creator, nobody is invited by someone they blocked or into a group they blocked, and a member
//! who blocked the group gets none of its posts stored (it stays a member; its own posts are
//! stored for it as for anyone).

use confab_protocol::ChatMessage;
use confab_protocol::bootstrap::{
    BootstrapResponse, ErrorCode, MailboxEntry, MailboxItem, Notification, normalize_username,
};
use confab_protocol::group::{GroupId, GroupVersion, Member, Role, Roster};
use confab_protocol::limits::{MAX_GROUP_MEMBERS, MAX_GROUPS_PER_USER, MAX_NAME_BYTES};
use libp2p::PeerId;

use super::settings::{group_address, user_address};
use super::{
    Effect, Outcome, Refusal, Service, check_room, deposited, hex_string, now_ms, rand_bytes,
    unknown_user,
};
use crate::store::{GroupMember, GroupRecord, StoreError, Tx};

/// A group that changed, and the accounts to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    /// The group.
    pub group: GroupId,
    /// Its version now (one past the last stored one if the change ended the group).
    pub version: u64,
    /// Who is told.
    pub notify: Vec<String>,
}

impl GroupChange {
    /// A [`Notification::GroupChanged`] for each account to tell.
    pub fn effects(&self) -> impl Iterator<Item = Effect> + '_ {
        self.notify.iter().map(|user| Effect::Notify {
            user: user.clone(),
            note: Notification::GroupChanged {
                group: self.group.clone(),
                version: self.version,
            },
        })
    }
}

fn no_such_group() -> Refusal {
    Refusal::new(ErrorCode::NotFound, "no such group")
}

fn not_allowed(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::NotAllowed, message)
}

/// The name trimmed, if it is non-empty and at most [`MAX_NAME_BYTES`].
fn group_name(name: &str) -> Result<String, Refusal> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Refusal::new(ErrorCode::Invalid, "a group needs a name"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("a group name is at most {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(name.to_owned())
}

/// `group` and the role `user` has in it; `NotFound` alike when there is no such group and when
/// `user` is not in it.
pub(super) fn membership(tx: &Tx, group: &str, user: &str) -> Result<(GroupRecord, Role), Refusal> {
    let record = tx.group(group)?.ok_or_else(no_such_group)?;
    let role = record.role_of(user).ok_or_else(no_such_group)?;
    Ok((record, role))
}

/// Refuses if `user` is in [`MAX_GROUPS_PER_USER`] groups already.
fn check_room_for_group(tx: &Tx, user: &str, caller: &str) -> Result<(), Refusal> {
    if tx.user_groups(user)?.len() < MAX_GROUPS_PER_USER {
        return Ok(());
    }
    let who = if user == caller {
        "you are".to_owned()
    } else {
        format!("{user} is")
    };
    Err(not_allowed(format!(
        "{who} in {MAX_GROUPS_PER_USER} groups already, the most one account may be in"
    )))
}

/// The accounts of a group.
fn users(record: &GroupRecord) -> Vec<String> {
    record.members.iter().map(|m| m.user.clone()).collect()
}

/// Takes `user` out of `record` and raises its version. An owner leaving hands the group to the
/// oldest admin, else the oldest member left. Returns whether anyone is left.
fn drop_member(record: &mut GroupRecord, user: &str) -> bool {
    let was = record.role_of(user);
    record.members.retain(|m| m.user != user);
    record.version += 1;
    if was == Some(Role::Owner) {
        let heir = record
            .members
            .iter()
            .position(|m| m.role == Role::Admin)
            .or(if record.members.is_empty() {
                None
            } else {
                Some(0)
            });
        if let Some(i) = heir {
            record.members[i].role = Role::Owner;
        }
    }
    !record.members.is_empty()
}

/// Takes `user` out of `group` (stored as `record`) by the rules of leaving, and writes the
/// result: the group with a new version, or no group when nobody is left. The change tells the
/// members left; the caller adds `user` if it is to be told too.
pub(super) fn leave_group(
    tx: &mut Tx,
    group: &str,
    mut record: GroupRecord,
    user: &str,
) -> Result<GroupChange, StoreError> {
    if drop_member(&mut record, user) {
        tx.put_group(group, &record)?;
    } else {
        tx.remove_group(group)?;
    }
    Ok(GroupChange {
        group: group.to_owned(),
        version: record.version,
        notify: users(&record),
    })
}

/// What a changing request leaves: the group as it is now, and whom to tell (nobody when the
/// request changed nothing).
type Changed = (GroupRecord, Vec<String>);

/// Stores a changed group as its next version; says whom to tell: every member, and `also`
/// (one who just left or was removed).
fn bump(
    tx: &mut Tx,
    id: &str,
    mut record: GroupRecord,
    also: Option<String>,
) -> Result<Changed, Refusal> {
    record.version += 1;
    tx.put_group(id, &record)?;
    let mut notify = users(&record);
    notify.extend(also);
    Ok((record, notify))
}

impl Service {
    /// The roster of `group` as stored in `record`, signed now with the server's key.
    fn roster(&self, group: &str, record: &GroupRecord) -> Roster {
        let mut roster = Roster {
            group: group.to_owned(),
            name: record.name.clone(),
            version: record.version,
            members: record
                .members
                .iter()
                .map(|m| Member {
                    user: m.user.clone(),
                    role: m.role,
                })
                .collect(),
            issued_at: now_ms(),
            issuer: self.keypair.public().to_peer_id().to_bytes(),
            signature: Vec::new(),
        };
        // Signing with an ed25519 key cannot fail.
        roster.signature = self
            .keypair
            .sign(&roster.to_be_signed())
            .unwrap_or_default();
        roster
    }

    /// Answers with the roster of `group` and tells `notify` that it changed.
    fn roster_outcome(&self, group: String, (record, notify): Changed) -> Outcome {
        let change = GroupChange {
            group: group.clone(),
            version: record.version,
            notify,
        };
        Outcome {
            response: BootstrapResponse::Group(self.roster(&group, &record)),
            effects: change.effects().collect(),
        }
    }

    pub(super) async fn group_create(
        &self,
        device: PeerId,
        name: String,
        members: Vec<String>,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let name = group_name(&name)?;
        if members.len() >= MAX_GROUP_MEMBERS {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("a group has at most {MAX_GROUP_MEMBERS} members"),
            ));
        }
        let mut others: Vec<String> = Vec::new();
        for member in &members {
            let user = normalize_username(member).map_err(|_| unknown_user(member))?;
            if user != me && !others.contains(&user) {
                others.push(user);
            }
        }
        let (creator, created_at) = (me, now_ms());
        let (group, changed) = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                if tx.user(&creator)?.is_none() {
                    return Err(Refusal::new(ErrorCode::NotLoggedIn, "the account is gone"));
                }
                for user in &others {
                    if tx.user(user)?.is_none() {
                        return Err(unknown_user(user));
                    }
                }
                let creator_address = user_address(&creator);
                for user in &others {
                    if tx.blocks(user, &creator_address)? {
                        return Err(not_allowed(format!(
                            "{user} does not accept your invitations"
                        )));
                    }
                }
                for user in std::iter::once(&creator).chain(&others) {
                    check_room_for_group(tx, user, &creator)?;
                }
                let group = hex_string(&rand_bytes());
                if tx.group(&group)?.is_some() {
                    // 2^-128: not worth a retry loop.
                    return Err(Refusal::new(ErrorCode::Internal, "try again"));
                }
                let member = |user: &String, role| GroupMember {
                    user: user.clone(),
                    role,
                    joined_at: created_at,
                };
                let record = GroupRecord {
                    name,
                    version: 1,
                    created_at,
                    members: std::iter::once(member(&creator, Role::Owner))
                        .chain(others.iter().map(|u| member(u, Role::Member)))
                        .collect(),
                };
                tx.put_group(&group, &record)?;
                let notify = users(&record);
                Ok((group, (record, notify)))
            })
            .await?;
        tracing::info!("group {group} created, {} members", changed.0.members.len());
        Ok(self.roster_outcome(group, changed))
    }

    pub(super) async fn group_invite(
        &self,
        device: PeerId,
        group: String,
        user: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let (id, joined_at) = (group.clone(), now_ms());
        let changed = self
            .store
            .write_batched(move |tx| {
                let (mut record, role) = membership(tx, &id, &me)?;
                if !role.manages() {
                    return Err(not_allowed("only the owner and admins invite"));
                }
                if tx.user(&user)?.is_none() {
                    return Err(unknown_user(&user));
                }
                if record.role_of(&user).is_some() {
                    return Ok((record, Vec::new()));
                }
                if tx.blocks(&user, &user_address(&me))? || tx.blocks(&user, &group_address(&id))? {
                    return Err(not_allowed(format!(
                        "{user} does not accept invitations from you or to this group"
                    )));
                }
                if record.members.len() >= MAX_GROUP_MEMBERS {
                    return Err(not_allowed(format!(
                        "the group is full ({MAX_GROUP_MEMBERS} members)"
                    )));
                }
                check_room_for_group(tx, &user, &me)?;
                record.members.push(GroupMember {
                    user,
                    role: Role::Member,
                    joined_at,
                });
                bump(tx, &id, record, None)
            })
            .await?;
        Ok(self.roster_outcome(group, changed))
    }

    pub(super) async fn group_remove(
        &self,
        device: PeerId,
        group: String,
        user: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let id = group.clone();
        let changed = self
            .store
            .write_batched(move |tx| {
                let (mut record, role) = membership(tx, &id, &me)?;
                if !role.manages() {
                    return Err(not_allowed("a member cannot remove anyone"));
                }
                let Some(target) = record.role_of(&user) else {
                    return Ok((record, Vec::new()));
                };
                if user == me {
                    return Err(not_allowed("nobody removes themselves: leave the group"));
                }
                if role != Role::Owner && matches!(target, Role::Owner | Role::Admin) {
                    return Err(not_allowed("admins remove members only"));
                }
                record.members.retain(|m| m.user != user);
                bump(tx, &id, record, Some(user))
            })
            .await?;
        Ok(self.roster_outcome(group, changed))
    }

    pub(super) async fn group_leave(
        &self,
        device: PeerId,
        group: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let leaver = me.clone();
        let mut change = self
            .store
            .write_batched(move |tx| {
                let (record, _) = membership(tx, &group, &leaver)?;
                Ok::<_, Refusal>(leave_group(tx, &group, record, &leaver)?)
            })
            .await?;
        change.notify.push(me);
        Self::done(change.effects().collect())
    }

    pub(super) async fn group_set_role(
        &self,
        device: PeerId,
        group: String,
        user: String,
        role: Role,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        if !matches!(role, Role::Admin | Role::Member) {
            return Err(Refusal::new(
                ErrorCode::Invalid,
                "a role set here is admin or member (ownership is not handed over)",
            ));
        }
        let user = normalize_username(&user).map_err(|_| unknown_user(&user))?;
        let id = group.clone();
        let changed = self
            .store
            .write_batched(move |tx| {
                let (mut record, my_role) = membership(tx, &id, &me)?;
                if my_role != Role::Owner {
                    return Err(not_allowed("only the owner sets roles"));
                }
                let Some(member) = record.members.iter_mut().find(|m| m.user == user) else {
                    return Err(Refusal::new(
                        ErrorCode::NotFound,
                        format!("{user} is not in the group"),
                    ));
                };
                if member.role == Role::Owner {
                    return Err(not_allowed("the owner's role does not change"));
                }
                if member.role == role {
                    return Ok((record, Vec::new()));
                }
                member.role = role;
                bump(tx, &id, record, None)
            })
            .await?;
        Ok(self.roster_outcome(group, changed))
    }

    pub(super) async fn group_rename(
        &self,
        device: PeerId,
        group: String,
        name: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let name = group_name(&name)?;
        let id = group.clone();
        let changed = self
            .store
            .write_batched(move |tx| {
                let (mut record, role) = membership(tx, &id, &me)?;
                if !role.manages() {
                    return Err(not_allowed("only the owner and admins rename"));
                }
                if record.name == name {
                    return Ok((record, Vec::new()));
                }
                record.name = name;
                bump(tx, &id, record, None)
            })
            .await?;
        Ok(self.roster_outcome(group, changed))
    }

    pub(super) async fn groups(&self, device: PeerId) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let groups = self
            .blocking(move |s| {
                s.read(|tx| {
                    let mut out = Vec::new();
                    for (group, _) in tx.user_groups(&me)? {
                        if let Some(record) = tx.group(&group)? {
                            out.push(GroupVersion {
                                group,
                                version: record.version,
                            });
                        }
                    }
                    Ok::<_, Refusal>(out)
                })
            })
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::GroupList { groups },
            effects: Vec::new(),
        })
    }

    pub(super) async fn group_info(
        &self,
        device: PeerId,
        group: String,
    ) -> Result<Outcome, Refusal> {
        let me = self.logged_in(device).await?;
        let id = group.clone();
        let (record, _) = self
            .blocking(move |s| s.read(|tx| membership(tx, &id, &me)))
            .await?;
        Ok(Outcome {
            response: BootstrapResponse::Group(self.roster(&group, &record)),
            effects: Vec::new(),
        })
    }

    /// Stores a message to `group` in every member's mailbox; see the module docs.
    pub(super) async fn group_post(
        &self,
        device: PeerId,
        group: String,
        message: ChatMessage,
    ) -> Result<Outcome, Refusal> {
        let author = self.logged_in(device).await?;
        let from_device = device.to_bytes();
        let stored_at = now_ms();
        let max_entries = self.mailbox_max_entries;
        let (seq, grown) = self
            .store
            .write_batched(move |tx| {
                // Everything is decided before anything is written (the transaction is shared).
                // A retry of a stored post gets the same answer, as in `deposit`, even if the
                // author has left the group since.
                if let Some(seq) = tx.mailbox_seq_of(&author, &author, &message.id)? {
                    return Ok::<_, Refusal>((seq, Vec::new()));
                }
                let (record, _) = membership(tx, &group, &author)?;
                super::mls::refuse_plaintext(tx, &format!("group:{group}"), &message)?;
                check_room(tx, &author, max_entries)?;
                let mut receivers = Vec::new();
                let blocked = group_address(&group);
                for member in record.members.iter().filter(|m| m.user != author) {
                    if tx.blocks(&member.user, &blocked)? {
                        // It blocked the group: a member still, but nothing of it is stored.
                        continue;
                    }
                    if tx.mailbox_len(&member.user)? >= max_entries {
                        tracing::warn!(
                            "the mailbox of {} is full: a message of {author} to group {group} \
                             is not stored for it",
                            member.user
                        );
                    } else {
                        receivers.push(member.user.clone());
                    }
                }
                let entry = |outgoing: bool| MailboxEntry {
                    seq: 0,
                    conversation: format!("group:{group}"),
                    from_user: author.clone(),
                    from_device: from_device.clone(),
                    outgoing,
                    stored_at,
                    item: MailboxItem::Message(message.clone()),
                };
                let mut grown = Vec::new();
                for receiver in receivers {
                    let seq = tx.mailbox_append(&receiver, entry(false))?;
                    grown.push((receiver, seq));
                }
                let seq = tx.mailbox_append(&author, entry(true))?;
                grown.push((author.clone(), seq));
                Ok((seq, grown))
            })
            .await?;
        Ok(deposited(seq, grown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::tests::{PW, code, login, mailbox, mailbox_note, reg, service};
    use confab_protocol::bootstrap::{BootstrapRequest as R, ErrorCode as E, OfflineSummary};

    fn roster_of(out: &Outcome) -> Roster {
        match &out.response {
            BootstrapResponse::Group(roster) => roster.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn members_of(roster: &Roster) -> Vec<(&str, Role)> {
        roster
            .members
            .iter()
            .map(|m| (m.user.as_str(), m.role))
            .collect()
    }

    fn changed(group: &str, version: u64, users: &[&str]) -> Vec<Effect> {
        users
            .iter()
            .map(|u| Effect::Notify {
                user: (*u).into(),
                note: Notification::GroupChanged {
                    group: group.into(),
                    version,
                },
            })
            .collect()
    }

    fn info(group: &str) -> R {
        R::GroupInfo {
            group: group.into(),
        }
    }

    fn invite(group: &str, user: &str) -> R {
        R::GroupInvite {
            group: group.into(),
            user: user.into(),
        }
    }

    fn remove(group: &str, user: &str) -> R {
        R::GroupRemove {
            group: group.into(),
            user: user.into(),
        }
    }

    fn set_role(group: &str, user: &str, role: Role) -> R {
        R::GroupSetRole {
            group: group.into(),
            user: user.into(),
            role,
        }
    }

    fn post(group: &str, message: &ChatMessage) -> R {
        R::GroupPost {
            group: group.into(),
            message: message.clone(),
        }
    }

    fn listed(out: &Outcome) -> Vec<GroupVersion> {
        match &out.response {
            BootstrapResponse::GroupList { groups } => groups.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn four_users_in_a_group_with_its_permissions() {
        let (s, _dir, key) = service().await;
        let [ann, ann2, ben, cal, dee] = [(); 5].map(|_| PeerId::random());
        for (device, user) in [(ann, "ann"), (ben, "ben"), (cal, "cal"), (dee, "dee")] {
            s.handle(device, None, reg(user, PW)).await;
        }
        s.handle(ann2, None, login("ann", PW)).await;
        let mut versions = Vec::new();

        // Ann creates the group: names are normalised, duplicates and the creator dropped.
        let create = R::GroupCreate {
            name: "  Team  ".into(),
            members: vec!["Ben".into(), "cal".into(), "ben".into(), "ann".into()],
        };
        let out = s.handle(ann, None, create).await;
        let roster = roster_of(&out);
        let g = roster.group.clone();
        assert!(confab_protocol::group::is_group_id(&g), "{g}");
        assert_eq!(roster.name, "Team");
        assert_eq!(roster.version, 1);
        assert_eq!(
            members_of(&roster),
            [
                ("ann", Role::Owner),
                ("ben", Role::Member),
                ("cal", Role::Member)
            ]
        );
        assert_eq!(roster.issuer, key.public().to_peer_id().to_bytes());
        assert!(
            key.public()
                .verify(&roster.to_be_signed(), &roster.signature)
        );
        assert!(roster.validate().is_ok());
        assert_eq!(out.effects, changed(&g, 1, &["ann", "ben", "cal"]));
        versions.push(roster.version);

        // Dee is no member: the group does not exist for her, nor does an unknown id for anyone.
        let hello = ChatMessage::text("dee", "hello", 1);
        for request in [
            info(&g),
            post(&g, &hello),
            invite(&g, "dee"),
            remove(&g, "ben"),
        ] {
            let out = s.handle(dee, None, request).await;
            assert_eq!(code(&out), Some(E::NotFound), "{out:?}");
            assert!(out.effects.is_empty());
        }
        let unknown = "0".repeat(32);
        assert_eq!(
            code(&s.handle(ann, None, info(&unknown)).await),
            Some(E::NotFound)
        );
        assert!(mailbox(&s, "dee").is_empty() && mailbox(&s, "ann").is_empty());

        // Ben is a plain member: he neither removes nor invites, nor sets roles.
        for request in [
            remove(&g, "cal"),
            invite(&g, "dee"),
            set_role(&g, "cal", Role::Admin),
        ] {
            let out = s.handle(ben, None, request).await;
            assert_eq!(code(&out), Some(E::NotAllowed), "{out:?}");
        }
        let out = s.handle(ben, None, info(&g)).await;
        assert_eq!(roster_of(&out).version, 1);

        // Ann makes ben an admin; the owner's role is not changed here, nor handed over.
        let out = s.handle(ann, None, set_role(&g, "ben", Role::Admin)).await;
        let roster = roster_of(&out);
        assert_eq!(roster.role_of("ben"), Some(Role::Admin));
        assert_eq!(out.effects, changed(&g, 2, &["ann", "ben", "cal"]));
        versions.push(roster.version);
        assert_eq!(
            code(&s.handle(ann, None, set_role(&g, "ben", Role::Owner)).await),
            Some(E::Invalid)
        );
        assert_eq!(
            code(&s.handle(ann, None, set_role(&g, "ann", Role::Member)).await),
            Some(E::NotAllowed)
        );
        assert_eq!(
            code(&s.handle(ann, None, set_role(&g, "dee", Role::Admin)).await),
            Some(E::NotFound)
        );

        // Ben, an admin now, invites dee (twice: the second changes nothing) and removes her,
        // but not the owner; nobody invites a user who does not exist.
        let out = s.handle(ben, None, invite(&g, "DEE")).await;
        let roster = roster_of(&out);
        assert_eq!(roster.role_of("dee"), Some(Role::Member));
        assert_eq!(out.effects, changed(&g, 3, &["ann", "ben", "cal", "dee"]));
        versions.push(roster.version);
        let out = s.handle(ben, None, invite(&g, "dee")).await;
        assert_eq!(roster_of(&out).version, 3);
        assert!(out.effects.is_empty());
        assert_eq!(
            code(&s.handle(ben, None, invite(&g, "nobody")).await),
            Some(E::UnknownUser)
        );
        assert_eq!(roster_of(&s.handle(dee, None, info(&g)).await).version, 3);
        let out = s.handle(ben, None, remove(&g, "dee")).await;
        let roster = roster_of(&out);
        assert_eq!(roster.role_of("dee"), None);
        assert_eq!(out.effects, changed(&g, 4, &["ann", "ben", "cal", "dee"]));
        versions.push(roster.version);
        assert_eq!(
            code(&s.handle(ben, None, remove(&g, "ann")).await),
            Some(E::NotAllowed)
        );
        assert_eq!(
            code(&s.handle(ann, None, remove(&g, "ann")).await),
            Some(E::NotAllowed)
        );
        let out = s.handle(ann, None, remove(&g, "dee")).await;
        assert_eq!(roster_of(&out).version, 4, "dee is gone already");
        assert!(out.effects.is_empty());

        // Ann removes cal: cal is told, and the group is gone for him.
        let out = s.handle(ann, None, remove(&g, "cal")).await;
        let roster = roster_of(&out);
        assert_eq!(
            members_of(&roster),
            [("ann", Role::Owner), ("ben", Role::Admin)]
        );
        assert_eq!(out.effects, changed(&g, 5, &["ann", "ben", "cal"]));
        versions.push(roster.version);
        assert_eq!(
            code(&s.handle(cal, None, info(&g)).await),
            Some(E::NotFound)
        );

        // Ann's post reaches ben and ann's own mailbox (for her other devices), not cal's.
        let message = ChatMessage::text("ann", "hi team", 1);
        let out = s.handle(ann, None, post(&g, &message)).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert_eq!(
            out.effects,
            [mailbox_note("ben", 1), mailbox_note("ann", 1)]
        );
        let conversation = format!("group:{g}");
        let theirs = mailbox(&s, "ben").pop().unwrap();
        assert_eq!(
            theirs,
            MailboxEntry {
                seq: 1,
                conversation: conversation.clone(),
                from_user: "ann".into(),
                from_device: ann.to_bytes(),
                outgoing: false,
                stored_at: theirs.stored_at,
                item: MailboxItem::Message(message.clone()),
            }
        );
        let mine = mailbox(&s, "ann").pop().unwrap();
        assert_eq!(
            mine,
            MailboxEntry {
                outgoing: true,
                ..theirs.clone()
            }
        );
        assert!(mailbox(&s, "cal").is_empty());

        // The same post again is stored once and answered the same.
        let out = s.handle(ann, None, post(&g, &message)).await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert!(out.effects.is_empty());
        assert_eq!((mailbox(&s, "ann").len(), mailbox(&s, "ben").len()), (1, 1));

        // Cal, removed, posts no more.
        let out = s
            .handle(cal, None, post(&g, &ChatMessage::text("cal", "hey", 1)))
            .await;
        assert_eq!(code(&out), Some(E::NotFound));
        assert!(mailbox(&s, "ben").len() == 1 && mailbox(&s, "cal").is_empty());

        // The offline summary counts group messages under the group's conversation.
        s.handle(ann, None, post(&g, &ChatMessage::text("ann", "again", 2)))
            .await;
        let out = s.handle(ben, None, R::Summary { after: 0 }).await;
        assert_eq!(
            out.response,
            BootstrapResponse::Summary(OfflineSummary {
                senders: vec![(conversation.clone(), 2)],
                total: 2,
            })
        );
        let out = s.handle(ann2, None, R::Summary { after: 0 }).await;
        assert_eq!(
            out.response,
            BootstrapResponse::Summary(OfflineSummary::default()),
            "one's own posts are no news"
        );

        // An admin renames it; the lists show the versions.
        let rename = R::GroupRename {
            group: g.clone(),
            name: " Crew ".into(),
        };
        let out = s.handle(ben, None, rename).await;
        let roster = roster_of(&out);
        assert_eq!((roster.name.as_str(), roster.version), ("Crew", 6));
        versions.push(roster.version);
        let blank = R::GroupRename {
            group: g.clone(),
            name: "   ".into(),
        };
        assert_eq!(code(&s.handle(ann, None, blank).await), Some(E::Invalid));
        let out = s
            .handle(
                ben,
                None,
                R::GroupCreate {
                    name: "ben alone".into(),
                    members: Vec::new(),
                },
            )
            .await;
        let solo = roster_of(&out).group;
        assert_eq!(out.effects, changed(&solo, 1, &["ben"]));
        let mut bens = listed(&s.handle(ben, None, R::Groups).await);
        bens.sort_by(|a, b| a.group.cmp(&b.group));
        let mut want = vec![
            GroupVersion {
                group: g.clone(),
                version: 6,
            },
            GroupVersion {
                group: solo.clone(),
                version: 1,
            },
        ];
        want.sort_by(|a, b| a.group.cmp(&b.group));
        assert_eq!(bens, want);
        assert_eq!(
            listed(&s.handle(ann2, None, R::Groups).await),
            [GroupVersion {
                group: g.clone(),
                version: 6
            }]
        );
        assert!(listed(&s.handle(cal, None, R::Groups).await).is_empty());

        // Ann, the owner, leaves: ben, the admin, owns the group now.
        let out = s
            .handle(ann, None, R::GroupLeave { group: g.clone() })
            .await;
        assert_eq!(out.response, BootstrapResponse::Done);
        assert_eq!(out.effects, changed(&g, 7, &["ben", "ann"]));
        versions.push(7);
        let roster = roster_of(&s.handle(ben, None, info(&g)).await);
        assert_eq!(members_of(&roster), [("ben", Role::Owner)]);
        assert_eq!(roster.version, 7);
        assert_eq!(
            code(&s.handle(ann, None, info(&g)).await),
            Some(E::NotFound)
        );
        assert!(listed(&s.handle(ann, None, R::Groups).await).is_empty());
        assert_eq!(
            code(
                &s.handle(ann, None, R::GroupLeave { group: g.clone() })
                    .await
            ),
            Some(E::NotFound)
        );

        // Ben invites dee, then deletes his account: dee (the oldest member left) owns the group,
        // and is told; ben's group of one ends.
        let out = s.handle(ben, None, invite(&g, "dee")).await;
        versions.push(roster_of(&out).version);
        let out = s
            .handle(
                ben,
                None,
                R::DeleteAccount {
                    password: PW.into(),
                },
            )
            .await;
        assert_eq!(out.response, BootstrapResponse::Done);
        let told: Vec<&Effect> = out
            .effects
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Notify {
                        note: Notification::GroupChanged { .. },
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(told, changed(&g, 9, &["dee"]).iter().collect::<Vec<_>>());
        versions.push(9);
        let roster = roster_of(&s.handle(dee, None, info(&g)).await);
        assert_eq!(members_of(&roster), [("dee", Role::Owner)]);
        assert_eq!(roster.version, 9);
        assert_eq!(s.store().read(|tx| tx.group(&solo)).unwrap(), None);
        assert!(
            s.store()
                .read(|tx| tx.user_groups("ben"))
                .unwrap()
                .is_empty()
        );
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    }

    #[tokio::test]
    async fn creating_with_an_unknown_member_writes_nothing() {
        let (s, _dir, _) = service().await;
        let ann = PeerId::random();
        s.handle(ann, None, reg("ann", PW)).await;
        s.handle(PeerId::random(), None, reg("ben", PW)).await;
        for members in [vec!["ben", "zed"], vec!["ben", "not a name"]] {
            let create = R::GroupCreate {
                name: "team".into(),
                members: members.into_iter().map(Into::into).collect(),
            };
            let out = s.handle(ann, None, create).await;
            assert_eq!(code(&out), Some(E::UnknownUser), "{out:?}");
            assert!(out.effects.is_empty());
        }
        for user in ["ann", "ben"] {
            assert!(
                s.store()
                    .read(|tx| tx.user_groups(user))
                    .unwrap()
                    .is_empty()
            );
        }
        let empty = R::GroupCreate {
            name: " ".into(),
            members: Vec::new(),
        };
        assert_eq!(code(&s.handle(ann, None, empty).await), Some(E::Invalid));
        let stranger = R::GroupCreate {
            name: "team".into(),
            members: Vec::new(),
        };
        assert_eq!(
            code(&s.handle(PeerId::random(), None, stranger).await),
            Some(E::NotLoggedIn)
        );
    }

    #[tokio::test]
    async fn a_full_mailbox_misses_a_group_post_but_the_authors_refuses_it() {
        let (s, _dir, _) = service().await;
        let s = s.with_mailbox_limit(1);
        let [ann, ben, cal] = [(); 3].map(|_| PeerId::random());
        for (device, user) in [(ann, "ann"), (ben, "ben"), (cal, "cal")] {
            s.handle(device, None, reg(user, PW)).await;
        }
        let create = R::GroupCreate {
            name: "team".into(),
            members: vec!["ben".into(), "cal".into()],
        };
        let g = roster_of(&s.handle(ann, None, create).await).group;
        // Ben's mailbox fills with a direct message from cal (and cal's with its copy).
        let direct = R::Deposit {
            to: "ben".into(),
            message: ChatMessage::text("cal", "psst", 1),
        };
        s.handle(cal, None, direct).await;
        let out = s
            .handle(ann, None, post(&g, &ChatMessage::text("ann", "m1", 1)))
            .await;
        assert_eq!(out.response, BootstrapResponse::Deposited { seq: 1 });
        assert_eq!(out.effects, [mailbox_note("ann", 1)]);
        assert_eq!((mailbox(&s, "ben").len(), mailbox(&s, "cal").len()), (1, 1));
        // Ann's own mailbox is full now: refused, nothing written.
        let out = s
            .handle(ann, None, post(&g, &ChatMessage::text("ann", "m2", 1)))
            .await;
        assert_eq!(code(&out), Some(E::MailboxFull));
        assert!(out.effects.is_empty());
        assert_eq!(mailbox(&s, "ann").len(), 1);
    }

    #[tokio::test]
    async fn an_account_is_in_at_most_max_groups() {
        let (s, _dir, _) = service().await;
        let [ann, ben] = [(); 2].map(|_| PeerId::random());
        s.handle(ann, None, reg("ann", PW)).await;
        s.handle(ben, None, reg("ben", PW)).await;
        let create = |members: Vec<String>| R::GroupCreate {
            name: "g".into(),
            members,
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..MAX_GROUPS_PER_USER {
            let (s, request) = (s.clone(), create(vec!["ben".into()]));
            tasks.spawn(async move { s.handle(ann, None, request).await });
        }
        while let Some(out) = tasks.join_next().await {
            roster_of(&out.unwrap());
        }
        let out = s.handle(ann, None, create(Vec::new())).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        let BootstrapResponse::Error { message, .. } = out.response else {
            unreachable!()
        };
        assert!(message.starts_with("you are in"), "{message}");
        // Ben is as full: a group of his own with ann is refused for either.
        let out = s.handle(ben, None, create(Vec::new())).await;
        assert_eq!(code(&out), Some(E::NotAllowed));
        assert_eq!(
            s.store().read(|tx| tx.user_groups("ann")).unwrap().len(),
            MAX_GROUPS_PER_USER
        );
    }

    #[test]
    fn an_owner_leaving_hands_over_to_the_oldest_admin_else_the_oldest_member() {
        let member = |user: &str, role| GroupMember {
            user: user.into(),
            role,
            joined_at: 0,
        };
        let mut record = GroupRecord {
            name: "g".into(),
            version: 4,
            created_at: 0,
            members: vec![
                member("ann", Role::Owner),
                member("ben", Role::Member),
                member("cal", Role::Admin),
                member("dee", Role::Admin),
            ],
        };
        let roles = |r: &GroupRecord| {
            r.members
                .iter()
                .map(|m| (m.user.clone(), m.role))
                .collect::<Vec<_>>()
        };
        assert!(drop_member(&mut record, "ann"));
        assert_eq!(record.version, 5);
        assert_eq!(
            roles(&record),
            [
                ("ben".into(), Role::Member),
                ("cal".into(), Role::Owner),
                ("dee".into(), Role::Admin)
            ]
        );
        assert!(
            drop_member(&mut record, "dee"),
            "an admin leaving hands nothing"
        );
        assert!(drop_member(&mut record, "cal"));
        assert_eq!(roles(&record), [("ben".into(), Role::Owner)]);
        assert!(!drop_member(&mut record, "ben"), "nobody is left");
        assert_eq!(record.version, 8);
    }
}
