//! The server's event loop: one task owns the swarm. Requests are answered by the service in
//! tasks of their own (bounded by a semaphore) whose outcomes come back to the loop, which sends
//! the response and carries out the effects (notifications, presence). Publications on the
//! broadcast topic are judged in the loop and kept by a writer task ([`broadcasts`]).

mod broadcasts;
mod files;
use files::PULL_RETRY_TICKS;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use confab_node::net::{self, BootstrapCodec, FileCodec, IDENTIFY_PROTOCOL, NotifyCodec};
use confab_protocol::bootstrap::{
    BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse, ErrorCode, NOTIFY_PROTOCOL,
    Notification,
};
use confab_protocol::gossip::BROADCAST_TOPIC;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, autonat, connection_limits, gossipsub, identify, identity, ping,
    relay,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::config::limits::*;
use crate::mdns::Advertisement;
use crate::presence::Presence;
use crate::service::broadcasts::{BroadcastGate, BroadcastWindow};
use crate::service::{Effect, Outcome, Service};
use crate::store::{Store, StoreError};
use broadcasts::BroadcastWriter;
use confab_node::files::store::BlobStore;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay: relay::Behaviour,
    autonat: autonat::Behaviour,
    gossipsub: gossipsub::Behaviour,
    bootstrap: request_response::Behaviour<BootstrapCodec>,
    notify: request_response::Behaviour<NotifyCodec>,
    file: request_response::Behaviour<FileCodec>,
}

/// Why a bootstrap could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir or database could not be used.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// An address is not a multiaddr.
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress {
        /// As given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Listening failed.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The swarm could not be built.
    #[error("network setup failed: {0}")]
    Network(String),
}

/// Counters of a running bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers subscribed to the broadcast topic.
    pub broadcast_subscribers: usize,
    /// Accounts.
    pub users: u64,
    /// Devices bound to accounts.
    pub devices: u64,
    /// Users with at least one device online.
    pub users_online: usize,
}

enum Command {
    Stats(oneshot::Sender<Stats>),
    Shutdown(oneshot::Sender<()>),
}

/// A running bootstrap.
#[derive(Debug)]
pub struct Bootstrap {
    /// Its peer id.
    pub peer_id: String,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    commands: mpsc::Sender<Command>,
    /// Periodic backups (when `config.backup_dir` is set); stopped by `shutdown`, aborted on drop.
    backups: Option<crate::store::backup::Periodic>,
    /// The admin socket; stopped by `shutdown`, aborted on drop.
    admin: Option<crate::admin::AdminServer>,
    /// Deletes expired mailbox entries and kept broadcasts; aborted on drop (and so by
    /// `shutdown`).
    _expiry: ExpiryTask,
}

/// The periodic deletion of expired mailbox entries and of kept broadcasts out of their window.
#[derive(Debug)]
struct ExpiryTask(tokio::task::JoinHandle<()>);

impl Drop for ExpiryTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ExpiryTask {
    fn spawn(
        store: Store,
        retention: Duration,
        broadcasts: BroadcastWindow,
        held: Service,
        blobs: BlobStore,
    ) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAILBOX_EXPIRY_INTERVAL);
            loop {
                tick.tick().await;
                let store = store.clone();
                let (held, blobs) = (held.clone(), blobs.clone());
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
                let cutoff = now.saturating_sub(retention_ms);
                let done = tokio::task::spawn_blocking(move || {
                    let mailboxes =
                        store.write(|tx| tx.mailbox_expire(cutoff, MAILBOX_EXPIRY_BATCH));
                    let kept = store.write(|tx| broadcasts.expire(tx, now));
                    match held.expire_holds_blocking(now) {
                        Ok(roots) => {
                            for root in roots {
                                // A pull still writing it keeps it; its end finds no hold and
                                // drops it then.
                                match blobs.remove(&root) {
                                    Ok(()) => tracing::info!("held file {root:?} expired"),
                                    Err(e) => tracing::warn!("expired file {root:?}: {e}"),
                                }
                            }
                        }
                        Err(e) => tracing::error!("held file expiry: {e}"),
                    }
                    (mailboxes, kept)
                })
                .await;
                match done {
                    Ok((mailboxes, kept)) => {
                        match mailboxes {
                            Ok(0) => {}
                            Ok(n) => tracing::info!("deleted {n} expired mailbox entries"),
                            Err(e) => tracing::error!("mailbox expiry: {e}"),
                        }
                        match kept {
                            Ok(0) => {}
                            Ok(n) => {
                                tracing::info!("deleted {n} kept broadcasts out of the window")
                            }
                            Err(e) => tracing::error!("broadcast expiry: {e}"),
                        }
                    }
                    Err(e) => tracing::error!("expiry task: {e}"),
                }
            }
        }))
    }
}

