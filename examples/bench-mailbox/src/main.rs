#![doc = include_str!("../README.md")]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use confab_bootstrap::limits::{MAX_COMMIT_BATCH, MAX_MAILBOX_ENTRIES};
use confab_bootstrap::presence::Presence;
use confab_bootstrap::service::Service;
use confab_bootstrap::store::{Store, StoreError, Tx};
use confab_node::{Client, Conversation, DeliveryState, Event, MessageId};
use confab_protocol::ChatMessage;
use confab_protocol::bootstrap::{
    BootstrapRequest, BootstrapResponse, DeviceCert, MailboxEntry, MailboxItem,
};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use redb::{Database, Durability, TableDefinition};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// The password of every account the benchmark registers.
const PASSWORD: &str = "correct horse battery";
/// The sender.
const ALICE: &str = "alice";
/// The receiver.
const BOB: &str = "bob";
/// The text of every message is padded to this many bytes (as in bench-direct).
const TEXT_BYTES: usize = 40;
/// Most time one ingest measurement may take.
const INGEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Most time alice's node may take to get every message stored by the bootstrap.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);
/// Most time bob's node may take to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// Most time any single setup step (start, register, shutdown) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `send` waits before retrying when the node's deposit queue is full.
const OUTBOX_FULL_PAUSE: Duration = Duration::from_millis(20);
/// Retries of one `send` refused with `OutboxFull`.
const OUTBOX_FULL_RETRIES: u32 = 1_000;
/// How often histories are polled when events were missed.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// The plain redb table of the raw-rate rows.
const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks the bootstrap's mailboxes: durable ingest and catch-up at login")]
struct Args {
    /// Deposits per ingest measurement.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    messages: u32,
    /// Deposits in flight in the group-commit run.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    in_flight: u32,
    /// Inserts per commit in the raw redb batch run.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    raw_batch: u32,
    /// Offline messages bob catches up with at login.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    offline: u32,
    /// `send` calls in flight on alice's node while filling bob's mailbox.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    send_in_flight: u32,
}

// ---- results ------------------------------------------------------------------------------

/// One line of the table.
struct Row {
    what: String,
    messages: Option<u64>,
    elapsed: Option<Duration>,
    /// Whether a msg/s figure makes sense for this row.
    rate: bool,
    batch: String,
    notes: String,
}

impl Row {
    fn new(what: impl Into<String>, messages: u64, elapsed: Duration) -> Self {
        Row {
            what: what.into(),
            messages: Some(messages),
            elapsed: Some(elapsed),
            rate: true,
            batch: String::new(),
            notes: String::new(),
        }
    }

    fn failed(what: impl Into<String>, error: &anyhow::Error) -> Self {
        Row {
            what: what.into(),
            messages: None,
            elapsed: None,
            rate: false,
            batch: String::new(),
            notes: format!("**failed**: {error:#}"),
        }
    }

    fn batch(mut self, batch: impl Into<String>) -> Self {
        self.batch = batch.into();
        self
    }

    fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    fn no_rate(mut self) -> Self {
        self.rate = false;
        self
    }

