#![doc = include_str!("../README.md")]

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use clap::Parser;
use confab_node::{Client, Conversation, Event, MessageId};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{MissedTickBehavior, sleep, timeout};

/// The password of every account the benchmark registers.
const PASSWORD: &str = "correct horse battery";
/// The account that creates the group and sends every message.
const OWNER: &str = "owner";
/// The group's name.
const GROUP_NAME: &str = "bench";
/// The text of every message is padded to this many bytes (as in bench-direct and bench-mailbox).
const TEXT_BYTES: usize = 40;
/// The nodes' gossipsub heartbeat (as in the end-to-end tests).
const GOSSIP_HEARTBEAT: Duration = Duration::from_millis(100);
/// Most time any single setup step (start, register, create, dial, shutdown) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time every member may take to be told of the group.
const INVITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time the messages may take to reach every member after the last `send` returned.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time the owner's node may take to get every offline message stored by the bootstrap.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);
/// Most time the returning member may take to catch up (and the online members to get the
/// offline burst before it returns).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// Most time one fan-out section may take, setup and teardown included.
const FAN_OUT_SECTION_TIMEOUT: Duration = Duration::from_secs(420);
/// Most time the bootstrap may take, after the fan-out wait, to have stored every measured
/// message (the owner's `Delivery { Sent }`).
const STORED_TIMEOUT: Duration = Duration::from_secs(120);
/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// How often the arrivals recorded by the drain tasks are counted while waiting.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Rows shorter than this get no msg/s figure (it would be noise).
const MIN_RATE_TIME: Duration = Duration::from_millis(1);
/// How long `send` waits before retrying when the node's deposit queue is full.
const OUTBOX_FULL_PAUSE: Duration = Duration::from_millis(20);
/// Retries of one `send` refused with `OutboxFull`.
const OUTBOX_FULL_RETRIES: u32 = 1_000;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    about = "Benchmarks group messaging: fan-out latency to online members, offline catch-up"
)]
struct Args {
    /// Members of the group besides its owner.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=30))]
    members: u32,
    /// Messages measured per fan-out section.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    messages: u32,
    /// Milliseconds between two sends in the fan-out sections (0: back to back).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1_000))]
    interval_ms: u64,
    /// Messages sent (and awaited at every member) before each fan-out measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    warmup: u32,
    /// Milliseconds to wait after the full mesh of dials, for gossipsub meshes to form.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=30_000))]
    mesh_wait_ms: u64,
    /// Group messages the offline member catches up with.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    offline: u32,
    /// `send` calls in flight on the owner's node while the member is offline.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    send_in_flight: u32,
}

// ---- results ------------------------------------------------------------------------------

/// One line of the table.
struct Row {
    /// What was measured.
    what: String,
    /// How many messages (or deliveries) the row is about.
    messages: Option<u64>,
    /// The row's time.
    elapsed: Option<Duration>,
    /// Whether a msg/s figure (messages / time) makes sense for this row.
    rate: bool,
    /// Latency percentiles `(p50, p99, max)`, for the fan-out rows.
    latency: Option<(Duration, Duration, Duration)>,
    /// Checks and context.
    notes: String,
}

impl Row {
    /// A row of `messages` in `elapsed`, with a msg/s figure.
    fn new(what: impl Into<String>, messages: u64, elapsed: Duration) -> Self {
        Row {
            what: what.into(),
            messages: Some(messages),
            elapsed: Some(elapsed),
            rate: true,
            latency: None,
            notes: String::new(),
        }
    }

    /// A row saying that a section failed, and why.
    fn failed(what: impl Into<String>, error: &anyhow::Error) -> Self {
        Row {
            what: what.into(),
            messages: None,
            elapsed: None,
            rate: false,
            latency: None,
            notes: format!("**failed**: {error:#}"),
        }
    }

    /// Sets the notes.
    fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// Drops the msg/s figure (a point in time, not a stream).
    fn no_rate(mut self) -> Self {
        self.rate = false;
        self
    }

    /// Sets the latency percentiles from sorted latencies.
    fn latency(mut self, sorted: &[Duration]) -> Self {
        self.latency = Some((
            percentile(sorted, 50),
            percentile(sorted, 99),
            sorted.last().copied().unwrap_or_default(),
        ));
        self
    }

