//! What the window shows, kept up to date from node events and the outcomes of the app's own
//! requests. No I/O here: the UI reads it, [`crate::bridge`] feeds it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use confab_node::{
    Conversation, DeliveryState, Event, FileHoldState, Friends, Group, Message, MessageId,
    PeerInfo, PeerSource, Settings, WhoAmI,
};

/// Messages kept per conversation in memory at most (older ones stay in the node's store).
pub const MAX_MESSAGES_SHOWN: usize = 10_000;

/// The result of a request the app made, for the model.
#[derive(Debug)]
pub enum Outcome {
    /// Who this node is.
    WhoAmI(Result<WhoAmI, String>),
    /// The peers known now.
    Peers(Result<Vec<PeerInfo>, String>),
    /// A conversation's history, oldest first.
    History {
        /// Which.
        conversation: Conversation,
        /// Its messages.
        result: Result<Vec<Message>, String>,
    },
    /// Signed in (or registered) as this user.
    SignedIn(Result<String, String>),
    /// Signed out.
    SignedOut(Result<(), String>),
    /// Friends and requests.
    Friends(Result<Friends, String>),
    /// The groups this account is in.
    Groups(Result<Vec<Group>, String>),
    /// The account's settings.
    Settings(Result<Settings, String>),
    /// A message was sent (stored locally; it arrives as an event too).
    Sent(Result<MessageId, String>),
    /// A download finished.
    Fetched {
        /// The message whose file it is.
        id: MessageId,
        /// Where the file is.
        result: Result<PathBuf, String>,
    },
    /// Something else finished: a line for the status bar, or an error.
    Note(Result<String, String>),
    /// This account's profile.
    Profile(Result<confab_node::Profile, String>),
    /// Users found by a search.
    Found(Result<Vec<confab_node::UserSummary>, String>),
    /// Whether a conversation is end-to-end encrypted.
    Encryption {
        /// Which.
        conversation: Conversation,
        /// Its encryption, if any.
        result: Result<Option<confab_node::Encryption>, String>,
    },
}

/// A conversation as shown.
#[derive(Debug, Clone)]
pub struct Chat {
    /// Which.
    pub conversation: Conversation,
    /// Its messages, oldest first.
    pub messages: Vec<Message>,
    /// Incoming messages not read yet.
    pub unread: usize,
}

impl Chat {
    fn new(conversation: Conversation) -> Self {
        Self {
            conversation,
            messages: Vec::new(),
            unread: 0,
        }
    }

    /// When its last message was sent (for ordering the list).
    pub fn last_at(&self) -> u64 {
        self.messages.last().map_or(0, |m| m.sent_at)
    }

    /// A one-line preview of its last message.
    pub fn preview(&self) -> String {
        match self.messages.last() {
            None => String::new(),
            Some(m) if m.recalled => "(recalled)".into(),
            Some(m) => match (&m.text, &m.attachment) {
                (Some(t), _) => t
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(60)
                    .collect(),
                (None, Some(a)) => format!("📎 {}", a.name),
                (None, None) => String::new(),
            },
        }
    }

    fn recount(&mut self) {
        self.unread = self
            .messages
            .iter()
            .filter(|m| !m.outgoing && m.delivery != DeliveryState::Read && !m.recalled)
            .count();
    }
}

/// A download or upload under way (or finished) for a message's file.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// Bytes so far, of the total.
    Running {
        /// Bytes had.
        done: u64,
        /// The size.
        total: u64,
    },
    /// The file is at this path.
    Complete(PathBuf),
    /// It stopped (fetching again resumes).
    Failed(String),
}

impl Transfer {
    /// How far, from 0 to 1.
    pub fn fraction(&self) -> f32 {
        match self {
            Transfer::Running { done, total } if *total > 0 => *done as f32 / *total as f32,
            Transfer::Running { .. } => 0.0,
            Transfer::Complete(_) => 1.0,
            Transfer::Failed(_) => 0.0,
        }
    }
}