    fn print(&self) {
        let messages = self.messages.map(|n| n.to_string()).unwrap_or_default();
        let time = self
            .elapsed
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .unwrap_or_default();
        let rate = match (self.rate, self.messages, self.elapsed) {
            (true, Some(n), Some(d)) if !d.is_zero() => {
                format!("{:.0}", n as f64 / d.as_secs_f64())
            }
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            self.what, messages, time, rate, self.batch, self.notes
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The text of message `i`, padded to [`TEXT_BYTES`].
fn text(i: u64) -> String {
    format!(
        "{:<width$}",
        format!("mailbox bench {i}"),
        width = TEXT_BYTES
    )
}

// ---- part 1: ingest, in-process --------------------------------------------------------------

/// A bootstrap service on a fresh store, with alice and bob registered (each on its own device).
struct Fresh {
    service: Service,
    alice: PeerId,
    /// The certificate the bootstrap issued to alice's device: attached to every message, as a
    /// node does before depositing.
    cert: DeviceCert,
    _dir: tempfile::TempDir,
}

impl Fresh {
    async fn new() -> Result<Fresh> {
        let dir = tempfile::tempdir()?;
        let key = Keypair::generate_ed25519();
        let encoded = key.to_protobuf_encoding()?;
        let path = dir.path().to_owned();
        let (store, _) = tokio::task::spawn_blocking(move || Store::open(&path, encoded)).await??;
        let service = Service::new(store, key, Arc::new(Presence::default()))
            .await
            .map_err(|_| anyhow!("the password hasher is busy"))?;
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let mut cert = None;
        for (device, user) in [(alice, ALICE), (bob, BOB)] {
            let request = BootstrapRequest::Register {
                user: user.into(),
                password: PASSWORD.into(),
            };
            match service.handle(device, None, request).await.response {
                BootstrapResponse::Session { cert: c, .. } if user == ALICE => cert = Some(c),
                BootstrapResponse::Session { .. } => {}
                other => bail!("registering {user}: {other:?}"),
            }
        }
        Ok(Fresh {
            service,
            alice,
            cert: cert.context("no certificate for alice")?,
            _dir: dir,
        })
    }

    /// Message `i` from alice, as her node would deposit it.
    fn message(&self, i: u64) -> ChatMessage {
        let mut m = ChatMessage::text(ALICE, text(i), now_ms());
        m.author_cert = Some(self.cert.clone());
        m
    }

    fn deposit(&self, i: u64) -> BootstrapRequest {
        BootstrapRequest::Deposit {
            to: BOB.into(),
            message: self.message(i),
        }
    }

    fn store(&self) -> &Store {
        self.service.store()
    }

    /// Checks that bob's mailbox holds exactly `n` entries.
    async fn check_len(&self, n: u64) -> Result<()> {
        let store = self.store().clone();
        let len =
            tokio::task::spawn_blocking(move || store.read(|tx| tx.mailbox_len(BOB))).await??;
        ensure!(len == n, "bob's mailbox holds {len} entries, not {n}");
        Ok(())
    }
}

/// What `Service`'s deposit writes, reproduced with the public `Tx` methods: the same reads
/// (dedup, receiver exists, both mailboxes not full) and the same two appends.
fn deposit_writes(
    tx: &mut Tx,
    from_device: &[u8],
    message: &ChatMessage,
) -> Result<u64, StoreError> {
    if let Some(seq) = tx.mailbox_seq_of(ALICE, ALICE, &message.id)? {
        return Ok(seq);
    }
    if tx.user(BOB)?.is_none() {
        return Err(StoreError::Database("no user bob".into()));
    }
    for owner in [BOB, ALICE] {
        if tx.mailbox_len(owner)? >= MAX_MAILBOX_ENTRIES {
            return Err(StoreError::Database(format!(
                "the mailbox of {owner} is full"
            )));
        }
    }
    let stored_at = now_ms();
    let entry = |conversation: &str, outgoing: bool| MailboxEntry {
        seq: 0,
        conversation: format!("user:{conversation}"),
        from_user: ALICE.into(),
        from_device: from_device.to_vec(),
        outgoing,
        stored_at,
        item: MailboxItem::Message(message.clone()),
    };
    tx.mailbox_append(BOB, entry(ALICE, false))?;
    tx.mailbox_append(ALICE, entry(BOB, true))
}

/// (a) N deposits through `Service::handle`, `in_flight` at a time: the service's
/// `write_batched` commits whatever queued while the previous commit ran.
async fn ingest_grouped(n: u64, in_flight: usize) -> Result<Row> {
    let fresh = Fresh::new().await?;
    let semaphore = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let (service, device, request) = (fresh.service.clone(), fresh.alice, fresh.deposit(i));
        tasks.spawn(async move {
            let t = Instant::now();
            let out = service.handle(device, None, request).await;
            drop(permit);
            (t.elapsed(), out.response)
        });
    }
    let mut latencies = Vec::with_capacity(n as usize);
    while let Some(done) = tasks.join_next().await {
        let (latency, response) = done?;
        ensure!(
            matches!(response, BootstrapResponse::Deposited { .. }),
            "a deposit was refused: {response:?}"
        );
        latencies.push(latency);
    }
    let elapsed = started.elapsed();
    fresh.check_len(n).await?;
    latencies.sort_unstable();
    Ok(Row::new(
        format!("(a) with group commit: `Service::handle` deposits, {in_flight} in flight"),
        n,
        elapsed,
    )
    .batch("see (a′)")
    .notes(format!(
        "per deposit p50 {}, p99 {}",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 99))
    )))
}

