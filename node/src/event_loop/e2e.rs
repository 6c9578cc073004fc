//! End-to-end encryption in the event loop: sealing what this device sends to an encrypted
//! conversation, opening what arrives, and handing the MLS work with the bootstrap to the
//! driver ([`crate::e2e`]).
//!
//! A conversation never falls back to plaintext: once this device knows it is encrypted, a
//! message to it is sealed or not sent at all, and a plaintext message arriving in it is refused
//! (the bootstrap refuses plaintext deposits to it as well).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_protocol::ChatMessage;
use confab_protocol::e2e::{Sealed, SealedContent, Suite};
use libp2p::PeerId;

use super::EventLoop;
use crate::address::Conversation;
use crate::client::{Encryption, Reply};
use crate::e2e::{E2eError, Job, Me, bootstrap_name};
use crate::error::SendError;
use crate::mls::{Mls, MlsError};

/// A conversation's MLS state is asked to catch up at most this often because of messages.
const SYNC_AGAIN_AFTER: Duration = Duration::from_secs(2);
/// A mailbox entry waits at most this long for a catch-up of its conversation.
const MAX_LATER: Duration = Duration::from_secs(600);

/// An incoming message ready to be stored: plaintext in a conversation that is not encrypted,
/// decrypted (`encrypted`, with its attachment's key), or encrypted but not readable on this
/// device (sent before it joined, or its key used already: `encrypted`, without content).
pub(super) struct Ready {
    pub message: ChatMessage,
    pub encrypted: bool,
    pub file_key: Option<Vec<u8>>,
}

impl Ready {
    /// Encrypted, but with no content here.
    pub(super) fn undecrypted(&self) -> bool {
        self.encrypted && self.message.text.is_none() && self.message.attachment.is_none()
    }
}

/// Why an incoming message is not stored now.
pub(super) enum NotReady {
    /// From an epoch this device has not reached: the driver catches up; it comes again.
    Later,
    /// Breaks a rule (plaintext in an encrypted conversation, a forged sender, a wrong suite).
    Refused(String),
}

fn refused(why: impl Into<String>) -> Result<Ready, NotReady> {
    Err(NotReady::Refused(why.into()))
}

/// An encrypted message kept without its content.
pub(super) fn undecryptable(message: &ChatMessage) -> Ready {
    Ready {
        message: ChatMessage {
            sealed: None,
            ..message.clone()
        },
        encrypted: true,
        file_key: None,
    }
}

impl Ready {
    /// How it is stored, from `author` (a device of `user`) in `conversation`.
    pub(super) fn record(
        &self,
        conversation: Conversation,
        author: &PeerId,
        user: Option<String>,
    ) -> crate::store::StoredMessage {
        let mut record = super::incoming_record(conversation, author, user, &self.message);
        record.encrypted = self.encrypted;
        record.file_key = self.file_key.clone();
        record
    }
}

impl EventLoop {
    /// Opens this account's MLS state (at start with a kept session, and at login), and has the
    /// driver catch up with the bootstrap.
    pub(super) fn open_mls(&mut self) {
        let Some(user) = self.session.as_ref().map(|s| s.user.clone()) else {
            self.mls = None;
            return;
        };
        if self.mls.as_ref().is_none_or(|m| m.user() != user) {
            match Mls::open(&self.mls_path, &user, self.local_peer) {
                Ok(mls) => self.mls = Some(Arc::new(mls)),
                Err(e) => {
                    tracing::error!("cannot open the MLS state: {e}");
                    self.mls = None;
                    return;
                }
            }
        }
        if let Some(me) = self.me() {
            self.e2e.push(Job::Session(me));
        }
    }

    pub(super) fn me(&self) -> Option<Me> {
        Some(Me {
            mls: self.mls.clone()?,
            user: self.session.as_ref()?.user.clone(),
            peer: self.local_peer,
        })
    }

    /// The bootstrap name of a conversation of this account that can be encrypted.
    fn e2e_name(&self, conversation: &Conversation) -> Option<String> {
        bootstrap_name(&self.session.as_ref()?.user, conversation)
    }

    pub(super) fn handle_encrypt(
        &mut self,
        to: Conversation,
        suite: Suite,
        reply: Reply<Result<Suite, E2eError>>,
    ) {
        let Some(me) = self.me() else {
            let _ = reply.send(Err(E2eError::NotLoggedIn));
            return;
        };
        let Some(conversation) = self.e2e_name(&to) else {
            let _ = reply.send(Err(E2eError::Unsupported(to.to_string())));
            return;
        };
        if let Conversation::Group(group) = &to
            && !self.rosters.contains_key(group)
        {
            let _ = reply.send(Err(E2eError::Refused(format!("not a member of {to}"))));
            return;
        }
        self.e2e.push(Job::Start {
            me,
            conversation,
            suite,
            reply,
        });
    }

