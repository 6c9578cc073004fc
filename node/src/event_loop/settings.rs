//! The account's settings on this device: do-not-disturb, muted conversations, blocked users
//! and groups.
//!
//! The bootstrap keeps them (the same on every device of the account); this device keeps the
//! newest version it heard of, in memory and in the store, so it applies them while the
//! bootstrap is away. It asks for them at every session start and when the bootstrap says they
//! changed (`SettingsChanged`); every change made here comes back as the new settings.
//!
//! - **Alerts.** A message's `notify` is false when it is this account's own, when
//!   do-not-disturb is on, or when its conversation is muted ([`EventLoop::emit`] applies it).
//! - **Blocking.** The bootstrap refuses a blocked user's messages, friend requests and invites,
//!   and stores nothing of a blocked group for this account; this device also drops what still
//!   reaches it: direct messages and broadcasts whose certificate names a blocked user, mailbox
//!   entries from one, and everything of a blocked group (gossip and mailbox).

use confab_protocol::bootstrap::AccountSettings;

use super::accounts::Caller;
use super::*;

impl EventLoop {
    /// The session (re)started: fetch the settings.
    pub(super) fn refresh_settings(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        if let Some(peer) = self.bootstraps.target(Some(&session.bootstrap)) {
            self.send_call(peer, BootstrapRequest::Settings, Caller::Settings);
        }
    }

    /// The bootstrap says the settings changed.
    pub(super) fn settings_changed(&mut self, version: u64) {
        if version > self.settings.version {
            self.refresh_settings();
        }
    }

    /// Settings from the bootstrap (an answer to this device's request or to a client's
    /// change): kept if newer, and told to the front-ends.
    pub(super) fn ingest_settings(&mut self, settings: AccountSettings) {
        if self.session.is_none() || settings.version <= self.settings.version {
            return;
        }
        self.settings = settings.clone();
        self.emit(Event::Settings(crate::client::Settings::from_account(
            &settings,
        )));
        let store = self.store.clone();
        self.run_store_op(async move {
            if let Err(e) = store.put_settings(settings).await {
                tracing::warn!("cannot keep the account's settings: {e}");
            }
            StoreDone::Nothing
        });
    }

    /// The answer to this device's own settings request.
    pub(super) fn handle_settings_answer(&mut self, result: Result<BootstrapResponse, CallError>) {
        match result {
            Ok(BootstrapResponse::Settings(settings)) => self.ingest_settings(settings),
            other => tracing::debug!("settings request failed: {other:?}"),
        }
    }

    /// The session ended: the settings were the account's.
    pub(super) fn forget_settings(&mut self) {
        self.settings = AccountSettings::default();
    }

    /// Whether a message in `conversation` from someone else should alert the person.
    pub(super) fn alerts(&self, conversation: &Conversation) -> bool {
        if self.settings.dnd {
            return false;
        }
        let address = conversation.to_string();
        !self.settings.muted.contains(&address)
    }

    /// Whether the account blocked `user`.
    pub(super) fn blocks_user(&self, user: &str) -> bool {
        let address = format!("user:{user}");
        self.settings.blocked.contains(&address)
    }

    /// Whether the account blocked the conversation itself (a group), or its author.
    pub(super) fn blocks(&self, conversation: &Conversation, author: Option<&str>) -> bool {
        let group_blocked = matches!(conversation, Conversation::Group(_))
            && self.settings.blocked.contains(&conversation.to_string());
        group_blocked || author.is_some_and(|u| self.blocks_user(u))
    }
}
