#![doc = include_str!("../README.md")]

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use confab_node::{Client, Conversation, Event, MessageId};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm, identity};
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt as _};
use tokio::sync::broadcast;
use tokio::time::timeout;

/// One MiB.
const MIB: usize = 1 << 20;
/// Most time any single setup step (start, dial, shutdown, the message arriving) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most time one transfer (import, fetch, raw run) may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Chunks the raw client keeps in flight.
const RAW_IN_FLIGHT: usize = 16;
/// The raw baseline's protocol.
const RAW_PROTOCOL: &str = "/bench-files/raw/1";

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks file transfer between two nodes beside raw request-response")]
struct Args {
    /// Size of the file (and of the raw transfer), in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=16_384))]
    size_mib: u64,
}

// ---- results ------------------------------------------------------------------------------

/// One line of the table.
struct Row {
    transport: &'static str,
    what: String,
    mib: Option<u64>,
    elapsed: Option<Duration>,
    /// The MiB/s of the raw row of the same transport, for the ratio column.
    raw_rate: Option<f64>,
    rss: String,
    notes: String,
}

impl Row {
    fn new(transport: &'static str, what: impl Into<String>, mib: u64, elapsed: Duration) -> Self {
        Row {
            transport,
            what: what.into(),
            mib: Some(mib),
            elapsed: Some(elapsed),
            raw_rate: None,
            rss: String::new(),
            notes: String::new(),
        }
    }

    fn failed(transport: &'static str, what: impl Into<String>, error: &anyhow::Error) -> Self {
        Row {
            transport,
            what: what.into(),
            mib: None,
            elapsed: None,
            raw_rate: None,
            rss: String::new(),
            notes: format!("**failed**: {error:#}"),
        }
    }

    fn rate(&self) -> Option<f64> {
        match (self.mib, self.elapsed) {
            (Some(n), Some(d)) if !d.is_zero() => Some(n as f64 / d.as_secs_f64()),
            _ => None,
        }
    }

