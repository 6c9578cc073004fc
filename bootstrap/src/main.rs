//! `confab-bootstrap`: run the always-on Confab server, or administer one.
//!
//! Without a subcommand it serves. The subcommands `user list`, `user delete`, `stats` and
//! `backup` talk to the server running in the data dir through its admin socket, or open the
//! database directly when no server runs there; `restore` works only with the server stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use confab_bootstrap::admin::{self, AdminStats, Deleted, Reply, Request};
use confab_bootstrap::config::BroadcastPolicy;
use confab_bootstrap::store::backup::{self, BackupInfo};
use confab_bootstrap::store::{Store, StoreError};
use confab_bootstrap::{Config, FileConfig};
use confab_protocol::bootstrap::normalize_username;

/// The data dir when neither `--data-dir` nor the config file names one.
const DEFAULT_DATA_DIR: &str = "confab-bootstrap-data";

#[derive(Debug, Parser)]
#[command(
    name = "confab-bootstrap",
    version,
    about = "The always-on Confab server"
)]
struct Cli {
    /// A TOML config file (data_dir, listen, mdns, backup_dir, backup_interval_secs); options
    /// given on the command line override it
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Where the server keeps its key and data [default: confab-bootstrap-data]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Listen on this multiaddr (repeatable) [default: TCP and QUIC on port 4717, all interfaces]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Do not advertise on the LAN over mDNS (also: CONFAB_NO_MDNS=1)
    #[arg(long)]
    no_mdns: bool,
    /// Take a backup into this directory every --backup-interval, keeping the newest few
    #[arg(long, value_name = "DIR")]
    backup_dir: Option<PathBuf>,
    /// Seconds between periodic backups [default: 3600]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    backup_interval: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accounts
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Counters (more of them from a running server)
    Stats,
    /// Write a consistent backup of the database; the server may keep running
    Backup {
        /// The backup file (replaced atomically if it exists)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Replace the database with a backup; the server must be stopped. The database replaced is
    /// kept as bootstrap.redb.before-restore
    Restore {
        /// The backup file
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Every username
    List,
    /// Delete an account and everything of it (devices, friends, profile)
    Delete {
        /// The username
        name: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_log = if cli.command.is_none() {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .init();
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mdns_off_by_env = confab_node::Config::mdns_disabled_by_env();
    match cli.command {
        None => serve(server_config(&cli, file, mdns_off_by_env)?),
        Some(_) => {
            refuse_server_options(&cli)?;
            let data_dir = data_dir(cli.data_dir, &file);
            administer(cli.command.context("a subcommand")?, &data_dir)
        }
    }
}

/// Server options make no sense with a subcommand (`--no-mdns` is let through: scripts may pass
/// it every time).
fn refuse_server_options(cli: &Cli) -> Result<()> {
    if !cli.listen.is_empty() || cli.backup_dir.is_some() || cli.backup_interval.is_some() {
        bail!("--listen, --backup-dir and --backup-interval are for serving, not for a subcommand");
    }
    Ok(())
}

fn data_dir(cli: Option<PathBuf>, file: &FileConfig) -> PathBuf {
    cli.or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// The server's configuration: the command line over the config file over the defaults.
fn server_config(cli: &Cli, file: FileConfig, mdns_off_by_env: bool) -> Result<Config> {
    let mut config = Config::new(data_dir(cli.data_dir.clone(), &file));
    broadcast_config(&mut config, &file)?;
    if !cli.listen.is_empty() {
        config.listen = cli.listen.clone();
    } else if let Some(listen) = file.listen {
        config.listen = listen;
    }
    config.mdns = !(cli.no_mdns || mdns_off_by_env) && file.mdns.unwrap_or(true);
    config.backup_dir = cli.backup_dir.clone().or(file.backup_dir);
    let interval = cli.backup_interval.or(file.backup_interval_secs);
    if let Some(secs) = interval {
        if secs == 0 {
            bail!("backup_interval_secs must be at least 1");
        }
        if config.backup_dir.is_none() {
            bail!("a backup interval needs a backup directory (--backup-dir or backup_dir)");
        }
        config.backup_interval = Duration::from_secs(secs);
    }
    if let Some(n) = file.mailbox_max_entries {
        if n == 0 {
            bail!("mailbox_max_entries must be at least 1");
        }
        config.mailbox_max_entries = n;
    }
    if let Some(days) = file.mailbox_retention_days {
        if days == 0 {
            bail!("mailbox_retention_days must be at least 1");
        }
        config.mailbox_retention = Duration::from_secs(days.saturating_mul(24 * 3600));
    }
    Ok(config)
}

/// The broadcast settings of the config file, checked.
fn broadcast_config(config: &mut Config, file: &FileConfig) -> Result<()> {
    if let Some(policy) = file.broadcast_policy {
        config.broadcast_policy = policy;
    }
    if let Some(admins) = &file.broadcast_admins {
        config.broadcast_admins = admins
            .iter()
            .map(|a| {
                normalize_username(a)
                    .with_context(|| format!("broadcast_admins: {a:?} is not a username"))
            })
            .collect::<Result<_>>()?;
    }
    if config.broadcast_policy == BroadcastPolicy::Admins && config.broadcast_admins.is_empty() {
        tracing::warn!(
            "broadcast_policy is \"admins\" but broadcast_admins is empty: nobody may broadcast"
        );
    }
    let at_least_one = |name: &str, value: Option<u64>| match value {
        Some(0) => bail!("{name} must be at least 1"),
        other => Ok(other),
    };
    if let Some(n) = at_least_one("broadcast_max_entries", file.broadcast_max_entries)? {
        config.broadcast_max_entries = n;
    }
    if let Some(days) = at_least_one("broadcast_retention_days", file.broadcast_retention_days)? {
        config.broadcast_retention = Duration::from_secs(days.saturating_mul(24 * 3600));
    }
    let rate = file.broadcast_rate_per_minute.map(u64::from);
    if let Some(n) = at_least_one("broadcast_rate_per_minute", rate)? {
        config.broadcast_rate_per_minute = n as u32;
    }
    if let Some(n) = at_least_one("broadcast_burst", file.broadcast_burst.map(u64::from))? {
        config.broadcast_burst = n as u32;
    }
    const MIB: u64 = 1024 * 1024;
    if let Some(n) = at_least_one("file_max_mib", file.file_max_mib)? {
        config.files.max_size = n.saturating_mul(MIB);
    }
    if let Some(n) = at_least_one("file_quota_mib", file.file_quota_mib)? {
        config.files.quota = n.saturating_mul(MIB);
    }
    if let Some(days) = at_least_one("file_retention_days", file.file_retention_days)? {
        config.files.retention = Duration::from_secs(days.saturating_mul(24 * 3600));
    }
    Ok(())
}

fn serve(config: Config) -> Result<()> {
    // One descriptor per connection: raise the soft limit to the hard one, or the server runs out
    // long before `limits::MAX_CONNECTIONS`.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open-files limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Watched before the listening lines go out: a SIGTERM right after them must find the
        // handler in place, not the default action.
        let stop = shutdown_signal().context("watching SIGTERM and SIGINT")?;
        let data_dir = config.data_dir.clone();
        let server = confab_bootstrap::start(config)
            .await
            .with_context(|| format!("starting with data dir {}", data_dir.display()))?;
        for addr in &server.listen_addrs {
            println!("listening {addr}");
        }
        use std::io::Write;
        std::io::stdout().flush().context("writing to stdout")?;
        stop.await;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

// ---- administration -------------------------------------------------------------------------

/// An answer, and whether a running server gave it.
struct Answer {
    value: serde_json::Value,
    online: bool,
}

impl Answer {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.value).context("reading the answer")
    }
}

/// Runs `request` on the server running in `data_dir`, or on its database when none runs.
fn call(data_dir: &Path, request: Request) -> Result<Answer> {
    let reply = admin::request(data_dir, &request)
        .with_context(|| format!("asking the server in {}", data_dir.display()))?;
    let (reply, online) = match reply {
        Some(reply) => (reply, true),
        None => {
            let store = match Store::open_existing(data_dir) {
                Ok(store) => store,
                Err(StoreError::Locked(_)) => bail!(
                    "the server in {} is running but its admin socket {} does not answer",
                    data_dir.display(),
                    data_dir.join(admin::SOCKET_FILE).display()
                ),
                Err(StoreError::Missing(path)) => bail!(
                    "no database in {} ({} does not exist); is --data-dir right?",
                    data_dir.display(),
                    path.display()
                ),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("opening the database in {}", data_dir.display())
                    });
                }
            };
            (admin::execute(&store, &request, None), false)
        }
    };
    match reply {
        Reply::Ok(value) => Ok(Answer { value, online }),
        Reply::Error(e) => bail!("{e}"),
    }
}

fn administer(command: Command, data_dir: &Path) -> Result<()> {
    match command {
        Command::User {
            action: UserCommand::List,
        } => {
            let users: Vec<String> = call(data_dir, Request::UserList)?.parse()?;
            for user in users {
                println!("{user}");
            }
        }
        Command::User {
            action: UserCommand::Delete { name },
        } => {
            let answer = call(data_dir, Request::UserDelete { user: name })?;
            let online = answer.online;
            let deleted: Deleted = answer.parse()?;
            println!(
                "deleted {} ({} devices, {} friends and requests)",
                deleted.user, deleted.devices, deleted.relations
            );
            if online && deleted.devices > 0 {
                eprintln!(
                    "note: devices of {} that are connected stay connected until they \
                     disconnect; their next request is refused as not logged in",
                    deleted.user
                );
            }
        }
        Command::Stats => {
            let stats: AdminStats = call(data_dir, Request::Stats)?.parse()?;
            println!(
                "server: {}",
                if stats.running { "running" } else { "stopped" }
            );
            println!("users: {}", stats.users);
            println!("devices: {}", stats.devices);
            let live = [
                ("connected_peers", stats.connected_peers),
                ("broadcast_subscribers", stats.broadcast_subscribers),
                ("users_online", stats.users_online),
            ];
            for (name, value) in live {
                if let Some(v) = value {
                    println!("{name}: {v}");
                }
            }
        }
        Command::Backup { out } => {
            // The running server resolves the path, from its own working directory.
            let out = std::path::absolute(&out)
                .with_context(|| format!("resolving {}", out.display()))?;
            let info: BackupInfo = call(data_dir, Request::Backup { out })?.parse()?;
            println!(
                "backup written to {} ({} tables, {} entries, {} bytes)",
                info.path.display(),
                info.tables,
                info.entries,
                info.bytes
            );
        }
        Command::Restore { from } => {
            if let Some(_running) = admin::request(data_dir, &Request::Stats)
                .with_context(|| format!("asking the server in {}", data_dir.display()))?
            {
                bail!(
                    "the server in {} is running; stop it before restoring",
                    data_dir.display()
                );
            }
            let done = backup::restore(&from, data_dir)?;
            println!(
                "restored {} from {} ({} entries)",
                done.database.display(),
                from.display(),
                done.contents.entries
            );
            if let Some(previous) = done.previous {
                println!("the previous database is kept as {}", previous.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("confab-bootstrap").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn the_command_line_overrides_the_config_file() {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/f\"\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\nmdns = true\n\
             backup_dir = \"/b\"\nbackup_interval_secs = 60\n",
        )
        .unwrap();
        let c = server_config(&cli(&[]), file.clone(), false).unwrap();
        assert_eq!(c.data_dir, Path::new("/f"));
        assert_eq!(c.listen, ["/ip4/127.0.0.1/tcp/1"]);
        assert!(c.mdns);
        assert_eq!(c.backup_dir.as_deref(), Some(Path::new("/b")));
        assert_eq!(c.backup_interval, Duration::from_secs(60));

        let args = cli(&[
            "--data-dir",
            "/c",
            "--listen",
            "/ip4/127.0.0.1/tcp/2",
            "--no-mdns",
            "--backup-interval",
            "5",
        ]);
        let c = server_config(&args, file.clone(), false).unwrap();
        assert_eq!(c.data_dir, Path::new("/c"));
        assert_eq!(c.listen, ["/ip4/127.0.0.1/tcp/2"]);
        assert!(!c.mdns);
        assert_eq!(c.backup_interval, Duration::from_secs(5));
        assert!(!server_config(&cli(&[]), file, true).unwrap().mdns);

        let c = server_config(&cli(&[]), FileConfig::default(), false).unwrap();
        assert_eq!(c, Config::new(DEFAULT_DATA_DIR));
        assert!(
            server_config(
                &cli(&["--backup-interval", "5"]),
                FileConfig::default(),
                false
            )
            .is_err()
        );
        assert!(Cli::try_parse_from(["x", "--backup-interval", "0"]).is_err());
    }

    #[test]
    fn broadcast_settings_come_from_the_file_checked() {
        let file: FileConfig = toml::from_str(
            "broadcast_policy = \"admins\"\nbroadcast_admins = [\" Ann \", \"ben\"]\n\
             broadcast_max_entries = 5\nbroadcast_retention_days = 2\n\
             broadcast_rate_per_minute = 6\nbroadcast_burst = 3\n",
        )
        .unwrap();
        let c = server_config(&cli(&[]), file, false).unwrap();
        assert_eq!(c.broadcast_policy, BroadcastPolicy::Admins);
        assert_eq!(c.broadcast_admins, ["ann", "ben"], "normalised");
        assert_eq!(c.broadcast_max_entries, 5);
        assert_eq!(c.broadcast_retention, Duration::from_secs(2 * 24 * 3600));
        assert_eq!((c.broadcast_rate_per_minute, c.broadcast_burst), (6, 3));
        for bad in [
            "broadcast_admins = [\"not a name\"]",
            "broadcast_max_entries = 0",
            "broadcast_retention_days = 0",
            "broadcast_rate_per_minute = 0",
            "broadcast_burst = 0",
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            assert!(server_config(&cli(&[]), file, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn subcommands_take_the_data_dir_but_not_server_options() {
        let c = cli(&["user", "delete", "bob", "--data-dir", "/d"]);
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/d")));
        assert!(matches!(
            c.command,
            Some(Command::User {
                action: UserCommand::Delete { .. }
            })
        ));
        let c = cli(&["--data-dir", "/d", "stats"]);
        assert!(matches!(c.command, Some(Command::Stats)));
        let c = cli(&["--listen", "/ip4/1.2.3.4/tcp/1", "stats"]);
        assert!(refuse_server_options(&c).is_err());
        assert!(refuse_server_options(&cli(&["--no-mdns", "stats"])).is_ok());
        assert!(
            Cli::try_parse_from(["x", "backup"]).is_err(),
            "--out is required"
        );
    }
}
