//! Groups on this device: their rosters, their gossip topics, and messages to them.
//!
//! - **Rosters.** The bootstrap is the authority on who is in a group; this device keeps the
//!   newest roster (signed by a trusted bootstrap, checked here) of each group its account is
//!   in, in memory and in the store (so it can check group messages while the bootstrap is
//!   away). At every session start it asks for the account's groups and fetches the rosters it
//!   lacks or has old; a `GroupChanged` push makes it fetch that group's roster again; a refusal
//!   (`NotFound`) means the account is no longer in the group. Comparing the old roster with the
//!   new one gives the front-end's events (`GroupInvited`, `GroupMemberAdded`,
//!   `GroupMemberRemoved`, `GroupUpdated`).
//! - **Messages.** A message to `group:<id>` is stored with an entry in the mailbox outbox and
//!   posted to the bootstrap (`GroupPost`, through the mailbox queue, so it is retried until
//!   stored), which puts it into every member's mailbox; at the same time it is published on the
//!   group's gossipsub topic for the members online now. A gossip message is accepted only if its
//!   author (the gossipsub `source`) proves with a certificate to be a device of a current
//!   member; anything else on the topic is rejected, which also lowers the sender's gossipsub
//!   score.

use super::e2e::NotReady;
use confab_protocol::bootstrap::ErrorCode;
use confab_protocol::group::{Role, Roster, group_topic, is_group_id};

use super::accounts::Caller;
use super::*;

/// A group request of this device's own: what its answer is for.
#[derive(Debug)]
pub(super) enum GroupCall {
    /// The account's groups.
    List,
    /// One group's roster.
    Info { group: String },
}

/// Why a roster is not to be trusted.
fn check_roster(roster: &Roster, trusted: impl Fn(&PeerId) -> bool) -> Result<(), String> {
    roster.validate()?;
    let issuer = PeerId::from_bytes(&roster.issuer).map_err(|e| format!("issuer: {e}"))?;
    if !trusted(&issuer) {
        return Err(format!("issued by {issuer}, not a trusted bootstrap"));
    }
    let key = cert::issuer_key(&issuer).map_err(|e| e.to_string())?;
    if !key.verify(&roster.to_be_signed(), &roster.signature) {
        return Err("the signature does not verify".into());
    }
    Ok(())
}

/// The events that a roster change means for the front-end (`me` is this device's account).
fn roster_events(old: Option<&Roster>, new: &Roster, me: &str) -> Vec<Event> {
    let group = new.group.clone();
    let Some(old) = old else {
        // New here. Its owner made it (on this device or another): no invitation to show.
        return match new.role_of(me) {
            Some(role) if role != Role::Owner => vec![Event::GroupInvited {
                group,
                name: new.name.clone(),
            }],
            _ => Vec::new(),
        };
    };
    let mut events = Vec::new();
    for m in &new.members {
        if old.role_of(&m.user).is_none() {
            events.push(Event::GroupMemberAdded {
                group: group.clone(),
                user: m.user.clone(),
            });
        }
    }
    for m in &old.members {
        if new.role_of(&m.user).is_none() {
            events.push(Event::GroupMemberRemoved {
                group: group.clone(),
                user: m.user.clone(),
            });
        }
    }
    let roles_changed = new
        .members
        .iter()
        .any(|m| old.role_of(&m.user).is_some_and(|r| r != m.role));
    if old.name != new.name || roles_changed {
        events.push(Event::GroupUpdated {
            group,
            name: new.name.clone(),
        });
    }
    events
}

impl EventLoop {
    /// Follows the groups whose rosters the store kept (at start).
    pub(super) fn load_rosters(&mut self, rosters: Vec<Roster>) {
        for roster in rosters {
            self.subscribe_group(&roster.group);
            self.rosters.insert(roster.group.clone(), roster);
        }
    }

    /// The session (re)started: find out which groups the account is in now.
    pub(super) fn refresh_groups(&mut self) {
        self.group_call(BootstrapRequest::Groups, GroupCall::List);
    }

    /// The bootstrap says a group changed.
    pub(super) fn group_changed(&mut self, group: String, version: u64) {
        if !is_group_id(&group) {
            return;
        }
        if self
            .rosters
            .get(&group)
            .is_some_and(|r| r.version >= version)
        {
            return;
        }
        let request = BootstrapRequest::GroupInfo {
            group: group.clone(),
        };
        self.group_call(request, GroupCall::Info { group });
    }

    fn group_call(&mut self, request: BootstrapRequest, call: GroupCall) {
        let Some(session) = &self.session else {
            return;
        };
        if let Some(peer) = self.bootstraps.target(Some(&session.bootstrap)) {
            self.send_call(peer, request, Caller::Group(call));
        }
    }