impl Bootstrap {
    /// The server's counters now; `None` once it has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops serving (requests in progress are answered first) and closes the database.
    pub async fn shutdown(self) {
        if let Some(admin) = self.admin {
            admin.stop().await;
        }
        if let Some(backups) = self.backups {
            backups.stop().await;
        }
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What the loop waits on besides the swarm.
enum Done {
    /// A request was answered by the service.
    Answered {
        channel: ResponseChannel<BootstrapResponse>,
        outcome: Outcome,
    },
    /// A connected peer turned out to be a logged-in device.
    DeviceFound { device: PeerId, user: String },
    /// Notifications computed off the loop, to push.
    Push(Vec<(PeerId, Notification)>),
    /// Effects computed off the loop, to carry out.
    Effects(Vec<Effect>),
    /// Held files of `user` still to pull: `(root, size)` each.
    Pulls {
        user: String,
        pulls: Vec<(confab_protocol::ContentHash, u64)>,
    },
    /// Holds still being pulled, with the accounts that may have each: retried now.
    RetryPulls(Vec<(confab_protocol::ContentHash, u64, Vec<String>)>),
    /// A file request is answered.
    FileServed {
        channel: ResponseChannel<confab_protocol::file::FileResponse>,
        response: confab_protocol::file::FileResponse,
    },
    /// Nothing to do.
    Nothing,
}

fn parse(addr: &str) -> Result<Multiaddr, StartError> {
    addr.parse()
        .map_err(|e: libp2p::multiaddr::Error| StartError::BadAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

/// Starts a bootstrap on the current tokio runtime; returns once every listener has an address.
pub async fn start(config: Config) -> Result<Bootstrap, StartError> {
    let fresh = identity::Keypair::generate_ed25519()
        .to_protobuf_encoding()
        .map_err(|e| StartError::Network(e.to_string()))?;
    let data_dir = config.data_dir.clone();
    let (store, key_bytes) = tokio::task::spawn_blocking(move || Store::open(&data_dir, fresh))
        .await
        .map_err(|e| StartError::Network(e.to_string()))??;
    let keypair = identity::Keypair::from_protobuf_encoding(&key_bytes)
        .map_err(|e| StartError::Store(StoreError::Corrupt(e.to_string())))?;
    let peer_id = keypair.public().to_peer_id();
    let presence = Arc::new(Presence::default());
    let window = BroadcastWindow {
        max_entries: config.broadcast_max_entries,
        retention: config.broadcast_retention,
    };
    let service = Service::new(store.clone(), keypair.clone(), presence.clone())
        .await
        .map_err(|e| StartError::Network(e.to_string()))?
        .with_mailbox_limit(config.mailbox_max_entries)
        .with_broadcast_window(window)
        .with_file_limits(config.files);
    let files_dir = config.data_dir.join("files");
    let blobs = tokio::task::spawn_blocking(move || BlobStore::open(&files_dir))
        .await
        .map_err(|e| StartError::Network(e.to_string()))?
        .map_err(|e| StartError::Store(StoreError::Database(format!("the file store: {e}"))))?;
    let gate = BroadcastGate::new(
        keypair.public(),
        config.broadcast_policy,
        &config.broadcast_admins,
        config.broadcast_rate_per_minute,
        config.broadcast_burst,
    );

    let gossip_config =
        net::gossipsub_config(Duration::from_secs(1)).map_err(StartError::Network)?;
    let mut swarm = net::build_swarm(keypair, IDLE_CONNECTION_TIMEOUT, |key| {
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
                    .with_agent_version(format!(
                        "{}{}",
                        net::BOOTSTRAP_AGENT_PREFIX,
                        env!("CARGO_PKG_VERSION")
                    )),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            ),
            relay: relay::Behaviour::new(
                local,
                relay::Config {
                    max_reservations: RELAY_MAX_RESERVATIONS,
                    max_circuits: RELAY_MAX_CIRCUITS,
                    max_circuits_per_peer: RELAY_MAX_CIRCUITS_PER_PEER,
                    max_circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
                    max_circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
                    ..Default::default()
                },
            ),
            autonat: autonat::Behaviour::new(
                local,
                autonat::Config {
                    // A LAN bootstrap must answer for private addresses too.
                    only_global_ips: false,
                    ..Default::default()
                },
            ),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )
            .map_err(str::to_owned)?,
            bootstrap: net::wire_behaviour(
                BOOTSTRAP_PROTOCOL,
                ProtocolSupport::Inbound,
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
            ),
            notify: net::wire_behaviour(
                NOTIFY_PROTOCOL,
                ProtocolSupport::Outbound,
                request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
            ),
            file: net::wire_behaviour(
                confab_protocol::file::FILE_PROTOCOL,
                ProtocolSupport::Full,
                request_response::Config::default()
                    .with_request_timeout(REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(MAX_FILE_STREAMS),
            ),
        })
    })
    .map_err(StartError::Network)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new(BROADCAST_TOPIC))
        .map_err(|e| StartError::Network(e.to_string()))?;