/// (a′) The same writes, `in_flight` at a time, through `Store::write_batched` directly, each job
/// also reading bob's *committed* last sequence number: jobs of one commit batch all see the same
/// value, so the number of distinct values is the number of commits.
async fn ingest_grouped_probed(n: u64, in_flight: usize) -> Result<Row> {
    let fresh = Fresh::new().await?;
    let semaphore = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let from_device = Arc::new(fresh.alice.to_bytes());
    let started = Instant::now();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let store = fresh.store().clone();
        let probe = store.clone();
        let from_device = from_device.clone();
        let message = fresh.message(i);
        tasks.spawn(async move {
            let out = store
                .write_batched(move |tx| {
                    let committed = probe.read(|r| r.mailbox_last_seq(BOB))?;
                    deposit_writes(tx, &from_device, &message)?;
                    Ok::<_, StoreError>(committed)
                })
                .await;
            drop(permit);
            out
        });
    }
    let mut committed = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        committed.insert(done??);
    }
    let elapsed = started.elapsed();
    fresh.check_len(n).await?;
    let commits = committed.len() as u64;
    Ok(Row::new(
        format!(
            "(a′) with group commit: the same writes via `Store::write_batched`, {in_flight} in flight, batch probe"
        ),
        n,
        elapsed,
    )
    .batch(format!("{:.1}", n as f64 / commits.max(1) as f64))
    .notes(format!(
        "{commits} commits (limit {MAX_COMMIT_BATCH} per batch); each job also opens one read transaction (the probe)"
    )))
}

/// (b) N deposits, each its own durable transaction (`Store::write`), one after another.
async fn ingest_one_by_one(n: u64) -> Result<Row> {
    let fresh = Fresh::new().await?;
    let messages: Vec<ChatMessage> = (0..n).map(|i| fresh.message(i)).collect();
    let store = fresh.store().clone();
    let from_device = fresh.alice.to_bytes();
    let elapsed = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for m in &messages {
            store.write(|tx| deposit_writes(tx, &from_device, m))?;
        }
        Ok::<_, StoreError>(started.elapsed())
    })
    .await??;
    fresh.check_len(n).await?;
    Ok(Row::new(
        "(b) without group commit: the same writes, one `Store::write` (one durable commit) each, sequential",
        n,
        elapsed,
    )
    .batch("1")
    .notes("the deposit's reads and writes reproduced with the public `Tx` methods"))
}

/// (b′) N deposits through `Service::handle`, one at a time: `write_batched` then never has more
/// than one job, so each deposit is one commit, plus the service's own overhead.
async fn ingest_sequential_service(n: u64) -> Result<Row> {
    let fresh = Fresh::new().await?;
    let mut latencies = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let out = fresh
            .service
            .handle(fresh.alice, None, fresh.deposit(i))
            .await;
        latencies.push(t.elapsed());
        ensure!(
            matches!(out.response, BootstrapResponse::Deposited { .. }),
            "a deposit was refused: {:?}",
            out.response
        );
    }
    let elapsed = started.elapsed();
    fresh.check_len(n).await?;
    latencies.sort_unstable();
    Ok(Row::new(
        "(b′) without group commit: `Service::handle` deposits one at a time",
        n,
        elapsed,
    )
    .batch("1")
    .notes(format!(
        "per deposit p50 {}, p99 {}",
        ms(percentile(&latencies, 50)),
        ms(percentile(&latencies, 99))
    )))
}