    /// The answer to one of this device's own group requests.
    pub(super) fn handle_group_answer(
        &mut self,
        call: GroupCall,
        result: Result<BootstrapResponse, CallError>,
    ) {
        match (call, result) {
            (GroupCall::List, Ok(BootstrapResponse::GroupList { groups })) => {
                let listed: HashSet<&str> = groups.iter().map(|g| g.group.as_str()).collect();
                let gone: Vec<String> = self
                    .rosters
                    .keys()
                    .filter(|g| !listed.contains(g.as_str()))
                    .cloned()
                    .collect();
                for group in gone {
                    self.group_gone(&group);
                }
                for g in groups {
                    self.group_changed(g.group, g.version);
                }
            }
            (_, Ok(BootstrapResponse::Group(roster))) => self.ingest_roster(roster),
            (
                GroupCall::Info { group },
                Err(CallError::Refused {
                    code: ErrorCode::NotFound,
                    ..
                }),
            ) => self.group_gone(&group),
            (call, other) => tracing::debug!("group request {call:?} failed: {other:?}"),
        }
    }

    /// A roster from the bootstrap (an answer to anyone's request): checked, compared with the
    /// one known, kept.
    pub(super) fn ingest_roster(&mut self, roster: Roster) {
        let Some(me) = self.session.as_ref().map(|s| s.user.clone()) else {
            return;
        };
        if let Err(e) = check_roster(&roster, |p| self.bootstraps.trusts(p)) {
            tracing::warn!("ignoring a roster of group {}: {e}", roster.group);
            return;
        }
        if roster.role_of(&me).is_none() {
            return self.group_gone(&roster.group);
        }
        let old = self.rosters.get(&roster.group);
        if old.is_some_and(|o| o.version >= roster.version) {
            return;
        }
        for event in roster_events(old, &roster, &me) {
            self.emit(event);
        }
        self.subscribe_group(&roster.group);
        self.rosters.insert(roster.group.clone(), roster.clone());
        let store = self.store.clone();
        self.run_store_op(async move {
            if let Err(e) = store.put_roster(roster).await {
                tracing::warn!("cannot keep a group roster: {e}");
            }
            StoreDone::Nothing
        });
    }

    /// This account is no longer in `group`: forget it, and say so if it was known.
    pub(super) fn group_gone(&mut self, group: &str) {
        if self.rosters.remove(group).is_none() {
            return;
        }
        self.unsubscribe_group(group);
        let store = self.store.clone();
        let owned = group.to_owned();
        self.run_store_op(async move {
            if let Err(e) = store.drop_roster(owned).await {
                tracing::warn!("cannot forget a group: {e}");
            }
            StoreDone::Nothing
        });
        if let Some(me) = self.session.as_ref().map(|s| s.user.clone()) {
            self.emit(Event::GroupMemberRemoved {
                group: group.to_owned(),
                user: me,
            });
        }
    }

    /// The session ended: the groups were the account's (the store forgets them with it).
    pub(super) fn forget_groups(&mut self) {
        let groups: Vec<String> = self.rosters.keys().cloned().collect();
        for group in groups {
            self.unsubscribe_group(&group);
        }
        self.rosters.clear();
    }