    fn print(&self) {
        let mib = self.mib.map(|n| n.to_string()).unwrap_or_default();
        let time = self
            .elapsed
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .unwrap_or_default();
        let rate = self.rate().map(|r| format!("{r:.1}")).unwrap_or_default();
        let ratio = match (self.rate(), self.raw_rate) {
            (Some(r), Some(raw)) if raw > 0.0 => format!("{:.2}", r / raw),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.transport, self.what, mib, time, rate, ratio, self.rss, self.notes
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// This process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); false where that is not allowed.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Measures `f` with the peak RSS reset before (where possible) and read before and after.
async fn with_rss<T>(f: impl Future<Output = T>) -> (T, String) {
    let reset = reset_peak_rss();
    let before = peak_rss_mib();
    let out = f.await;
    let after = peak_rss_mib();
    let show = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into());
    let rss = format!(
        "{} → {}{}",
        show(before),
        show(after),
        if reset { "" } else { " (not reset)" }
    );
    (out, rss)
}

// ---- files ----------------------------------------------------------------------------------

/// Writes `mib` MiB of random bytes to `path`, 1 MiB at a time.
fn write_random(path: &Path, mib: u64) -> io::Result<()> {
    let mut file = io::BufWriter::with_capacity(MIB, std::fs::File::create(path)?);
    let mut buf = vec![0u8; MIB];
    let mut rng = rand::rng();
    for _ in 0..mib {
        rng.fill_bytes(&mut buf);
        file.write_all(&buf)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The BLAKE3 hash of the file at `path`, streamed 1 MiB at a time.
fn hash_file(path: &Path) -> io::Result<blake3::Hash> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

// ---- confab: two nodes -------------------------------------------------------------------------

async fn node(dir: &Path, name: &str, listen: &str) -> Result<Client> {
    let mut config = confab_node::Config::new(dir);
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec![listen.into()];
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

/// Waits for the incoming message `id` (with its attachment) at the receiver.
async fn wait_for_message(events: &mut broadcast::Receiver<Event>, id: MessageId) -> Result<()> {
    timeout(STEP_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) if m.id == id && !m.outgoing => {
                    ensure!(m.attachment.is_some(), "the message has no attachment");
                    return Ok(());
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => bail!("the receiver stopped"),
            }
        }
    })
    .await
    .context("the file's message never arrived")?
}

/// The sender side, run as a child process of its own (so each side's peak RSS is its own):
/// `bench-files --sender-child <listen> <dir> <file> <receiver addr>`. It starts a node, dials
/// the receiver, `send_file`s the file to it and prints `SENT <id> <import seconds> <import peak
/// RSS MiB>`; then it serves the file until a line (or EOF) on stdin, prints `PEAK <serving peak
/// RSS MiB>` and stops.
async fn sender_child(args: &[String]) -> Result<()> {
    let [listen, dir, file, receiver_addr] = args else {
        bail!("usage: --sender-child <listen> <dir> <file> <receiver addr>");
    };
    let sender = node(Path::new(dir), "sender", listen).await?;
    let result = async {
        let receiver_id = timeout(STEP_TIMEOUT, sender.dial(receiver_addr))
            .await
            .context("dialling the receiver timed out")??;
        reset_peak_rss();
        let t0 = Instant::now();
        let id = timeout(
            TRANSFER_TIMEOUT,
            sender.send_file(&Conversation::Peer(receiver_id), Path::new(file), None),
        )
        .await
        .context("send_file timed out")??;
        let import = t0.elapsed();
        let import_peak = peak_rss_mib().unwrap_or(f64::NAN);
        println!("SENT {id} {} {import_peak:.1}", import.as_secs_f64());
        reset_peak_rss();
        let mut line = String::new();
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        timeout(TRANSFER_TIMEOUT, stdin.read_line(&mut line))
            .await
            .context("never told to stop")??;
        println!("PEAK {:.1}", peak_rss_mib().unwrap_or(f64::NAN));
        Ok(())
    }
    .await;
    shutdown(&sender).await?;
    result
}

/// The sender child of one transport.
struct SenderChild {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl SenderChild {
    fn spawn(listen: &str, dir: &Path, file: &Path, receiver_addr: &str) -> Result<Self> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .arg("--sender-child")
            .arg(listen)
            .arg(dir)
            .arg(file)
            .arg(receiver_addr)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the sender process")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// The next line starting with `tag`, split into its fields after the tag.
    async fn expect(&mut self, tag: &str, within: Duration) -> Result<Vec<String>> {
        timeout(within, async {
            loop {
                let Some(line) = self.lines.next_line().await? else {
                    bail!("the sender process ended before {tag}");
                };
                if let Some(rest) = line.strip_prefix(tag) {
                    return Ok(rest.split_whitespace().map(str::to_owned).collect());
                }
            }
        })
        .await
        .with_context(|| format!("no {tag} from the sender process"))?
    }

    /// Tells it to stop; returns its serving peak RSS (MiB).
    async fn stop(mut self) -> Result<f64> {
        if let Some(mut stdin) = self.child.stdin.take() {
            stdin.write_all(b"stop\n").await?;
        }
        let peak = self.expect("PEAK", STEP_TIMEOUT).await?;
        let status = timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .context("the sender process did not exit")??;
        ensure!(status.success(), "the sender process exited with {status}");
        Ok(peak
            .first()
            .and_then(|p| p.parse().ok())
            .unwrap_or(f64::NAN))
    }
}

/// The send_file and fetch_file rows of one transport: the receiver in this process, the sender
/// in a child process.
async fn confab_rows(transport: &'static str, listen: &str, mib: u64) -> Result<Vec<Row>> {
    let work = tempfile::tempdir()?;
    let source = work.path().join("random.bin");
    eprintln!("{transport}: writing {mib} MiB of random bytes");
    {
        let source = source.clone();
        blocking(move || write_random(&source, mib)).await?;
    }
    let source_hash = {
        let source = source.clone();
        blocking(move || hash_file(&source)).await?
    };

    let (sender_dir, receiver_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let receiver = node(receiver_dir.path(), "receiver", listen).await?;
    let result = transfer(
        transport,
        listen,
        sender_dir.path(),
        &receiver,
        &source,
        source_hash,
        work.path(),
        mib,
    )
    .await;
    let stop_receiver = shutdown(&receiver).await;
    let rows = result?;
    stop_receiver?;
    Ok(rows)
}

#[allow(clippy::too_many_arguments)]
async fn transfer(
    transport: &'static str,
    listen: &str,
    sender_dir: &Path,
    receiver: &Client,
    source: &Path,
    source_hash: blake3::Hash,
    work: &Path,
    mib: u64,
) -> Result<Vec<Row>> {
    let me = receiver.whoami().await?;
    let receiver_addr = me
        .listen_addrs
        .into_iter()
        .next()
        .context("the receiver listens nowhere")?;
    let mut events = receiver.subscribe();

    eprintln!("{transport}: send_file (sender process)");
    let mut sender = SenderChild::spawn(listen, sender_dir, source, &receiver_addr)?;
    let sent = sender.expect("SENT", TRANSFER_TIMEOUT).await?;
    let [id, import_secs, import_peak] = sent.as_slice() else {
        bail!("a bad SENT line: {sent:?}");
    };
    let id: MessageId = id.parse().map_err(|e| anyhow!("a bad message id: {e:?}"))?;
    let import = Duration::from_secs_f64(import_secs.parse()?);
    let mut rows = vec![{
        let mut row = Row::new(transport, "confab `send_file` (import)", mib, import);
        row.rss = format!("sender {import_peak}");
        row.notes = "hashing + copy into the sender's blob store; from call to return".into();
        row
    }];

    wait_for_message(&mut events, id).await?;

    eprintln!("{transport}: fetch_file");
    let dest = work.join("fetched");
    let progress = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            match events.recv().await {
                Ok(Event::TransferProgress { id: of, .. }) if of == id => n += 1,
                Ok(Event::TransferComplete { .. }) | Err(broadcast::error::RecvError::Closed) => {
                    return n;
                }
                _ => {}
            }
        }
    });
    let t0 = Instant::now();
    let (fetched, fetch_rss) =
        with_rss(timeout(TRANSFER_TIMEOUT, receiver.fetch_file(id, &dest))).await;
    let elapsed = t0.elapsed();
    let sender_peak = sender.stop().await?;
    let progress_events = timeout(Duration::from_secs(2), progress)
        .await
        .ok()
        .and_then(|r| r.ok());
    let path: PathBuf = fetched.context("fetch_file timed out")??;
    let fetched_hash = {
        let path = path.clone();
        blocking(move || hash_file(&path)).await?
    };
    let identical = fetched_hash == source_hash;
    let mut row = Row::new(transport, "confab `fetch_file`", mib, elapsed);
    row.rss = format!("receiver {fetch_rss}; sender {sender_peak:.0}");
    row.notes = format!(
        "from call to return; BLAKE3 {}; {} `TransferProgress` events",
        if identical {
            "identical"
        } else {
            "**DIFFERS**"
        },
        progress_events
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into()),
    );
    rows.push(row);
    ensure!(identical, "the fetched file differs from the source");
    Ok(rows)
}