/// A desktop notification the app raised (or would have, had the window not had focus).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Who wrote, and where.
    pub title: String,
    /// What (the text, or the file's name).
    pub body: String,
}

/// Everything the window shows.
#[derive(Debug, Default)]
pub struct Model {
    /// This node.
    pub me: Option<WhoAmI>,
    /// The account signed in, if any.
    pub user: Option<String>,
    /// Peers by peer id: name, how found, connected.
    pub peers: BTreeMap<String, PeerInfo>,
    /// Conversations by address.
    pub chats: BTreeMap<String, Chat>,
    /// Friends and pending requests.
    pub friends: Friends,
    /// The groups this account is in.
    pub groups: Vec<Group>,
    /// The account's settings.
    pub settings: Settings,
    /// File transfers by message.
    pub transfers: HashMap<MessageId, Transfer>,
    /// Where the bootstrap stands with files this device sent.
    pub holds: HashMap<MessageId, (FileHoldState, Option<String>)>,
    /// The banner after sign-in: who wrote while this device was away.
    pub banner: Option<String>,
    /// The status bar: the last result or error.
    pub status: Option<Result<String, String>>,
    /// Every notification raised, newest last (bounded).
    pub notices: Vec<Notice>,
    /// This account's profile, once read.
    pub profile: Option<confab_node::Profile>,
    /// The last user search's results.
    pub found: Vec<confab_node::UserSummary>,
    /// End-to-end encrypted conversations by address: the suite's name and this device's epoch.
    pub encryption: HashMap<String, (String, Option<u64>)>,
}

/// Notifications kept in [`Model::notices`] at most.
const MAX_NOTICES: usize = 100;

impl Model {
    /// The conversation `c`, created empty if new.
    pub fn chat(&mut self, c: &Conversation) -> &mut Chat {
        self.chats
            .entry(c.to_string())
            .or_insert_with(|| Chat::new(c.clone()))
    }

    /// How a conversation is titled.
    pub fn title(&self, c: &Conversation) -> String {
        match c {
            Conversation::Broadcast => "Everyone nearby (broadcast)".into(),
            Conversation::User(u) => u.clone(),
            Conversation::Group(g) => self
                .groups
                .iter()
                .find(|x| &x.id == g)
                .map(|x| x.name.clone())
                .unwrap_or_else(|| format!("group {}", &g[..g.len().min(8)])),
            Conversation::Peer(p) => self
                .peers
                .get(p)
                .and_then(|x| x.name.clone())
                .unwrap_or_else(|| format!("peer {}", &p[..p.len().min(8)])),
        }
    }

    /// The conversations, most recent first.
    pub fn chats_by_recency(&self) -> Vec<&Chat> {
        let mut chats: Vec<&Chat> = self
            .chats
            .values()
            .filter(|c| !c.messages.is_empty())
            .collect();
        chats.sort_by_key(|c| std::cmp::Reverse(c.last_at()));
        chats
    }

    /// Marks conversation `c` read here (the node is told by the caller).
    pub fn mark_read(&mut self, c: &Conversation) {
        if let Some(chat) = self.chats.get_mut(&c.to_string()) {
            for m in chat.messages.iter_mut().filter(|m| !m.outgoing) {
                m.delivery = DeliveryState::Read;
            }
            chat.unread = 0;
        }
    }

    fn upsert(&mut self, message: Message) {
        let chat = self.chat(&message.conversation);
        match chat.messages.iter_mut().rev().find(|m| m.id == message.id) {
            Some(old) => *old = message,
            None => {
                chat.messages.push(message);
                if chat.messages.len() > MAX_MESSAGES_SHOWN {
                    let extra = chat.messages.len() - MAX_MESSAGES_SHOWN;
                    chat.messages.drain(..extra);
                }
            }
        }
        chat.recount();
    }