    fn subscribe_group(&mut self, group: &str) {
        let topic = gossipsub::IdentTopic::new(group_topic(group));
        if self
            .group_topics
            .insert(topic.hash(), group.to_owned())
            .is_none()
            && let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic)
        {
            tracing::warn!("cannot subscribe to group {group}: {e}");
        }
    }

    fn unsubscribe_group(&mut self, group: &str) {
        let topic = gossipsub::IdentTopic::new(group_topic(group));
        if self.group_topics.remove(&topic.hash()).is_some() {
            self.swarm.behaviour_mut().gossipsub.unsubscribe(&topic);
        }
    }

    /// The outbox target of a message to `group:` (this account must be a member), or why not.
    pub(super) fn group_target(&self, group: &str) -> Result<Outbox, SendError> {
        let address = format!("group:{group}");
        let Some(session) = &self.session else {
            return Err(SendError::NotLoggedIn(address));
        };
        let member = self
            .rosters
            .get(group)
            .is_some_and(|r| r.role_of(&session.user).is_some());
        if !member {
            return Err(SendError::NotMember(address));
        }
        if self.mailbox.pending() >= MAX_PENDING_DEPOSITS {
            return Err(SendError::OutboxFull(self.mailbox.pending()));
        }
        Ok(Outbox::Group(group.to_owned()))
    }

    /// Publishes a stored message to the group's members online now (the bootstrap stores it
    /// for everyone through the mailbox queue, so a publication that reaches nobody is fine).
    pub(super) fn publish_group(&mut self, group: &str, mut message: ChatMessage) {
        let Some(session) = &self.session else {
            return;
        };
        message.author_cert = Some(session.cert.clone());
        let frame = GossipFrame::Group {
            group: group.to_owned(),
            message,
        };
        let bytes = match encode(&frame) {
            Ok(b) => b,
            Err(e) => return tracing::error!("cannot encode a group message: {e}"),
        };
        let topic = gossipsub::IdentTopic::new(group_topic(group));
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!("no member of {group} online here; the bootstrap delivers");
            }
            Err(e) => tracing::debug!("group message not published ({e}); the bootstrap delivers"),
        }
    }

    /// Decides a group message from gossip: stored and accepted if its author is a device of a
    /// current member, rejected if not.
    pub(super) fn group_gossip(
        &mut self,
        author: Option<PeerId>,
        topic: &gossipsub::TopicHash,
        group: String,
        message: ChatMessage,
    ) -> gossipsub::MessageAcceptance {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        match self.group_topics.get(topic) {
            Some(g) if *g == group => {}
            // Published on another group's topic: a forgery or a bug, either way not for here.
            Some(_) => return Reject,
            None => return Ignore,
        }
        let Some(author) = author else {
            return Reject;
        };
        if author == self.local_peer {
            return Ignore;
        }
        // Valid, but not wanted here: not passed on, and not held against the sender.
        if self.blocks(&Conversation::Group(group.clone()), None) {
            return Ignore;
        }
        let Some(user) = self.certified_user(&author, &message) else {
            tracing::debug!(
                "rejecting {} on group {group}: no valid certificate",
                message.id
            );
            return Reject;
        };
        let Some(roster) = self.rosters.get(&group) else {
            return Ignore;
        };
        if roster.role_of(&user).is_none() {
            tracing::debug!(
                "rejecting {} on group {group}: {user} is not a member",
                message.id
            );
            return Reject;
        }
        // A member this account blocked: valid, so passed on by others, but not shown here (as
        // its mailbox copies are not).
        if self.blocks_user(&user) {
            return Ignore;
        }
        if self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            // Not stored now; the mailbox brings it.
            return Ignore;
        }
        let mine = self.session.as_ref().is_some_and(|s| s.user == user);
        let conversation = Conversation::Group(group);
        let ready = match self.open_incoming(&conversation, &author, Some(&user), message) {
            // Not readable here (or read already): the mailbox copy decides what is kept.
            Ok(ready) if ready.undecrypted() => return Ignore,
            Ok(ready) => ready,
            // The mailbox brings it again once this device has caught up.
            Err(NotReady::Later) => return Ignore,
            Err(NotReady::Refused(why)) => {
                tracing::debug!("rejecting a message on {conversation}: {why}");
                return Reject;
            }
        };
        let mut record = ready.record(conversation, &author, Some(user));
        if mine {
            // Written on another device of this account.
            record.outgoing = true;
            record.delivery = DeliveryState::Sent;
        }
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.insert_message(record.clone(), None).await;
            StoreDone::Stored { record, result }
        });
        Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_protocol::group::Member;
    use libp2p::identity::Keypair;

    fn roster(key: &Keypair, version: u64, members: &[(&str, Role)], name: &str) -> Roster {
        let mut r = Roster {
            group: "0123456789abcdef0123456789abcdef".into(),
            name: name.into(),
            version,
            members: members
                .iter()
                .map(|(u, role)| Member {
                    user: (*u).into(),
                    role: *role,
                })
                .collect(),
            issued_at: 1,
            issuer: key.public().to_peer_id().to_bytes(),
            signature: Vec::new(),
        };
        r.signature = key.sign(&r.to_be_signed()).unwrap();
        r
    }

    #[test]
    fn rosters_are_trusted_only_from_a_trusted_bootstrap_with_a_valid_signature() {
        let key = Keypair::generate_ed25519();
        let boot = key.public().to_peer_id();
        let good = roster(&key, 1, &[("ann", Role::Owner)], "team");
        assert_eq!(check_roster(&good, |p| *p == boot), Ok(()));
        assert!(check_roster(&good, |_| false).is_err(), "untrusted issuer");
        let mut forged = good.clone();
        forged.members.push(Member {
            user: "dee".into(),
            role: Role::Member,
        });
        assert!(
            check_roster(&forged, |p| *p == boot).is_err(),
            "changed after signing"
        );
    }

    #[test]
    fn roster_changes_become_events() {
        let key = Keypair::generate_ed25519();
        let v1 = roster(
            &key,
            1,
            &[
                ("ann", Role::Owner),
                ("ben", Role::Member),
                ("cal", Role::Member),
            ],
            "team",
        );
        let g = v1.group.clone();
        assert_eq!(
            roster_events(None, &v1, "ben"),
            [Event::GroupInvited {
                group: g.clone(),
                name: "team".into()
            }]
        );
        assert!(
            roster_events(None, &v1, "ann").is_empty(),
            "the owner made it"
        );
        let v2 = roster(
            &key,
            2,
            &[
                ("ann", Role::Owner),
                ("ben", Role::Admin),
                ("dee", Role::Member),
            ],
            "team",
        );
        assert_eq!(
            roster_events(Some(&v1), &v2, "ann"),
            [
                Event::GroupMemberAdded {
                    group: g.clone(),
                    user: "dee".into()
                },
                Event::GroupMemberRemoved {
                    group: g.clone(),
                    user: "cal".into()
                },
                Event::GroupUpdated {
                    group: g,
                    name: "team".into()
                },
            ]
        );
    }
}