    /// Prints the row as a markdown table line.
    fn print(&self) {
        let messages = self.messages.map(|n| n.to_string()).unwrap_or_default();
        let time = self
            .elapsed
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .unwrap_or_default();
        let rate = match (self.rate, self.messages, self.elapsed) {
            (true, Some(n), Some(d)) if d >= MIN_RATE_TIME => {
                format!("{:.0}", n as f64 / d.as_secs_f64())
            }
            _ => String::new(),
        };
        let (p50, p99, max) = match self.latency {
            Some((a, b, c)) => (ms(a), ms(b), ms(c)),
            None => Default::default(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.what, messages, time, p50, p99, max, rate, self.notes
        );
    }
}

/// A duration in milliseconds, for the table.
fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// The nearest-rank `p`th percentile of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The system's 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let mut rest = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / USER_HZ))
}

/// The CPU this process used between `from` (a [`cpu_time`] and the instant it was taken) and
/// now, for the notes.
fn cpu_note(from: Option<(Duration, Instant)>) -> String {
    match (from, cpu_time()) {
        (Some((cpu0, t0)), Some(cpu1)) => {
            let (cpu, wall) = (cpu1.saturating_sub(cpu0), t0.elapsed());
            format!(
                "process CPU {:.2} s in {:.2} s ({:.2} cores busy)",
                cpu.as_secs_f64(),
                wall.as_secs_f64(),
                cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
            )
        }
        _ => "process CPU unknown".into(),
    }
}

/// The text of message `i` of kind `what`, padded to [`TEXT_BYTES`].
fn text(what: &str, i: u64) -> String {
    format!(
        "{:<width$}",
        format!("group {what} {i}"),
        width = TEXT_BYTES
    )
}

// ---- what each node shows -----------------------------------------------------------------

/// What one node's event stream showed, recorded by its drain task as the events came.
#[derive(Debug, Default)]
struct Seen {
    /// When each group message was first shown (`Event::Message`), incoming or outgoing.
    arrived: HashMap<MessageId, Instant>,
    /// Group message ids in the order they were first shown.
    order: Vec<MessageId>,
    /// `Event::Message`s for an id already shown (the node should show each message once).
    duplicates: u64,
    /// Events the drain task missed because it fell behind (`Lagged`).
    missed: u64,
    /// Groups this account was told it is in (`Event::GroupInvited`).
    invited: HashSet<String>,
    /// The first `Event::OfflineSummary`: when, and its total.
    summary: Option<(Instant, u32)>,
    /// Outgoing messages the bootstrap has stored (`Event::Delivery` with a sent state).
    stored: HashSet<MessageId>,
}

/// A [`Seen`] shared between a drain task and the benchmark.
type Shared = Arc<Mutex<Seen>>;

