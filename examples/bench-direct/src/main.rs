//! # bench-direct
//!
//! Measures what a Confab direct message and a Confab broadcast cost, next to what the network
//! and the disk cost on their own, and prints one markdown table:
//!
//! ```text
//! cargo run --release -p bench-direct [-- --messages 1000 --broadcasts 200 --in-flight 32]
//! ```
//!
//! Everything runs in one process on loopback (`127.0.0.1`), with mDNS off:
//!
//! 1. **redb commit**: 200 sequential one-row write transactions with the default
//!    (`Immediate`, fsync) durability, in a temp dir on the same filesystem as the nodes' stores.
//! 2. **Bare libp2p request-response**: two swarms built with `confab_node::net::build_swarm`,
//!    speaking `/confab/direct/1` with `confab_node::net::DirectCodec`; the responder answers
//!    `Ack` at once without storing anything. Sequential round trips over TCP and over QUIC.
//! 3. **Confab direct message**: two in-process nodes (`confab_node::start`); node B sends to node A
//!    and the clock stops at `Event::Delivery { state: Sent }`, i.e. when A has stored the message
//!    durably and acknowledged it. B also stores it durably before it goes on the wire, so a
//!    sequential round trip holds two fsyncs. Over TCP and over QUIC.
//! 4. **Confab direct, pipelined**: the same over TCP with up to `--in-flight` sends at once, which
//!    lets both stores group-commit many messages per fsync.
//! 5. **Broadcast**: one sender and three receivers on TCP (gossipsub heartbeat 100 ms); the
//!    latency of each delivery is from the sender's `send()` call to that receiver's
//!    `Event::Message`. Broadcasts are sent one at a time: the next leaves once all three
//!    receivers have the previous one.
//!
//! The headline figure is the ratio of the Confab round trip to the bare one: what durability
//! and the node's machinery add to the network round trip.
//!
//! Every wait is bounded by a timeout and every loop by a count; the program exits by itself and
//! shuts its nodes down. A section that fails prints its error in the table and the others still
//! run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use confab_node::net::{self, DirectCodec};
use confab_node::{Client, Config, Conversation, DeliveryState, Event, MessageId};
use confab_protocol::direct::DIRECT_PROTOCOL;
use confab_protocol::{ChatMessage, DirectRequest, DirectResponse, RejectReason, encode};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, identity};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// The text of every benchmark message: 40 bytes, a typical short chat line.
const TEXT: &str = "the quick brown fox jumps over a lazy do";
/// Display name of the bare-libp2p sender, as long as the nodes' names so frames are the same size.
const BARE_NAME: &str = "bench-b";
/// Round trips sent before measuring, on every path.
const WARM_UP: usize = 20;
/// Sequential durable commits measured in the redb section.
const COMMITS: usize = 200;
/// Most time any setup step (start, listen, dial) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most time one message may take to be acknowledged or delivered.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most time the broadcast mesh may take to carry a first message to every receiver.
const MESH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for one warm-up broadcast before sending another.
const MESH_PROBE: Duration = Duration::from_millis(500);
/// How long to keep listening after the last broadcast, to catch duplicates.
const DUPLICATE_GRACE: Duration = Duration::from_millis(500);
/// Gossipsub heartbeat of the broadcast section's nodes (the direct pairs keep the default).
const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(100);
/// Receivers in the broadcast section.
const RECEIVERS: usize = 3;
/// Arrivals buffered between the receivers' event tasks and the broadcast measurement.
const ARRIVAL_QUEUE: usize = 1024;
/// Idle timeout of the bare swarms' connections (longer than any pause in the benchmark).
const BARE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks Confab direct messages and broadcasts on loopback")]
struct Args {
    /// Direct messages measured per path (after 20 warm-up messages).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    messages: u32,
    /// Broadcasts measured (each delivered to 3 receivers).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    broadcasts: u32,
    /// Direct messages in flight at once in the pipelined run.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    in_flight: u32,
}

/// The loopback transport a section runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Quic => "QUIC",
        }
    }

    fn listen_addr(self) -> &'static str {
        match self {
            Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        }
    }
}

