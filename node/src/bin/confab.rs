//! `confab`: the Confab node on the command line — an interactive chat, one-shot commands, and
//! `confab rpc`, the JSON-RPC interface for scripts and bots (see `docs/rpc.md`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use confab_node::{
    Client, Config, Conversation, DeliveryState, Event, FriendError, Friends, LoginError,
    LogoutError, Message, PeerInfo, ProfileGetError, ProfileSetError, RegisterError, Role,
    SearchError, rpc,
};
use confab_protocol::bootstrap::normalize_username;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
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
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("confab: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The node is stopped by now. A chat left with Ctrl-C may still be blocked reading stdin (a
    // read that cannot be cancelled): do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
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
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(Event::Delivery { id: got, state })
                    if got == id && (state.is_sent() || state == DeliveryState::Failed) =>
                {
                    return Some(state);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(None);
    if outcome.is_some_and(DeliveryState::is_sent) {
        println!("{id} sent");
        Ok(ExitCode::SUCCESS)
    } else if outcome == Some(DeliveryState::Failed) {
        println!("{id} failed");
        eprintln!(
            "confab: the bootstrap refused the message for good (unknown user or full mailbox)"
        );
        Ok(ExitCode::FAILURE)
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
        (Conversation::Group(g), false) => println!("[group …{}] {from}: {text}", short(g)),
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
/to ADDRESS         talk to peer:<peer id> (or a number from /peers), user:<name> or broadcast
/history [N]        the last N messages of the current conversation
                    (both mark the conversation read: its authors see it as read)
/whoami             this device: peer id, name and account

Accounts (kept by the bootstrap):
/register USER      create an account and log in (asks for a password twice)
/login USER         log in (asks for the password)
/logout             log this device out
/profile [USER]     your profile, or USER's
/nick NAME          set your nickname
/status [TEXT]      set your status line (without TEXT: clear it)
/avatar PATH        set your avatar (a PNG, JPEG, GIF or WebP file)
/search TEXT        find people by username or nickname
/friends            your friends (● online, ○ offline) and pending requests
/add USER           ask USER to be friends (accepts, if they asked you)
/accept USER        accept USER's friend request
/remove USER        end a friendship, or withdraw or decline a request

Settings (the same on every device of the account):
/dnd on|off         do-not-disturb: no alerts
/mute [ADDRESS]     no alerts from a conversation (default: the current one); /unmute
/block ADDRESS      refuse user:<name> or group:<id>; /unblock

Groups (kept by the bootstrap):
/groups             your groups
/group NAME [USER...]  create a group with these members (you own it) and talk to it
/invite USER        add USER to the current group (owners and admins)
/kick USER          remove USER from the current group
/leave              leave the current group

/quit               leave (Ctrl-D and Ctrl-C work too)
anything else       is sent to the current conversation

Passwords are read from the terminal without echo; when the input is not a terminal, each is
read from the next input line.";

/// The chat's input: stdin, line by line.
type Input = Lines<BufReader<tokio::io::Stdin>>;

/// What the chat does after a command.
enum Flow {
    Continue,
    Quit,
}

/// The interactive chat: its state between commands.
struct Chat<'a> {
    client: &'a Client,
    input: Input,
    /// Whether stdin is a terminal: passwords are then read from it without echo; otherwise they
    /// are the next input lines.
    tty: bool,
    /// Where plain lines go.
    target: Conversation,
    /// The last `/peers` list, for `/to N`.
    last_peers: Vec<PeerInfo>,
    own: OwnChanges,
}

async fn chat(client: &Client) -> Result<ExitCode> {
    let me = client.whoami().await?;
    let account = match &me.user {
        Some(user) => format!(", logged in as {user}"),
        None => String::new(),
    };
    println!(
        "You are {} ({}){account}. Type /help for commands; you are talking to everyone (broadcast).",
        me.name, me.peer_id
    );
    let own = OwnChanges::default();
    let printer = tokio::spawn(print_events(
        client.subscribe(),
        own.clone(),
        client.peer_id().to_owned(),
    ));
    let mut chat = Chat {
        client,
        input: BufReader::new(tokio::io::stdin()).lines(),
        tty: std::io::stdin().is_terminal(),
        target: Conversation::Broadcast,
        last_peers: Vec::new(),
        own,
    };
    let outcome = chat.run().await;
    printer.abort();
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Prints what happens while the chat runs, one `* ...` line each (messages as in `history`;
/// this device's own only when written on another device of the account).
async fn print_events(mut events: broadcast::Receiver<Event>, own: OwnChanges, me: String) {
    let mut names = HashMap::new();
    loop {
        match events.recv().await {
            Ok(Event::Message(m)) if !m.outgoing || m.from.peer_id != me => print_message(&m),
            Ok(Event::OfflineSummary { senders, total }) => {
                let who: Vec<String> = senders
                    .iter()
                    .map(|(conversation, n)| format!("{conversation} {n}"))
                    .collect();
                println!(
                    "* while you were away: {total} messages ({})",
                    who.join(", ")
                );
            }
            Ok(Event::Delivery {
                id,
                state: DeliveryState::Failed,
            }) => println!("* message {id} could not be delivered (unknown user or full mailbox)"),
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
                println!("* {user} is {}", if online { "online" } else { "offline" });
            }
            Ok(Event::FriendRequest { from }) => {
                println!("* {from} wants to be your friend — /accept {from}");
            }
            // Not the echo of this chat's own command.
            Ok(Event::FriendAdded { user }) if !own.take(FriendChange::Added, &user) => {
                println!("* you and {user} are now friends");
            }
            // Not the echo of this chat's own command.
            Ok(Event::FriendRemoved { user }) if !own.take(FriendChange::Removed, &user) => {
                println!("* {user} removed you");
            }
            Ok(Event::GroupInvited { group, name }) => {
                println!("* you are in group {name} now — /to group:{group}");
            }
            Ok(Event::GroupMemberAdded { group, user }) => {
                println!("* {user} joined group:{group}");
            }
            Ok(Event::GroupMemberRemoved { group, user }) => {
                println!("* {user} left group:{group}");
            }
            Ok(Event::GroupUpdated { group, name }) => {
                println!("* group:{group} is now {name}");
            }
            Ok(Event::LoggedOut) => {
                println!("* this device was logged out — /login USER to log in again");
            }
            Err(broadcast::error::RecvError::Closed) => break,
            _ => {}
        }
    }
}

/// A change to a friendship, as the bootstrap reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FriendChange {
    Added,
    Removed,
}

/// Friend changes made by this chat's own commands. The bootstrap tells both sides of a change,
/// this device included; the command has already said what happened, so the printer skips the
/// echo (and prints "bob removed you" only when bob did).
#[derive(Debug, Clone, Default)]
struct OwnChanges(Arc<Mutex<Vec<(FriendChange, String, Instant)>>>);

/// How long the echo of an own change is waited for; an event after that is printed after all.
const OWN_CHANGE_ECHO_WAIT: Duration = Duration::from_secs(30);

impl OwnChanges {
    fn pending(&self) -> MutexGuard<'_, Vec<(FriendChange, String, Instant)>> {
        let mut pending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|(_, _, at)| at.elapsed() < OWN_CHANGE_ECHO_WAIT);
        pending
    }

    /// Runs `call`, which makes `change` to the friendship with `user`, so that its echo is not
    /// printed. Registered before the call: the echo may overtake the answer.
    async fn make<T, E>(
        &self,
        change: FriendChange,
        user: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.pending()
            .push((change, user.to_owned(), Instant::now()));
        let result = call.await;
        if result.is_err() {
            self.take(change, user);
        }
        result
    }

    /// Whether an event is the echo of an own change (which it then consumes).
    fn take(&self, change: FriendChange, user: &str) -> bool {
        let mut pending = self.pending();
        match pending
            .iter()
            .position(|(c, u, _)| *c == change && u == user)
        {
            Some(i) => {
                pending.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Where this user stands with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Friends,
    /// They asked this user.
    Incoming,
    /// This user asked them.
    Outgoing,
    Stranger,
}

impl Chat<'_> {
    async fn run(&mut self) -> Result<()> {
        // Ctrl-C leaves like /quit, so the node is shut down cleanly (and a password prompt gives
        // the terminal its echo back first). Without a signal handler it is never ready.
        let interrupted = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(interrupted);
        loop {
            let read = tokio::select! {
                read = self.input.next_line() => read,
                () = &mut interrupted => return Ok(()),
            };
            let line = match read {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    println!("! skipped an input line that is not UTF-8");
                    continue;
                }
                Err(e) => return Err(e).context("reading the input"),
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let result = tokio::select! {
                result = self.command(line) => result,
                () = &mut interrupted => return Ok(()),
            };
            match result {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return Ok(()),
                Err(e) => println!("! {}", describe(&e)),
            }
        }
    }

    /// The person is looking at the current conversation: its messages are read. A failure only
    /// costs the read receipt, so it is reported, not fatal.
    async fn mark_read(&self) {
        if let Err(e) = self.client.mark_read(&self.target).await {
            println!("! cannot mark {} read: {e}", self.target);
        }
    }

    async fn command(&mut self, line: &str) -> Result<Flow> {
        let (cmd, arg) = line
            .split_once(' ')
            .map_or((line, ""), |(c, a)| (c, a.trim()));
        let client = self.client;
        match cmd {
            "/help" => println!("{CHAT_HELP}"),
            "/quit" | "/exit" => return Ok(Flow::Quit),
            "/peers" => self.peers().await?,
            "/dial" => println!("connected to peer:{}", client.dial(arg).await?),
            "/to" => {
                self.target = match arg.parse::<usize>() {
                    Ok(n) if n >= 1 && n <= self.last_peers.len() => {
                        Conversation::Peer(self.last_peers[n - 1].peer_id.clone())
                    }
                    _ => arg.parse()?,
                };
                println!("now talking to {}", self.target);
                self.mark_read().await;
            }
            "/history" => {
                let n = arg.parse().unwrap_or(20);
                for m in client.history(&self.target, n).await? {
                    print_message(&m);
                }
                self.mark_read().await;
            }
            "/whoami" => {
                let me = client.whoami().await?;
                println!("peer id: {}", me.peer_id);
                println!("name:    {}", me.name);
                println!(
                    "user:    {}",
                    me.user.as_deref().unwrap_or("(not logged in)")
                );
                for addr in me.listen_addrs {
                    println!("listen:  {addr}");
                }
            }
            "/register" => self.register(arg).await?,
            "/login" => self.login(arg).await?,
            "/logout" => {
                client.logout().await.context("cannot log out")?;
                println!("logged out");
            }
            "/profile" => self.profile(arg).await?,
            "/nick" => {
                if arg.is_empty() {
                    bail!("usage: /nick NAME");
                }
                client
                    .profile_set(Some(arg.to_owned()), None, None)
                    .await
                    .context("cannot set the nickname")?;
                println!("nickname set to {arg}");
            }
            "/status" => {
                client
                    .profile_set(None, Some(arg.to_owned()), None)
                    .await
                    .context("cannot set the status line")?;
                if arg.is_empty() {
                    println!("status line cleared");
                } else {
                    println!("status line set to {arg}");
                }
            }
            "/avatar" => {
                if arg.is_empty() {
                    bail!("usage: /avatar PATH");
                }
                let path = user_path(arg);
                client
                    .profile_set(None, None, Some(path.clone()))
                    .await
                    .context("cannot set the avatar")?;
                println!("avatar set from {}", path.display());
            }
            "/search" => {
                if arg.is_empty() {
                    bail!("usage: /search TEXT");
                }
                let users = client.search_users(arg).await?;
                if users.is_empty() {
                    println!("nobody matches {arg:?}");
                }
                for u in users {
                    println!("{} {}", dot(u.online), named(&u.user, &u.nickname));
                }
            }
            "/friends" => self.friends().await?,
            "/add" => self.add(arg).await?,
            "/accept" => {
                let user = username(arg, "/accept USER")?;
                self.own
                    .make(FriendChange::Added, &user, client.friend_accept(&user))
                    .await
                    .with_context(|| format!("cannot accept {user}"))?;
                println!("you and {user} are now friends");
            }
            "/remove" => self.remove(arg).await?,
            "/dnd" => {
                let enabled = match arg {
                    "on" => true,
                    "off" => false,
                    _ => bail!("usage: /dnd on|off"),
                };
                client.set_dnd(enabled).await?;
                println!("do-not-disturb is {arg} on every device of this account");
            }
            "/mute" | "/unmute" => {
                let conversation = if arg.is_empty() {
                    self.target.clone()
                } else {
                    arg.parse()?
                };
                client.set_muted(&conversation, cmd == "/mute").await?;
                println!("{conversation} {}d", &cmd[1..]);
            }
            "/block" | "/unblock" => {
                let target: Conversation = arg.parse()?;
                let settings = client.set_blocked(&target, cmd == "/block").await?;
                let list: Vec<String> = settings.blocked.iter().map(ToString::to_string).collect();
                println!(
                    "blocked: {}",
                    if list.is_empty() {
                        "nobody".into()
                    } else {
                        list.join(", ")
                    }
                );
            }
            "/groups" => {
                let me = client.whoami().await?.user.unwrap_or_default();
                let groups = client.groups().await?;
                if groups.is_empty() {
                    println!("no groups yet — /group NAME USER... creates one");
                }
                for g in groups {
                    let role = g.role_of(&me).map_or("member", Role::as_str);
                    println!(
                        "{} (group:{}) — {} members, you are {role}",
                        g.name,
                        g.id,
                        g.members.len()
                    );
                }
            }
            "/group" => {
                let mut words = arg.split_whitespace();
                let Some(name) = words.next() else {
                    bail!("usage: /group NAME [USER...]");
                };
                let members: Vec<&str> = words.collect();
                let group = client.group_create(name, &members).await?;
                self.target = Conversation::Group(group.id.clone());
                println!("created {name} (group:{}); now talking to it", group.id);
            }
            "/invite" | "/kick" | "/leave" => {
                let Conversation::Group(group) = self.target.clone() else {
                    bail!("{cmd} acts on the current conversation: /to group:<id> first");
                };
                match cmd {
                    "/invite" => {
                        client.group_invite(&group, arg).await?;
                        println!("added {arg}");
                    }
                    "/kick" => {
                        client.group_remove(&group, arg).await?;
                        println!("removed {arg}");
                    }
                    _ => {
                        client.group_leave(&group).await?;
                        println!("left group:{group}");
                    }
                }
            }
            c if c.starts_with('/') => println!("unknown command {c}; /help lists them"),
            _ => {
                client.send(&self.target, line).await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn peers(&mut self) -> Result<()> {
        self.last_peers = self.client.peers().await?;
        if self.last_peers.is_empty() {
            println!("No one here yet — is the other device on the same network?");
        }
        for (i, p) in self.last_peers.iter().enumerate() {
            let state = if p.connected { "online" } else { "offline" };
            println!(
                "{:>2}. {} ({state}, {}) peer:{}",
                i + 1,
                p.name.as_deref().unwrap_or("?"),
                p.source,
                p.peer_id
            );
        }
        Ok(())
    }

    /// Reads a password: from the terminal without echo, or else from the next input line.
    async fn read_password(&mut self, prompt: &'static str) -> Result<String> {
        if !self.tty {
            return self
                .input
                .next_line()
                .await
                .context("cannot read the password")?
                .context("no password: the input ended");
        }
        // rpassword reads /dev/tty with blocking calls.
        let read = tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
            .await
            .context("the password prompt failed")?;
        match read {
            Ok(password) => Ok(password),
            // Ctrl-C (which also ends the chat).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => bail!("cancelled"),
            // Ctrl-D, which leaves the prompt's line open.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                println!();
                bail!("cancelled")
            }
            Err(e) => Err(e).context("cannot read the password from the terminal"),
        }
    }

    async fn register(&mut self, arg: &str) -> Result<()> {
        // Without a terminal the passwords are the next input lines: they are read even after a
        // bad command, so that they are never taken for commands or messages.
        let user = match username(arg, "/register USER") {
            Err(e) if self.tty => return Err(e),
            user => user,
        };
        let password = self.read_password("New password: ").await?;
        let again = self.read_password("Repeat the password: ").await?;
        let user = user?;
        if password.is_empty() {
            bail!("no password given; no account was created");
        }
        if password != again {
            bail!("the passwords differ; no account was created");
        }
        let user = self
            .client
            .register(&user, &password)
            .await
            .with_context(|| format!("cannot register {user}"))?;
        println!("account {user} created; logged in as {user}");
        Ok(())
    }

    async fn login(&mut self, arg: &str) -> Result<()> {
        let user = match username(arg, "/login USER") {
            Err(e) if self.tty => return Err(e),
            user => user,
        };
        let password = self.read_password("Password: ").await?;
        let user = user?;
        if password.is_empty() {
            bail!("no password given");
        }
        let user = self
            .client
            .login(&user, &password)
            .await
            .with_context(|| format!("cannot log in as {user}"))?;
        println!("logged in as {user}");
        Ok(())
    }

    async fn profile(&self, arg: &str) -> Result<()> {
        let user = if arg.is_empty() {
            match self.client.whoami().await?.user {
                Some(user) => user,
                None => bail!("not logged in — /login USER or /register USER first"),
            }
        } else {
            arg.to_owned()
        };
        let p = self.client.profile_get(&user).await?;
        println!("user:     {}", p.user);
        println!("nickname: {}", p.nickname);
        println!(
            "status:   {}",
            if p.signature.is_empty() {
                "(none)"
            } else {
                &p.signature
            }
        );
        match p.avatar_hash {
            Some(hash) => println!("avatar:   {hash}"),
            None => println!("avatar:   (none)"),
        }
        println!(
            "online:   {} {}",
            dot(p.online),
            if p.online { "yes" } else { "no" }
        );
        Ok(())
    }

    async fn friends(&self) -> Result<()> {
        let Friends {
            mut friends,
            incoming,
            outgoing,
        } = self.client.friends().await?;
        if friends.is_empty() {
            println!("no friends yet — /search TEXT finds people, /add USER asks them");
        } else {
            friends.sort_by(|a, b| (!a.online, &a.user).cmp(&(!b.online, &b.user)));
            let online = friends.iter().filter(|f| f.online).count();
            println!("friends ({online} of {} online):", friends.len());
            for f in &friends {
                let status = if f.signature.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", f.signature)
                };
                println!(
                    "  {} {}{status}",
                    dot(f.online),
                    named(&f.user, &f.nickname)
                );
            }
        }
        if !incoming.is_empty() {
            println!("asking to be your friend:");
            for user in &incoming {
                println!("  {user} — /accept {user} or /remove {user}");
            }
        }
        if !outgoing.is_empty() {
            println!("your requests, not answered yet:");
            for user in &outgoing {
                println!("  {user}");
            }
        }
        Ok(())
    }

    async fn relation(&self, user: &str) -> Result<Relation> {
        let all = self.client.friends().await?;
        Ok(if all.friends.iter().any(|f| f.user == user) {
            Relation::Friends
        } else if all.incoming.iter().any(|u| u == user) {
            Relation::Incoming
        } else if all.outgoing.iter().any(|u| u == user) {
            Relation::Outgoing
        } else {
            Relation::Stranger
        })
    }

    async fn add(&self, arg: &str) -> Result<()> {
        let user = username(arg, "/add USER")?;
        let context = || format!("cannot add {user}");
        match self.relation(&user).await? {
            Relation::Friends => println!("{user} is already your friend"),
            // They asked first: adding them accepts.
            Relation::Incoming => {
                self.own
                    .make(FriendChange::Added, &user, self.client.friend_add(&user))
                    .await
                    .with_context(context)?;
                println!("you and {user} are now friends");
            }
            relation => {
                self.client.friend_add(&user).await.with_context(context)?;
                let again = if relation == Relation::Outgoing {
                    " again"
                } else {
                    ""
                };
                println!("asked {user}{again} to be your friend");
            }
        }
        Ok(())
    }

    async fn remove(&self, arg: &str) -> Result<()> {
        let user = username(arg, "/remove USER")?;
        let done = match self.relation(&user).await? {
            Relation::Friends => format!("you and {user} are no longer friends"),
            Relation::Incoming => format!("declined {user}'s friend request"),
            Relation::Outgoing => format!("withdrew your friend request to {user}"),
            Relation::Stranger => {
                println!("{user} is not your friend, and no request is pending between you");
                return Ok(());
            }
        };
        self.own
            .make(
                FriendChange::Removed,
                &user,
                self.client.friend_remove(&user),
            )
            .await
            .with_context(|| format!("cannot remove {user}"))?;
        println!("{done}");
        Ok(())
    }
}

/// A username argument in canonical form (`Bob` is `bob`).
fn username(arg: &str, usage: &str) -> Result<String> {
    if arg.is_empty() {
        bail!("usage: {usage}");
    }
    normalize_username(arg).with_context(|| format!("invalid username {arg:?}"))
}

/// A path as typed: surrounding quotes (as terminals add when a file is dropped) are removed, and
/// a leading `~/` is the home directory.
fn user_path(arg: &str) -> PathBuf {
    let arg = ['"', '\'']
        .iter()
        .find_map(|&q| arg.strip_prefix(q).and_then(|a| a.strip_suffix(q)))
        .unwrap_or(arg);
    if let Some(rest) = arg.strip_prefix("~/")
        && let Some(dirs) = directories::BaseDirs::new()
    {
        return dirs.home_dir().join(rest);
    }
    PathBuf::from(arg)
}

fn dot(online: bool) -> &'static str {
    if online { "●" } else { "○" }
}

/// `bob (Bob)`, or just `bob` when the nickname says nothing more.
fn named(user: &str, nickname: &str) -> String {
    if nickname.is_empty() || nickname.eq_ignore_ascii_case(user) {
        user.to_owned()
    } else {
        format!("{user} ({nickname})")
    }
}

/// An error for the chat, with a hint when the fix is a command away.
fn describe(e: &anyhow::Error) -> String {
    macro_rules! any_is {
        ($variant:ident: $($ty:ident),+) => {
            false $(|| matches!(e.downcast_ref::<$ty>(), Some($ty::$variant)))+
        };
    }
    let hint = if any_is!(NotLoggedIn: ProfileSetError, ProfileGetError, SearchError, FriendError) {
        " — /login USER or /register USER first"
    } else if any_is!(NoBootstrap: RegisterError, LoginError, LogoutError, ProfileSetError,
        ProfileGetError, SearchError, FriendError)
    {
        " — accounts need a bootstrap: start confab with --bootstrap MULTIADDR (or have one on the LAN)"
    } else {
        ""
    };
    format!("{e:#}{hint}")
}