    let mut pending = HashMap::new();
    for text in &config.listen {
        let id = swarm
            .listen_on(parse(text)?)
            .map_err(|e| StartError::Listen {
                addr: text.clone(),
                reason: e.to_string(),
            })?;
        pending.insert(id, text.clone());
    }
    let mut listen_addrs = Vec::new();
    while !pending.is_empty() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.remove(&listener_id);
                // A bootstrap is reachable where it listens: announcing it (identify, relay
                // reservations) is what lets nodes behind NAT be reached through it. Without an
                // external address the relay server stays off.
                swarm.add_external_address(address.clone());
                listen_addrs.push(address.with(Protocol::P2p(peer_id)).to_string());
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    return Err(StartError::Listen {
                        addr,
                        reason: format!("{reason:?}"),
                    });
                }
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                if let Some(addr) = pending.remove(&listener_id) {
                    return Err(StartError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
            }
            _ => {}
        }
    }
    // A wildcard listener reports one address per interface, in a burst; take the rest of it.
    while let Ok(event) = tokio::time::timeout(LISTEN_SETTLE, swarm.select_next_some()).await {
        if let SwarmEvent::NewListenAddr { address, .. } = event {
            swarm.add_external_address(address.clone());
            listen_addrs.push(address.with(Protocol::P2p(peer_id)).to_string());
        }
    }
    let advertisement = if config.mdns {
        advertise(&peer_id, &listen_addrs)
    } else {
        None
    };
    let (command_tx, command_rx) = mpsc::channel(16);
    let broadcast_writer = BroadcastWriter::spawn(service.clone());
    let held = service.clone();
    let event_loop = EventLoop {
        advertisement,
        swarm,
        service,
        presence,
        commands: command_rx,
        remote_ips: HashMap::new(),
        tasks: FuturesUnordered::new(),
        broadcast_topic: gossipsub::IdentTopic::new(BROADCAST_TOPIC).hash(),
        gate,
        broadcast_writer,
        files: files::Files::new(blobs.clone()),
    };
    tokio::spawn(event_loop.run());
    // Hook 1: periodic backups.
    let backups = config.backup_dir.clone().map(|dir| {
        crate::store::backup::Periodic::spawn(store.clone(), dir, config.backup_interval)
    });
    // Hook 2: the admin socket; its `stats` asks the loop.
    let stats_commands = command_tx.clone();
    let expiry = ExpiryTask::spawn(
        store.clone(),
        config.mailbox_retention,
        window,
        held.clone(),
        blobs,
    );
    let admin = crate::admin::spawn(&config.data_dir, store, move || {
        let commands = stats_commands.clone();
        async move {
            let (tx, rx) = oneshot::channel();
            commands.send(Command::Stats(tx)).await.ok()?;
            rx.await.ok()
        }
    });
    Ok(Bootstrap {
        peer_id: peer_id.to_base58(),
        listen_addrs,
        commands: command_tx,
        backups,
        admin,
        _expiry: expiry,
    })
}