/// Locks a [`Shared`] (a poisoned lock still holds usable records).
fn lock(seen: &Shared) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns a task that drains `events` for as long as the node runs, recording what the
/// benchmark needs with the time each event was received.
fn drain(mut events: broadcast::Receiver<Event>) -> (Shared, JoinHandle<()>) {
    let seen = Shared::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let event = events.recv().await;
            let at = Instant::now();
            let mut s = lock(&record);
            match event {
                Ok(Event::Message(m)) if matches!(m.conversation, Conversation::Group(_)) => {
                    match s.arrived.entry(m.id) {
                        Entry::Vacant(v) => {
                            v.insert(at);
                            s.order.push(m.id);
                        }
                        Entry::Occupied(_) => s.duplicates += 1,
                    }
                }
                Ok(Event::GroupInvited { group, .. }) => {
                    s.invited.insert(group);
                }
                Ok(Event::OfflineSummary { total, .. }) => {
                    s.summary.get_or_insert((at, total));
                }
                Ok(Event::Delivery { id, state }) if state.is_sent() => {
                    s.stored.insert(id);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => s.missed += n,
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    (seen, task)
}

// ---- nodes and the bootstrap ------------------------------------------------------------------

/// One node of the benchmark, with its account, data dir and event recorder.
struct Node {
    /// Its account.
    user: String,
    /// Its handle.
    client: Client,
    /// What its event stream showed.
    seen: Shared,
    /// The task draining its events.
    drain: JoinHandle<()>,
    /// Its data dir (kept across a restart).
    dir: tempfile::TempDir,
}

/// Starts a node on `dir` that knows only the bootstrap at `bootstrap`: TCP on 127.0.0.1, mDNS
/// off, a 100 ms gossip heartbeat. Its events are drained from the moment `start` returns.
async fn start_node(
    dir: &Path,
    name: &str,
    bootstrap: &str,
) -> Result<(Client, Shared, JoinHandle<()>)> {
    let mut config = confab_node::Config::new(dir);
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = vec![bootstrap.into()];
    config.gossip_heartbeat = GOSSIP_HEARTBEAT;
    let client = timeout(STEP_TIMEOUT, confab_node::start(config))
        .await
        .context("starting a node timed out")?
        .with_context(|| format!("starting {name}'s node"))?;
    let (seen, drain) = drain(client.subscribe());
    Ok((client, seen, drain))
}

/// Stops a node and waits until its store is flushed.
async fn shutdown(client: &Client) -> Result<()> {
    timeout(STEP_TIMEOUT, client.shutdown())
        .await
        .context("a node's shutdown timed out")??;
    Ok(())
}

/// A bootstrap and the nodes of one section: `nodes[0]` is the owner, the rest the members.
struct Cluster {
    /// The running bootstrap (taken by [`Cluster::close`]).
    server: Option<confab_bootstrap::Bootstrap>,
    /// Its first listen address (ending in `/p2p/<id>`).
    addr: String,
    /// Its data dir.
    _server_dir: tempfile::TempDir,
    /// The owner first, then the members.
    nodes: Vec<Node>,
    /// The group, once created.
    group: Option<String>,
}

impl Cluster {
    /// A fresh bootstrap on 127.0.0.1 with mDNS off, and no nodes yet.
    async fn start() -> Result<Cluster> {
        let server_dir = tempfile::tempdir()?;
        let mut config = confab_bootstrap::Config::new(server_dir.path());
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
        config.mdns = false;
        let server = timeout(STEP_TIMEOUT, confab_bootstrap::start(config))
            .await
            .context("starting the bootstrap timed out")??;
        let addr = server
            .listen_addrs
            .first()
            .context("the bootstrap listens nowhere")?
            .clone();
        Ok(Cluster {
            server: Some(server),
            addr,
            _server_dir: server_dir,
            nodes: Vec::new(),
            group: None,
        })
    }

    /// Starts the owner's node and `members` member nodes, each registering its own account.
    /// Nodes join `self.nodes` as they start, so [`Cluster::close`] stops them even if a later
    /// one fails.
    async fn add_nodes(&mut self, members: usize) -> Result<()> {
        let users =
            std::iter::once(OWNER.to_owned()).chain((1..=members).map(|i| format!("member{i:02}")));
        for user in users {
            let dir = tempfile::tempdir()?;
            let (client, seen, drain) = start_node(dir.path(), &user, &self.addr).await?;
            self.nodes.push(Node {
                user: user.clone(),
                client: client.clone(),
                seen,
                drain,
                dir,
            });
            timeout(STEP_TIMEOUT, client.register(&user, PASSWORD))
                .await
                .with_context(|| format!("registering {user} timed out"))?
                .with_context(|| format!("registering {user}"))?;
        }
        Ok(())
    }

    /// The owner's node.
    fn owner(&self) -> &Node {
        &self.nodes[0]
    }

    /// The members' nodes.
    fn members(&self) -> &[Node] {
        &self.nodes[1..]
    }

    /// The group's conversation.
    fn conversation(&self) -> Conversation {
        Conversation::Group(self.group.clone().unwrap_or_default())
    }

    /// The owner creates the group with every member; returns once every member's node has
    /// shown `Event::GroupInvited` for it and the owner's node lists it.
    async fn create_group(&mut self) -> Result<()> {
        let names: Vec<&str> = self.members().iter().map(|n| n.user.as_str()).collect();
        let group = timeout(
            STEP_TIMEOUT,
            self.owner().client.group_create(GROUP_NAME, &names),
        )
        .await
        .context("creating the group timed out")?
        .context("creating the group")?;
        ensure!(
            group.members.len() == names.len() + 1,
            "the group has {} members, not {}",
            group.members.len(),
            names.len() + 1
        );
        let deadline = Instant::now() + INVITE_TIMEOUT;
        loop {
            let waiting: Vec<&str> = self
                .members()
                .iter()
                .filter(|n| !lock(&n.seen).invited.contains(&group.id))
                .map(|n| n.user.as_str())
                .collect();
            let listed = self
                .owner()
                .client
                .groups()
                .await?
                .iter()
                .any(|g| g.id == group.id);
            if waiting.is_empty() && listed {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "after {INVITE_TIMEOUT:?}: no `GroupInvited` at {waiting:?}; the owner's node lists the group: {listed}"
            );
            sleep(POLL_EVERY).await;
        }
        self.group = Some(group.id);
        Ok(())
    }

    /// Connects every pair of nodes directly (`dial`, as on a LAN); returns the number of dials.
    async fn connect_all(&self) -> Result<usize> {
        let mut addrs = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let me = timeout(STEP_TIMEOUT, node.client.whoami())
                .await
                .context("whoami timed out")??;
            let addr = me
                .listen_addrs
                .iter()
                .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
                .with_context(|| format!("{} listens on no loopback TCP address", node.user))?
                .clone();
            addrs.push(addr);
        }
        let mut dials = 0;
        for (i, a) in self.nodes.iter().enumerate() {
            for (b, addr) in self.nodes.iter().zip(&addrs).skip(i + 1) {
                timeout(STEP_TIMEOUT, a.client.dial(addr))
                    .await
                    .with_context(|| format!("{} dialling {} timed out", a.user, b.user))?
                    .with_context(|| format!("{} dialling {}", a.user, b.user))?;
                dials += 1;
            }
        }
        Ok(dials)
    }

    /// The fewest and the most other nodes of the cluster that a node has a connection to now.
    async fn direct_links(&self) -> Result<(usize, usize)> {
        let ids: HashSet<&str> = self.nodes.iter().map(|n| n.client.peer_id()).collect();
        let (mut fewest, mut most) = (usize::MAX, 0);
        for node in &self.nodes {
            let peers = timeout(STEP_TIMEOUT, node.client.peers())
                .await
                .context("listing peers timed out")??;
            let links = peers
                .iter()
                .filter(|p| p.connected && ids.contains(p.peer_id.as_str()))
                .filter(|p| p.peer_id != node.client.peer_id())
                .count();
            fewest = fewest.min(links);
            most = most.max(links);
        }
        Ok((fewest, most))
    }

    /// Stops every node, then the bootstrap. Errors are reported on stderr, not returned.
    async fn close(mut self) {
        for node in &self.nodes {
            if let Err(e) = shutdown(&node.client).await {
                eprintln!("stopping {}'s node: {e:#}", node.user);
            }
            node.drain.abort();
        }
        if let Some(server) = self.server.take()
            && timeout(STEP_TIMEOUT, server.shutdown()).await.is_err()
        {
            eprintln!("the bootstrap's shutdown timed out");
        }
    }
}

// ---- fan-out ------------------------------------------------------------------------------

/// How many of `ids` each of `nodes` has shown, summed.
fn arrivals(nodes: &[Node], ids: &[MessageId]) -> usize {
    nodes
        .iter()
        .map(|n| {
            let seen = lock(&n.seen);
            ids.iter()
                .filter(|id| seen.arrived.contains_key(id))
                .count()
        })
        .sum()
}

/// Waits until every node of `nodes` has shown every id of `ids`, for at most `within`; returns
/// how many (id, node) pairs arrived.
async fn wait_arrivals(nodes: &[Node], ids: &[MessageId], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let want = nodes.len() * ids.len();
    loop {
        let got = arrivals(nodes, ids);
        if got >= want || Instant::now() >= deadline {
            return got;
        }
        sleep(POLL_EVERY).await;
    }
}

/// The owner sends `n` messages of kind `what` to the group, one every `interval` (back to
/// back if zero); returns each id with the instant just before its `send` call, and how long
/// each `send` call took.
async fn paced_sends(
    cluster: &Cluster,
    what: &str,
    n: u64,
    interval: Duration,
) -> Result<(Vec<(MessageId, Instant)>, Vec<Duration>)> {
    let to = cluster.conversation();
    let owner = &cluster.owner().client;
    let mut tick = (!interval.is_zero()).then(|| {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    });
    let mut sent = Vec::with_capacity(n as usize);
    let mut calls = Vec::with_capacity(n as usize);
    for i in 0..n {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        let t = Instant::now();
        let id = timeout(STEP_TIMEOUT, owner.send(&to, &text(what, i)))
            .await
            .with_context(|| format!("send {i} timed out"))?
            .with_context(|| format!("send {i}"))?;
        calls.push(t.elapsed());
        sent.push((id, t));
    }
    Ok((sent, calls))
}

/// One fan-out section: a fresh bootstrap, the owner and `args.members` members in a group,
/// connected to each other when `mesh` (gossip), or each to the bootstrap only.
async fn fan_out(args: &Args, mesh: bool) -> Result<Row> {
    let mut cluster = Cluster::start().await?;
    let result = fan_out_in(&mut cluster, args, mesh).await;
    cluster.close().await;
    result
}

/// The body of [`fan_out`], on a cluster that [`fan_out`] closes whatever happens.
async fn fan_out_in(cluster: &mut Cluster, args: &Args, mesh: bool) -> Result<Row> {
    let tag = if mesh { "mesh" } else { "bootstrap only" };
    let m = args.members as usize;
    eprintln!("fan-out ({tag}): starting and registering the owner and {m} members");
    cluster.add_nodes(m).await?;
    cluster.create_group().await?;
    let mut setup = String::new();
    if mesh {
        let dials = cluster.connect_all().await?;
        eprintln!(
            "fan-out ({tag}): {dials} dials done; waiting {} ms for gossipsub meshes",
            args.mesh_wait_ms
        );
        sleep(Duration::from_millis(args.mesh_wait_ms)).await;
        setup = format!("{dials} dials, then {} ms wait; ", args.mesh_wait_ms);
    }
    let (fewest, most) = cluster.direct_links().await?;
    setup.push_str(&format!(
        "each node connected directly to {fewest}–{most} of the {m} other nodes"
    ));
    let interval = Duration::from_millis(args.interval_ms);

    let warmup = u64::from(args.warmup);
    let mut warm = String::new();
    if warmup > 0 {
        eprintln!("fan-out ({tag}): warm-up, {warmup} messages");
        let (sent, _) = paced_sends(cluster, "warm-up", warmup, interval).await?;
        let ids: Vec<MessageId> = sent.iter().map(|(id, _)| *id).collect();
        let got = wait_arrivals(cluster.members(), &ids, ARRIVAL_TIMEOUT).await;
        let want = ids.len() * m;
        if got < want {
            warm = format!("; **warm-up: only {got} of {want} deliveries arrived**");
        }
    }

    let n = u64::from(args.messages);
    eprintln!(
        "fan-out ({tag}): {n} messages, one every {} ms",
        args.interval_ms
    );
    let cpu0 = cpu_time().map(|c| (c, Instant::now()));
    let (sent, mut calls) = paced_sends(cluster, "bench", n, interval).await?;
    let first_send = sent.first().map(|(_, t)| *t).context("nothing sent")?;
    let sends_took = first_send.elapsed();
    let ids: Vec<MessageId> = sent.iter().map(|(id, _)| *id).collect();
    let want = ids.len() * m;
    let got = wait_arrivals(cluster.members(), &ids, ARRIVAL_TIMEOUT).await;
    let cpu = cpu_note(cpu0);
    let stored_count = || {
        let seen = lock(&cluster.owner().seen);
        ids.iter().filter(|id| seen.stored.contains(id)).count()
    };
    let stored_when_arrived = stored_count();
    eprintln!("fan-out ({tag}): {got} of {want} deliveries arrived");

    // Latencies per (message, member), from the records of the drain tasks.
    let mut latencies = Vec::with_capacity(want);
    let mut last_arrival = first_send;
    let mut worst_member_p99 = Duration::ZERO;
    let (mut duplicates, mut missed) = (0, 0);
    for node in cluster.members() {
        let seen = lock(&node.seen);
        let mut mine = Vec::with_capacity(sent.len());
        for (id, t) in &sent {
            if let Some(at) = seen.arrived.get(id) {
                mine.push(at.saturating_duration_since(*t));
                last_arrival = last_arrival.max(*at);
            }
        }
        duplicates += seen.duplicates;
        missed += seen.missed;
        mine.sort_unstable();
        worst_member_p99 = worst_member_p99.max(percentile(&mine, 99));
        latencies.extend(mine);
    }
    latencies.sort_unstable();

    // Cross-check with each member's history: every message stored, none twice.
    let limit = (warmup + n) as usize + 100;
    let conversation = cluster.conversation();
    let mut in_history = 0;
    let mut history_duplicates = 0;
    for node in cluster.members() {
        let history = timeout(STEP_TIMEOUT, node.client.history(&conversation, limit))
            .await
            .context("history timed out")??;
        let mut unique = HashSet::with_capacity(history.len());
        for message in &history {
            if !unique.insert(message.id) {
                history_duplicates += 1;
            }
        }
        in_history += ids.iter().filter(|id| unique.contains(id)).count();
    }
    // The mailbox path may lag behind what the members show: wait for the bootstrap to have
    // stored every message, for the notes.
    let stored_deadline = Instant::now() + STORED_TIMEOUT;
    let stored = loop {
        let stored = stored_count();
        if stored == ids.len() {
            break format!("all {n} after {:.3} s", first_send.elapsed().as_secs_f64());
        }
        if Instant::now() >= stored_deadline {
            break format!(
                "**only {stored} of {n} after {:.3} s**",
                first_send.elapsed().as_secs_f64()
            );
        }
        sleep(POLL_EVERY).await;
    };
    calls.sort_unstable();

    let what = if mesh {
        format!("fan-out, members connected to each other (gossip + mailbox): owner → {m} members")
    } else {
        format!("fan-out through the bootstrap only (mailbox push + sync): owner → {m} members")
    };
    let verdict = if got == want {
        format!("all {want} deliveries arrived")
    } else {
        format!("**only {got} of {want} deliveries arrived** within {ARRIVAL_TIMEOUT:?}")
    };
    Ok(Row::new(
        what,
        got as u64,
        last_arrival.saturating_duration_since(first_send),
    )
    .latency(&latencies)
    .notes(format!(
        "{n} messages × {m} members; {verdict}; {duplicates} duplicate `Event::Message`s, \
                 {missed} events missed; in the members' histories: {in_history} of {want}, \
                 {history_duplicates} duplicate ids; stored by the bootstrap (`Sent` at the owner): \
                 {stored_when_arrived} of {n} when the arrival wait ended, {stored} from the \
                 first send; worst member's p99 {} ms; sends paced every {} ms took {:.3} s, \
                 `send()` p50 {} ms, p99 {} ms; {cpu} from the first send to the last \
                 delivery; {setup}{warm}",
        ms(worst_member_p99),
        args.interval_ms,
        sends_took.as_secs_f64(),
        ms(percentile(&calls, 50)),
        ms(percentile(&calls, 99)),
    )))
}

// ---- offline catch-up ---------------------------------------------------------------------

/// The owner sends `n` messages to the group, `in_flight` `send` calls at a time; returns the
/// ids, when the first call started, when the last returned, and how many `OutboxFull` retries
/// there were.
async fn burst(
    cluster: &Cluster,
    n: u64,
    in_flight: usize,
) -> Result<(Vec<MessageId>, Instant, Instant, u64)> {
    let semaphore = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let to = cluster.conversation();
    let started = Instant::now();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let (owner, to) = (cluster.owner().client.clone(), to.clone());
        tasks.spawn(async move {
            let mut full = 0u32;
            let out = loop {
                match timeout(STEP_TIMEOUT, owner.send(&to, &text("offline", i))).await {
                    Err(_) => break Err(anyhow!("send {i} timed out")),
                    Ok(Err(confab_node::SendError::OutboxFull(_)))
                        if full < OUTBOX_FULL_RETRIES =>
                    {
                        full += 1;
                        sleep(OUTBOX_FULL_PAUSE).await;
                    }
                    Ok(other) => break other.map(|id| (id, full)).context("send"),
                }
            };
            drop(permit);
            out
        });
    }
    let mut ids = Vec::with_capacity(n as usize);
    let mut retries = 0u64;
    while let Some(done) = tasks.join_next().await {
        let (id, full) = done??;
        ids.push(id);
        retries += u64::from(full);
    }
    Ok((ids, started, Instant::now(), retries))
}