// ---- raw libp2p baseline -----------------------------------------------------------------------

/// Requests are a chunk index (8 bytes); responses are the chunk (at most 2 MiB).
#[derive(Clone, Default)]
struct ChunkCodec;

impl request_response::Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = u64;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        io.read_exact(&mut buf).await?;
        Ok(u64::from_be_bytes(buf))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(MIB);
        io.take(2 * MIB as u64).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: u64,
    ) -> io::Result<()> {
        io.write_all(&req.to_be_bytes()).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

type Raw = request_response::Behaviour<ChunkCodec>;

fn raw_swarm(support: ProtocolSupport) -> Result<Swarm<Raw>> {
    confab_node::net::build_swarm(
        identity::Keypair::generate_ed25519(),
        Duration::from_secs(60),
        |_| {
            Ok(request_response::Behaviour::with_codec(
                ChunkCodec,
                [(StreamProtocol::new(RAW_PROTOCOL), support)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
            ))
        },
    )
    .map_err(|e| anyhow!("building a swarm: {e}"))
}

async fn raw_row(transport: &'static str, listen: &str, mib: u64) -> Result<Row> {
    let mut server = raw_swarm(ProtocolSupport::Inbound)?;
    let mut client = raw_swarm(ProtocolSupport::Outbound)?;
    server.listen_on(listen.parse()?)?;
    let addr: Multiaddr = timeout(STEP_TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .context("the raw server never listened")?;
    let server_id = *server.local_peer_id();

    // The server answers every request with the same 1 MiB from memory.
    let serve = tokio::spawn(async move {
        let mut chunk = vec![0u8; MIB];
        rand::rng().fill_bytes(&mut chunk);
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = server.select_next_some().await
            {
                let _ = server.behaviour_mut().send_response(channel, chunk.clone());
            }
        }
    });

    client.dial(addr.with(libp2p::multiaddr::Protocol::P2p(server_id)))?;
    let result = timeout(STEP_TIMEOUT, async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => return Ok(()),
                SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial: {error}"),
                _ => {}
            }
        }
    })
    .await
    .context("connecting to the raw server timed out")
    .and_then(|r| r);
    if let Err(e) = result {
        serve.abort();
        return Err(e);
    }

    eprintln!("{transport}: raw request-response, {mib} × 1 MiB, {RAW_IN_FLIGHT} in flight");
    let t0 = Instant::now();
    let (received, rss) = with_rss(timeout(TRANSFER_TIMEOUT, async {
        let mut next = 0u64;
        let mut pending = std::collections::HashSet::<OutboundRequestId>::new();
        let mut bytes = 0u64;
        let mut done = 0u64;
        while done < mib {
            while pending.len() < RAW_IN_FLIGHT && next < mib {
                pending.insert(client.behaviour_mut().send_request(&server_id, next));
                next += 1;
            }
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if pending.remove(&request_id) => {
                    ensure!(response.len() == MIB, "a chunk of {} bytes", response.len());
                    bytes += response.len() as u64;
                    done += 1;
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    bail!("a request failed: {error}")
                }
                _ => {}
            }
        }
        Ok(bytes)
    }))
    .await;
    let elapsed = t0.elapsed();
    serve.abort();
    let bytes = received.context("the raw transfer timed out")??;
    ensure!(bytes == mib * MIB as u64, "received {bytes} bytes");
    let mut row = Row::new(transport, "raw request-response", mib, elapsed);
    row.rss = rss;
    row.notes = format!(
        "1 MiB chunks from memory, {RAW_IN_FLIGHT} in flight, no disk, no hashing; one stream per chunk"
    );
    Ok(row)
}

