//! The event loop: one task owns the swarm and dispatches. Every arm of its `select!` calls one
//! `handle_*` method; store work runs as futures the loop polls (so a commit never stalls the
//! swarm) and comes back as [`StoreDone`].
//!
//! This file holds messaging and peers; the bootstrap side (connection upkeep, account requests,
//! the session, notifications) is in `event_loop/accounts.rs`, the account's mailbox (deposits of
//! messages to users, offline catch-up, history from other devices) in `event_loop/mailbox.rs`,
//! direct delivery of messages to users' devices in `event_loop/reach.rs`, groups (rosters,
//! topics, messages) in `event_loop/groups.rs`, the account's settings (do-not-disturb, mute,
//! blocking) in `event_loop/settings.rs`, and NAT traversal (relay reservations, relayed dials, keep-alive, AutoNAT, DCUtR) in
//! `event_loop/nat.rs`.

mod accounts;
mod broadcasts;
mod e2e;
mod fetch;
mod files;
mod groups;
mod mailbox;
mod nat;
mod reach;
mod recall;
mod settings;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use confab_protocol::bootstrap::{
    BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse, DeviceCert, NOTIFY_PROTOCOL,
    Notification, NotifyAck,
};
use confab_protocol::direct::{DIRECT_PROTOCOL, RejectReason};
use confab_protocol::gossip::BROADCAST_TOPIC;
use confab_protocol::limits::MAX_NAME_BYTES;
use confab_protocol::{
    ChatMessage, DirectRequest, DirectResponse, GossipFrame, MessageId, decode, encode,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, connection_limits, core::transport::ListenerId, dcutr,
    gossipsub, identify, identity, ping, relay,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::address::Conversation;
use crate::bootstraps::Bootstraps;
use crate::cert;
use crate::client::{
    Client, Command, DeliveryState, Message, PeerInfo, PeerSource, Reply, Sender, WhoAmI,
};
use crate::config::Config;
use crate::config::limits::*;
use crate::discovery::{Discovered, Discovery, Role};
use crate::error::{CallError, DialError, QueryError, SendError, StartError, StoreError};
use crate::event::Event;
use crate::keep_alive;
use crate::mailbox::Mailbox;
use crate::net::{self, BootstrapCodec, DirectCodec, IDENTIFY_PROTOCOL, NotifyCodec};
use crate::store::{Inserted, KnownPeer, Outbox, PageOutcome, Store, StoredMessage, StoredSession};

/// Addresses remembered per peer at most.
const MAX_ADDRS_PER_PEER: usize = 16;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    direct: request_response::Behaviour<DirectCodec>,
    /// `/confab/file/1`: serving and fetching file chunks.
    file: request_response::Behaviour<net::FileCodec>,
    gossipsub: gossipsub::Behaviour,
    /// `/confab/bootstrap/1`, outbound only: account requests to the bootstrap.
    bootstrap: request_response::Behaviour<BootstrapCodec>,
    /// `/confab/notify/1`, inbound only: pushes from the bootstrap.
    notify: request_response::Behaviour<NotifyCodec>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    autonat: autonat::Behaviour,
    /// Keeps the bootstrap connections open while idle.
    keep_alive: keep_alive::Behaviour,
}

/// The account this device is logged into.
#[derive(Debug, Clone)]
struct Session {
    user: String,
    cert: DeviceCert,
    /// The bootstrap that issued the certificate.
    bootstrap: PeerId,
}

impl Session {
    fn from_stored(stored: StoredSession) -> Option<Self> {
        Some(Self {
            bootstrap: stored.bootstrap.parse().ok()?,
            user: stored.user,
            cert: stored.cert,
        })
    }

    fn to_stored(&self) -> StoredSession {
        StoredSession {
            user: self.user.clone(),
            cert: self.cert.clone(),
            bootstrap: self.bootstrap.to_base58(),
        }
    }
}

/// What the loop knows of a peer.
#[derive(Debug)]
struct PeerEntry {
    name: Option<String>,
    addrs: Vec<Multiaddr>,
    source: PeerSource,
    connections: u32,
    /// Identify said it is a Confab peer (on the current connections).
    identified: bool,
    /// It subscribed to the broadcast topic (so it is in, or can join, our gossip mesh).
    subscribed: bool,
    /// A `confab-bootstrap` server, not a person: never listed or reported as a peer.
    bootstrap: bool,
    /// Reported with `PeerDiscovered` (and not lost since): identified and subscribed, so a
    /// direct message or a broadcast sent now reaches it.
    reported: bool,
    /// The account its last verified certificate named.
    user: Option<String>,
}

impl PeerEntry {
    fn new(source: PeerSource) -> Self {
        Self {
            name: None,
            addrs: Vec::new(),
            source,
            connections: 0,
            identified: false,
            subscribed: false,
            bootstrap: false,
            reported: false,
            user: None,
        }
    }

    fn add_addr(&mut self, addr: Multiaddr) -> bool {
        if self.addrs.contains(&addr) {
            return false;
        }
        if self.addrs.len() >= MAX_ADDRS_PER_PEER {
            self.addrs.remove(0);
        }
        self.addrs.push(addr);
        true
    }
}

/// A message on its way to one peer over `/confab/direct/1`.
#[derive(Debug, Clone)]
enum Outgoing {
    /// To the conversation `peer:` with it: in the store's outbox, tried until acknowledged.
    Peer(ChatMessage),
    /// To a device of the account `to`, besides the mailbox deposit: tried until `until`, then
    /// left to the mailbox.
    User {
        to: String,
        message: ChatMessage,
        until: Instant,
    },
}

impl Outgoing {
    fn message(&self) -> &ChatMessage {
        match self {
            Outgoing::Peer(m) | Outgoing::User { message: m, .. } => m,
        }
    }

    /// Still worth sending at `now`.
    fn live(&self, now: Instant) -> bool {
        match self {
            Outgoing::Peer(_) => true,
            Outgoing::User { until, .. } => *until > now,
        }
    }
}