/// p50, p99 and mean of a set of latencies.
#[derive(Debug, Clone, Copy)]
struct Summary {
    samples: usize,
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

impl Summary {
    fn of(samples: &mut [Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let count = u32::try_from(samples.len()).ok()?;
        Some(Summary {
            samples: samples.len(),
            p50: percentile(samples, 50),
            p99: percentile(samples, 99),
            mean: total / count,
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// One line of the results table.
struct Row {
    what: String,
    transport: &'static str,
    result: Result<(Summary, String)>,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn node_config(dir: &std::path::Path, name: &str, transport: Transport) -> Config {
    let mut config = Config::new(dir);
    config.name = Some(name.to_owned());
    config.listen = vec![transport.listen_addr().to_owned()];
    config.mdns = false;
    config
}

async fn start_node(dir: &std::path::Path, name: &str, transport: Transport) -> Result<Client> {
    start_with(node_config(dir, name, transport), name).await
}

async fn start_with(config: Config, name: &str) -> Result<Client> {
    timeout(STEP_TIMEOUT, confab_node::start(config))
        .await
        .with_context(|| format!("starting node {name} timed out"))?
        .with_context(|| format!("starting node {name}"))
}

/// The first listen address of `node`, ready to dial (it ends in `/p2p/<peer id>`).
async fn dial_addr(node: &Client) -> Result<String> {
    node.whoami()
        .await?
        .listen_addrs
        .into_iter()
        .next()
        .context("the node listens nowhere")
}

async fn connect(from: &Client, to: &Client) -> Result<()> {
    let addr = dial_addr(to).await?;
    timeout(STEP_TIMEOUT, from.dial(&addr))
        .await
        .with_context(|| format!("dialling {addr} timed out"))?
        .with_context(|| format!("dialling {addr}"))?;
    Ok(())
}

async fn shutdown_all(nodes: &[&Client]) {
    for node in nodes {
        match timeout(STEP_TIMEOUT, node.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("shutting a node down failed: {e}"),
            Err(_) => eprintln!("shutting a node down timed out"),
        }
    }
}

// ---- redb ---------------------------------------------------------------------------------

/// Sequential one-row write transactions with the default (`Immediate`) durability.
fn redb_commits(count: usize) -> Result<Vec<Duration>> {
    const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");
    let dir = tempfile::tempdir()?;
    let db = redb::Database::create(dir.path().join("bench.redb"))?;
    let value = [7u8; 64];
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let key = format!("key-{i}");
        let start = Instant::now();
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?
            .insert(key.as_str(), value.as_slice())?;
        txn.commit()?;
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

// ---- bare libp2p --------------------------------------------------------------------------

type BareSwarm = Swarm<request_response::Behaviour<DirectCodec>>;

fn bare_swarm() -> Result<BareSwarm> {
    net::build_swarm(
        identity::Keypair::generate_ed25519(),
        BARE_IDLE_TIMEOUT,
        |_| {
            Ok(request_response::Behaviour::with_codec(
                DirectCodec::default(),
                [(StreamProtocol::new(DIRECT_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(MESSAGE_TIMEOUT),
            ))
        },
    )
    .map_err(|e| anyhow!("building a swarm: {e}"))
}

async fn bare_listen(swarm: &mut BareSwarm, transport: Transport) -> Result<Multiaddr> {
    swarm.listen_on(transport.listen_addr().parse()?)?;
    timeout(STEP_TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("listening timed out")
}

/// Answers every request with an immediate `Ack`, storing nothing, until `stop` fires.
async fn bare_responder(mut swarm: BareSwarm, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                }) = event
                {
                    let response = match request {
                        DirectRequest::Chat(message) => DirectResponse::Ack { id: message.id },
                        _ => DirectResponse::Rejected {
                            id: None,
                            reason: RejectReason::Unsupported,
                        },
                    };
                    let _ = swarm.behaviour_mut().send_response(channel, response);
                }
            }
        }
    }
}

/// Sequential `/confab/direct/1` round trips between two bare swarms.
async fn bare_round_trips(transport: Transport, count: usize) -> Result<Vec<Duration>> {
    let mut responder = bare_swarm()?;
    let responder_peer = *responder.local_peer_id();
    let addr = bare_listen(&mut responder, transport)
        .await?
        .with(Protocol::P2p(responder_peer));
    let (stop_tx, stop_rx) = oneshot::channel();
    let responder_task = tokio::spawn(bare_responder(responder, stop_rx));

    let mut sender = bare_swarm()?;
    bare_listen(&mut sender, transport).await?;
    sender.dial(addr.clone())?;
    timeout(STEP_TIMEOUT, async {
        loop {
            match sender.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == responder_peer => {
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

    let mut samples = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let request = DirectRequest::Chat(ChatMessage::text(BARE_NAME, TEXT, now_ms()));
        let start = Instant::now();
        let request_id = sender
            .behaviour_mut()
            .send_request(&responder_peer, request);
        timeout(MESSAGE_TIMEOUT, async {
            loop {
                match sender.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Response { request_id: id, .. },
                        ..
                    }) if id == request_id => return Ok(()),
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id: id,
                        error,
                        ..
                    }) if id == request_id => return Err(anyhow!("request failed: {error}")),
                    _ => {}
                }
            }
        })
        .await
        .context("a bare round trip timed out")??;
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }

    let _ = stop_tx.send(());
    let _ = timeout(STEP_TIMEOUT, responder_task).await;
    Ok(samples)
}

// ---- Confab direct messages ---------------------------------------------------------------

/// Two started nodes, B connected to A, and a subscription to B's events.
struct Pair {
    a: Client,
    b: Client,
    b_events: broadcast::Receiver<Event>,
    to_a: Conversation,
    _dirs: [tempfile::TempDir; 2],
}

impl Pair {
    async fn start(transport: Transport) -> Result<Pair> {
        let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
        let a = start_node(dirs[0].path(), "bench-a", transport).await?;
        let b = start_node(dirs[1].path(), "bench-b", transport).await?;
        let b_events = b.subscribe();
        connect(&b, &a).await?;
        let to_a = Conversation::Peer(a.peer_id().to_owned());
        Ok(Pair {
            a,
            b,
            b_events,
            to_a,
            _dirs: dirs,
        })
    }

    async fn shutdown(self) {
        shutdown_all(&[&self.b, &self.a]).await;
    }
}

/// Waits on `events` for `Delivery { id, Sent }`, skipping everything else.
async fn wait_sent(events: &mut broadcast::Receiver<Event>, id: MessageId) -> Result<()> {
    timeout(MESSAGE_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(Event::Delivery {
                    id: got,
                    state: DeliveryState::Sent,
                }) if got == id => return Ok(()),
                Ok(_) => {}
                // Missed events are only a problem if ours was among them; the timeout says so.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err(anyhow!("the node stopped")),
            }
        }
    })
    .await
    .with_context(|| format!("message {id} was not acknowledged in time"))?
}

/// Sequential direct messages from B to A, each timed from `send()` to `Delivery { Sent }`.
/// Returns the round trips and, for each, how long `send()` itself took (B's durable insert).
async fn confab_round_trips(
    transport: Transport,
    count: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let mut pair = Pair::start(transport).await?;
    let result = async {
        let mut round_trips = Vec::with_capacity(count);
        let mut local = Vec::with_capacity(count);
        for i in 0..WARM_UP + count {
            let start = Instant::now();
            let id = pair.b.send(&pair.to_a, TEXT).await?;
            let stored = start.elapsed();
            wait_sent(&mut pair.b_events, id).await?;
            if i >= WARM_UP {
                round_trips.push(start.elapsed());
                local.push(stored);
            }
        }
        Ok((round_trips, local))
    }
    .await;
    pair.shutdown().await;
    result
}

/// Where an acknowledgement stands: awaited by a sender, or arrived before anyone asked.
enum Slot {
    Waiting(oneshot::Sender<Instant>),
    Arrived(Instant),
}

/// Acknowledgements matched to the tasks waiting for them, whichever comes first.
#[derive(Default)]
struct Acks {
    slots: Mutex<HashMap<MessageId, Slot>>,
}

impl Acks {
    fn arrived(&self, id: MessageId, at: Instant) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.remove(&id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(at);
            }
            Some(Slot::Arrived(first)) => {
                slots.insert(id, Slot::Arrived(first));
            }
            None => {
                slots.insert(id, Slot::Arrived(at));
            }
        }
    }