/// The encoded size of one mailbox entry as the store keeps it (CBOR, like the store).
fn entry_size(fresh_cert: &DeviceCert, device: &PeerId) -> Result<usize> {
    let mut message = ChatMessage::text(ALICE, text(1_000), now_ms());
    message.author_cert = Some(fresh_cert.clone());
    let entry = MailboxEntry {
        seq: 1_000,
        conversation: format!("user:{ALICE}"),
        from_user: ALICE.into(),
        from_device: device.to_bytes(),
        outgoing: false,
        stored_at: now_ms(),
        item: MailboxItem::Message(message),
    };
    let bytes = cbor4ii::serde::to_vec(Vec::new(), &entry).map_err(|e| anyhow!("{e:?}"))?;
    Ok(bytes.len())
}

/// (c) A plain redb database: N inserts of `size` bytes, `per_commit` per durable commit.
fn raw_redb(dir: &Path, n: u64, size: usize, per_commit: u64) -> Result<Duration> {
    let db = Database::create(dir.join("raw.redb"))?;
    let value = vec![0xa5u8; size];
    let started = Instant::now();
    let mut key = 0u64;
    while key < n {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut table = txn.open_table(RAW)?;
            for _ in 0..per_commit.min(n - key) {
                table.insert(key, value.as_slice())?;
                key += 1;
            }
        }
        txn.commit()?;
    }
    Ok(started.elapsed())
}

async fn raw_rows(n: u64, batch: u64) -> Result<(Vec<Row>, usize)> {
    let fresh = Fresh::new().await?;
    let size = entry_size(&fresh.cert, &fresh.alice)?;
    let rows = tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        for per_commit in [batch, 1] {
            let dir = tempfile::tempdir()?;
            let elapsed = raw_redb(dir.path(), n, size, per_commit)?;
            rows.push(
                Row::new(
                    format!(
                        "(c) raw redb: {size}-byte inserts, {per_commit} per `Durability::Immediate` commit"
                    ),
                    n,
                    elapsed,
                )
                .batch(per_commit.to_string())
                .notes(format!(
                    "{} commits; `u64` key, one table; a deposit writes 2 such entries + 2 dedup rows",
                    n.div_ceil(per_commit)
                )),
            );
        }
        Ok::<_, anyhow::Error>(rows)
    })
    .await??;
    Ok((rows, size))
}

// ---- part 2: catch-up at login ---------------------------------------------------------------

async fn node(dir: &Path, name: &str, bootstrap: &str) -> Result<Client> {
    let mut config = confab_node::Config::new(dir);
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = vec![bootstrap.into()];
    timeout(STEP_TIMEOUT, confab_node::start(config))
        .await
        .context("starting a node timed out")?
        .with_context(|| format!("starting {name}'s node"))
}

async fn shutdown(client: &Client) -> Result<()> {
    timeout(STEP_TIMEOUT, client.shutdown())
        .await
        .context("a node's shutdown timed out")??;
    Ok(())
}

/// Counts alice's messages to bob that the bootstrap has stored (from her history).
async fn stored_count(alice: &Client, n: usize) -> Result<usize> {
    let history = alice.history(&Conversation::User(BOB.into()), n).await?;
    Ok(history.iter().filter(|m| m.delivery.is_sent()).count())
}