// ---- main ----------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--sender-child") {
        return sender_child(&argv[2..]).await;
    }
    let args = Args::parse();
    let mib = args.size_mib;
    eprintln!("load average at start: {}", load_average());
    let transports: [(&'static str, &str); 2] = [
        ("TCP", "/ip4/127.0.0.1/tcp/0"),
        ("QUIC", "/ip4/127.0.0.1/udp/0/quic-v1"),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for (transport, listen) in transports {
        let mut these = match confab_rows(transport, listen, mib).await {
            Ok(r) => r,
            Err(e) => vec![Row::failed(transport, "confab send_file + fetch_file", &e)],
        };
        let raw = raw_row(transport, listen, mib)
            .await
            .unwrap_or_else(|e| Row::failed(transport, "raw request-response", &e));
        if let Some(raw_rate) = raw.rate() {
            for row in &mut these {
                if row.what.contains("fetch_file") {
                    row.raw_rate = Some(raw_rate);
                }
            }
        }
        rows.extend(these);
        rows.push(raw);
    }

    println!(
        "| Transport | What | MiB | Time (s) | MiB/s | Ratio confab/raw | Peak RSS MiB | Notes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        row.print();
    }
    println!();
    println!(
        "- peak RSS is `VmHWM` of each side's own process: the sender runs in a child process, the receiver (and both raw swarms) in this one. It is reset (`/proc/self/clear_refs` = 5) before each step; `receiver a → b` is this process's peak before and after the fetch, `sender` the child's peak while importing (import row) and while serving the fetch (fetch row)."
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
