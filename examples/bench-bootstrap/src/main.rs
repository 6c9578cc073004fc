#![doc = include_str!("../README.md")]

mod client;
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use confab_bootstrap::limits::{
    MAX_CONCURRENT_HASHES, MAX_CONCURRENT_REQUESTS, MAX_PENDING_INCOMING, MAX_QUEUED_HASHES,
    MAX_STREAMS_PER_CONNECTION, PING_INTERVAL, THROTTLE_FREE_FAILURES,
};
use confab_bootstrap::service::password::{ARGON2_LANES, ARGON2_MEMORY_KIB, ARGON2_PASSES};
use confab_protocol::bootstrap::{BootstrapRequest, BootstrapResponse, ErrorCode, Notification};
use futures::StreamExt;
use libp2p::identity;
use tokio::sync::mpsc;
use tokio::time::timeout;

use client::{Client, Note, Notes};
use server::Server;

/// The password of every account the benchmark registers.
const PASSWORD: &str = "correct horse battery";
/// The account of the baseline, login and burst sections.
const USER: &str = "bench";
/// The user whose presence the friends watch.
const SUBJECT: &str = "subject";
/// Requests sent before measuring a round-trip baseline.
const WARM_UP: usize = 20;
/// Sequential logins from one client (the unloaded latency of a login).
const SEQUENTIAL_LOGINS: usize = 20;
/// Clients dialling at once while many connect (the server admits 256 pending handshakes).
const CONNECT_CONCURRENCY: usize = 32;
/// Registrations and friend requests in flight at once while setting up the presence run (the
/// server queues at most 32 password hashes).
const SETUP_CONCURRENCY: usize = 8;
/// Most time any section may take in all; each step inside has its own, shorter bound.
const SECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Most time the friends may take to hear of one presence change.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most time the server may take to show every benchmark connection as an open socket.
const HOLD_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after the last connection before reading the server's memory (identify, gossipsub and
/// ping exchanges on the new connections finish).
const SETTLE: Duration = Duration::from_secs(2);
/// How often the server's RSS is sampled during the wrong-password burst.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// Open files kept free beyond one per connection, in the bench process and the server.
const SPARE_FILES: u64 = 200;
/// Notes buffered between the clients' tasks and a measurement.
const NOTE_QUEUE: usize = 16 * 1024;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks confab-bootstrap on loopback: logins, connections, presence")]
struct Args {
    /// A prebuilt `confab-bootstrap` binary [default: build it with `cargo build --release`].
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Round trips measured for the no-hashing baselines.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    requests: u32,
    /// Logins measured with several clients at once (or fewer, see --login-seconds).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    logins: u32,
    /// Clients logging in at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    login_clients: u32,
    /// The concurrent login run stops starting logins after this many seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=120))]
    login_seconds: u64,
    /// Wrong passwords sent at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    wrong: u32,
    /// Clients connected at once (each a swarm in this process).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=9_000))]
    connections: u32,
    /// How long the connected clients are held.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    hold_seconds: u64,
    /// Friends watching the subject's presence.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    friends: u32,
    /// Presence rounds (each: login, disconnect, reconnect, disconnect).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    presence_rounds: u32,
}

// ---- results ------------------------------------------------------------------------------

/// p50, p99, max and mean of a set of latencies.
#[derive(Debug, Clone, Copy)]
struct Summary {
    samples: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Summary {
            samples: sorted.len(),
            p50: percentile(&sorted, 50)?,
            p99: percentile(&sorted, 99)?,
            max: *sorted.last()?,
        })
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// One line of the results table.
struct Row {
    what: String,
    latency: Option<Summary>,
    result: String,
    notes: String,
}

impl Row {
    fn new(what: impl Into<String>, samples: &[Duration], result: String, notes: String) -> Row {
        Row {
            what: what.into(),
            latency: Summary::of(samples),
            result,
            notes,
        }
    }