    fn wait(&self, id: MessageId) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.remove(&id) {
            Some(Slot::Arrived(at)) => {
                let _ = tx.send(at);
            }
            _ => {
                slots.insert(id, Slot::Waiting(tx));
            }
        }
        rx
    }
}

/// Direct messages from B to A with up to `in_flight` at once. Returns the per-message latencies
/// and the wall time from the first send to the last acknowledgement.
async fn confab_pipelined(count: usize, in_flight: usize) -> Result<(Vec<Duration>, Duration)> {
    let mut pair = Pair::start(Transport::Tcp).await?;
    for _ in 0..WARM_UP {
        let id = pair.b.send(&pair.to_a, TEXT).await?;
        wait_sent(&mut pair.b_events, id).await?;
    }

    let acks = Arc::new(Acks::default());
    let mut events = pair.b.subscribe();
    let collector = {
        let acks = Arc::clone(&acks);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Delivery {
                        id,
                        state: DeliveryState::Sent,
                    }) => acks.arrived(id, Instant::now()),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };

    let slots = Arc::new(Semaphore::new(in_flight));
    let mut sends = JoinSet::new();
    let mut samples = Vec::with_capacity(count);
    let mut failure = None;
    let mut collect = |done: Result<Result<Duration>, tokio::task::JoinError>| match done
        .map_err(anyhow::Error::from)
        .and_then(|r| r)
    {
        Ok(latency) => {
            samples.push(latency);
            false
        }
        Err(e) => {
            failure.get_or_insert(e);
            true
        }
    };
    let started = Instant::now();
    for _ in 0..count {
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let (b, to_a, acks) = (pair.b.clone(), pair.to_a.clone(), Arc::clone(&acks));
        sends.spawn(async move {
            let start = Instant::now();
            let id = b.send(&to_a, TEXT).await?;
            let acked = timeout(MESSAGE_TIMEOUT, acks.wait(id))
                .await
                .with_context(|| format!("message {id} was not acknowledged in time"))?
                .context("the acknowledgement was lost")?;
            drop(permit);
            anyhow::Ok(acked.saturating_duration_since(start))
        });
        // Collect finished sends as we go, so that a failure stops the run early.
        let mut failed = false;
        while let Some(done) = sends.try_join_next() {
            failed |= collect(done);
        }
        if failed {
            break;
        }
    }
    while let Some(done) = sends.join_next().await {
        collect(done);
    }
    let elapsed = started.elapsed();
    collector.abort();
    pair.shutdown().await;
    match failure {
        Some(e) => Err(e),
        None => Ok((samples, elapsed)),
    }
}