    /// Changes message `id` with `change` (if it is shown) and recounts the unread messages of
    /// its conversation only.
    fn update(&mut self, id: MessageId, change: impl FnOnce(&mut Message)) {
        for chat in self.chats.values_mut() {
            if let Some(m) = chat.messages.iter_mut().rev().find(|m| m.id == id) {
                change(m);
                chat.recount();
                return;
            }
        }
    }

    /// Applies a node event; returns the notification it calls for, if any (the caller decides
    /// whether to raise it: only when the window is not focused).
    pub fn apply_event(&mut self, event: Event) -> Option<Notice> {
        match event {
            Event::Message(m) => {
                let notice = (m.notify && !m.outgoing).then(|| Notice {
                    title: format!("{} — {}", m.from.name, self.title(&m.conversation)),
                    body: match (&m.text, &m.attachment) {
                        (Some(t), _) => t.clone(),
                        (None, Some(a)) => format!("sent {}", a.name),
                        (None, None) => String::new(),
                    },
                });
                self.upsert(m);
                return notice;
            }
            Event::PeerDiscovered {
                peer_id,
                name,
                source,
            } => {
                let entry = self.peers.entry(peer_id.clone()).or_insert(PeerInfo {
                    peer_id,
                    name: None,
                    user: None,
                    addrs: Vec::new(),
                    source,
                    connected: true,
                });
                entry.name = Some(name);
                entry.connected = true;
                if source == PeerSource::Mdns {
                    entry.source = source;
                }
            }
            Event::PeerLost { peer_id } => {
                if let Some(p) = self.peers.get_mut(&peer_id) {
                    p.connected = false;
                }
            }
            Event::Delivery { id, state } => self.update(id, |m| {
                // States only move forward.
                m.delivery = m.delivery.max(state);
            }),
            Event::Presence { user, online } => {
                if let Some(f) = self.friends.friends.iter_mut().find(|f| f.user == user) {
                    f.online = online;
                }
            }
            Event::FriendRequest { from } if !self.friends.incoming.contains(&from) => {
                self.friends.incoming.push(from);
            }
            Event::FriendAdded { .. } | Event::FriendRemoved { .. } => {}
            Event::LoggedOut => {
                self.user = None;
                self.status = Some(Err(
                    "signed out (from elsewhere, or the account is gone)".into()
                ));
            }
            Event::Recalled { id, .. } => self.update(id, |m| {
                m.recalled = true;
                m.text = None;
                m.attachment = None;
            }),
            Event::Deleted { id, conversation } => {
                if let Some(chat) = self.chats.get_mut(&conversation.to_string()) {
                    chat.messages.retain(|m| m.id != id);
                    chat.recount();
                }
            }
            Event::TransferProgress { id, done, total } => {
                self.transfers.insert(id, Transfer::Running { done, total });
            }
            Event::TransferComplete { id, path } => {
                self.transfers.insert(id, Transfer::Complete(path));
            }
            Event::TransferFailed { id, error } => {
                self.transfers.insert(id, Transfer::Failed(error));
            }
            Event::FileHold { id, state, error } => {
                self.holds.insert(id, (state, error));
            }
            Event::Settings(settings) => self.settings = settings,
            Event::Encryption {
                conversation,
                suite,
                epoch,
            } => {
                self.encryption
                    .insert(conversation.to_string(), (suite, Some(epoch)));
            }
            Event::OfflineSummary { senders, total } => {
                let who: Vec<String> = senders
                    .iter()
                    .take(3)
                    .map(|(c, n)| {
                        let s = if *n == 1 { "" } else { "s" };
                        format!("{} sent you {n} message{s}", self.title(c))
                    })
                    .collect();
                let more = senders.len().saturating_sub(3);
                self.banner = Some(if more > 0 {
                    format!("{} and {more} more ({total} in all)", who.join(", "))
                } else {
                    who.join(", ")
                });
            }
            _ => {}
        }
        None
    }