/// A store operation finished; the loop acts on the result.
enum StoreDone {
    /// A message this node sends is stored: answer the client, then put it on the wire.
    Outgoing {
        to: Conversation,
        /// The account it is sent as (this device's when it was sent).
        author: Option<String>,
        message: ChatMessage,
        /// Its sealed form, in an end-to-end encrypted conversation.
        wire: Option<ChatMessage>,
        reply: Reply<Result<MessageId, SendError>>,
        result: Result<Inserted, StoreError>,
    },
    /// A page of the account's mailbox is stored (or not) with the cursor `cursor`.
    MailboxPage {
        epoch: u64,
        cursor: u64,
        result: Result<Vec<PageOutcome>, StoreError>,
    },
    /// A direct message from `peer` is stored (or not): acknowledge (or refuse).
    Inbound {
        peer: PeerId,
        user: Option<String>,
        conversation: Conversation,
        message: ChatMessage,
        /// It came end-to-end encrypted.
        encrypted: bool,
        channel: ResponseChannel<DirectResponse>,
        result: Result<Inserted, StoreError>,
    },
    /// A broadcast from `author` is stored.
    Broadcast {
        author: PeerId,
        user: Option<String>,
        message: ChatMessage,
        result: Result<Inserted, StoreError>,
    },
    /// A conversation is marked read (`receipt`: the author account and receiver of the read
    /// receipt to deposit).
    MarkedRead {
        receipt: Option<(String, String)>,
        result: Result<Vec<MessageId>, StoreError>,
        reply: Reply<Result<usize, QueryError>>,
    },
    /// A message to fetch the attachment of is found (or not).
    FoundForFetch {
        id: MessageId,
        dest: std::path::PathBuf,
        result: Result<Option<StoredMessage>, StoreError>,
        reply: Reply<Result<std::path::PathBuf, crate::error::FetchError>>,
    },
    /// A file request is answered (read off the event loop).
    FileServed {
        channel: ResponseChannel<confab_protocol::file::FileResponse>,
        response: confab_protocol::file::FileResponse,
    },
    /// A file to send is in the blob store (or not): send the message describing it.
    Imported {
        to: Conversation,
        caption: Option<String>,
        /// The attachment, and its file key in an encrypted conversation.
        result: Result<
            (
                confab_protocol::Attachment,
                Option<crate::files::sealed::FileKey>,
            ),
            String,
        >,
        reply: Reply<Result<MessageId, SendError>>,
    },
    /// A page of kept broadcasts is stored (or not) with the cursor it moves to.
    BroadcastPage {
        cursor: crate::store::BroadcastCursor,
        more: bool,
        result: Result<Vec<(Inserted, StoredMessage)>, StoreError>,
    },
    /// A message to recall or delete is found (or not).
    Found {
        id: MessageId,
        recall: bool,
        result: Result<Option<StoredMessage>, StoreError>,
        reply: Reply<Result<(), crate::error::RecallError>>,
    },
    /// A tombstone is stored (or not).
    Buried {
        conversation: Conversation,
        id: MessageId,
        tombstone: crate::store::Tombstone,
        result: Result<crate::store::Buried, StoreError>,
        reply: Option<Reply<Result<(), crate::error::RecallError>>>,
    },
    /// A message from elsewhere (a group's gossip) is stored: shown if new.
    Stored {
        record: StoredMessage,
        result: Result<Inserted, StoreError>,
    },
    /// Nothing left to do (bookkeeping writes, answered queries).
    Nothing,
}