/// The offline section: a fresh bootstrap and group (no dials between nodes); one member stops,
/// the owner sends `args.offline` messages, and the member comes back.
async fn offline(args: &Args) -> Result<Vec<Row>> {
    let mut cluster = Cluster::start().await?;
    let result = offline_in(&mut cluster, args).await;
    cluster.close().await;
    result
}

/// The body of [`offline`], on a cluster that [`offline`] closes whatever happens.
async fn offline_in(cluster: &mut Cluster, args: &Args) -> Result<Vec<Row>> {
    let m = args.members as usize;
    let n = u64::from(args.offline);
    eprintln!("offline: starting and registering the owner and {m} members");
    cluster.add_nodes(m).await?;
    cluster.create_group().await?;
    let conversation = cluster.conversation();

    let away = 1;
    let away_user = cluster.nodes[away].user.clone();
    eprintln!("offline: {away_user}'s node stops; the owner sends {n} messages");
    shutdown(&cluster.nodes[away].client).await?;
    cluster.nodes[away].drain.abort();

    let (ids, started, sends_done, retries) =
        burst(cluster, n, args.send_in_flight as usize).await?;
    let deadline = started + FILL_TIMEOUT;
    let stored_at = loop {
        let stored = {
            let seen = lock(&cluster.owner().seen);
            ids.iter().filter(|id| seen.stored.contains(id)).count()
        };
        if stored == ids.len() {
            break Instant::now();
        }
        ensure!(
            Instant::now() < deadline,
            "only {stored} of {n} stored by the bootstrap within {FILL_TIMEOUT:?}"
        );
        sleep(POLL_EVERY).await;
    };
    // The order the owner's node stored (and so posted) them: the order sent.
    let wanted: HashSet<MessageId> = ids.iter().copied().collect();
    let limit = (n as usize).max(2_000);
    let sent_order: Vec<MessageId> = timeout(
        STEP_TIMEOUT,
        cluster.owner().client.history(&conversation, limit),
    )
    .await
    .context("the owner's history timed out")??
    .iter()
    .map(|msg| msg.id)
    .filter(|id| wanted.contains(id))
    .collect();
    ensure!(
        sent_order.len() == ids.len(),
        "the owner's history holds {} of the {n} messages",
        sent_order.len()
    );

    // The members online get the burst too; wait for them, so the returning member is measured
    // alone.
    let online: Vec<&Node> = cluster
        .members()
        .iter()
        .filter(|node| node.user != away_user)
        .collect();
    let online_deadline = Instant::now() + CATCH_UP_TIMEOUT;
    let online_done = loop {
        let got: usize = online
            .iter()
            .map(|node| {
                let seen = lock(&node.seen);
                ids.iter()
                    .filter(|id| seen.arrived.contains_key(id))
                    .count()
            })
            .sum();
        if got == online.len() * ids.len() {
            break format!(
                "the {} members online had all {n} after {:.3} s",
                online.len(),
                started.elapsed().as_secs_f64()
            );
        }
        if Instant::now() >= online_deadline {
            break format!(
                "**the {} members online had only {got} of {} deliveries after {:.3} s**",
                online.len(),
                online.len() * ids.len(),
                started.elapsed().as_secs_f64()
            );
        }
        sleep(POLL_EVERY).await;
    };
    let fill = Row::new(
        format!(
            "offline fill: owner `send` ×{n} to the group ({away_user} offline), {} in flight → all `Delivery {{ Sent }}`",
            args.send_in_flight
        ),
        n,
        stored_at - started,
    )
    .notes(format!(
        "all `send()` calls returned after {:.3} s; {retries} `OutboxFull` retries; {online_done}",
        (sends_done - started).as_secs_f64()
    ));

    eprintln!("offline: {away_user}'s node starts again on the same data dir");
    let t0 = Instant::now();
    let (client, seen, drain) = {
        let node = &cluster.nodes[away];
        start_node(node.dir.path(), &node.user, &cluster.addr).await?
    };
    let start_returned = t0.elapsed();
    {
        let node = &mut cluster.nodes[away];
        node.client = client;
        node.seen = seen;
        node.drain = drain;
    }
    let node = &cluster.nodes[away];
    let deadline = t0 + CATCH_UP_TIMEOUT;
    loop {
        let got = {
            let seen = lock(&node.seen);
            ids.iter()
                .filter(|id| seen.arrived.contains_key(id))
                .count()
        };
        if got == ids.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{away_user} showed only {got} of {n} messages within {CATCH_UP_TIMEOUT:?}"
        );
        sleep(POLL_EVERY).await;
    }
    let history: Vec<MessageId> = timeout(STEP_TIMEOUT, node.client.history(&conversation, limit))
        .await
        .context("the returning member's history timed out")??
        .iter()
        .map(|msg| msg.id)
        .collect();
    let seen = lock(&node.seen);
    let arrival_order: Vec<MessageId> = seen
        .order
        .iter()
        .copied()
        .filter(|id| wanted.contains(id))
        .collect();
    let first = arrival_order
        .first()
        .and_then(|id| seen.arrived.get(id))
        .map(|at| *at - t0)
        .context("no message arrived")?;
    let last = ids
        .iter()
        .filter_map(|id| seen.arrived.get(id))
        .max()
        .map(|at| *at - t0)
        .context("no message arrived")?;
    let history_ours: Vec<MessageId> = history
        .iter()
        .copied()
        .filter(|id| wanted.contains(id))
        .collect();
    let checks = format!(
        "{} of {n} shown, {} duplicate `Event::Message`s, {} events missed; arrival order {} the \
         order sent; history: {} entries, {}",
        arrival_order.len(),
        seen.duplicates,
        seen.missed,
        if arrival_order == sent_order {
            "="
        } else {
            "**≠**"
        },
        history.len(),
        if history_ours == sent_order && history.len() == history_ours.len() {
            "exactly the messages in the order sent".to_owned()
        } else if history_ours == sent_order {
            format!(
                "**{} other entries besides** the messages in the order sent",
                history.len() - history_ours.len()
            )
        } else {
            "**NOT the messages in the order sent**".to_owned()
        },
    );

    let mut rows = vec![fill];
    rows.push(
        Row::new(
            format!("catch-up: {away_user}'s `confab_node::start` returns"),
            0,
            start_returned,
        )
        .no_rate()
        .notes("same data dir, still logged in"),
    );
    rows.push(match seen.summary {
        Some((at, total)) => Row::new(
            "catch-up: start → `Event::OfflineSummary`",
            u64::from(total),
            at - t0,
        )
        .no_rate()
        .notes(if u64::from(total) >= n {
            format!("summary total = {total} (≥ {n})")
        } else {
            format!("**summary total = {total} < {n}**")
        }),
        None => Row::new(
            "catch-up: start → `Event::OfflineSummary`",
            0,
            Duration::ZERO,
        )
        .no_rate()
        .notes("**no summary seen**"),
    });
    rows.push(Row::new("catch-up: start → first `Event::Message`", 1, first).no_rate());
    rows.push(
        Row::new(
            format!("catch-up: start → {n}th `Event::Message` (total)"),
            n,
            last,
        )
        .notes(checks),
    );
    rows.push(
        Row::new(
            "catch-up: first → last `Event::Message` (the transfer alone)",
            n.saturating_sub(1),
            last.saturating_sub(first),
        )
        .notes("messages/s over the stream of mailbox pages"),
    );
    Ok(rows)
}