    /// Applies the outcome of one of the app's requests.
    pub fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::WhoAmI(Ok(me)) => {
                self.user = me.user.clone();
                self.me = Some(me);
            }
            Outcome::Peers(Ok(peers)) => {
                for p in peers {
                    self.peers.insert(p.peer_id.clone(), p);
                }
            }
            Outcome::History {
                conversation,
                result: Ok(messages),
            } => {
                let chat = self.chat(&conversation);
                let mut merged = messages;
                // Messages that arrived while the history was loading stay.
                for m in std::mem::take(&mut chat.messages) {
                    if !merged.iter().any(|x| x.id == m.id) {
                        merged.push(m);
                    }
                }
                chat.messages = merged;
                chat.recount();
            }
            Outcome::SignedIn(Ok(user)) => {
                self.status = Some(Ok(format!("Welcome, {user}.")));
                self.user = Some(user);
            }
            Outcome::SignedOut(Ok(())) => {
                self.user = None;
                self.friends = Friends::default();
                self.groups.clear();
                self.status = Some(Ok("signed out".into()));
            }
            Outcome::Friends(Ok(friends)) => self.friends = friends,
            Outcome::Groups(Ok(groups)) => self.groups = groups,
            Outcome::Settings(Ok(settings)) => self.settings = settings,
            Outcome::Sent(Ok(_)) => {}
            Outcome::Fetched { id, result } => {
                let transfer = match result {
                    Ok(path) => Transfer::Complete(path),
                    Err(e) => Transfer::Failed(e),
                };
                self.transfers.insert(id, transfer);
            }
            Outcome::Note(result) => self.status = Some(result),
            Outcome::Profile(Ok(profile)) => self.profile = Some(profile),
            Outcome::Found(Ok(found)) => self.found = found,
            Outcome::Encryption {
                conversation,
                result: Ok(encryption),
            } => match encryption {
                Some(e) => {
                    self.encryption.insert(
                        conversation.to_string(),
                        (e.suite.name().to_owned(), e.epoch),
                    );
                }
                None => {
                    self.encryption.remove(&conversation.to_string());
                }
            },
            Outcome::Encryption { result: Err(e), .. } => self.status = Some(Err(e)),
            Outcome::WhoAmI(Err(e))
            | Outcome::Peers(Err(e))
            | Outcome::History { result: Err(e), .. }
            | Outcome::SignedIn(Err(e))
            | Outcome::SignedOut(Err(e))
            | Outcome::Friends(Err(e))
            | Outcome::Groups(Err(e))
            | Outcome::Settings(Err(e))
            | Outcome::Sent(Err(e))
            | Outcome::Profile(Err(e))
            | Outcome::Found(Err(e)) => self.status = Some(Err(e)),
        }
    }

    /// Records a raised notification.
    pub fn noticed(&mut self, notice: Notice) {
        self.notices.push(notice);
        if self.notices.len() > MAX_NOTICES {
            self.notices.remove(0);
        }
    }
}

/// `n` made-up messages in conversation `c`, alternating between two authors, for tests and
/// benchmarks of the conversation view ("message number 0", ...).
pub fn sample_messages(c: &Conversation, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message {
            id: MessageId::random(),
            conversation: c.clone(),
            from: confab_node::Sender {
                peer_id: String::new(),
                user: None,
                name: if i % 2 == 0 { "ann" } else { "ben" }.into(),
            },
            sent_at: 1_795_000_000_000 + i as u64 * 60_000,
            text: Some(if i % 7 == 0 {
                format!("message number {i}, a longer one that wraps onto a second line when the window is narrow enough to need it")
            } else {
                format!("message number {i}")
            }),
            attachment: None,
            encrypted: false,
            recalled: false,
            notify: false,
            outgoing: i % 2 == 0,
            delivery: DeliveryState::Read,
        })
        .collect()
}