/// Sends `n` messages from alice's node to `user:bob`, `in_flight` `send` calls at a time, and
/// waits until the bootstrap has stored every one (`Delivery { Sent }`).
async fn fill(alice: &Client, n: u64, in_flight: usize) -> Result<(Duration, Row)> {
    let mut events = alice.subscribe();
    let watcher = tokio::spawn(async move {
        let mut sent = HashSet::new();
        loop {
            match events.recv().await {
                Ok(Event::Delivery {
                    id,
                    state: DeliveryState::Sent,
                }) => {
                    sent.insert(id);
                    if sent.len() as u64 >= n {
                        return Ok(Instant::now());
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => return Err(missed),
                Err(broadcast::error::RecvError::Closed) => return Err(0),
            }
        }
    });
    let semaphore = Arc::new(Semaphore::new(in_flight));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let alice = alice.clone();
        tasks.spawn(async move {
            let to = Conversation::User(BOB.into());
            let mut full = 0u32;
            let out = loop {
                match alice.send(&to, &text(i)).await {
                    Err(confab_node::SendError::OutboxFull(_)) if full < OUTBOX_FULL_RETRIES => {
                        full += 1;
                        tokio::time::sleep(OUTBOX_FULL_PAUSE).await;
                    }
                    other => break other.map(|_| full),
                }
            };
            drop(permit);
            out
        });
    }
    let mut outbox_full = 0u64;
    while let Some(done) = tasks.join_next().await {
        outbox_full += u64::from(done??);
    }
    let sends_done = started.elapsed();
    let deadline = started + FILL_TIMEOUT;
    let mut note = String::new();
    let finished = match timeout(FILL_TIMEOUT, watcher).await {
        Ok(Ok(Ok(at))) => at,
        Ok(Ok(Err(missed))) => {
            // Events were missed: fall back to polling alice's history.
            note = format!("; {missed} events missed, finish time from polling history");
            loop {
                if stored_count(alice, n as usize).await? as u64 >= n {
                    break Instant::now();
                }
                ensure!(
                    Instant::now() < deadline,
                    "not all stored within {FILL_TIMEOUT:?}"
                );
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
        Ok(Err(e)) => bail!("the event watcher failed: {e}"),
        Err(_) => bail!("not all stored within {FILL_TIMEOUT:?}"),
    };
    let elapsed = finished - started;
    let row = Row::new(
        format!("fill: alice's node `send` → `Delivery {{ Sent }}` for all, to `user:{BOB}` (offline), {in_flight} sends in flight"),
        n,
        elapsed,
    )
    .notes(format!(
        "all `send()` calls returned after {:.3} s; {outbox_full} `OutboxFull` retries{note}",
        sends_done.as_secs_f64()
    ));
    Ok((elapsed, row))
}

/// What bob's node showed while catching up.
struct CatchUp {
    started: Duration,
    summary: Option<(Duration, u32)>,
    first: Option<Duration>,
    last: Option<Duration>,
    received: Vec<MessageId>,
    duplicates: usize,
    missed: u64,
}

async fn watch_catch_up(
    bob: &Client,
    mut events: broadcast::Receiver<Event>,
    t0: Instant,
    started: Duration,
    n: usize,
) -> Result<CatchUp> {
    let mut out = CatchUp {
        started,
        summary: None,
        first: None,
        last: None,
        received: Vec::with_capacity(n),
        duplicates: 0,
        missed: 0,
    };
    let mut seen = HashSet::with_capacity(n);
    let deadline = t0 + CATCH_UP_TIMEOUT;
    let alice = Conversation::User(ALICE.into());
    while out.received.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match timeout(left, events.recv()).await {
            Ok(e) => e,
            Err(_) => bail!(
                "only {} of {n} messages within {CATCH_UP_TIMEOUT:?}",
                out.received.len()
            ),
        };
        match event {
            Ok(Event::OfflineSummary { total, .. }) => {
                out.summary.get_or_insert((t0.elapsed(), total));
            }
            Ok(Event::Message(m)) if m.conversation == alice && !m.outgoing => {
                if seen.insert(m.id) {
                    out.first.get_or_insert(t0.elapsed());
                    out.received.push(m.id);
                    if out.received.len() == n {
                        out.last = Some(t0.elapsed());
                    }
                } else {
                    out.duplicates += 1;
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                out.missed += missed;
                break;
            }
            Err(broadcast::error::RecvError::Closed) => bail!("bob's node stopped"),
        }
    }
    if out.missed > 0 {
        // Events were missed: poll bob's history for the finish time instead.
        loop {
            let history = bob.history(&alice, n).await?;
            if history.len() >= n {
                out.last = Some(t0.elapsed());
                out.received = history.iter().map(|m| m.id).collect();
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "only {} of {n} messages within {CATCH_UP_TIMEOUT:?}",
                history.len()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    Ok(out)
}

async fn catch_up(n: u64, send_in_flight: usize) -> Result<Vec<Row>> {
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
    let result = catch_up_with(&addr, n, send_in_flight).await;
    timeout(STEP_TIMEOUT, server.shutdown())
        .await
        .context("the bootstrap's shutdown timed out")?;
    result
}

async fn catch_up_with(addr: &str, n: u64, send_in_flight: usize) -> Result<Vec<Row>> {
    let (alice_dir, bob_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    eprintln!("catch-up: registering bob, then stopping his node");
    let bob = node(bob_dir.path(), BOB, addr).await?;
    timeout(STEP_TIMEOUT, bob.register(BOB, PASSWORD))
        .await
        .context("registering bob timed out")??;
    shutdown(&bob).await?;
    drop(bob);
    let alice = node(alice_dir.path(), ALICE, addr).await?;
    timeout(STEP_TIMEOUT, alice.register(ALICE, PASSWORD))
        .await
        .context("registering alice timed out")??;

    eprintln!("catch-up: alice sends {n} messages to the offline bob");
    let result = async {
        let (_, fill_row) = fill(&alice, n, send_in_flight).await?;
        let sent_order: Vec<MessageId> = alice
            .history(&Conversation::User(BOB.into()), n as usize)
            .await?
            .iter()
            .map(|m| m.id)
            .collect();

        eprintln!("catch-up: bob's node starts on the same data dir");
        let t0 = Instant::now();
        let bob = node(bob_dir.path(), BOB, addr).await?;
        let events = bob.subscribe();
        let started = t0.elapsed();
        let seen = watch_catch_up(&bob, events, t0, started, n as usize).await;
        let history = bob
            .history(&Conversation::User(ALICE.into()), n as usize)
            .await;
        shutdown(&bob).await?;
        let seen = seen?;
        let history: Vec<MessageId> = history?.iter().map(|m| m.id).collect();
        Ok::<_, anyhow::Error>((fill_row, sent_order, seen, history))
    }
    .await;
    shutdown(&alice).await?;
    let (fill_row, sent_order, seen, history) = result?;

    let in_order = seen.received == sent_order;
    let history_matches = history == sent_order;
    let checks = format!(
        "{} received, {} duplicates, {} events missed; arrival order {} alice's history; bob's history {} it",
        seen.received.len(),
        seen.duplicates,
        seen.missed,
        if in_order { "=" } else { "≠" },
        if history_matches {
            "matches"
        } else {
            "does NOT match"
        },
    );
    let mut rows = vec![fill_row];
    rows.push(
        Row::new(
            "catch-up: bob's `confab_node::start` returns",
            0,
            seen.started,
        )
        .no_rate()
        .notes("same data dir, still logged in"),
    );
    match seen.summary {
        Some((at, total)) => rows.push(
            Row::new(
                "catch-up: start → `Event::OfflineSummary`",
                u64::from(total),
                at,
            )
            .no_rate()
            .notes(format!("summary total = {total}")),
        ),
        None => rows.push(
            Row::new(
                "catch-up: start → `Event::OfflineSummary`",
                0,
                Duration::ZERO,
            )
            .no_rate()
            .notes("**no summary seen**"),
        ),
    }
    if let Some(first) = seen.first {
        rows.push(Row::new("catch-up: start → first `Event::Message`", 1, first).no_rate());
    }
    let last = seen.last.context("the last message never came")?;
    rows.push(
        Row::new(
            format!("catch-up: start → {n}th `Event::Message` (total)"),
            n,
            last,
        )
        .notes(checks),
    );
    if let Some(first) = seen.first {
        rows.push(
            Row::new(
                "catch-up: first → last `Event::Message` (the transfer alone)",
                n.saturating_sub(1),
                last.saturating_sub(first),
            )
            .notes("messages/s over the stream of pages"),
        );
    }
    Ok(rows)
}

// ---- main ----------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let n = u64::from(args.messages);
    let in_flight = args.in_flight as usize;
    eprintln!("load average at start: {}", load_average());
    let mut rows: Vec<Row> = Vec::new();

    eprintln!("ingest (a): {n} deposits, {in_flight} in flight, through Service::handle");
    rows.push(
        timeout(INGEST_TIMEOUT, ingest_grouped(n, in_flight))
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out")))
            .unwrap_or_else(|e| Row::failed("(a) with group commit", &e)),
    );
    eprintln!("ingest (a′): the same with a batch probe");
    rows.push(
        timeout(INGEST_TIMEOUT, ingest_grouped_probed(n, in_flight))
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out")))
            .unwrap_or_else(|e| Row::failed("(a′) batch probe", &e)),
    );
    eprintln!("ingest (b): {n} deposits, one Store::write each");
    rows.push(
        timeout(INGEST_TIMEOUT, ingest_one_by_one(n))
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out")))
            .unwrap_or_else(|e| Row::failed("(b) without group commit", &e)),
    );
    eprintln!("ingest (b′): {n} deposits through Service::handle, one at a time");
    rows.push(
        timeout(INGEST_TIMEOUT, ingest_sequential_service(n))
            .await
            .unwrap_or_else(|_| Err(anyhow!("timed out")))
            .unwrap_or_else(|e| Row::failed("(b′) sequential Service::handle", &e)),
    );
    eprintln!("ingest (c): raw redb");
    let mut entry_bytes = None;
    match timeout(INGEST_TIMEOUT, raw_rows(n, u64::from(args.raw_batch))).await {
        Ok(Ok((raw, size))) => {
            entry_bytes = Some(size);
            rows.extend(raw);
        }
        Ok(Err(e)) => rows.push(Row::failed("(c) raw redb", &e)),
        Err(_) => rows.push(Row::failed("(c) raw redb", &anyhow!("timed out"))),
    }

    let offline = u64::from(args.offline);
    let catch_up_bound = FILL_TIMEOUT + CATCH_UP_TIMEOUT + 6 * STEP_TIMEOUT;
    match timeout(
        catch_up_bound,
        catch_up(offline, args.send_in_flight as usize),
    )
    .await
    {
        Ok(Ok(more)) => rows.extend(more),
        Ok(Err(e)) => rows.push(Row::failed("catch-up", &e)),
        Err(_) => rows.push(Row::failed("catch-up", &anyhow!("timed out"))),
    }

    println!("| Measurement | Messages | Time (s) | msg/s | Mean commit batch | Notes |");
    println!("|---|---:|---:|---:|---:|---|");
    for row in &rows {
        row.print();
    }
    println!();
    match entry_bytes {
        Some(size) => println!(
            "- one mailbox entry: {size} bytes encoded ({TEXT_BYTES}-byte text, with the author's device certificate)"
        ),
        None => println!("- one mailbox entry: size unknown (the raw redb section failed)"),
    }
    println!(
        "- cores (available parallelism): {}",
        std::thread::available_parallelism()
            .map(|n| n.get().to_string())
            .unwrap_or_else(|_| "?".into()),
    );
    println!("- load average at end: {}", load_average());
    Ok(())
}
