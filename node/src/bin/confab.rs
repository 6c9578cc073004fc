//! `confab`: the Confab node on the command line — an interactive chat, one-shot commands, and
//! `confab rpc`, the JSON-RPC interface for scripts and bots (see `docs/rpc.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use confab_node::{Client, Config, Conversation, DeliveryState, Event, Message, rpc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

#[derive(Debug, Parser)]
#[command(
    name = "confab",
    version,
    about = "Peer-assisted chat for LANs and the internet"
)]
struct Cli {
    /// Where this device keeps its key, history and peers [default: the platform's data dir]
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Your display name (remembered in the data dir)
    #[arg(long, global = true)]
    name: Option<String>,
    /// Listen on this multiaddr (repeatable) [default: all interfaces, TCP and QUIC, any port]
    #[arg(long = "listen", global = true, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Connect to this bootstrap (repeatable; include /p2p/<peer id>)
    #[arg(long = "bootstrap", global = true, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Do not use mDNS (also: CONFAB_NO_MDNS=1)
    #[arg(long, global = true)]
    no_mdns: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// JSON-RPC 2.0 on stdin/stdout, one object per line (see docs/rpc.md)
    Rpc,
    /// Chat interactively in the terminal
    Chat,
    /// Print this device's peer id, name and addresses
    Whoami,
    /// List known peers (waits a moment for discovery first)
    Peers {
        /// Seconds to wait for discovery
        #[arg(long, default_value_t = 2)]
        wait: u64,
    },
    /// Send one message and wait for the peer's acknowledgement
    Send {
        /// peer:<peer id> or broadcast
        #[arg(long)]
        to: String,
        /// The text
        #[arg(long)]
        text: String,
        /// Dial this multiaddr first (repeatable)
        #[arg(long, value_name = "MULTIADDR")]
        dial: Vec<String>,
        /// Seconds to wait for delivery
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Print a conversation's history
    History {
        /// The conversation (peer:<peer id> or broadcast)
        #[arg(long)]
        with: String,
        /// At most this many of the latest messages
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("confab: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(cli: &Cli) -> Result<Config> {
    let data_dir = match &cli.data_dir {
        Some(d) => d.clone(),
        None => Config::default_data_dir().context("no home directory: pass --data-dir")?,
    };
    let mut config = Config::new(data_dir);
    config.name = cli.name.clone();
    if !cli.listen.is_empty() {
        config.listen = cli.listen.clone();
    }
    config.bootstrap = cli.bootstrap.clone();
    config.mdns = !(cli.no_mdns || Config::mdns_disabled_by_env());
    Ok(config)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = config(&cli)?;
    let data_dir = config.data_dir.clone();
    let client = confab_node::start(config)
        .await
        .with_context(|| format!("starting the node in {}", data_dir.display()))?;
    let outcome = match cli.command {
        Command::Rpc => {
            let stdin = BufReader::new(tokio::io::stdin());
            rpc::serve(client.clone(), stdin, tokio::io::stdout())
                .await
                .context("serving JSON-RPC")?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Chat => chat(&client).await,
        Command::Whoami => whoami(&client).await,
        Command::Peers { wait } => {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            peers(&client).await
        }
        Command::Send {
            to,
            text,
            dial,
            timeout,
        } => send(&client, &to, &text, &dial, Duration::from_secs(timeout)).await,
        Command::History { with, limit } => history(&client, &with, limit).await,
    };
    client.shutdown().await.context("stopping the node")?;
    outcome
}

async fn whoami(client: &Client) -> Result<ExitCode> {
    let me = client.whoami().await?;
    println!("peer id: {}", me.peer_id);
    println!("name:    {}", me.name);
    for addr in me.listen_addrs {
        println!("listen:  {addr}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn peers(client: &Client) -> Result<ExitCode> {
    let list = client.peers().await?;
    if list.is_empty() {
        println!("no peers known yet");
    }
    for p in list {
        println!(
            "{} {:<20} {:<6} {}",
            if p.connected { "●" } else { "○" },
            p.name.as_deref().unwrap_or("?"),
            p.source,
            p.peer_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn send(
    client: &Client,
    to: &str,
    text: &str,
    dial: &[String],
    timeout: Duration,
) -> Result<ExitCode> {
    let to: Conversation = to.parse()?;
    for addr in dial {
        client
            .dial(addr)
            .await
            .with_context(|| format!("dialling {addr}"))?;
    }
    let mut events = client.subscribe();
    let id = client.send(&to, text).await?;
    let delivered = tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(Event::Delivery { id: got, state })
                    if got == id && state >= DeliveryState::Sent =>
                {
                    return true;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    if delivered {
        println!("{id} sent");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{id} pending");
        eprintln!(
            "confab: not delivered yet; it stays in the outbox and is retried whenever confab runs"
        );
        Ok(ExitCode::from(3))
    }
}

fn short(peer_id: &str) -> &str {
    &peer_id[peer_id.len().saturating_sub(6)..]
}

fn print_message(m: &Message) {
    let text = m.text.as_deref().unwrap_or("");
    // The account is shown only when the sender's certificate proved it.
    let from = match &m.from.user {
        Some(user) => format!("{} (user:{user})", m.from.name),
        None => m.from.name.clone(),
    };
    match (&m.conversation, m.outgoing) {
        (Conversation::Broadcast, false) => println!("[all] {from}: {text}"),
        (Conversation::Broadcast, true) => println!("[all] you: {text}"),
        (Conversation::Peer(p), true) => println!("[dm → …{}] you: {text}", short(p)),
        (_, false) => println!("[dm] {from}: {text}"),
        (other, true) => println!("[{other}] you: {text}"),
    }
}

async fn history(client: &Client, with: &str, limit: usize) -> Result<ExitCode> {
    let with: Conversation = with.parse()?;
    for m in client.history(&with, limit).await? {
        print_message(&m);
    }
    Ok(ExitCode::SUCCESS)
}

const CHAT_HELP: &str = "\
/peers              who is around
/dial MULTIADDR     connect to a peer by address
/to ADDRESS         talk to peer:<peer id> (or a number from /peers) or broadcast
/history [N]        the last N messages of the current conversation
/quit               leave (Ctrl-D works too)
anything else       is sent to the current conversation";

async fn chat(client: &Client) -> Result<ExitCode> {
    let me = client.whoami().await?;
    println!(
        "You are {} ({}). Type /help for commands; you are talking to everyone (broadcast).",
        me.name, me.peer_id
    );
    let mut events = client.subscribe();
    let printer = tokio::spawn(async move {
        let mut names = std::collections::HashMap::new();
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) if !m.outgoing => print_message(&m),
                Ok(Event::PeerDiscovered {
                    name,
                    source,
                    peer_id,
                }) => {
                    println!("* {name} is here ({source}, peer:{peer_id})");
                    names.insert(peer_id, name);
                }
                Ok(Event::PeerLost { peer_id }) => {
                    let name = names
                        .remove(&peer_id)
                        .unwrap_or_else(|| format!("peer:{peer_id}"));
                    println!("* {name} left");
                }
                Ok(Event::Presence { user, online }) => {
                    println!(
                        "* user:{user} is {}",
                        if online { "online" } else { "offline" }
                    )
                }
                Ok(Event::FriendRequest { from }) => println!("* user:{from} asks to be friends"),
                Ok(Event::FriendAdded { user }) => println!("* user:{user} is now a friend"),
                Ok(Event::FriendRemoved { user }) => {
                    println!("* user:{user} is no longer a friend")
                }
                Ok(Event::LoggedOut) => println!("* this device was logged out"),
                Err(broadcast::error::RecvError::Closed) => break,
                _ => {}
            }
        }
    });
    let mut target = Conversation::Broadcast;
    let mut last_peers = Vec::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, arg) = line
            .split_once(' ')
            .map_or((line, ""), |(c, a)| (c, a.trim()));
        let result: Result<()> = async {
            match cmd {
                "/help" => println!("{CHAT_HELP}"),
                "/quit" | "/exit" => bail!("quit"),
                "/peers" => {
                    last_peers = client.peers().await?;
                    if last_peers.is_empty() {
                        println!("No one here yet — is the other device on the same network?");
                    }
                    for (i, p) in last_peers.iter().enumerate() {
                        let state = if p.connected { "online" } else { "offline" };
                        println!(
                            "{:>2}. {} ({state}, {}) peer:{}",
                            i + 1,
                            p.name.as_deref().unwrap_or("?"),
                            p.source,
                            p.peer_id
                        );
                    }
                }
                "/dial" => println!("connected to peer:{}", client.dial(arg).await?),
                "/to" => {
                    target = match arg.parse::<usize>() {
                        Ok(n) if n >= 1 && n <= last_peers.len() => {
                            Conversation::Peer(last_peers[n - 1].peer_id.clone())
                        }
                        _ => arg.parse()?,
                    };
                    println!("now talking to {target}");
                }
                "/history" => {
                    let n = arg.parse().unwrap_or(20);
                    for m in client.history(&target, n).await? {
                        print_message(&m);
                    }
                }
                c if c.starts_with('/') => println!("unknown command {c}; /help lists them"),
                _ => {
                    client.send(&target, line).await?;
                }
            }
            Ok(())
        }
        .await;
        match result {
            Err(e) if e.to_string() == "quit" => break,
            Err(e) => println!("! {e:#}"),
            Ok(()) => {}
        }
    }
    printer.abort();
    Ok(ExitCode::SUCCESS)
}