struct EventLoop {
    advertisement: Option<Advertisement>,
    swarm: Swarm<Behaviour>,
    service: Service,
    presence: Arc<Presence>,
    commands: mpsc::Receiver<Command>,
    /// The source address of each connected peer (for per-address login throttling).
    remote_ips: HashMap<PeerId, IpAddr>,
    tasks: FuturesUnordered<BoxFuture<'static, Done>>,
    broadcast_topic: gossipsub::TopicHash,
    /// Who may broadcast, and the rate per author.
    gate: BroadcastGate,
    /// Keeps what the gate accepts.
    broadcast_writer: BroadcastWriter,
    /// Held files: pulls, serving.
    files: files::Files,
}

/// Starts the mDNS advertisement at the first TCP and QUIC ports listened on; a failure only
/// costs LAN discovery, so it is logged.
fn advertise(peer: &PeerId, listen_addrs: &[String]) -> Option<Advertisement> {
    let (mut tcp, mut quic) = (None, None);
    for addr in listen_addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
    {
        let parts: Vec<Protocol> = addr.iter().collect();
        match parts.as_slice() {
            [_, Protocol::Tcp(p), ..] => tcp = tcp.or(Some(*p)),
            [_, Protocol::Udp(p), Protocol::QuicV1, ..] => quic = quic.or(Some(*p)),
            _ => {}
        }
    }
    let tcp = tcp?;
    match Advertisement::start(peer, tcp, quic) {
        Ok(ad) => Some(ad),
        Err(e) => {
            tracing::warn!("mDNS advertisement failed: {e}");
            None
        }
    }
}

