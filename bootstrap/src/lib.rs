//! `confab-bootstrap`: the always-on Confab node.
//!
//! Today it is the meeting point of the internet side: it keeps a stable identity, listens on a
//! fixed port, answers identify and ping, and takes part in the broadcast topic so that nodes that
//! only reach each other through it still get each other's broadcasts. Accounts, presence, relay
//! and mailboxes come next (see the issues).
//!
//! Layout:
//! - [`Config`], [`start`], [`Bootstrap`]: run a server in-process (the binary is a thin `main`).
//! - `store`: the server's redb file (identity for now).

mod store;

use std::path::PathBuf;
use std::time::Duration;

use confab_node::net::{self, IDENTIFY_PROTOCOL};
use confab_protocol::gossip::BROADCAST_TOPIC;
use confab_protocol::{GossipFrame, decode};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, connection_limits, gossipsub, identify, identity, ping};
use tokio::sync::{mpsc, oneshot};

/// The port a bootstrap listens on by default (TCP and QUIC).
pub const DEFAULT_PORT: u16 = 4717;
/// Established connections the server holds at most.
pub const MAX_CONNECTIONS: u32 = 10_000;
/// Established connections per peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 256;
/// Idle connections are closed after this long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// How a bootstrap is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where its database lives.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
}

impl Config {
    /// Defaults: TCP and QUIC on [`DEFAULT_PORT`] on every interface.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
                format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
            ],
        }
    }
}

/// Why a bootstrap could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data dir or database could not be used.
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
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

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

/// A running bootstrap.
#[derive(Debug)]
pub struct Bootstrap {
    /// Its peer id.
    pub peer_id: String,
    /// Its listen addresses, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    commands: mpsc::Sender<Command>,
}

/// Counters of a running bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers subscribed to the broadcast topic.
    pub broadcast_subscribers: usize,
}

enum Command {
    Stats(oneshot::Sender<Stats>),
    Shutdown(oneshot::Sender<()>),
}

impl Bootstrap {
    /// The server's counters now; `None` once it has stopped.
    pub async fn stats(&self) -> Option<Stats> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Stats(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Stops serving and closes the database; returns when done.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts a bootstrap on the current tokio runtime; returns once every listener has an address.
pub async fn start(config: Config) -> Result<Bootstrap, StartError> {
    let fresh = identity::Keypair::generate_ed25519()
        .to_protobuf_encoding()
        .map_err(|e| StartError::Network(e.to_string()))?;
    let key_bytes = store::open_identity(&config.data_dir, fresh)?;
    let keypair = identity::Keypair::from_protobuf_encoding(&key_bytes)
        .map_err(|e| StartError::Store(store::StoreError::Corrupt(e.to_string())))?;
    let peer_id = keypair.public().to_peer_id();

    let gossip_config =
        net::gossipsub_config(Duration::from_secs(1)).map_err(StartError::Network)?;
    let mut swarm = net::build_swarm(keypair, IDLE_CONNECTION_TIMEOUT, |key| {
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
            ping: ping::Behaviour::default(),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )
            .map_err(str::to_owned)?,
        })
    })
    .map_err(StartError::Network)?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new(BROADCAST_TOPIC))
        .map_err(|e| StartError::Network(e.to_string()))?;

    let mut pending = std::collections::HashMap::new();
    for text in &config.listen {
        let addr: Multiaddr =
            text.parse()
                .map_err(|e: libp2p::multiaddr::Error| StartError::BadAddress {
                    addr: text.clone(),
                    reason: e.to_string(),
                })?;
        let id = swarm.listen_on(addr).map_err(|e| StartError::Listen {
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
    let (command_tx, command_rx) = mpsc::channel(16);
    tokio::spawn(run(swarm, peer_id, command_rx));
    Ok(Bootstrap {
        peer_id: peer_id.to_base58(),
        listen_addrs,
        commands: command_tx,
    })
}

async fn run(mut swarm: Swarm<Behaviour>, local: PeerId, mut commands: mpsc::Receiver<Command>) {
    let topic = gossipsub::IdentTopic::new(BROADCAST_TOPIC).hash();
    let done = loop {
        tokio::select! {
            event = swarm.select_next_some() => handle_event(&mut swarm, local, event),
            command = commands.recv() => match command {
                Some(Command::Stats(reply)) => {
                    let broadcast_subscribers = swarm
                        .behaviour()
                        .gossipsub
                        .all_peers()
                        .filter(|(_, topics)| topics.contains(&&topic))
                        .count();
                    let _ = reply.send(Stats {
                        connected_peers: swarm.connected_peers().count(),
                        broadcast_subscribers,
                    });
                }
                Some(Command::Shutdown(reply)) => break Some(reply),
                None => break None,
            },
        }
    };
    drop(swarm);
    if let Some(done) = done {
        let _ = done.send(());
    }
}

fn handle_event(swarm: &mut Swarm<Behaviour>, local: PeerId, event: SwarmEvent<BehaviourEvent>) {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        })) => {
            // Relay well-formed broadcasts; reject garbage so its sender's score drops.
            let verdict = match decode::<GossipFrame>(&message.data) {
                Ok(GossipFrame::Chat(_)) if message.source.is_some_and(|s| s != local) => {
                    gossipsub::MessageAcceptance::Accept
                }
                Ok(_) => gossipsub::MessageAcceptance::Ignore,
                Err(_) => gossipsub::MessageAcceptance::Reject,
            };
            swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, verdict);
        }
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            tracing::debug!("connected: {peer_id}")
        }
        SwarmEvent::IncomingConnectionError { error, .. } => {
            tracing::debug!("incoming connection failed: {error}")
        }
        other => tracing::trace!("{other:?}"),
    }
}