/// Starts the store, the swarm, discovery and the loop; returns once the node listens.
pub(crate) async fn start(config: Config) -> Result<Client, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::DataDir {
        path: config.data_dir.clone(),
        reason: e.to_string(),
    })?;
    let fresh = identity::Keypair::generate_ed25519()
        .to_protobuf_encoding()
        .map_err(|e| StartError::Network(e.to_string()))?;
    let (store, opened) = Store::open(&config.data_dir, fresh).await?;
    let keypair = identity::Keypair::from_protobuf_encoding(&opened.identity)
        .map_err(|e| StoreError::Corrupt(format!("node key: {e}")))?;
    let local_peer = keypair.public().to_peer_id();

    let name = match (&config.name, &opened.name) {
        (Some(given), stored) => {
            if given.is_empty() || given.len() > MAX_NAME_BYTES {
                return Err(StartError::BadAddress {
                    addr: given.clone(),
                    reason: format!("a display name is 1 to {MAX_NAME_BYTES} bytes"),
                });
            }
            if stored.as_ref() != Some(given) {
                store.set_name(given.clone()).await?;
            }
            given.clone()
        }
        (None, Some(stored)) => stored.clone(),
        (None, None) => default_name(&local_peer),
    };

    let listen = parse_addrs(&config.listen)?;
    let configured = parse_bootstraps(&config.bootstrap)?;
    let mut keep_alive = keep_alive::Behaviour::default();
    for (peer, _) in &configured {
        keep_alive.insert(*peer);
    }
    let bootstraps = Bootstraps::new(configured, Instant::now());
    let gossip_config =
        net::gossipsub_config(config.gossip_heartbeat).map_err(StartError::Network)?;
    let agent = net::agent_version(&name);
    let mut swarm = net::build_node_swarm(keypair, IDLE_CONNECTION_TIMEOUT, |key, relay| {
        let local = key.public().to_peer_id();
        Ok(Behaviour {
            limits: connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
            ),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                    .with_agent_version(agent),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            direct: net::wire_behaviour(
                DIRECT_PROTOCOL,
                ProtocolSupport::Full,
                request_response::Config::default()
                    .with_request_timeout(DIRECT_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_DIRECT_STREAMS),
            ),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )
            .map_err(str::to_owned)?,
            file: net::wire_behaviour(
                confab_protocol::file::FILE_PROTOCOL,
                ProtocolSupport::Full,
                request_response::Config::default()
                    .with_request_timeout(FILE_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_FILE_STREAMS),
            ),
            bootstrap: net::wire_behaviour(
                BOOTSTRAP_PROTOCOL,
                ProtocolSupport::Outbound,
                request_response::Config::default()
                    .with_request_timeout(BOOTSTRAP_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_BOOTSTRAP_STREAMS),
            ),
            notify: net::wire_behaviour(
                NOTIFY_PROTOCOL,
                ProtocolSupport::Inbound,
                request_response::Config::default()
                    .with_max_concurrent_streams(MAX_BOOTSTRAP_STREAMS),
            ),
            relay_client: relay,
            dcutr: dcutr::Behaviour::new(local),
            autonat: autonat::Behaviour::new(local, autonat::Config::default()),
            keep_alive,
        })
    })
    .map_err(StartError::Network)?;

    let topic = gossipsub::IdentTopic::new(BROADCAST_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| StartError::Network(e.to_string()))?;

    let mut listeners = HashMap::new();
    for addr in listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| StartError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        listeners.insert(id, addr);
    }

    let mut peers = HashMap::new();
    for known in opened.peers {
        let Ok(peer_id) = known.peer_id.parse::<PeerId>() else {
            continue;
        };
        let mut entry = PeerEntry::new(known.source);
        entry.name = known.name;
        entry.user = known.user;
        for addr in known
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
        {
            swarm.add_peer_address(peer_id, addr.clone());
            entry.add_addr(addr);
        }
        peers.insert(peer_id, entry);
    }

    let mut outbox: HashMap<PeerId, VecDeque<Outgoing>> = HashMap::new();
    for (peer, record) in store.outbox().await? {
        if let (Ok(peer), Some(text)) = (peer.parse::<PeerId>(), record.text) {
            outbox
                .entry(peer)
                .or_default()
                .push_back(Outgoing::Peer(ChatMessage {
                    id: record.id,
                    sent_at: record.sent_at,
                    sender_name: record.from_name,
                    text: Some(text),
                    author_cert: None,
                    attachment: None,
                    sealed: None,
                }));
        }
    }

    let (discovery_tx, discovery_rx) = mpsc::channel(DISCOVERY_QUEUE);
    let discovery = if config.mdns {
        Some(
            Discovery::start(local_peer, name.clone(), discovery_tx)
                .map_err(StartError::Discovery)?,
        )
    } else {
        drop(discovery_tx);
        None
    };

    let session = opened.session.and_then(Session::from_stored);
    let files_dir = config.data_dir.join("files");
    let blobs =
        crate::files::store::BlobStore::open(&files_dir).map_err(|e| StartError::DataDir {
            path: files_dir.clone(),
            reason: e.to_string(),
        })?;
    let (rosters, settings) = if session.is_some() {
        (opened.rosters, opened.settings.unwrap_or_default())
    } else {
        (Vec::new(), Default::default())
    };

    // Messages to users still waiting for the bootstrap, in the order they were sent.
    let mut mailbox = Mailbox::new(
        session.as_ref().map(|s| s.user.clone()),
        opened.mailbox_cursor.map(|c| (c.user, c.seq)),
    );
    let now = Instant::now();
    // Those of encrypted conversations are sealed again once the MLS state is open.
    let mut reseal = Vec::new();
    for (to, record) in store.mailbox_outbox().await? {
        // Also those that went in clear: their conversation may be encrypted since.
        if record.encrypted || session.is_some() {
            reseal.push((to, record));
            continue;
        }
        let (Some(author), Some(text)) = (record.from_user, record.text) else {
            tracing::warn!("skipping outbox entry {}: no author or text", record.id);
            continue;
        };
        let message = ChatMessage {
            id: record.id,
            sent_at: record.sent_at,
            sender_name: record.from_name,
            text: Some(text),
            author_cert: None,
            attachment: None,
            sealed: None,
        };
        mailbox.add_deposit(author, to, message, now);
    }
    // Read receipts still waiting for the bootstrap, merged per receiver.
    for (author, to, id) in store.receipt_outbox().await? {
        mailbox.add_read(author, to, vec![id], now);
    }

    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, _) = broadcast::channel(EVENT_BUFFER);
    let (ready_tx, ready_rx) = oneshot::channel();
    let mut event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx.clone(),
        store,
        local_peer,
        name,
        topic,
        peers,
        listen_addrs: Vec::new(),
        listeners,
        ready: Some(ready_tx),
        pending_dials: HashMap::new(),
        in_flight: HashMap::new(),
        outbox,
        devices: HashMap::new(),
        rosters: HashMap::new(),
        group_topics: HashMap::new(),
        settings,
        broadcast_cursor: opened.broadcast_cursor,
        broadcasts_busy: false,
        blobs: blobs.clone(),
        serving: 0,
        fetcher: crate::files::fetcher::Fetcher::new(blobs.clone()),
        downloads: HashMap::new(),
        downloads_dir: config.data_dir.join("downloads"),
        holds_asked: HashSet::new(),
        holding: HashMap::new(),
        queued_broadcasts: VecDeque::new(),
        store_ops: FuturesUnordered::new(),
        discovery,
        discovery_rx,
        bootstraps,
        session,
        mls: None,
        mls_path: config.data_dir.join("mls.redb"),
        e2e: crate::e2e::Driver::spawn(command_tx.downgrade(), event_tx.clone()),
        e2e_syncing: HashMap::new(),
        e2e_later: HashMap::new(),
        e2e_synced: HashMap::new(),
        sealed_files: HashMap::new(),
        mailbox,
        calls: HashMap::new(),
        waiting_calls: VecDeque::new(),
        relay_listeners: HashMap::new(),
        relay_dials: HashSet::new(),
    };
    event_loop.load_rosters(rosters);
    event_loop.open_mls();
    event_loop.reseal_outbox(reseal);
    tokio::spawn(event_loop.run());
    ready_rx
        .await
        .map_err(|_| StartError::Network("the event loop stopped during start".into()))??;
    Ok(Client::new(command_tx, event_tx, local_peer.to_base58()))
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>, StartError> {
    addrs
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>().map_err(|e| StartError::BadAddress {
                addr: a.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Bootstrap addresses grouped by peer; each must end in `/p2p/<peer id>` (a bootstrap is pinned
/// by its identity, never trusted for merely answering at an address).
fn parse_bootstraps(addrs: &[String]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, StartError> {
    let mut out: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for (text, addr) in addrs.iter().zip(parse_addrs(addrs)?) {
        let (bare, peer) = without_p2p(&addr);
        let Some(peer) = peer else {
            return Err(StartError::BadAddress {
                addr: text.clone(),
                reason: "a bootstrap address must end in /p2p/<peer id>".into(),
            });
        };
        match out.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, list)) => list.push(bare),
            None => out.push((peer, vec![bare])),
        }
    }
    Ok(out)
}

fn default_name(peer: &PeerId) -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && u.len() <= MAX_NAME_BYTES)
        .unwrap_or_else(|| {
            let p = peer.to_base58();
            format!("confab-{}", &p[p.len() - 6..])
        })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn to_message(record: StoredMessage) -> Result<Message, StoreError> {
    let conversation = record
        .conversation
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("conversation of {}: {e}", record.id)))?;
    Ok(Message {
        id: record.id,
        conversation,
        from: Sender {
            peer_id: record.from_peer,
            user: record.from_user,
            name: record.from_name,
        },
        sent_at: record.sent_at,
        text: record.text,
        attachment: record.attachment,
        encrypted: record.encrypted,
        recalled: record.recalled,
        notify: !record.outgoing,
        outgoing: record.outgoing,
        delivery: record.delivery,
    })
}

/// How a message that arrived from `author` is stored.
fn incoming_record(
    conversation: Conversation,
    author: &PeerId,
    user: Option<String>,
    message: &ChatMessage,
) -> StoredMessage {
    StoredMessage {
        id: message.id,
        conversation: conversation.to_string(),
        from_peer: author.to_base58(),
        from_user: user,
        from_name: message.sender_name.clone(),
        sent_at: message.sent_at,
        text: message.text.clone(),
        attachment: message.attachment.clone(),
        outgoing: false,
        delivery: DeliveryState::Delivered,
        seq: 0,
        recalled: false,
        encrypted: false,
        file_key: None,
    }
}