    fn failed(what: impl Into<String>, error: &anyhow::Error) -> Row {
        Row {
            what: what.into(),
            latency: None,
            result: "failed".into(),
            notes: format!("{error:#}").replace('\n', " ").replace('|', "/"),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_table(rows: &[Row]) {
    println!("| Measurement | Samples | p50 (ms) | p99 (ms) | max (ms) | Result | Notes |");
    println!("|---|---:|---:|---:|---:|---|---|");
    for row in rows {
        let (samples, p50, p99, max) = match &row.latency {
            Some(s) => (s.samples.to_string(), ms(s.p50), ms(s.p99), ms(s.max)),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {} | {samples} | {p50} | {p99} | {max} | {} | {} |",
            row.what, row.result, row.notes
        );
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn login(user: &str, password: &str) -> BootstrapRequest {
    BootstrapRequest::Login {
        user: user.into(),
        password: password.into(),
    }
}

fn register(user: &str) -> BootstrapRequest {
    BootstrapRequest::Register {
        user: user.into(),
        password: PASSWORD.into(),
    }
}

/// A short name for a response, for tables and error messages.
fn kind(response: &BootstrapResponse) -> String {
    match response {
        BootstrapResponse::Session { .. } => "Session".into(),
        BootstrapResponse::Done => "Done".into(),
        BootstrapResponse::Profile(_) => "Profile".into(),
        BootstrapResponse::Error { code, message, .. } => format!("{code:?} ({message})"),
        other => format!("{other:?}"),
    }
}

/// Fails unless `response` is what `want` says.
fn expect(
    response: BootstrapResponse,
    want: fn(&BootstrapResponse) -> bool,
) -> Result<BootstrapResponse> {
    if want(&response) {
        Ok(response)
    } else {
        Err(anyhow!("unexpected answer: {}", kind(&response)))
    }
}

fn is_session(r: &BootstrapResponse) -> bool {
    matches!(r, BootstrapResponse::Session { .. })
}

fn is_done(r: &BootstrapResponse) -> bool {
    matches!(r, BootstrapResponse::Done)
}

fn is_profile(r: &BootstrapResponse) -> bool {
    matches!(r, BootstrapResponse::Profile(_))
}

/// A fresh device key.
fn device() -> identity::Keypair {
    identity::Keypair::generate_ed25519()
}

async fn connect(server: &Server, index: usize, notes: Option<Notes>) -> Result<Client> {
    Client::connect(index, device(), &server.addr, server.peer, notes).await
}

/// Connects `count` fresh clients, at most [`CONNECT_CONCURRENCY`] dialling at once.
async fn connect_many(server: &Server, count: usize, notes: Option<Notes>) -> Result<Vec<Client>> {
    let mut clients: Vec<(usize, Client)> = futures::stream::iter(0..count)
        .map(|i| {
            let notes = notes.clone();
            async move { Ok::<_, anyhow::Error>((i, connect(server, i, notes).await?)) }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    clients.sort_by_key(|(i, _)| *i);
    Ok(clients.into_iter().map(|(_, c)| c).collect())
}

/// Sequential round trips of `request`; returns the latencies after [`WARM_UP`].
async fn round_trips(
    client: &Client,
    request: BootstrapRequest,
    want: fn(&BootstrapResponse) -> bool,
    count: usize,
) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..WARM_UP + count {
        let start = Instant::now();
        expect(client.request(request.clone()).await?, want)?;
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    Ok(samples)
}

/// Stops a server, turning an unclean exit into a table row.
async fn stop(server: Server, rows: &mut Vec<Row>) {
    if let Err(e) = server.stop().await {
        rows.push(Row::failed("server shutdown (SIGTERM)", &e));
    }
}

// ---- 1. baseline and logins ---------------------------------------------------------------

async fn baseline_and_logins(binary: &std::path::Path, args: &Args) -> Result<Vec<Row>> {
    let server = Server::start(binary).await?;
    let mut rows = Vec::new();
    let result = async {
        let first = connect(&server, 0, None).await?;
        let start = Instant::now();
        expect(first.request(register(USER)).await?, is_session)?;
        let registered = start.elapsed();

        eprintln!("  baseline round trips…");
        let count = args.requests as usize;
        let profile = BootstrapRequest::ProfileGet { user: USER.into() };
        let samples = round_trips(&first, profile, is_profile, count).await?;
        rows.push(Row::new(
            "`ProfileGet` round trip (no hashing)",
            &samples,
            String::new(),
            format!("one client, sequential, after {WARM_UP} warm-up"),
        ));
        let samples = round_trips(&first, BootstrapRequest::Session, is_session, count).await?;
        rows.push(Row::new(
            "`Session` round trip (no hashing; signs a certificate)",
            &samples,
            String::new(),
            format!("one client, sequential, after {WARM_UP} warm-up"),
        ));

        eprintln!("  sequential logins…");
        let before = server.memory()?;
        let mut samples = Vec::with_capacity(SEQUENTIAL_LOGINS);
        for _ in 0..SEQUENTIAL_LOGINS {
            let start = Instant::now();
            expect(first.request(login(USER, PASSWORD)).await?, is_session)?;
            samples.push(start.elapsed());
        }
        rows.push(Row::new(
            "`Login`, one client, one at a time",
            &samples,
            String::new(),
            format!(
                "the unloaded cost of one argon2id verify + durable device bind; \
                 `Register` (hash + write) took {} ms",
                ms(registered)
            ),
        ));

        eprintln!("  concurrent logins…");
        let mut row = concurrent_logins(&server, args).await?;
        let after = server.memory()?;
        row.notes.push_str(&format!(
            "; server RSS {} before the first login, {} after the last \
             (VmHWM {}; threads {} → {})",
            mib(before.rss_kib),
            mib(after.rss_kib),
            mib(after.hwm_kib),
            before.threads,
            after.threads
        ));
        rows.push(row);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        rows.push(Row::failed("baseline and logins", &e));
    }
    stop(server, &mut rows).await;
    Ok(rows)
}

/// `--login-clients` clients log in as [`USER`] over and over until `--logins` logins were
/// started or `--login-seconds` passed.
async fn concurrent_logins(server: &Server, args: &Args) -> Result<Row> {
    let clients = connect_many(server, args.login_clients as usize, None).await?;
    // One account per client, as when many people log in: the server caps the checks under way
    // for one account (two at a time), so one account logged into from eight devices at once
    // would measure the throttle, not the hashing.
    let accounts: Vec<String> = (0..clients.len())
        .map(|i| format!("loginuser{i}"))
        .collect();
    for (client, user) in clients.iter().zip(&accounts) {
        expect(client.request(register(user)).await?, is_session)?;
    }
    let total = args.logins as usize;
    let tickets = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.login_seconds);
    let workers = clients.iter().zip(&accounts).map(|(client, user)| {
        let tickets = Arc::clone(&tickets);
        async move {
            let mut done = Vec::new();
            while tickets.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < stop_at {
                let start = Instant::now();
                let answer = client.request(login(user, PASSWORD)).await;
                done.push((start.elapsed(), answer));
            }
            done
        }
    });
    let outcomes: Vec<_> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for (latency, answer) in outcomes {
        match answer {
            Ok(r) if is_session(&r) => latencies.push(latency),
            Ok(r) => *refused.entry(kind(&r)).or_default() += 1,
            Err(e) => *refused.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let mut notes = format!(
        "{} logins in {:.2} s by {} clients (distinct devices, one account each)",
        latencies.len(),
        elapsed.as_secs_f64(),
        clients.len()
    );
    for (what, n) in &refused {
        notes.push_str(&format!("; {n} × {what}"));
    }
    Ok(Row::new(
        format!("`Login`, {} clients at once", clients.len()),
        &latencies,
        format!("**{rate:.1} logins/s**"),
        notes,
    ))
}

// ---- 2. wrong passwords -------------------------------------------------------------------

/// How a wrong-password login ended, for counting.
fn classify(answer: &Result<BootstrapResponse>) -> String {
    match answer {
        Ok(BootstrapResponse::Error {
            code: ErrorCode::Throttled,
            message,
            ..
        }) => {
            let why = if message.contains("failed attempts") {
                "back-off after failures"
            } else if message.contains("checking passwords") {
                "hash queue full"
            } else if message.contains("server is busy") {
                "request cap"
            } else {
                message.as_str()
            };
            format!("Throttled ({why})")
        }
        Ok(BootstrapResponse::Error { code, .. }) => format!("{code:?}"),
        Ok(other) => kind(other),
        Err(e) => format!("no answer: {e:#}"),
    }
}

async fn wrong_passwords(binary: &std::path::Path, args: &Args) -> Result<Vec<Row>> {
    let server = Server::start(binary).await?;
    let mut rows = Vec::new();
    let result = async {
        let owner = connect(&server, 0, None).await?;
        expect(owner.request(register(USER)).await?, is_session)?;
        let total = args.wrong as usize;
        let per_connection = MAX_STREAMS_PER_CONNECTION;
        let clients = connect_many(&server, total.div_ceil(per_connection), None).await?;

        let before = server.memory()?;
        let peak_reset = server.reset_peak();
        let sampler = {
            let pid = server.pid();
            let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let mut peak = 0;
                let deadline = Instant::now() + SECTION_TIMEOUT;
                while stop_rx.try_recv().is_err() && Instant::now() < deadline {
                    if let Ok(m) = server::memory(Some(pid)) {
                        peak = peak.max(m.rss_kib);
                    }
                    tokio::time::sleep(RSS_SAMPLE_EVERY).await;
                }
                peak
            });
            (stop_tx, task)
        };

        let started = Instant::now();
        let sends = clients.iter().enumerate().flat_map(|(c, client)| {
            let first = c * per_connection;
            (first..total.min(first + per_connection)).map(move |i| async move {
                let start = Instant::now();
                let answer = client
                    .request(login(USER, &format!("wrong password {i}")))
                    .await;
                (start.elapsed(), answer)
            })
        });
        let outcomes = futures::future::join_all(sends).await;
        let elapsed = started.elapsed();
        let _ = sampler.0.send(());
        let sampled_peak = sampler.1.await.unwrap_or(0);
        let after = server.memory()?;

        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut latencies = Vec::with_capacity(outcomes.len());
        for (latency, answer) in &outcomes {
            *counts.entry(classify(answer)).or_default() += 1;
            if answer.is_ok() {
                latencies.push(*latency);
            }
        }
        let throttled: usize = counts
            .iter()
            .filter(|(k, _)| k.starts_with("Throttled"))
            .map(|(_, n)| n)
            .sum();
        let bad = counts.get("BadCredentials").copied().unwrap_or(0);
        let breakdown = counts
            .iter()
            .map(|(k, n)| format!("{n} × {k}"))
            .collect::<Vec<_>>()
            .join(", ");

        // And the right password, just after.
        let late = connect(&server, 0, None).await?;
        let right = match late.request(login(USER, PASSWORD)).await {
            Ok(BootstrapResponse::Error {
                code,
                retry_after_ms,
                ..
            }) => format!(
                "{code:?}, retry after {} ms",
                retry_after_ms.map_or("–".into(), |ms| ms.to_string())
            ),
            Ok(r) => kind(&r),
            Err(e) => format!("no answer: {e:#}"),
        };

        let peak = match peak_reset {
            Ok(()) => format!("VmHWM during the burst {}", mib(after.hwm_kib)),
            Err(e) => format!(
                "VmHWM since start {} (could not reset it: {e:#})",
                mib(after.hwm_kib)
            ),
        };
        rows.push(Row::new(
            format!(
                "{total} wrong passwords at once ({} connections × ≤{per_connection})",
                clients.len()
            ),
            &latencies,
            format!("**{throttled} Throttled, {bad} BadCredentials**"),
            format!(
                "{breakdown}; all answered in {:.2} s; server RSS before {}, {peak}, \
                 sampled RSS peak {}, after {} (threads {} → {}); the right password just \
                 after: {right}",
                elapsed.as_secs_f64(),
                mib(before.rss_kib),
                mib(sampled_peak),
                mib(after.rss_kib),
                before.threads,
                after.threads,
            ),
        ));
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        rows.push(Row::failed("wrong passwords", &e));
    }
    stop(server, &mut rows).await;
    Ok(rows)
}

// ---- 3. connections held ------------------------------------------------------------------

async fn connections(binary: &std::path::Path, args: &Args) -> Result<Vec<Row>> {
    let server = Server::start(binary).await?;
    let mut rows = Vec::new();
    let result = async {
        let wanted = args.connections as usize;
        let limit = server::open_files_limit(None)?.min(server.open_files_limit()?);
        let n = wanted.min(usize::try_from(limit.saturating_sub(SPARE_FILES)).unwrap_or(0));
        ensure!(n > 0, "the open-files limit ({limit}) leaves no room for connections");
        let lowered = if n < wanted {
            format!("; lowered from {wanted} by the open-files limit {limit} (raise it with `ulimit -n`)")
        } else {
            String::new()
        };

        tokio::time::sleep(SETTLE).await;
        let sockets_before = server.sockets()?;
        let before = server.memory()?;
        let own_before = server::memory(None)?;

        let (notes, mut rx) = Notes::channel(NOTE_QUEUE);
        let started = Instant::now();
        let clients = connect_many(&server, n, Some(notes.clone())).await?;
        let connect_time = started.elapsed();

        // The server holds them once each is an open socket on its side.
        let deadline = Instant::now() + HOLD_TIMEOUT;
        let mut held = server.sockets()?.saturating_sub(sockets_before);
        while held < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            held = server.sockets()?.saturating_sub(sockets_before);
        }
        ensure!(held >= n, "the server shows {held} of {n} connections after {HOLD_TIMEOUT:?}");
        tokio::time::sleep(SETTLE).await;
        let after = server.memory()?;
        let own_after = server::memory(None)?;

        // Hold them, and watch for any that closes.
        let hold = Duration::from_secs(args.hold_seconds);
        let hold_end = Instant::now() + hold;
        let mut closed = std::collections::HashSet::new();
        while let Ok(Some(note)) = tokio::time::timeout_at(hold_end.into(), rx.recv()).await {
            if let Note::Closed { client } = note {
                closed.insert(client);
            }
        }
        let closed = closed.len();
        let held_after = server.sockets()?.saturating_sub(sockets_before);
        let after_hold = server.memory()?;
        let per_connection = after.rss_kib.saturating_sub(before.rss_kib) as f64 / n as f64;
        let own_per_client = own_after.rss_kib.saturating_sub(own_before.rss_kib) as f64 / n as f64;
        let stayed = n - closed.min(n);
        rows.push(Row::new(
            format!("{n} clients connected and held {} s", args.hold_seconds),
            &[],
            format!("**{stayed}/{n} stayed connected; {per_connection:.1} KiB per connection**"),
            format!(
                "server RSS {} before, {} with {n} connected, {} after {} s; \
                 server sockets +{held} then +{held_after}; connecting took {:.2} s; \
                 {closed} closed during the hold{}; this process (the {n} client swarms): \
                 {own_per_client:.1} KiB per client{lowered}",
                mib(before.rss_kib),
                mib(after.rss_kib),
                mib(after_hold.rss_kib),
                args.hold_seconds,
                connect_time.as_secs_f64(),
                if notes.lost() > 0 { format!(" ({} notes lost)", notes.lost()) } else { String::new() },
            ),
        ));
        drop(clients);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        rows.push(Row::failed("connected clients held", &e));
    }
    stop(server, &mut rows).await;
    Ok(rows)
}

// ---- 4. presence fan-out ------------------------------------------------------------------

/// When each friend heard of one presence change, and what else came.
struct Heard {
    at: Vec<Option<Instant>>,
    duplicates: usize,
    stray: usize,
    closed: usize,
}

impl Heard {
    fn count(&self) -> usize {
        self.at.iter().flatten().count()
    }

    fn latencies(&self, since: Instant) -> Vec<Duration> {
        self.at
            .iter()
            .flatten()
            .map(|at| at.saturating_duration_since(since))
            .collect()
    }
}

/// Waits until every one of `friends` got `Presence { user: SUBJECT, online }` (or the timeout).
async fn hear_presence(rx: &mut mpsc::Receiver<Note>, friends: usize, online: bool) -> Heard {
    let mut heard = Heard {
        at: vec![None; friends],
        duplicates: 0,
        stray: 0,
        closed: 0,
    };
    let deadline = Instant::now() + PRESENCE_TIMEOUT;
    while heard.count() < friends {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Note::Notification {
                client,
                note: Notification::Presence { user, online: o },
                at,
            })) => {
                if user == SUBJECT && o == online && client < friends {
                    match &mut heard.at[client] {
                        Some(_) => heard.duplicates += 1,
                        slot => *slot = Some(at),
                    }
                } else {
                    heard.stray += 1;
                }
            }
            Ok(Some(Note::Closed { .. })) => heard.closed += 1,
            Ok(Some(Note::Notification { .. })) => {} // friend requests and the like
            Ok(None) | Err(_) => break,
        }
    }
    heard
}

/// The anomalies of some presence rounds, for the notes; empty when there were none.
fn anomalies(rounds: &[&Heard]) -> String {
    let (d, s, c) = rounds.iter().fold((0, 0, 0), |(d, s, c), h| {
        (d + h.duplicates, s + h.stray, c + h.closed)
    });
    if (d, s, c) == (0, 0, 0) {
        String::new()
    } else {
        format!("; {d} duplicates, {s} unexpected presence notes, {c} friend connections closed")
    }
}

fn received(rounds: &[&Heard], friends: usize) -> String {
    let counts: Vec<String> = rounds.iter().map(|h| h.count().to_string()).collect();
    format!("received {} of {friends} per round", counts.join(", "))
}

async fn presence(binary: &std::path::Path, args: &Args) -> Result<Vec<Row>> {
    let server = Server::start(binary).await?;
    let mut rows = Vec::new();
    let result = presence_rounds(&server, args, &mut rows).await;
    if let Err(e) = result {
        rows.push(Row::failed("presence fan-out", &e));
    }
    stop(server, &mut rows).await;
    Ok(rows)
}

async fn presence_rounds(server: &Server, args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let f = args.friends as usize;
    let (notes, mut rx) = Notes::channel(NOTE_QUEUE);

    // Friends: registered (which logs them in) and connected for the whole run.
    eprintln!("  registering {f} friends…");
    let friends = connect_many(server, f, Some(notes.clone())).await?;
    let names: Vec<String> = (0..f).map(|i| format!("friend{i:03}")).collect();
    futures::stream::iter(friends.iter().zip(&names))
        .map(|(c, name)| async move { expect(c.request(register(name)).await?, is_session) })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;

    // The subject befriends every friend, then goes offline.
    let subject = connect(server, usize::MAX, None).await?;
    expect(subject.request(register(SUBJECT)).await?, is_session)?;
    for name in &names {
        let add = BootstrapRequest::FriendAdd { user: name.clone() };
        expect(subject.request(add).await?, is_done)?;
    }
    futures::stream::iter(&friends)
        .map(|c| async move {
            let accept = BootstrapRequest::FriendAccept {
                user: SUBJECT.into(),
            };
            expect(c.request(accept).await?, is_done)
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    subject.close().await;
    let warm = hear_presence(&mut rx, f, false).await;
    ensure!(
        warm.count() == f,
        "only {} of {f} friends heard the subject go offline after befriending",
        warm.count()
    );

    let (mut online, mut offline, mut reconnect) = (Vec::new(), Vec::new(), Vec::new());
    let mut answered = Vec::new();
    // Per round: the last friend's note minus the moment the bench saw the `Login` answer, in
    // ms (negative when the notes beat the answer back to the bench).
    let mut last_after_answer = Vec::new();
    let mut rounds_on = Vec::new();
    let mut rounds_off = Vec::new();
    let mut rounds_re = Vec::new();
    for round in 0..args.presence_rounds {
        eprintln!("  presence round {}…", round + 1);
        // A new device logs in.
        let subject = connect(server, usize::MAX, None).await?;
        let sent = Instant::now();
        expect(subject.request(login(SUBJECT, PASSWORD)).await?, is_session)?;
        let answer = Instant::now();
        answered.push(answer - sent);
        let heard = hear_presence(&mut rx, f, true).await;
        online.extend(heard.latencies(sent));
        if let Some(last) = heard.at.iter().flatten().max() {
            let ms = if *last >= answer {
                (*last - answer).as_secs_f64()
            } else {
                -(answer - *last).as_secs_f64()
            };
            last_after_answer.push(ms * 1000.0);
        }
        rounds_on.push(heard);

        // Its connection closes.
        let device = subject.keypair().clone();
        let closed = Instant::now();
        subject.close().await;
        let heard = hear_presence(&mut rx, f, false).await;
        offline.extend(heard.latencies(closed));
        rounds_off.push(heard);

        // The same (logged-in) device comes back: no login, just a connection.
        let dialled = Instant::now();
        let subject = Client::connect(usize::MAX, device, &server.addr, server.peer, None).await?;
        let heard = hear_presence(&mut rx, f, true).await;
        reconnect.extend(heard.latencies(dialled));
        rounds_re.push(heard);
        subject.close().await;
        let gone = hear_presence(&mut rx, f, false).await;
        ensure!(
            gone.count() == f,
            "after the reconnect, only {} of {f} friends heard the subject go offline",
            gone.count()
        );
    }

    let on: Vec<&Heard> = rounds_on.iter().collect();
    let off: Vec<&Heard> = rounds_off.iter().collect();
    let re: Vec<&Heard> = rounds_re.iter().collect();
    let answered = Summary::of(&answered).context("no rounds")?;
    let last = last_after_answer
        .iter()
        .map(|ms| format!("{ms:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    rows.push(Row::new(
        format!(
            "Presence online: `Login` sent → each of {f} friends' `Presence {{ online: true }}`"
        ),
        &online,
        format!("**{}**", received(&on, f)),
        format!(
            "{} rounds, a new device each; `Login` answered in p50 {} ms (argon2id); the last \
             friend's note came {last} ms after the bench saw the answer (per round){}",
            args.presence_rounds,
            ms(answered.p50),
            anomalies(&on)
        ),
    ));
    rows.push(Row::new(
        format!("Presence offline: connection closed → each of {f} friends' `Presence {{ online: false }}`"),
        &offline,
        format!("**{}**", received(&off, f)),
        format!(
            "the subject's swarm dropped (TCP close); no ping timeout involved{}",
            anomalies(&off)
        ),
    ));
    rows.push(Row::new(
        format!(
            "Presence online: a logged-in device reconnects (dial → each of {f} friends' note)"
        ),
        &reconnect,
        format!("**{}**", received(&re, f)),
        format!(
            "no request: the server looks the device up when it connects; includes the \
             dial and handshake{}",
            anomalies(&re)
        ),
    ));
    if notes.lost() > 0 {
        bail!(
            "{} notifications did not fit in the bench's queue",
            notes.lost()
        );
    }
    Ok(())
}

// ---- main ---------------------------------------------------------------------------------

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs one section within [`SECTION_TIMEOUT`]; a failure becomes a row and the next runs.
async fn section(rows: &mut Vec<Row>, name: &str, run: impl Future<Output = Result<Vec<Row>>>) {
    eprintln!("{name}…");
    match timeout(SECTION_TIMEOUT, run).await {
        Ok(Ok(section)) => rows.extend(section),
        Ok(Err(e)) => rows.push(Row::failed(name, &e)),
        Err(_) => rows.push(Row::failed(
            name,
            &anyhow!("did not finish within {SECTION_TIMEOUT:?}"),
        )),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let binary = match &args.server {
        Some(path) => path.clone(),
        None => {
            eprintln!("building confab-bootstrap (release)…");
            server::build().await?
        }
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_at_start = load_average();
    eprintln!(
        "bench-bootstrap: server {}, {cores} cores",
        binary.display()
    );

    let mut rows = Vec::new();
    section(
        &mut rows,
        "baseline and logins",
        baseline_and_logins(&binary, &args),
    )
    .await;
    section(&mut rows, "presence fan-out", presence(&binary, &args)).await;
    section(
        &mut rows,
        "wrong passwords",
        wrong_passwords(&binary, &args),
    )
    .await;
    section(&mut rows, "connected clients", connections(&binary, &args)).await;

    print_table(&rows);
    println!();
    println!(
        "- argon2id m={ARGON2_MEMORY_KIB} KiB, t={ARGON2_PASSES}, p={ARGON2_LANES}; \
         the server hashes at most {MAX_CONCURRENT_HASHES} passwords at once and queues \
         {MAX_QUEUED_HASHES} more (beyond that: Throttled)"
    );
    println!(
        "- server limits: {MAX_STREAMS_PER_CONNECTION} request streams per connection, \
         {MAX_CONCURRENT_REQUESTS} requests in progress, {MAX_PENDING_INCOMING} pending \
         handshakes, back-off after {THROTTLE_FREE_FAILURES} failed logins per account and per \
         address, ping every {} s",
        PING_INTERVAL.as_secs()
    );
    println!(
        "- one server process per section, fresh data dir, 127.0.0.1 TCP only, mDNS off; \
         all clients in this process; {cores} cores; open-files limit {}",
        server::open_files_limit(None).map_or("unknown".into(), |l| l.to_string())
    );
    println!(
        "- load average (1, 5, 15 min) when the sections started: {load_at_start}; at the end: {} \
         (anything else running on the machine competes with argon2 for the cores)",
        load_average()
    );
    Ok(())
}