// ---- broadcast ----------------------------------------------------------------------------

/// What the broadcast run observed.
struct BroadcastOutcome {
    latencies: Vec<Duration>,
    expected: usize,
    duplicates: usize,
}

/// The measured broadcasts and who got them when.
#[derive(Default)]
struct Deliveries {
    sent_at: HashMap<MessageId, Instant>,
    got: HashMap<MessageId, [Option<Instant>; RECEIVERS]>,
    duplicates: usize,
}

impl Deliveries {
    /// Notes that receiver `index` got `id` at `at`; late warm-ups are ignored.
    fn record(&mut self, index: usize, id: MessageId, at: Instant) {
        if !self.sent_at.contains_key(&id) {
            return;
        }
        let slot = &mut self.got.entry(id).or_insert([None; RECEIVERS])[index];
        if slot.is_some() {
            self.duplicates += 1;
        } else {
            *slot = Some(at);
        }
    }

    /// Whether every receiver has `id`.
    fn complete(&self, id: MessageId) -> bool {
        self.got
            .get(&id)
            .is_some_and(|slots| slots.iter().all(Option::is_some))
    }
}

/// One sender and three receivers on TCP; receivers dial the sender and each other.
async fn broadcast_run(count: usize) -> Result<BroadcastOutcome> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let start = |dir: &tempfile::TempDir, name: String| {
        let mut config = node_config(dir.path(), &name, Transport::Tcp);
        config.gossip_heartbeat = GOSSIP_HEARTBEAT;
        async move { start_with(config, &name).await }
    };
    let sender = start(&dirs[0], "bench-s".into()).await?;
    let mut receivers = Vec::with_capacity(RECEIVERS);
    for (i, dir) in dirs[1..].iter().enumerate() {
        receivers.push(start(dir, format!("bench-r{i}")).await?);
    }

    // Every receiver's broadcast arrivals, stamped as they come out of its event stream.
    let (arrival_tx, mut arrivals) = mpsc::channel::<(usize, MessageId, Instant)>(ARRIVAL_QUEUE);
    let mut watchers = JoinSet::new();
    for (index, receiver) in receivers.iter().enumerate() {
        let mut events = receiver.subscribe();
        let arrival_tx = arrival_tx.clone();
        watchers.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(Event::Message(m))
                        if m.conversation == Conversation::Broadcast && !m.outgoing =>
                    {
                        if arrival_tx
                            .send((index, m.id, Instant::now()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    drop(arrival_tx);

    let result = async {
        for receiver in &receivers {
            connect(receiver, &sender).await?;
        }
        for i in 0..RECEIVERS {
            for j in i + 1..RECEIVERS {
                connect(&receivers[i], &receivers[j]).await?;
            }
        }

        // Warm up: broadcast until every receiver has had one (the mesh, or at least the
        // subscriptions, are in place).
        let mesh_deadline = Instant::now() + MESH_TIMEOUT;
        let mut reached = [false; RECEIVERS];
        while !reached.iter().all(|r| *r) {
            if Instant::now() >= mesh_deadline {
                bail!("the broadcast did not reach every receiver within {MESH_TIMEOUT:?}");
            }
            sender.send(&Conversation::Broadcast, "warm-up").await?;
            let probe_end = (Instant::now() + MESH_PROBE).min(mesh_deadline);
            while !reached.iter().all(|r| *r) {
                match tokio::time::timeout_at(probe_end.into(), arrivals.recv()).await {
                    Ok(Some((index, _, _))) => reached[index] = true,
                    Ok(None) => bail!("the receivers' event streams closed"),
                    Err(_) => break,
                }
            }
        }

        // Measure: one broadcast at a time.
        let mut book = Deliveries::default();
        for i in 0..count {
            let start = Instant::now();
            let id = sender
                .send(&Conversation::Broadcast, &format!("{TEXT} {i}"))
                .await?;
            book.sent_at.insert(id, start);
            let deadline = Instant::now() + MESSAGE_TIMEOUT;
            while !book.complete(id) {
                match tokio::time::timeout_at(deadline.into(), arrivals.recv()).await {
                    Ok(Some((index, got, at))) => book.record(index, got, at),
                    Ok(None) => bail!("the receivers' event streams closed"),
                    Err(_) => break, // counted as missing
                }
            }
        }
        // Linger briefly so that a duplicate delivery would be seen.
        let grace_end = Instant::now() + DUPLICATE_GRACE;
        while let Ok(Some((index, id, at))) =
            tokio::time::timeout_at(grace_end.into(), arrivals.recv()).await
        {
            book.record(index, id, at);
        }

        let mut latencies = Vec::with_capacity(count * RECEIVERS);
        for (id, start) in &book.sent_at {
            if let Some(slots) = book.got.get(id) {
                latencies.extend(
                    slots
                        .iter()
                        .flatten()
                        .map(|at| at.saturating_duration_since(*start)),
                );
            }
        }
        Ok(BroadcastOutcome {
            latencies,
            expected: count * RECEIVERS,
            duplicates: book.duplicates,
        })
    }
    .await;

    watchers.abort_all();
    let mut all: Vec<&Client> = receivers.iter().collect();
    all.push(&sender);
    shutdown_all(&all).await;
    result
}

// ---- main ---------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let messages = args.messages as usize;
    let broadcasts = args.broadcasts as usize;
    let in_flight = args.in_flight as usize;

    let frame = encode(&DirectRequest::Chat(ChatMessage::text(
        BARE_NAME,
        TEXT,
        now_ms(),
    )))
    .map(|f| f.len())
    .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "bench-direct: {messages} messages, {broadcasts} broadcasts, {in_flight} in flight, \
         {cores} cores; request frame {frame} bytes"
    );

    let mut rows = Vec::new();

    eprintln!("redb commits…");
    let commits = tokio::task::spawn_blocking(|| redb_commits(COMMITS))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    rows.push(Row {
        what: "redb write transaction, Durability::Immediate".into(),
        transport: "disk",
        result: summarise(commits, String::new()),
    });

    let mut p50 = HashMap::new();
    for transport in [Transport::Tcp, Transport::Quic] {
        eprintln!("bare libp2p request-response, {}…", transport.name());
        let bare = summarise(bare_round_trips(transport, messages).await, String::new());
        if let Ok((s, _)) = &bare {
            p50.insert(("bare", transport), s.p50);
        }
        rows.push(Row {
            what: "bare libp2p request-response round trip (no storage)".into(),
            transport: transport.name(),
            result: bare,
        });

        eprintln!("Confab direct messages, {}…", transport.name());
        let confab = match confab_round_trips(transport, messages).await {
            Ok((round_trips, mut local)) => {
                let note = Summary::of(&mut local).map_or(String::new(), |s| {
                    format!("`send()` alone (B's durable insert): p50 {} ms", ms(s.p50))
                });
                summarise(Ok(round_trips), note)
            }
            Err(e) => Err(e),
        };
        if let Ok((s, _)) = &confab {
            p50.insert(("confab", transport), s.p50);
        }
        rows.push(Row {
            what: "Confab direct message, sequential (send → Sent)".into(),
            transport: transport.name(),
            result: confab,
        });
    }

    eprintln!("Confab direct messages, pipelined…");
    let pipelined = match confab_pipelined(messages, in_flight).await {
        Ok((samples, elapsed)) => {
            let rate = samples.len() as f64 / elapsed.as_secs_f64();
            summarise(Ok(samples), format!("{rate:.0} msg/s"))
        }
        Err(e) => Err(e),
    };
    rows.push(Row {
        what: format!("Confab direct message, pipelined ({in_flight} in flight)"),
        transport: "TCP",
        result: pipelined,
    });

    eprintln!("Confab broadcast to {RECEIVERS} receivers…");
    let broadcast = match broadcast_run(broadcasts).await {
        Ok(outcome) => {
            let note = format!(
                "{}/{} delivered, {} duplicates",
                outcome.latencies.len(),
                outcome.expected,
                outcome.duplicates
            );
            summarise(Ok(outcome.latencies), note)
        }
        Err(e) => Err(e),
    };
    rows.push(Row {
        what: format!("Confab broadcast, send → each of {RECEIVERS} receivers' Message event"),
        transport: "TCP",
        result: broadcast,
    });

    print_table(&rows);
    println!();
    for transport in [Transport::Tcp, Transport::Quic] {
        if let (Some(confab), Some(bare)) = (
            p50.get(&("confab", transport)),
            p50.get(&("bare", transport)),
        ) {
            println!(
                "- Confab / bare round trip, p50, {}: {:.1}×",
                transport.name(),
                confab.as_secs_f64() / bare.as_secs_f64()
            );
        }
    }
    println!("- request frame: {frame} bytes (40-byte text); {cores} cores");
    Ok(())
}

fn summarise(samples: Result<Vec<Duration>>, note: String) -> Result<(Summary, String)> {
    let mut samples = samples?;
    let summary = Summary::of(&mut samples).context("no samples")?;
    Ok((summary, note))
}

fn print_table(rows: &[Row]) {
    println!("| Measurement | Transport | Samples | p50 (ms) | p99 (ms) | mean (ms) | Notes |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for row in rows {
        match &row.result {
            Ok((s, note)) => println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.what,
                row.transport,
                s.samples,
                ms(s.p50),
                ms(s.p99),
                ms(s.mean),
                note
            ),
            Err(e) => println!(
                "| {} | {} | – | – | – | – | failed: {e:#} |",
                row.what, row.transport
            ),
        }
    }
}
