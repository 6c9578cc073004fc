//! A bare client of the bootstrap: one libp2p swarm (from `confab_node::net::build_swarm`) that
//! sends `/confab/bootstrap/1` requests and answers every `/confab/notify/1` push with
//! `NotifyAck {}`, stamping its arrival. It measures the server without the node in between.
//!
//! As in rust-libp2p's file-sharing example, a [`Client`] is a handle: one task owns the swarm
//! and takes [`Command`]s carrying a `oneshot` for the answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use confab_node::net::{self, WireCodec};
use confab_protocol::bootstrap::{
    BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse, NOTIFY_PROTOCOL, Notification,
    NotifyAck,
};
use futures::StreamExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identity, ping};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Most time dialling the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most time one request may take to be answered (the server's own limit is 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle timeout of the client's connection: longer than the whole benchmark, so only the server
/// or the benchmark closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Commands queued for one client's task.
const COMMAND_QUEUE: usize = 64;

/// The client's protocols. Ping is there because nodes run it: the server pings every
/// connection and closes those whose ping times out, so a held client answers pings as a node
/// would.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    bootstrap: request_response::Behaviour<WireCodec<BootstrapRequest, BootstrapResponse>>,
    notify: request_response::Behaviour<WireCodec<Notification, NotifyAck>>,
    ping: ping::Behaviour,
}

/// Something the server did to a client, stamped when the client's task saw it.
#[derive(Debug)]
pub enum Note {
    /// A push on `/confab/notify/1` (already acknowledged).
    Notification {
        /// The client's index.
        client: usize,
        /// What the server pushed.
        note: Notification,
        /// When it arrived.
        at: Instant,
    },
    /// The connection to the server closed.
    Closed {
        /// The client's index.
        client: usize,
    },
}

/// Where clients report their [`Note`]s: a bounded channel that never blocks a client's task.
/// A note that does not fit is counted as lost.
#[derive(Clone)]
pub struct Notes {
    tx: mpsc::Sender<Note>,
    lost: Arc<AtomicUsize>,
}

impl Notes {
    /// A channel of `capacity` notes.
    pub fn channel(capacity: usize) -> (Notes, mpsc::Receiver<Note>) {
        let (tx, rx) = mpsc::channel(capacity);
        let lost = Arc::new(AtomicUsize::new(0));
        (Notes { tx, lost }, rx)
    }

    /// Notes that did not fit in the channel.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }

    fn deliver(&self, note: Note) {
        if self.tx.try_send(note).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Reply = oneshot::Sender<Result<BootstrapResponse, String>>;

/// What a [`Client`] asks of its task.
enum Command {
    Request {
        request: Box<BootstrapRequest>,
        reply: Reply,
    },
    /// Drop the swarm (which closes the connection), then answer.
    Close(oneshot::Sender<()>),
}

/// A handle on one connected client. Dropping it stops its task and so closes its connection.
pub struct Client {
    keypair: identity::Keypair,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Dials the server at `addr` (ending in `/p2p/<peer>`) as device `keypair` and returns once
    /// the connection is established. Notifications and the connection's end go to `notes`,
    /// tagged `index`.
    pub async fn connect(
        index: usize,
        keypair: identity::Keypair,
        addr: &Multiaddr,
        server: PeerId,
        notes: Option<Notes>,
    ) -> Result<Client> {
        let mut swarm = net::build_swarm(keypair.clone(), IDLE_TIMEOUT, |_| {
            Ok(Behaviour {
                bootstrap: request_response::Behaviour::with_codec(
                    WireCodec::default(),
                    [(
                        StreamProtocol::new(BOOTSTRAP_PROTOCOL),
                        ProtocolSupport::Outbound,
                    )],
                    request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                ),
                notify: request_response::Behaviour::with_codec(
                    WireCodec::default(),
                    [(
                        StreamProtocol::new(NOTIFY_PROTOCOL),
                        ProtocolSupport::Inbound,
                    )],
                    request_response::Config::default(),
                ),
                ping: ping::Behaviour::default(),
            })
        })
        .map_err(|e| anyhow!("building a swarm: {e}"))?;
        swarm.dial(addr.clone())?;
        timeout(CONNECT_TIMEOUT, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == server => {
                        return Ok(());
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(anyhow!("dialling {addr}: {error}"));
                    }
                    _ => {}
                }
            }
        })
        .await
        .with_context(|| format!("dialling {addr} timed out"))??;

        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let event_loop = EventLoop {
            index,
            swarm,
            server,
            commands: rx,
            pending: HashMap::new(),
            notes,
        };
        Ok(Client {
            keypair,
            commands,
            task: tokio::spawn(event_loop.run()),
        })
    }

    /// The device key (to reconnect as the same device).
    pub fn keypair(&self) -> &identity::Keypair {
        &self.keypair
    }

    /// Sends `request` and waits for the answer.
    pub async fn request(&self, request: BootstrapRequest) -> Result<BootstrapResponse> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                request: Box::new(request),
                reply,
            })
            .await
            .map_err(|_| anyhow!("the client's task stopped"))?;
        timeout(REQUEST_TIMEOUT, answer)
            .await
            .context("no answer in time")?
            .context("the client's task stopped")?
            .map_err(|e| anyhow!("request failed: {e}"))
    }

    /// Closes the connection (drops the swarm) and waits until it is done.
    pub async fn close(self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close(done)).await.is_ok() {
            let _ = timeout(CONNECT_TIMEOUT, closed).await;
        }
    }
}

/// The task that owns one client's swarm.
struct EventLoop {
    index: usize,
    swarm: Swarm<Behaviour>,
    server: PeerId,
    commands: mpsc::Receiver<Command>,
    pending: HashMap<OutboundRequestId, Reply>,
    notes: Option<Notes>,
}

impl EventLoop {
    async fn run(mut self) {
        let closed = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Request { request, reply }) => self.handle_request(*request, reply),
                    Some(Command::Close(done)) => break Some(done),
                    None => break None,
                },
            }
        };
        drop(self);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    fn handle_request(&mut self, request: BootstrapRequest, reply: Reply) {
        let id = self
            .swarm
            .behaviour_mut()
            .bootstrap
            .send_request(&self.server, request);
        self.pending.insert(id, reply);
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Bootstrap(event)) => self.handle_answer(event),
            SwarmEvent::Behaviour(BehaviourEvent::Notify(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            })) => self.handle_notification(request, channel),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if peer_id == self.server => {
                if let Some(notes) = &self.notes {
                    notes.deliver(Note::Closed { client: self.index });
                }
            }
            _ => {}
        }
    }

    fn handle_answer(
        &mut self,
        event: request_response::Event<BootstrapRequest, BootstrapResponse>,
    ) {
        let (id, answer) = match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => (request_id, Ok(response)),
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => (request_id, Err(error.to_string())),
            _ => return,
        };
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(answer);
        }
    }

    fn handle_notification(&mut self, note: Notification, channel: ResponseChannel<NotifyAck>) {
        let at = Instant::now();
        let _ = self
            .swarm
            .behaviour_mut()
            .notify
            .send_response(channel, NotifyAck {});
        if let Some(notes) = &self.notes {
            notes.deliver(Note::Notification {
                client: self.index,
                note,
                at,
            });
        }
    }
}