    /// Whether `to` is end-to-end encrypted, as this device knows.
    pub(super) fn is_encrypted(&self, to: &Conversation) -> bool {
        self.e2e_name(to)
            .zip(self.mls.as_ref())
            .is_some_and(|(name, mls)| mls.suite(&name).is_some())
    }

    pub(super) fn encryption_of(&self, to: &Conversation) -> Option<Encryption> {
        let name = self.e2e_name(to)?;
        let mls = self.mls.as_ref()?;
        let suite = mls.suite(&name)?;
        let member = mls.is_member(&name);
        Some(Encryption {
            suite,
            epoch: member.then(|| mls.epoch(&name)).flatten(),
            devices: mls
                .members(&name)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| {
                    let peer = PeerId::from_bytes(&d.device).ok()?;
                    Some((d.user, peer.to_base58()))
                })
                .collect(),
        })
    }

    /// Asks the driver to catch up with `conversation` (not again within a moment).
    pub(super) fn e2e_sync(&mut self, conversation: &str) {
        let now = Instant::now();
        if self
            .e2e_syncing
            .get(conversation)
            .is_some_and(|at| now.duration_since(*at) < SYNC_AGAIN_AFTER)
        {
            return;
        }
        self.e2e_syncing
            .retain(|_, at| now.duration_since(*at) < SYNC_AGAIN_AFTER);
        self.e2e_syncing.insert(conversation.to_owned(), now);
        if let Some(me) = self.me() {
            self.e2e.push(Job::Sync(me, conversation.to_owned()));
        }
    }

    /// The bootstrap says an encrypted conversation changed (a commit, a Welcome): catch up.
    pub(super) fn mls_notified(&mut self, conversation: String) {
        if let Some(me) = self.me() {
            self.e2e_syncing
                .insert(conversation.clone(), Instant::now());
            self.e2e.push(Job::Sync(me, conversation));
        }
    }

    /// A group's roster changed: if it is encrypted, membership follows (and a device that
    /// did not know it is encrypted — just invited — finds out and joins).
    pub(super) fn e2e_group_changed(&mut self, group: &str) {
        let name = format!("group:{group}");
        match &self.mls {
            Some(m) if m.suite(&name).is_some() => self.mls_notified(name),
            Some(_) => {
                if let Some(me) = self.me() {
                    self.e2e.push(Job::Probe(me, name));
                }
            }
            None => {}
        }
    }

    /// The form of `message` that goes on the wire to `to`: sealed when `to` is encrypted
    /// (`None` when it is not). An error when it is but this device cannot encrypt for it.
    pub(super) fn seal(
        &mut self,
        to: &Conversation,
        message: &ChatMessage,
        file_key: Option<Vec<u8>>,
    ) -> Result<Option<ChatMessage>, SendError> {
        let Some(name) = self.e2e_name(to) else {
            return Ok(None);
        };
        let Some(mls) = self.mls.clone() else {
            return Err(SendError::Encryption(
                "the end-to-end encryption state of this device cannot be opened; nothing was sent"
                    .into(),
            ));
        };
        let Some(suite) = mls.suite(&name) else {
            return Ok(None);
        };
        if !mls.is_member(&name) {
            self.e2e_sync(&name);
            return Err(SendError::Encryption(format!(
                "{to} is end-to-end encrypted ({suite}) and this device has not joined it yet; \
                 try again in a moment"
            )));
        }
        let content = SealedContent {
            id: message.id,
            sender_name: message.sender_name.clone(),
            text: message.text.clone(),
            attachment: message.attachment.clone(),
            file_key,
        };
        let plaintext = cbor4ii::serde::to_vec(Vec::new(), &content)
            .map_err(|e| SendError::Encryption(format!("cannot encode the message: {e:?}")))?;
        let ciphertext = mls
            .encrypt(&name, &plaintext)
            .map_err(|e| SendError::Encryption(format!("cannot encrypt: {e}")))?;
        if let Some(a) = &message.attachment {
            self.sealed_files.insert(message.id, (a.hash, a.size));
        }
        Ok(Some(ChatMessage {
            id: message.id,
            sent_at: message.sent_at,
            sender_name: String::new(),
            text: None,
            author_cert: None,
            attachment: None,
            sealed: Some(Box::new(Sealed {
                suite: suite.code(),
                ciphertext,
            })),
        }))
    }

    /// Decides an incoming message of `conversation` from device `author` of account `user`
    /// (both authenticated: by the connection, a certificate or the bootstrap).
    pub(super) fn open_incoming(
        &mut self,
        conversation: &Conversation,
        author: &PeerId,
        user: Option<&str>,
        message: ChatMessage,
    ) -> Result<Ready, NotReady> {
        let name = self.e2e_name(conversation);
        let Some(sealed) = message.sealed.as_deref() else {
            let encrypted = name
                .as_deref()
                .zip(self.mls.as_ref())
                .is_some_and(|(n, m)| m.suite(n).is_some());
            return if encrypted {
                refused(format!(
                    "plaintext in the end-to-end encrypted {conversation}"
                ))
            } else {
                Ok(Ready {
                    message,
                    encrypted: false,
                    file_key: None,
                })
            };
        };
        let (Some(name), Some(mls), Some(user)) = (name, self.mls.clone(), user) else {
            return refused("an encrypted message outside an account's conversation");
        };
        if let Some(suite) = mls.suite(&name)
            && suite.code() != sealed.suite
        {
            return refused(format!(
                "a message in {:#06x}, the conversation is encrypted with {suite}",
                sealed.suite
            ));
        }
        // MLS cannot decrypt one's own messages: this device keeps what it sent.
        if *author == self.local_peer {
            return Ok(undecryptable(&message));
        }
        let opened = match mls.decrypt(&name, &sealed.ciphertext) {
            Ok(opened) => opened,
            Err(MlsError::Behind { .. } | MlsError::NotMember(_)) => {
                self.e2e_sync(&name);
                return Err(NotReady::Later);
            }
            Err(MlsError::Undecryptable(why)) => {
                tracing::debug!(
                    "{} in {conversation} cannot be decrypted: {why}",
                    message.id
                );
                return Ok(undecryptable(&message));
            }
            Err(e) => return refused(e.to_string()),
        };
        if opened.user != user || opened.peer != *author {
            return refused(format!(
                "sealed by {} on {}, delivered as {user} on {author}",
                opened.user, opened.peer
            ));
        }
        let content: SealedContent = match cbor4ii::serde::from_slice(&opened.plaintext) {
            Ok(c) => c,
            Err(e) => return refused(format!("undecodable content: {e:?}")),
        };
        if content.id != message.id {
            return refused("the sealed id is not the message's");
        }
        let open = ChatMessage {
            id: message.id,
            sent_at: message.sent_at,
            sender_name: content.sender_name,
            text: content.text,
            author_cert: message.author_cert,
            attachment: content.attachment,
            sealed: None,
        };
        if let Err(e) = open.validate() {
            return refused(e.to_string());
        }
        Ok(Ready {
            message: open,
            encrypted: true,
            file_key: content.file_key,
        })
    }

    /// Messages to users and groups still waiting for the bootstrap after a restart, queued
    /// again: those of encrypted conversations (also those written before the conversation
    /// became encrypted) sealed afresh. One that cannot be sealed now stays in the outbox for the
    /// next start; none goes in clear into an encrypted conversation.
    pub(super) fn reseal_outbox(&mut self, records: Vec<(String, crate::store::StoredMessage)>) {
        let now = Instant::now();
        for (to, record) in records {
            let Some(author) = record.from_user.clone() else {
                continue;
            };
            let conversation = match to.strip_prefix("group:") {
                Some(group) => Conversation::Group(group.to_owned()),
                None => Conversation::User(to.clone()),
            };
            let message = ChatMessage {
                id: record.id,
                sent_at: record.sent_at,
                sender_name: record.from_name.clone(),
                text: record.text.clone(),
                author_cert: None,
                attachment: record.attachment.clone(),
                sealed: None,
            };
            match self.seal(&conversation, &message, record.file_key.clone()) {
                // A file prepared in clear, and the conversation is encrypted now.
                Ok(Some(_)) if record.attachment.is_some() && record.file_key.is_none() => {
                    tracing::warn!(
                        "{} carries a file in clear into {conversation}: not sent",
                        record.id
                    )
                }
                Ok(Some(wire)) => self.mailbox.add_deposit(author, to, wire, now),
                Ok(None) if record.encrypted => {
                    tracing::warn!("{} was sent encrypted; not sending it in clear", record.id)
                }
                Ok(None) if message.validate().is_ok() => {
                    self.mailbox.add_deposit(author, to, message, now)
                }
                Ok(None) => tracing::warn!("skipping outbox entry {}: nothing to send", record.id),
                Err(e) => tracing::warn!("{} waits for the next start: {e}", record.id),
            }
        }
    }

    /// For the mailbox: whether an entry of `conversation` that cannot be opened yet waits
    /// (for a catch-up of the conversation that starts after it first waited), or is given up
    /// (`false`: such a catch-up finished and it still cannot be opened, or it waited
    /// [`MAX_LATER`]).
    pub(super) fn wait_for_sync(
        &mut self,
        id: confab_protocol::MessageId,
        conversation: &Conversation,
    ) -> bool {
        let now = Instant::now();
        self.e2e_later
            .retain(|_, since| now.duration_since(*since) < MAX_LATER);
        let since = *self.e2e_later.entry(id).or_insert(now);
        let synced_since = self
            .e2e_name(conversation)
            .and_then(|name| self.e2e_synced.get(&name))
            .is_some_and(|at| *at > since);
        if synced_since || now.duration_since(since) >= MAX_LATER {
            self.e2e_later.remove(&id);
            return false;
        }
        true
    }
}
