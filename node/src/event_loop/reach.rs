//! Delivering messages to users' devices directly, beside the mailbox.
//!
//! A message to `user:bob` is deposited in bob's mailbox (durable: `event_loop/mailbox.rs`) and,
//! at the same time, sent over `/confab/direct/1` (`UserChat`) to every device of bob's that
//! this node can reach: on the LAN, directly or through a relay. The devices are those the
//! bootstrap lists (`Devices`, answered for friends; asked again after [`DEVICES_TTL`] or when
//! bob's presence changes) and those whose certificate this node verified on a message from them
//! (a peer's `user`), so two devices on a LAN keep chatting while the bootstrap is down.
//!
//! The receiver checks that it is logged into the account the message is for and that the
//! author's certificate names the connection's peer, stores it under `user:<author>`
//! (deduplicated against the mailbox copy, which has the same author device and id) and
//! acknowledges after its commit: the sender's message becomes `delivered`. A device that cannot
//! be reached within [`DIRECT_USER_WAIT`] is left to the mailbox.

use confab_protocol::bootstrap::{DeviceInfo, normalize_username};

use super::accounts::Caller;
use super::*;

/// What this node knows of one user's devices.
#[derive(Debug)]
pub(super) struct KnownDevices {
    /// As the bootstrap last listed them.
    listed: Vec<PeerId>,
    /// When that list came; `None`: never, or stale since a presence change.
    fetched: Option<Instant>,
    /// A `Devices` request is on the wire.
    asking: bool,
    /// Messages sent while the first list is asked for.
    waiting: Vec<ChatMessage>,
    /// The last time a message went to this user (the least recently used user is forgotten).
    used: Instant,
}

impl KnownDevices {
    fn new(now: Instant) -> Self {
        Self {
            listed: Vec::new(),
            fetched: None,
            asking: false,
            waiting: Vec::new(),
            used: now,
        }
    }
}

/// The peer ids and addresses of a `Devices` answer (unparseable entries are skipped).
fn parse_devices(devices: Vec<DeviceInfo>) -> Vec<(PeerId, Vec<Multiaddr>)> {
    devices
        .into_iter()
        .filter_map(|d| {
            let peer = PeerId::from_bytes(&d.peer).ok()?;
            let addrs = d
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a.into_vec()).ok())
                .collect();
            Some((peer, addrs))
        })
        .collect()
}

impl EventLoop {
    /// Sends `message` (already stored and queued for the mailbox) straight to the devices of
    /// `user` this node can reach, asking the bootstrap which they are if the list is missing or
    /// old.
    pub(super) fn deliver_to_user(&mut self, user: String, message: ChatMessage) {
        let now = Instant::now();
        self.forget_least_used_user(&user);
        let bootstrap = self
            .session
            .as_ref()
            .and_then(|s| self.bootstraps.target(Some(&s.bootstrap)));
        let known = self
            .devices
            .entry(user.clone())
            .or_insert_with(|| KnownDevices::new(now));
        known.used = now;
        let stale = known
            .fetched
            .is_none_or(|t| now.duration_since(t) >= DEVICES_TTL);
        let ask = stale && !known.asking && bootstrap.is_some();
        if ask {
            known.asking = true;
        }
        // Nothing listed yet and the list is on its way: wait for it (briefly).
        if known.asking && known.fetched.is_none() && known.listed.is_empty() {
            if known.waiting.len() < MAX_DIRECT_USER_QUEUE {
                known.waiting.push(message);
            }
        } else {
            self.send_to_devices(&user, vec![message], now);
        }
        if ask && let Some(peer) = bootstrap {
            let request = BootstrapRequest::Devices { user: user.clone() };
            self.send_call(peer, request, Caller::Devices(user));
        }
    }