// ---- main ----------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    eprintln!("load average at start: {}", load_average());
    let mut rows: Vec<Row> = Vec::new();

    for mesh in [true, false] {
        let what = if mesh {
            "fan-out, members connected to each other"
        } else {
            "fan-out through the bootstrap only"
        };
        rows.push(
            timeout(FAN_OUT_SECTION_TIMEOUT, fan_out(&args, mesh))
                .await
                .unwrap_or_else(|_| Err(anyhow!("timed out")))
                .unwrap_or_else(|e| Row::failed(what, &e)),
        );
    }

    let offline_bound = FILL_TIMEOUT + 2 * CATCH_UP_TIMEOUT + 5 * STEP_TIMEOUT;
    match timeout(offline_bound, offline(&args)).await {
        Ok(Ok(more)) => rows.extend(more),
        Ok(Err(e)) => rows.push(Row::failed("offline catch-up", &e)),
        Err(_) => rows.push(Row::failed("offline catch-up", &anyhow!("timed out"))),
    }

    println!(
        "| Measurement | Messages | Time (s) | p50 (ms) | p99 (ms) | max (ms) | msg/s | Notes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        row.print();
    }
    println!();
    println!(
        "- {TEXT_BYTES}-byte texts; nodes and bootstraps on 127.0.0.1 (TCP), mDNS off, gossipsub heartbeat {} ms",
        GOSSIP_HEARTBEAT.as_millis()
    );
    println!(
        "- cores (available parallelism): {}",
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into()),
    );
    println!("- load average at end: {}", load_average());
    Ok(())
}