fn without_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    store: Store,
    local_peer: PeerId,
    name: String,
    topic: gossipsub::IdentTopic,
    peers: HashMap<PeerId, PeerEntry>,
    listen_addrs: Vec<Multiaddr>,
    /// Listeners that have not reported an address yet; start() returns when none is left.
    listeners: HashMap<ListenerId, Multiaddr>,
    ready: Option<oneshot::Sender<Result<(), StartError>>>,
    pending_dials: HashMap<ConnectionId, (String, Reply<Result<String, DialError>>)>,
    /// Direct messages on the wire, by request.
    in_flight: HashMap<OutboundRequestId, (PeerId, Outgoing)>,
    /// Direct messages waiting for their peer to be reachable.
    outbox: HashMap<PeerId, VecDeque<Outgoing>>,
    /// What this node knows of other users' devices, for delivering to them directly.
    devices: HashMap<String, reach::KnownDevices>,
    /// The signed rosters of the logged-in account's groups, by group id.
    rosters: HashMap<String, confab_protocol::group::Roster>,
    /// The gossipsub topics of those groups.
    group_topics: HashMap<gossipsub::TopicHash, String>,
    /// The logged-in account's settings (defaults when logged out).
    settings: confab_protocol::bootstrap::AccountSettings,
    /// How far this device has the bootstrap's kept broadcasts.
    broadcast_cursor: Option<crate::store::BroadcastCursor>,
    /// A page of kept broadcasts is being fetched or stored.
    broadcasts_busy: bool,
    /// Files: complete blobs and partial downloads, content-addressed.
    blobs: crate::files::store::BlobStore,
    /// File requests being answered now.
    serving: usize,
    /// Downloads under way.
    fetcher: crate::files::fetcher::Fetcher,
    /// What each download under way is for, by file root.
    downloads: fetch::Downloads,
    /// Where small files from LAN peers are downloaded automatically.
    downloads_dir: std::path::PathBuf,
    /// Sent messages whose file the bootstrap was asked to hold (their deposit follows).
    holds_asked: HashSet<MessageId>,
    /// Files the bootstrap is pulling from this device, with the messages that carry them.
    holding: HashMap<confab_protocol::ContentHash, Vec<MessageId>>,
    /// Broadcasts waiting for a first subscribed peer.
    queued_broadcasts: VecDeque<ChatMessage>,
    store_ops: FuturesUnordered<BoxFuture<'static, StoreDone>>,
    discovery: Option<Discovery>,
    discovery_rx: mpsc::Receiver<Discovered>,
    /// The bootstraps this node uses and trusts, and their connection state.
    bootstraps: Bootstraps,
    /// The account this device is logged into.
    session: Option<Session>,
    /// This account's MLS state on this device (while logged in).
    mls: Option<std::sync::Arc<crate::mls::Mls>>,
    /// Where that state is kept.
    mls_path: std::path::PathBuf,
    /// Runs the end-to-end encryption work with the bootstrap.
    e2e: crate::e2e::Driver,
    /// Conversations whose MLS state was asked to catch up, and when (not asked again at once).
    e2e_syncing: HashMap<String, Instant>,
    /// The files (root, size) of sealed messages waiting to be deposited: the bootstrap is
    /// asked to hold them first, as for plaintext ones.
    sealed_files: HashMap<MessageId, (confab_protocol::ContentHash, u64)>,
    /// Mailbox entries that could not be decrypted yet, and since when.
    e2e_later: HashMap<MessageId, Instant>,
    /// When the latest finished catch-up of each conversation (bootstrap name) started.
    e2e_synced: HashMap<String, Instant>,
    /// Deposits waiting for the bootstrap, and the mailbox sync.
    mailbox: Mailbox,
    /// Requests to bootstraps on the wire.
    calls: HashMap<OutboundRequestId, accounts::PendingCall>,
    /// Requests waiting for a bootstrap connection.
    waiting_calls: VecDeque<accounts::WaitingCall>,
    /// Relay reservations (`<bootstrap>/p2p-circuit` listeners), by listener.
    relay_listeners: HashMap<ListenerId, PeerId>,
    /// Dials through a relay in progress: their failure does not start another.
    relay_dials: HashSet<ConnectionId>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut retry = tokio::time::interval(OUTBOX_RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bootstrap_tick = tokio::time::interval(BOOTSTRAP_TICK);
        bootstrap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    Some(command) => self.handle_command(command),
                    None => break None,
                },
                Some(done) = self.store_ops.next(), if !self.store_ops.is_empty() => {
                    self.handle_store_done(done)
                }
                Some(found) = self.discovery_rx.recv() => self.handle_discovered(found),
                work = self.fetcher.next_work() => {
                    self.fetcher.work_done(&mut self.swarm.behaviour_mut().file, work);
                    self.drain_fetch_events();
                }
                _ = retry.tick() => self.handle_retry(),
                _ = bootstrap_tick.tick() => self.handle_bootstrap_tick(),
            }
        };
        let result = self.shut_down().await;
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(result);
        }
    }

    async fn shut_down(mut self) -> Result<(), QueryError> {
        tracing::debug!("shutting down");
        if let Some(discovery) = self.discovery.take() {
            discovery.shutdown().await;
        }
        // Finish the store work already started, so nothing accepted is left half-done.
        while let Some(done) = self.store_ops.next().await {
            self.handle_store_done(done);
        }
        self.store.close().await?;
        Ok(())
    }

    fn emit(&mut self, mut event: Event) {
        // The account's settings decide whether a message alerts.
        if let Event::Message(m) = &mut event
            && m.notify
        {
            m.notify = self.alerts(&m.conversation);
        }
        let auto_fetch = match &event {
            Event::Message(m) => self.auto_fetch_of(m),
            _ => None,
        };
        // An error only means nobody is subscribed right now.
        let _ = self.events.send(event);
        if let Some(auto) = auto_fetch {
            self.auto_fetch(auto);
        }
    }

    fn run_store_op(&mut self, op: impl Future<Output = StoreDone> + Send + 'static) {
        self.store_ops.push(Box::pin(op));
    }

    // ---- commands -------------------------------------------------------------------------

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::WhoAmI(reply) => {
                let _ = reply.send(WhoAmI {
                    peer_id: self.local_peer.to_base58(),
                    name: self.name.clone(),
                    user: self.session.as_ref().map(|s| s.user.clone()),
                    listen_addrs: self
                        .listen_addrs
                        .iter()
                        .map(|a| match a.iter().last() {
                            // A relayed address already ends in this node's id.
                            Some(Protocol::P2p(_)) => a.to_string(),
                            _ => a.clone().with(Protocol::P2p(self.local_peer)).to_string(),
                        })
                        .collect(),
                });
            }
            Command::Peers(reply) => {
                let mut list: Vec<PeerInfo> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| !p.bootstrap)
                    .map(|(id, p)| PeerInfo {
                        peer_id: id.to_base58(),
                        name: p.name.clone(),
                        user: p.user.clone(),
                        addrs: p.addrs.iter().map(ToString::to_string).collect(),
                        source: p.source,
                        connected: p.connections > 0,
                    })
                    .collect();
                list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(list);
            }
            Command::Dial { addr, reply } => self.handle_dial(addr, reply),
            Command::Send { to, text, reply } => {
                self.handle_send_with(to, Some(text), None, None, reply)
            }
            Command::FetchFile { id, dest, reply } => self.handle_fetch_command(id, dest, reply),
            Command::SendFile {
                to,
                path,
                caption,
                reply,
            } => self.handle_send_file(to, path, caption, reply),
            Command::History { with, limit, reply } => {
                let store = self.store.clone();
                self.run_store_op(async move {
                    let result = store
                        .history(with.to_string(), limit)
                        .await
                        .and_then(|records| records.into_iter().map(to_message).collect())
                        .map_err(QueryError::from);
                    let _ = reply.send(result);
                    StoreDone::Nothing
                });
            }
            Command::Bootstrap { request, reply } => self.handle_bootstrap_call(request, reply),
            Command::MarkRead {
                conversation,
                reply,
            } => self.handle_mark_read(conversation, reply),
            Command::Bury { id, recall, reply } => self.handle_bury_command(id, recall, reply),
            Command::Settings(reply) => {
                let _ = reply.send(crate::client::Settings::from_account(&self.settings));
            }
            Command::Groups(reply) => {
                let mut groups: Vec<crate::client::Group> = self
                    .rosters
                    .values()
                    .map(crate::client::Group::from_roster)
                    .collect();
                groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
                let _ = reply.send(groups);
            }
            // `run` handles shutdown before dispatching here.
            Command::Encrypt { to, suite, reply } => self.handle_encrypt(to, suite, reply),
            Command::E2eReady(reply) => self.e2e.push(crate::e2e::Job::Barrier(reply)),
            Command::E2eSynced(conversation, started) => {
                let at = self.e2e_synced.entry(conversation).or_insert(started);
                *at = (*at).max(started);
            }
            Command::Encryption { to, reply } => {
                let _ = reply.send(self.encryption_of(&to));
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(Err(QueryError::NodeStopped));
            }
        }
    }

    fn handle_dial(&mut self, text: String, reply: Reply<Result<String, DialError>>) {
        let addr = match text.parse::<Multiaddr>() {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(DialError::BadAddress {
                    addr: text,
                    reason: e.to_string(),
                }));
                return;
            }
        };
        let (bare, peer) = without_p2p(&addr);
        let opts = match peer {
            Some(p) if p == self.local_peer => {
                let _ = reply.send(Err(DialError::SelfDial));
                return;
            }
            Some(p) if self.swarm.is_connected(&p) => {
                let _ = reply.send(Ok(p.to_base58()));
                return;
            }
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![bare])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(connection, (text, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(DialError::Unreachable {
                    addr: text,
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn handle_send_with(
        &mut self,
        to: Conversation,
        text: Option<String>,
        attachment: Option<Box<confab_protocol::Attachment>>,
        file_key: Option<Vec<u8>>,
        reply: Reply<Result<MessageId, SendError>>,
    ) {
        let outbox = match &to {
            Conversation::Peer(_) => match to.peer_id() {
                Some(p) if p == self.local_peer => {
                    let _ = reply.send(Err(SendError::Invalid(
                        "that is this node's own address".into(),
                    )));
                    return;
                }
                Some(p) => Some(Outbox::Peer(p.to_base58())),
                None => {
                    let _ = reply.send(Err(SendError::Invalid(format!("bad peer address {to}"))));
                    return;
                }
            },
            Conversation::Broadcast => {
                if self.queued_broadcasts.len() >= MAX_QUEUED_BROADCASTS {
                    let _ = reply.send(Err(SendError::QueueFull(self.queued_broadcasts.len())));
                    return;
                }
                None
            }
            Conversation::User(_) => match self.mailbox_target(&to) {
                Ok(outbox) => Some(outbox),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            Conversation::Group(group) => match self.group_target(group) {
                Ok(outbox) => Some(outbox),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
        };
        // The canonical receiver (`user:Bob` is `user:bob`).
        let to = match &outbox {
            Some(Outbox::Mailbox(user)) => Conversation::User(user.clone()),
            _ => to,
        };
        let mut message = ChatMessage::text(self.name.clone(), "", now_ms());
        message.text = text;
        message.attachment = attachment;
        if let Err(e) = message.validate() {
            let _ = reply.send(Err(SendError::Invalid(e.to_string())));
            return;
        }
        // Sealed before it is stored: nothing of an encrypted conversation goes out in clear.
        if file_key.is_some() && !self.is_encrypted(&to) {
            let _ = reply.send(Err(SendError::Encryption(format!(
                "{to} is no longer end-to-end encrypted here; send the file again"
            ))));
            return;
        }
        let wire = match self.seal(&to, &message, file_key.clone()) {
            Ok(wire) => wire,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // Imported in clear, and the conversation became encrypted meanwhile: its bytes must
        // not go out.
        if wire.is_some() && message.attachment.is_some() && file_key.is_none() {
            let _ = reply.send(Err(SendError::Encryption(format!(
                "{to} became end-to-end encrypted while the file was prepared; send it again"
            ))));
            return;
        }
        let record = StoredMessage {
            id: message.id,
            conversation: to.to_string(),
            from_peer: self.local_peer.to_base58(),
            from_user: self.session.as_ref().map(|s| s.user.clone()),
            from_name: self.name.clone(),
            sent_at: message.sent_at,
            text: message.text.clone(),
            outgoing: true,
            delivery: DeliveryState::Pending,
            seq: 0,
            recalled: false,
            attachment: message.attachment.clone(),
            encrypted: wire.is_some(),
            file_key,
        };
        let author = record.from_user.clone();
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.insert_message(record, outbox).await;
            StoreDone::Outgoing {
                to,
                author,
                message,
                wire,
                reply,
                result,
            }
        });
    }

    // ---- store results --------------------------------------------------------------------

    fn handle_store_done(&mut self, done: StoreDone) {
        match done {
            StoreDone::Outgoing {
                to,
                author,
                message,
                wire,
                reply,
                result,
            } => {
                if let Err(e) = result {
                    let _ = reply.send(Err(SendError::Store(e)));
                    return;
                }
                let _ = reply.send(Ok(message.id));
                self.emit(Event::Message(Message {
                    id: message.id,
                    conversation: to.clone(),
                    from: Sender {
                        peer_id: self.local_peer.to_base58(),
                        user: author.clone(),
                        name: self.name.clone(),
                    },
                    sent_at: message.sent_at,
                    text: message.text.clone(),
                    attachment: message.attachment.clone(),
                    encrypted: wire.is_some(),
                    recalled: false,
                    notify: false,
                    outgoing: true,
                    delivery: DeliveryState::Pending,
                }));
                let message = wire.unwrap_or(message);
                match (&to, to.peer_id(), author) {
                    (_, Some(peer), _) => {
                        self.outbox
                            .entry(peer)
                            .or_default()
                            .push_back(Outgoing::Peer(message));
                        self.flush_outbox(peer);
                    }
                    (Conversation::User(user), _, Some(author)) => {
                        self.mailbox.add_deposit(
                            author,
                            user.clone(),
                            message.clone(),
                            Instant::now(),
                        );
                        self.drive_mailbox();
                        self.deliver_to_user(user.clone(), message);
                    }
                    (Conversation::Group(group), _, Some(author)) => {
                        self.mailbox.add_deposit(
                            author,
                            format!("group:{group}"),
                            message.clone(),
                            Instant::now(),
                        );
                        self.drive_mailbox();
                        self.publish_group(group, message);
                    }
                    (Conversation::Broadcast, _, _) => self.publish_broadcast(message),
                    // `handle_send` refuses everything else before storing.
                    _ => tracing::error!("stored {} for {to} with nowhere to send it", message.id),
                }
            }
            StoreDone::MailboxPage {
                epoch,
                cursor,
                result,
            } => self.handle_mailbox_page_stored(epoch, cursor, result),
            StoreDone::Inbound {
                peer,
                user,
                conversation,
                message,
                encrypted,
                channel,
                result,
            } => {
                let response = match &result {
                    Ok(_) => DirectResponse::Ack { id: message.id },
                    Err(e) => {
                        tracing::error!("cannot store a message from {peer}: {e}");
                        DirectResponse::Rejected {
                            id: Some(message.id),
                            reason: RejectReason::StorageFailed,
                        }
                    }
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .direct
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("{peer} went away before its ack");
                }
                if let Ok(Inserted::New) = result {
                    self.emit_incoming(peer, user, conversation, message, encrypted);
                }
            }
            StoreDone::Broadcast {
                author,
                user,
                message,
                result,
            } => match result {
                Ok(Inserted::New) => {
                    self.emit_incoming(author, user, Conversation::Broadcast, message, false)
                }
                Ok(Inserted::Duplicate) => {}
                Err(e) => tracing::error!("cannot store a broadcast from {author}: {e}"),
            },
            StoreDone::MarkedRead {
                receipt,
                result,
                reply,
            } => self.handle_marked_read(receipt, result, reply),
            StoreDone::FoundForFetch {
                id,
                dest,
                result,
                reply,
            } => self.handle_found_for_fetch(id, dest, result, reply),
            StoreDone::FileServed { channel, response } => {
                self.serving = self.serving.saturating_sub(1);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .file
                    .send_response(channel, response);
            }
            StoreDone::Imported {
                to,
                caption,
                result,
                reply,
            } => match result {
                Ok((attachment, file_key)) => self.handle_send_with(
                    to,
                    caption,
                    Some(Box::new(attachment)),
                    file_key.map(Vec::from),
                    reply,
                ),
                Err(e) => {
                    let _ = reply.send(Err(SendError::File(e)));
                }
            },
            StoreDone::BroadcastPage {
                cursor,
                more,
                result,
            } => self.handle_broadcast_page_stored(cursor, more, result),
            StoreDone::Found {
                id,
                recall,
                result,
                reply,
            } => self.handle_found(id, recall, result, reply),
            StoreDone::Buried {
                conversation,
                id,
                tombstone,
                result,
                reply,
            } => self.handle_buried(conversation, id, tombstone, result, reply),
            StoreDone::Stored { record, result } => match result {
                Ok(Inserted::New) => match to_message(record) {
                    Ok(message) => self.emit(Event::Message(message)),
                    Err(e) => tracing::warn!("a stored message: {e}"),
                },
                Ok(Inserted::Duplicate) => {}
                Err(e) => tracing::error!("cannot store {} : {e}", record.id),
            },
            StoreDone::Nothing => {}
        }
    }

    fn emit_incoming(
        &mut self,
        author: PeerId,
        user: Option<String>,
        conversation: Conversation,
        message: ChatMessage,
        encrypted: bool,
    ) {
        if let Some(entry) = self.peers.get_mut(&author) {
            entry.name = Some(message.sender_name.clone());
        }
        self.emit(Event::Message(Message {
            id: message.id,
            conversation,
            from: Sender {
                peer_id: author.to_base58(),
                user,
                name: message.sender_name,
            },
            sent_at: message.sent_at,
            text: message.text,
            attachment: message.attachment,
            encrypted,
            recalled: false,
            notify: true,
            outgoing: false,
            delivery: DeliveryState::Delivered,
        }));
    }

    /// Records that this node's message `id` reached `state` (one write), and reports every
    /// state passed on the way (a peer's ack is both `Sent` and `Delivered`).
    fn set_delivery(&mut self, id: MessageId, state: DeliveryState) {
        let store = self.store.clone();
        let author = self.local_peer.to_base58();
        let events = self.events.clone();
        self.run_store_op(async move {
            match store.set_delivery(author, id, state).await {
                // Only when it moved, and never backwards: each state passed, once.
                Ok(Some(before)) => {
                    for passed in [
                        DeliveryState::Sent,
                        DeliveryState::Delivered,
                        DeliveryState::Read,
                    ] {
                        if passed > before && passed <= state {
                            let _ = events.send(Event::Delivery { id, state: passed });
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot record delivery of {id}: {e}"),
            }
            StoreDone::Nothing
        });
    }

    // ---- outgoing traffic -----------------------------------------------------------------

    /// Sends what waits for `peer` if it is connected, or dials it: directly if addresses are
    /// known, else (and when the direct dial fails) through a bootstrap's relay.
    fn flush_outbox(&mut self, peer: PeerId) {
        let now = Instant::now();
        if let Some(queue) = self.outbox.get_mut(&peer) {
            // Messages to users that found no way to this device in time are the mailbox's.
            queue.retain(|m| m.live(now));
            if queue.is_empty() {
                self.outbox.remove(&peer);
            }
        }
        if !self.swarm.is_connected(&peer) {
            if self.outbox.get(&peer).is_some_and(|q| !q.is_empty()) {
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => {}
                    Err(libp2p::swarm::DialError::NoAddresses) => self.dial_via_relay(peer),
                    Err(e) => tracing::debug!("cannot dial {peer} for its outbox yet: {e}"),
                }
            }
            return;
        }
        let Some(queue) = self.outbox.remove(&peer) else {
            return;
        };
        let cert = self.session.as_ref().map(|s| s.cert.clone());
        for item in queue {
            let mut message = item.message().clone();
            message.author_cert = cert.clone();
            let request = match &item {
                Outgoing::Peer(_) => DirectRequest::Chat(message),
                // Without a session there is no certificate: the mailbox delivers it later.
                Outgoing::User { .. } if cert.is_none() => continue,
                Outgoing::User { to, .. } => DirectRequest::UserChat {
                    to: to.clone(),
                    message,
                },
            };
            let id = self
                .swarm
                .behaviour_mut()
                .direct
                .send_request(&peer, request);
            self.in_flight.insert(id, (peer, item));
        }
    }

    fn publish_broadcast(&mut self, mut message: ChatMessage) {
        message.author_cert = self.session.as_ref().map(|s| s.cert.clone());
        let id = message.id;
        let bytes = match encode(&GossipFrame::Chat(message.clone())) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode broadcast {id}: {e}");
                return;
            }
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.topic.clone(), bytes)
        {
            Ok(_) => self.set_delivery(id, DeliveryState::Sent),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::debug!("no subscriber yet; broadcast {id} waits");
                self.queued_broadcasts.push_back(message);
            }
            Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => {
                tracing::warn!("broadcast {id} not published ({e}); will retry");
                self.queued_broadcasts.push_back(message);
            }
        }
    }

    fn handle_retry(&mut self) {
        self.tick_fetches();
        let waiting: Vec<PeerId> = self.outbox.keys().copied().collect();
        for peer in waiting {
            self.flush_outbox(peer);
        }
        self.publish_queued_broadcasts();
    }

    fn publish_queued_broadcasts(&mut self) {
        let queued = std::mem::take(&mut self.queued_broadcasts);
        for message in queued {
            self.publish_broadcast(message);
        }
    }

    // ---- discovery ------------------------------------------------------------------------

    fn handle_discovered(&mut self, found: Discovered) {
        match found {
            Discovered::Found {
                peer_id,
                addrs,
                role: Role::Bootstrap,
                ..
            } => self.handle_lan_bootstrap(peer_id, addrs),
            Discovered::Found {
                peer_id,
                name,
                addrs,
                role: Role::Peer,
            } => {
                tracing::debug!("mDNS found {peer_id} ({name}) at {addrs:?}");
                let entry = self
                    .peers
                    .entry(peer_id)
                    .or_insert_with(|| PeerEntry::new(PeerSource::Mdns));
                // Found on the LAN, even if it happened to connect to us first.
                entry.source = PeerSource::Mdns;
                if entry.name.is_none() && !name.is_empty() {
                    entry.name = Some(name);
                }
                for addr in &addrs {
                    entry.add_addr(addr.clone());
                }
                if !self.swarm.is_connected(&peer_id) {
                    let opts = DialOpts::peer_id(peer_id)
                        .addresses(addrs)
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!("cannot dial {peer_id} found by mDNS: {e}");
                    }
                }
                self.remember_peer(peer_id);
            }
            Discovered::Expired { peer_id } => {
                self.bootstraps.expired(&peer_id);
                if let Some(entry) = self.peers.get_mut(&peer_id)
                    && entry.reported
                {
                    entry.reported = false;
                    self.emit(Event::PeerLost {
                        peer_id: peer_id.to_base58(),
                    });
                }
            }
        }
    }

    fn remember_peer(&mut self, peer_id: PeerId) {
        let Some(entry) = self.peers.get(&peer_id) else {
            return;
        };
        let known = KnownPeer {
            peer_id: peer_id.to_base58(),
            name: entry.name.clone(),
            addrs: entry.addrs.iter().map(ToString::to_string).collect(),
            source: entry.source,
            user: entry.user.clone(),
        };
        let store = self.store.clone();
        self.run_store_op(async move {
            if let Err(e) = store.put_peer(known).await {
                tracing::warn!("cannot remember peer: {e}");
            }
            StoreDone::Nothing
        });
    }

    // ---- swarm events ---------------------------------------------------------------------

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Direct(e)) => self.handle_direct(e),
            SwarmEvent::Behaviour(BehaviourEvent::File(e)) => self.handle_file_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.handle_gossip(e),
            SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(e)) => self.handle_bootstrap_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Notify(e)) => self.handle_notify_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.handle_ping(e),
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.handle_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => tracing::debug!("dcutr: {e:?}"),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.handle_autonat(e),
            SwarmEvent::Behaviour(BehaviourEvent::KeepAlive(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.handle_identified(peer_id, info),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::info!("listening on {address}");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
                self.listeners.remove(&listener_id);
                if self.listeners.is_empty()
                    && let Some(ready) = self.ready.take()
                {
                    let _ = ready.send(Ok(()));
                }
                self.advertise();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                addresses,
            } => {
                self.listen_addrs.retain(|a| !addresses.contains(a));
                if let Some(relay) = self.relay_listeners.remove(&listener_id) {
                    tracing::debug!("relay reservation on {relay} ended: {reason:?}");
                    self.forget_circuit_addrs(relay);
                } else {
                    self.listener_failed(listener_id, format!("{reason:?}"))
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                self.listener_failed(listener_id, error.to_string())
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.handle_connected(peer_id, connection_id, endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => self.handle_disconnected(peer_id, num_established),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!("dial to {peer_id:?} failed: {error}");
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(DialError::Unreachable {
                        addr,
                        reason: error.to_string(),
                    }));
                }
                if let Some(peer) = peer_id {
                    self.handle_dial_failed(peer, connection_id);
                }
            }
            other => tracing::trace!("ignored swarm event {other:?}"),
        }
    }

    fn listener_failed(&mut self, listener: ListenerId, reason: String) {
        if let Some(addr) = self.listeners.remove(&listener) {
            tracing::error!("listener on {addr} failed: {reason}");
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(Err(StartError::Listen {
                    addr: addr.to_string(),
                    reason,
                }));
            }
        }
    }

    /// Advertises over mDNS once every listener has its address (one registration, not one per
    /// listener: each new registration restarts mDNS probing).
    fn advertise(&mut self) {
        if !self.listeners.is_empty() {
            return;
        }
        let Some(discovery) = self.discovery.as_mut() else {
            return;
        };
        let mut tcp = None;
        let mut quic = None;
        for addr in &self.listen_addrs {
            let parts: Vec<Protocol> = addr.iter().collect();
            match parts.as_slice() {
                [_, Protocol::Tcp(port)] => tcp = tcp.or(Some(*port)),
                [_, Protocol::Udp(port), Protocol::QuicV1] => quic = quic.or(Some(*port)),
                _ => {}
            }
        }
        if let Some(tcp) = tcp {
            discovery.advertise(tcp, quic);
        }
    }

    fn handle_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        endpoint: ConnectedPoint,
        established: u32,
    ) {
        tracing::debug!("connected to {peer} ({established} connections)");
        self.relay_dials.remove(&connection);
        let is_bootstrap = self.bootstraps.trusts(&peer);
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerEntry::new(PeerSource::Dial));
        entry.connections = established;
        entry.bootstrap |= is_bootstrap;
        if let Some((_, reply)) = self.pending_dials.remove(&connection) {
            entry.source = PeerSource::Dial;
            let _ = reply.send(Ok(peer.to_base58()));
        }
        let mut dialled = None;
        if let ConnectedPoint::Dialer { address, .. } = &endpoint {
            let (bare, _) = without_p2p(address);
            entry.add_addr(bare.clone());
            if !endpoint.is_relayed() {
                dialled = Some(bare);
            }
        }
        if self.bootstraps.connected(&peer, dialled, Instant::now()) {
            self.handle_bootstrap_up(peer);
        }
        self.flush_outbox(peer);
        if !self.queued_broadcasts.is_empty() {
            self.publish_queued_broadcasts();
        }
    }

    fn handle_disconnected(&mut self, peer: PeerId, remaining: u32) {
        if self
            .bootstraps
            .disconnected(&peer, remaining, Instant::now())
        {
            self.handle_bootstrap_down(peer);
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        entry.connections = remaining;
        if remaining > 0 {
            return;
        }
        entry.identified = false;
        entry.subscribed = false;
        if entry.reported {
            entry.reported = false;
            self.emit(Event::PeerLost {
                peer_id: peer.to_base58(),
            });
        }
    }

    fn handle_identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocol_version != IDENTIFY_PROTOCOL {
            tracing::debug!("{peer} is not a Confab peer ({})", info.protocol_version);
            return;
        }
        let name = net::name_from_agent(&info.agent_version).map(str::to_owned);
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| PeerEntry::new(PeerSource::Dial));
        entry.bootstrap = info.agent_version.starts_with(net::BOOTSTRAP_AGENT_PREFIX)
            || self.bootstraps.trusts(&peer);
        if let Some(name) = name {
            entry.name = Some(name);
        }
        let mut added = Vec::new();
        for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
            if entry.add_addr(addr.clone()) {
                added.push(addr);
            }
        }
        entry.identified = true;
        for addr in added {
            self.swarm.add_peer_address(peer, addr);
        }
        self.report_if_ready(peer);
        self.remember_peer(peer);
    }

    /// Emits `PeerDiscovered` once a peer is both identified and subscribed to broadcasts.
    fn report_if_ready(&mut self, peer: PeerId) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry.reported || entry.bootstrap || !entry.identified || !entry.subscribed {
            return;
        }
        entry.reported = true;
        let event = Event::PeerDiscovered {
            peer_id: peer.to_base58(),
            name: entry.name.clone().unwrap_or_default(),
            source: entry.source,
        };
        self.emit(event);
    }

    fn handle_direct(&mut self, event: request_response::Event<DirectRequest, DirectResponse>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.handle_direct_request(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some((_, item)) = self.in_flight.remove(&request_id) else {
                    return;
                };
                let message_id = item.message().id;
                match response {
                    // The peer is the receiving device itself: sent and delivered at once.
                    DirectResponse::Ack { id } if id == message_id => {
                        self.set_delivery(id, DeliveryState::Delivered)
                    }
                    DirectResponse::Rejected {
                        reason: RejectReason::StorageFailed,
                        ..
                    } => {
                        tracing::warn!("{peer} could not store {message_id}; will retry");
                        self.outbox.entry(peer).or_default().push_back(item);
                    }
                    other => {
                        tracing::warn!("{peer} refused {message_id}: {other:?}");
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, item)) = self.in_flight.remove(&request_id) {
                    tracing::debug!(
                        "sending {} to {peer} failed ({error}); will retry",
                        item.message().id
                    );
                    self.outbox.entry(peer).or_default().push_back(item);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!("inbound direct stream from {peer} failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Answers a direct request with a refusal (of message `id`, when known).
    fn refuse_direct(
        &mut self,
        channel: ResponseChannel<DirectResponse>,
        id: Option<MessageId>,
        reason: RejectReason,
    ) {
        let response = DirectResponse::Rejected { id, reason };
        let _ = self
            .swarm
            .behaviour_mut()
            .direct
            .send_response(channel, response);
    }

    fn handle_direct_request(
        &mut self,
        peer: PeerId,
        request: DirectRequest,
        channel: ResponseChannel<DirectResponse>,
    ) {
        let (message, conversation, user) = match request {
            DirectRequest::Chat(message) => {
                let user = self.certified_user(&peer, &message);
                (message, Conversation::peer(&peer), user)
            }
            DirectRequest::Recall { id } => return self.handle_direct_recall(peer, id, channel),
            DirectRequest::UserChat { to, message } => match self.user_chat(&peer, &to, &message) {
                Ok(author) => (message, Conversation::User(author.clone()), Some(author)),
                Err(detail) => {
                    tracing::debug!("refusing {} from {peer}: {detail}", message.id);
                    let reason = RejectReason::Invalid { detail };
                    return self.refuse_direct(channel, Some(message.id), reason);
                }
            },
            _ => {
                return self.refuse_direct(channel, None, RejectReason::Unsupported);
            }
        };
        if self.blocks(&conversation, user.as_deref()) {
            tracing::debug!("refusing {} from {peer}: blocked", message.id);
            let detail = "the receiver does not accept messages from this sender".to_owned();
            return self.refuse_direct(channel, None, RejectReason::Invalid { detail });
        }
        if self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            return self.refuse_direct(channel, None, RejectReason::StorageFailed);
        }
        let ready = match self.open_incoming(&conversation, &peer, user.as_deref(), message) {
            // Not readable here (or read already): the mailbox copy decides what is kept.
            Ok(ready) if ready.undecrypted() => {
                let detail = "cannot be decrypted on this device".to_owned();
                return self.refuse_direct(channel, None, RejectReason::Invalid { detail });
            }
            Ok(ready) => ready,
            // The sender tries again; by then this device has caught up.
            Err(e2e::NotReady::Later) => {
                return self.refuse_direct(channel, None, RejectReason::StorageFailed);
            }
            Err(e2e::NotReady::Refused(detail)) => {
                tracing::debug!("refusing a message from {peer}: {detail}");
                return self.refuse_direct(channel, None, RejectReason::Invalid { detail });
            }
        };
        let record = ready.record(conversation.clone(), &peer, user.clone());
        let (message, encrypted) = (ready.message, ready.encrypted);
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.insert_message(record, None).await;
            StoreDone::Inbound {
                peer,
                user,
                conversation,
                message,
                encrypted,
                channel,
                result,
            }
        });
    }

    fn handle_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = match (message.source, decode::<GossipFrame>(&message.data)) {
                    (Some(author), Ok(GossipFrame::Chat(chat)))
                        if message.topic == self.topic.hash() && author != self.local_peer =>
                    {
                        self.store_broadcast(author, chat);
                        gossipsub::MessageAcceptance::Accept
                    }
                    (
                        author,
                        Ok(GossipFrame::Group {
                            group,
                            message: chat,
                        }),
                    ) => self.group_gossip(author, &message.topic, group, chat),
                    (
                        author,
                        Ok(GossipFrame::Recall {
                            group: None,
                            id,
                            cert,
                        }),
                    ) if message.topic == self.topic.hash() => {
                        self.broadcast_recall(author, id, cert)
                    }
                    (_, Ok(_)) => gossipsub::MessageAcceptance::Ignore,
                    (_, Err(e)) => {
                        tracing::debug!("rejecting gossip from {propagation_source}: {e}");
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::debug!("{peer_id} subscribed to {topic}");
                if topic == self.topic.hash() {
                    self.peers
                        .entry(peer_id)
                        .or_insert_with(|| PeerEntry::new(PeerSource::Dial))
                        .subscribed = true;
                    self.report_if_ready(peer_id);
                    if !self.queued_broadcasts.is_empty() {
                        self.publish_queued_broadcasts();
                    }
                }
            }
            other => tracing::trace!("gossipsub: {other:?}"),
        }
    }

    fn store_broadcast(&mut self, author: PeerId, message: ChatMessage) {
        if self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            tracing::warn!(
                "store busy; dropping broadcast {} from {author}",
                message.id
            );
            return;
        }
        let user = self.certified_user(&author, &message);
        if user.as_deref().is_some_and(|u| self.blocks_user(u)) {
            return;
        }
        let record = incoming_record(Conversation::Broadcast, &author, user.clone(), &message);
        let store = self.store.clone();
        self.run_store_op(async move {
            let result = store.insert_message(record, None).await;
            StoreDone::Broadcast {
                author,
                user,
                message,
                result,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstraps_are_pinned_by_peer_id_and_grouped() {
        let peer = PeerId::random();
        let addrs = vec![
            format!("/ip4/10.0.0.1/tcp/4717/p2p/{peer}"),
            format!("/ip4/10.0.0.1/udp/4717/quic-v1/p2p/{peer}"),
        ];
        let parsed = parse_bootstraps(&addrs).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, peer);
        assert_eq!(
            parsed[0].1,
            [
                "/ip4/10.0.0.1/tcp/4717".parse::<Multiaddr>().unwrap(),
                "/ip4/10.0.0.1/udp/4717/quic-v1".parse().unwrap()
            ]
        );
        for bad in ["/ip4/10.0.0.1/tcp/4717", "not an address"] {
            assert!(matches!(
                parse_bootstraps(&[bad.to_owned()]),
                Err(StartError::BadAddress { .. })
            ));
        }
    }
}