    /// The bootstrap's list of `user`'s devices (or why there is none).
    pub(super) fn handle_devices_answer(
        &mut self,
        user: String,
        result: Result<BootstrapResponse, CallError>,
    ) {
        let now = Instant::now();
        let listed = match result {
            Ok(BootstrapResponse::Devices { devices, .. }) => Some(parse_devices(devices)),
            other => {
                tracing::debug!("no device list for {user}: {other:?}");
                None
            }
        };
        if let Some(listed) = &listed {
            for (peer, addrs) in listed {
                if *peer == self.local_peer {
                    continue;
                }
                let entry = self
                    .peers
                    .entry(*peer)
                    .or_insert_with(|| PeerEntry::new(PeerSource::Dial));
                // The bootstrap is the authority on which account a device belongs to.
                entry.user = Some(user.clone());
                for addr in addrs.iter().take(MAX_ADDRS_PER_PEER) {
                    if entry.add_addr(addr.clone()) {
                        self.swarm.add_peer_address(*peer, addr.clone());
                    }
                }
                self.remember_peer(*peer);
            }
        }
        let Some(known) = self.devices.get_mut(&user) else {
            return;
        };
        known.asking = false;
        if let Some(listed) = listed {
            known.listed = listed.into_iter().map(|(p, _)| p).collect();
            known.fetched = Some(now);
        }
        let waiting = std::mem::take(&mut known.waiting);
        if !waiting.is_empty() {
            self.send_to_devices(&user, waiting, now);
        }
    }

    /// `user`'s presence changed: their device list is asked again with the next message.
    pub(super) fn user_presence_changed(&mut self, user: &str) {
        if let Some(known) = self.devices.get_mut(user) {
            known.fetched = None;
        }
    }

    /// Queues `messages` for every device of `user` known now and tries to reach each.
    fn send_to_devices(&mut self, user: &str, messages: Vec<ChatMessage>, now: Instant) {
        let mut devices: Vec<PeerId> = self
            .devices
            .get(user)
            .map(|k| k.listed.clone())
            .unwrap_or_default();
        for (peer, entry) in &self.peers {
            if entry.user.as_deref() == Some(user) && !devices.contains(peer) {
                devices.push(*peer);
            }
        }
        devices.retain(|p| *p != self.local_peer && !self.bootstraps.trusts(p));
        if devices.is_empty() {
            tracing::debug!("no device of {user} known: the mailbox delivers");
            return;
        }
        let until = now + DIRECT_USER_WAIT;
        for device in devices {
            let queue = self.outbox.entry(device).or_default();
            for message in &messages {
                let waiting = queue
                    .iter()
                    .filter(|o| matches!(o, Outgoing::User { .. }))
                    .count();
                if waiting >= MAX_DIRECT_USER_QUEUE {
                    break;
                }
                queue.push_back(Outgoing::User {
                    to: user.to_owned(),
                    message: message.clone(),
                    until,
                });
            }
            self.flush_outbox(device);
        }
    }

    /// Keeps the device lists bounded: makes room for `user` by forgetting the least recently
    /// used other user.
    fn forget_least_used_user(&mut self, user: &str) {
        if self.devices.len() < MAX_KNOWN_USERS || self.devices.contains_key(user) {
            return;
        }
        let oldest = self
            .devices
            .iter()
            .filter(|(_, k)| !k.asking)
            .min_by_key(|(_, k)| k.used)
            .map(|(u, _)| u.clone());
        if let Some(oldest) = oldest {
            self.devices.remove(&oldest);
        }
    }

    /// Whether a `UserChat` from `peer` to account `to` may be stored here: this device must be
    /// logged into `to`, and the message must carry a valid certificate of its author's account
    /// for `peer`. Returns the author's account, or why not.
    pub(super) fn user_chat(
        &mut self,
        peer: &PeerId,
        to: &str,
        message: &ChatMessage,
    ) -> Result<String, String> {
        let Some(me) = self.session.as_ref().map(|s| s.user.clone()) else {
            return Err("this device is not logged into an account".into());
        };
        if normalize_username(to).ok().as_deref() != Some(me.as_str()) {
            return Err(format!("this device is not logged in as {to}"));
        }
        let Some(author) = self.certified_user(peer, message) else {
            return Err("the message has no valid certificate of its author's account".into());
        };
        if author == me {
            return Err("a message from this account to itself".into());
        }
        Ok(author)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_keep_what_parses() {
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let parsed = parse_devices(vec![
            DeviceInfo {
                peer: peer.to_bytes(),
                addrs: vec![
                    serde_bytes::ByteBuf::from(addr.to_vec()),
                    serde_bytes::ByteBuf::from(vec![0xff, 0xff]),
                ],
            },
            DeviceInfo {
                peer: vec![1, 2, 3],
                addrs: Vec::new(),
            },
        ]);
        assert_eq!(parsed, vec![(peer, vec![addr])]);
    }
}