/// Announces (or withdraws) a listen address as one where this server can be reached.
fn swarm_external(swarm: &mut Swarm<Behaviour>, address: Multiaddr, add: bool) {
    if add {
        swarm.add_external_address(address);
    } else {
        swarm.remove_external_address(&address);
    }
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl EventLoop {
    async fn run(mut self) {
        let mut file_ticks: u64 = 0;
        let mut file_tick = tokio::time::interval(Duration::from_secs(1));
        file_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => self.handle_done(done),
                work = self.files.fetcher.next_work() => {
                    self.files.fetcher.work_done(&mut self.swarm.behaviour_mut().file, work);
                    self.drain_file_events();
                }
                _ = file_tick.tick() => {
                    if !self.files.fetcher.is_empty() {
                        self.files.fetcher.tick(&mut self.swarm.behaviour_mut().file);
                        self.drain_file_events();
                    }
                    file_ticks += 1;
                    if file_ticks.is_multiple_of(PULL_RETRY_TICKS) {
                        self.retry_pulls();
                    }
                }
                command = self.commands.recv() => match command {
                    Some(Command::Stats(reply)) => self.stats(reply),
                    Some(Command::Shutdown(reply)) => break Some(reply),
                    None => break None,
                },
            }
        };
        // Answer what is in progress, then close everything.
        while let Some(d) = self.tasks.next().await {
            self.handle_done(d);
        }
        if let Some(ad) = self.advertisement.take() {
            ad.stop().await;
        }
        drop(self.swarm);
        // What was accepted is kept before the store closes.
        self.broadcast_writer.close().await;
        drop(self.service);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    fn stats(&mut self, reply: oneshot::Sender<Stats>) {
        let broadcast_subscribers = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&self.broadcast_topic))
            .count();
        let mut stats = Stats {
            connected_peers: self.swarm.connected_peers().count(),
            broadcast_subscribers,
            users_online: self.presence.users_online(),
            ..Stats::default()
        };
        // The database counts are read off the loop: a read transaction is disk I/O.
        let store = self.service.store().clone();
        self.spawn(async move {
            match tokio::task::spawn_blocking(move || store.stats()).await {
                Ok(Ok(counts)) => {
                    stats.users = counts.users;
                    stats.devices = counts.devices;
                }
                Ok(Err(e)) => tracing::error!("stats: {e}"),
                Err(e) => tracing::error!("stats task: {e}"),
            }
            let _ = reply.send(stats);
            Done::Nothing
        });
    }

    fn spawn(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        self.tasks.push(Box::pin(task));
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(
                request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) => self.handle_request(peer, request, channel),
            SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => tracing::debug!("bad request stream from {peer}: {error}"),
            SwarmEvent::Behaviour(BehaviourEvent::Notify(
                request_response::Event::OutboundFailure { peer, error, .. },
            )) => tracing::debug!("notification to {peer} failed: {error}"),
            SwarmEvent::Behaviour(BehaviourEvent::File(event)) => self.handle_file_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.handle_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.handle_identified(peer_id, info.listen_addrs),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e @ (ping::Failure::Timeout | ping::Failure::Other { .. })),
            })) => {
                // A dead connection must not keep a user "online".
                tracing::debug!("ping to {peer} failed ({e}); closing the connection");
                self.swarm.close_connection(connection);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = &endpoint
                    && let Some(ip) = ip_of(send_back_addr)
                {
                    self.remote_ips.insert(peer_id, ip);
                }
                if num_established.get() == 1 {
                    self.look_up_device(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.remote_ips.remove(&peer_id);
                self.presence.forget_addrs(&peer_id);
                self.device_gone(&peer_id);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}");
                swarm_external(&mut self.swarm, address, true);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                swarm_external(&mut self.swarm, address, false)
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!("incoming connection failed: {error}")
            }
            other => tracing::trace!("{other:?}"),
        }
    }

    /// A peer told where it listens: kept (while it is connected) for `Devices` answers, whether
    /// or not it is a logged-in device yet.
    fn handle_identified(&mut self, peer: PeerId, listen_addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) {
            self.presence.set_addrs(peer, listen_addrs);
        }
    }

    fn handle_request(
        &mut self,
        peer: PeerId,
        request: BootstrapRequest,
        channel: ResponseChannel<BootstrapResponse>,
    ) {
        if self.tasks.len() >= MAX_CONCURRENT_REQUESTS {
            let busy = BootstrapResponse::Error {
                code: ErrorCode::Throttled,
                message: "the server is busy; try again shortly".into(),
                retry_after_ms: Some(1000),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .bootstrap
                .send_response(channel, busy);
            return;
        }
        let service = self.service.clone();
        let source = self.remote_ips.get(&peer).copied();
        self.spawn(async move {
            let outcome = service.handle(peer, source, request).await;
            Done::Answered { channel, outcome }
        });
    }

    fn handle_done(&mut self, done: Done) {
        match done {
            Done::Answered { channel, outcome } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .bootstrap
                    .send_response(channel, outcome.response)
                    .is_err()
                {
                    tracing::debug!("a requester left before its answer");
                }
                for effect in outcome.effects {
                    self.apply(effect);
                }
            }
            // The lookup took a moment: the device may have left meanwhile.
            Done::DeviceFound { device, user } if self.swarm.is_connected(&device) => {
                self.device_online(device, user)
            }
            Done::DeviceFound { .. } => {}
            Done::Push(notes) => {
                for (device, note) in notes {
                    self.push(device, note);
                }
            }
            Done::Effects(effects) => {
                for effect in effects {
                    self.apply(effect);
                }
            }
            Done::Pulls { user, pulls } => {
                for (root, size) in pulls {
                    self.start_pull(root, size, &user);
                }
            }
            Done::FileServed { channel, response } => self.file_served(channel, response),
            Done::RetryPulls(pulls) => {
                for (root, size, from) in pulls {
                    // The first account with a device online (the owner first).
                    if let Some(user) = from.iter().find(|u| self.presence.is_online(u)) {
                        let user = user.clone();
                        self.start_pull(root, size, &user);
                    }
                }
            }
            Done::Nothing => {}
        }
    }

    fn push(&mut self, device: PeerId, note: Notification) {
        if self.swarm.is_connected(&device) {
            self.swarm
                .behaviour_mut()
                .notify
                .send_request(&device, note);
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Notify { user, note } => {
                for device in self.presence.online_devices(&user) {
                    self.push(device, note.clone());
                }
            }
            Effect::NotifyOthers { user, except, note } => {
                for device in self.presence.online_devices(&user) {
                    if device != except {
                        self.push(device, note.clone());
                    }
                }
            }
            Effect::NotifyDevice { device, note } => self.push(device, note),
            Effect::DeviceBound { device, user } => {
                if self.swarm.is_connected(&device) {
                    self.device_online(device, user);
                }
            }
            Effect::DeviceUnbound { device } => self.device_gone(&device),
            Effect::PullFile { root, size, from } => self.start_pull(root, size, &from),
            Effect::DropFile { root } => self.drop_file(root),
        }
    }

    /// A first connection from `peer`: if it is a logged-in device, it is now online.
    fn look_up_device(&mut self, peer: PeerId) {
        let store = self.service.store().clone();
        self.spawn(async move {
            let key = peer.to_base58();
            match tokio::task::spawn_blocking(move || store.device_user(&key)).await {
                Ok(Ok(Some(user))) => Done::DeviceFound { device: peer, user },
                Ok(Ok(None)) => Done::Nothing,
                Ok(Err(e)) => {
                    tracing::error!("device lookup: {e}");
                    Done::Nothing
                }
                Err(e) => {
                    tracing::error!("device lookup task: {e}");
                    Done::Nothing
                }
            }
        });
    }

    fn device_online(&mut self, device: PeerId, user: String) {
        if self.presence.user_of(&device).as_ref() == Some(&user) {
            return;
        }
        let first = self.presence.device_online(device, &user);
        self.resume_pulls(user.clone());
        let service = self.service.clone();
        let presence = self.presence.clone();
        self.spawn(async move {
            let mut notes = Vec::new();
            // Pending friend requests reach a device when it comes online.
            match service.pending_for(user.clone()).await {
                Ok(pending) => notes.extend(pending.into_iter().map(|n| (device, n))),
                Err(e) => tracing::error!("pending requests of {user}: {e}"),
            }
            if first {
                notes.extend(presence_fan_out(&service, &presence, &user, true).await);
            }
            Done::Push(notes)
        });
    }

    fn device_gone(&mut self, device: &PeerId) {
        let Some(user) = self.presence.device_offline(device) else {
            return;
        };
        let service = self.service.clone();
        let presence = self.presence.clone();
        self.spawn(
            async move { Done::Push(presence_fan_out(&service, &presence, &user, false).await) },
        );
    }
}

/// `Presence` notifications for every online device of every friend of `user`.
async fn presence_fan_out(
    service: &Service,
    presence: &Presence,
    user: &str,
    online: bool,
) -> Vec<(PeerId, Notification)> {
    let friends = match service.friends_of(user.to_owned()).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("friends of {user}: {e}");
            return Vec::new();
        }
    };
    let note = Notification::Presence {
        user: user.to_owned(),
        online,
    };
    friends
        .iter()
        .flat_map(|f| presence.online_devices(f))
        .map(|d| (d, note.clone()))
        .collect()
}
