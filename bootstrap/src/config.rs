//! Server configuration (command line or TOML file) and every limit of the server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Every bound of the server, in one place.
pub mod limits {
    use std::time::Duration;

    /// The port a bootstrap listens on by default (TCP and QUIC).
    pub const DEFAULT_PORT: u16 = 4717;
    /// Established connections held at most.
    pub const MAX_CONNECTIONS: u32 = 10_000;
    /// Established connections per peer.
    pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
    /// Incoming connections still in their handshake.
    pub const MAX_PENDING_INCOMING: u32 = 256;
    /// Requests being served at once; further ones are refused as busy.
    pub const MAX_CONCURRENT_REQUESTS: usize = 256;
    /// Concurrent `/confab/bootstrap/1` streams per connection.
    pub const MAX_STREAMS_PER_CONNECTION: usize = 16;
    /// argon2 computations at once (each takes 19 MiB).
    pub const MAX_CONCURRENT_HASHES: usize = 2;
    /// argon2 computations waiting; beyond it a login is refused as throttled.
    pub const MAX_QUEUED_HASHES: usize = 32;
    /// Failed logins allowed per account or address before back-off starts.
    pub const THROTTLE_FREE_FAILURES: u32 = 5;
    /// The longest back-off.
    pub const THROTTLE_MAX_LOCK: Duration = Duration::from_secs(15 * 60);
    /// Accounts and addresses tracked by the throttle at most.
    pub const MAX_THROTTLE_ENTRIES: usize = 100_000;
    /// Ping interval; a connection whose ping fails is closed (so presence turns offline).
    pub const PING_INTERVAL: Duration = Duration::from_secs(2);
    /// How long a ping may take before it counts as failed.
    pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
    /// Connections stay open while their peer lives (ping decides), up to this long idle.
    pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
    /// How long a request may take to be answered.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Relay: reservations held at most.
    pub const RELAY_MAX_RESERVATIONS: usize = 1024;
    /// Relay: circuits at once.
    pub const RELAY_MAX_CIRCUITS: usize = 256;
    /// Relay: circuits per peer.
    pub const RELAY_MAX_CIRCUITS_PER_PEER: usize = 8;
    /// Relay: how long one circuit lasts.
    pub const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(10 * 60);
    /// Relay: bytes one circuit may carry.
    pub const RELAY_MAX_CIRCUIT_BYTES: u64 = 64 * 1024 * 1024;
    /// After the first address of each listener, how long to wait for the rest of a wildcard
    /// listener's addresses (one per interface) before printing them.
    pub const LISTEN_SETTLE: Duration = Duration::from_millis(150);
    /// Batched writes (mailbox deposits) waiting for the commit thread.
    pub const COMMIT_QUEUE: usize = 4096;
    /// Batched writes committed in one transaction at most.
    pub const MAX_COMMIT_BATCH: usize = 512;
    /// The default of `Config::mailbox_max_entries`.
    pub const MAX_MAILBOX_ENTRIES: u64 = 100_000;
    /// The default of `Config::files.max_size`: 2 GiB.
    pub const FILE_MAX_SIZE: u64 = 2 * 1024 * 1024 * 1024;
    /// The default of `Config::files.quota`: 4 GiB per account.
    pub const FILE_QUOTA: u64 = 4 * 1024 * 1024 * 1024;
    /// The default of `Config::files.retention`: 14 days.
    pub const FILE_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
    /// File chunk requests served at once; more are answered `Busy`.
    pub const MAX_FILE_SERVES: usize = 32;
    /// Concurrent `/confab/file/1` streams per connection.
    pub const MAX_FILE_STREAMS: usize = 32;
    /// Files pulled at once (for offline receivers); more wait for a device of their author.
    pub const MAX_FILE_PULLS: usize = 16;
    /// The default of `Config::mailbox_retention`: one year.
    pub const MAILBOX_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);
    /// How often expired mailbox entries are deleted.
    pub const MAILBOX_EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);
    /// Entries deleted per expiry transaction at most (the rest wait for the next one).
    pub const MAILBOX_EXPIRY_BATCH: usize = 10_000;
    /// The default of `Config::broadcast_max_entries`: the kept broadcasts, at most.
    pub const MAX_BROADCAST_ENTRIES: u64 = 10_000;
    /// The default of `Config::broadcast_retention`: 30 days.
    pub const BROADCAST_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    /// The default of `Config::broadcast_rate_per_minute`.
    pub const BROADCAST_RATE_PER_MINUTE: u32 = 30;
    /// The default of `Config::broadcast_burst`.
    pub const BROADCAST_BURST: u32 = 10;
    /// Broadcast authors whose rate is tracked at once; beyond it the idle ones (a full bucket)
    /// go first, then the longest unseen.
    pub const MAX_RATE_LIMITED_AUTHORS: usize = 10_000;
    /// Broadcasts accepted but not yet stored (or recalls not yet applied); beyond it a broadcast
    /// is still relayed but not kept (logged).
    pub const MAX_PENDING_BROADCAST_WRITES: usize = 256;
    /// Kept broadcasts deleted per transaction at most (hourly, and after each append).
    pub const BROADCAST_EXPIRY_BATCH: usize = 10_000;
    /// Backup generations kept.
    pub const BACKUP_GENERATIONS: usize = 5;
    /// The shortest interval between periodic backups (shorter ones are raised to it).
    pub const MIN_BACKUP_INTERVAL: Duration = Duration::from_secs(1);
    /// Admin socket: connections served at once; more are told the server is busy.
    pub const ADMIN_MAX_CONNECTIONS: usize = 4;
    /// Admin socket: the longest request line.
    pub const ADMIN_MAX_LINE_BYTES: usize = 4096;
    /// Admin socket: how long a connection may stay idle (or take to send a line).
    pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Admin client: how long to wait for the server's answer (a backup of a big database takes
    /// a while).
    pub const ADMIN_REPLY_TIMEOUT: Duration = Duration::from_secs(600);
}

/// How a bootstrap is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where its database lives.
    pub data_dir: PathBuf,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Whether to advertise on the LAN over mDNS.
    pub mdns: bool,
    /// Where periodic backups go (none when `None`).
    pub backup_dir: Option<PathBuf>,
    /// How often to back up.
    pub backup_interval: Duration,
    /// Entries one mailbox holds at most; a deposit beyond it is refused (`MailboxFull`).
    pub mailbox_max_entries: u64,
    /// Mailbox entries older than this are deleted (their deduplication records stay).
    pub mailbox_retention: Duration,
    /// Who may broadcast through this server (relayed and kept).
    pub broadcast_policy: BroadcastPolicy,
    /// The accounts that may broadcast under [`BroadcastPolicy::Admins`] (canonical usernames).
    pub broadcast_admins: Vec<String>,
    /// Kept broadcasts at most; the oldest go first.
    pub broadcast_max_entries: u64,
    /// Kept broadcasts older than this are deleted.
    pub broadcast_retention: Duration,
    /// Broadcasts (and broadcast recalls) one author may send per minute, on average.
    pub broadcast_rate_per_minute: u32,
    /// Broadcasts one author may send at once, before the rate applies.
    pub broadcast_burst: u32,
    /// Files kept for offline receivers: largest file, quota per account, retention.
    pub files: crate::service::files::FileLimits,
}

/// Who may broadcast through a bootstrap. Whatever the policy, a broadcast with a certificate that
/// this server did not issue to its sender is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastPolicy {
    /// Anyone: logged-in users and bare peers alike.
    #[default]
    Anyone,
    /// Only logged-in users listed in `Config::broadcast_admins`.
    Admins,
}

impl Config {
    /// Defaults: TCP and QUIC on [`limits::DEFAULT_PORT`] on every interface, mDNS on, no backups.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: vec![
                format!("/ip4/0.0.0.0/tcp/{}", limits::DEFAULT_PORT),
                format!("/ip4/0.0.0.0/udp/{}/quic-v1", limits::DEFAULT_PORT),
            ],
            mdns: true,
            backup_dir: None,
            backup_interval: Duration::from_secs(3600),
            mailbox_max_entries: limits::MAX_MAILBOX_ENTRIES,
            mailbox_retention: limits::MAILBOX_RETENTION,
            broadcast_policy: BroadcastPolicy::Anyone,
            broadcast_admins: Vec::new(),
            broadcast_max_entries: limits::MAX_BROADCAST_ENTRIES,
            broadcast_retention: limits::BROADCAST_RETENTION,
            broadcast_rate_per_minute: limits::BROADCAST_RATE_PER_MINUTE,
            broadcast_burst: limits::BROADCAST_BURST,
            files: crate::service::files::FileLimits::default(),
        }
    }
}

/// The optional TOML file (`--config FILE`); command-line options override it. The mailbox and
/// broadcast settings are in the file only (shown here with their defaults, but the admins).
///
/// Broadcasts: the server relays and keeps broadcasts on the broadcast topic, the newest
/// `broadcast_max_entries` of the last `broadcast_retention_days`, for devices to fetch into their
/// history (`Broadcasts`). `broadcast_policy` says who may broadcast: `"anyone"`, or `"admins"`
/// (only logged-in users named in `broadcast_admins`). Each author (the account when certified,
/// else the device) may send `broadcast_burst` at once, then `broadcast_rate_per_minute`; more are
/// neither relayed nor kept.
///
/// Files: for receivers offline when a file is sent, the server keeps it (pulled from the
/// author's device) up to `file_max_mib` per file and `file_quota_mib` per author, until every
/// receiver has it, its message is recalled, or `file_retention_days` pass.
///
/// ```toml
/// data_dir = "/var/lib/confab-bootstrap"
/// listen = ["/ip4/0.0.0.0/tcp/4717", "/ip4/0.0.0.0/udp/4717/quic-v1"]
/// mdns = true
/// backup_dir = "/var/backups/confab"
/// backup_interval_secs = 3600
/// mailbox_max_entries = 100000
/// mailbox_retention_days = 365
/// broadcast_policy = "anyone"   # or "admins"
/// broadcast_admins = ["alice", "bob"]
/// broadcast_max_entries = 10000
/// broadcast_retention_days = 30
/// broadcast_rate_per_minute = 30
/// broadcast_burst = 10
/// file_max_mib = 2048
/// file_quota_mib = 4096
/// file_retention_days = 14
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Config::listen`].
    pub listen: Option<Vec<String>>,
    /// See [`Config::mdns`].
    pub mdns: Option<bool>,
    /// See [`Config::backup_dir`].
    pub backup_dir: Option<PathBuf>,
    /// See [`Config::backup_interval`], in seconds.
    pub backup_interval_secs: Option<u64>,
    /// See [`Config::mailbox_max_entries`].
    pub mailbox_max_entries: Option<u64>,
    /// See [`Config::mailbox_retention`], in days.
    pub mailbox_retention_days: Option<u64>,
    /// See [`Config::broadcast_policy`]: `"anyone"` or `"admins"`.
    pub broadcast_policy: Option<BroadcastPolicy>,
    /// See [`Config::broadcast_admins`] (usernames, normalised when read).
    pub broadcast_admins: Option<Vec<String>>,
    /// See [`Config::broadcast_max_entries`].
    pub broadcast_max_entries: Option<u64>,
    /// See [`Config::broadcast_retention`], in days.
    pub broadcast_retention_days: Option<u64>,
    /// See [`Config::broadcast_rate_per_minute`].
    pub broadcast_rate_per_minute: Option<u32>,
    /// See [`Config::broadcast_burst`].
    pub broadcast_burst: Option<u32>,
    /// See [`Config::files`]: the largest file kept, in MiB.
    pub file_max_mib: Option<u64>,
    /// See [`Config::files`]: the quota per account, in MiB.
    pub file_quota_mib: Option<u64>,
    /// See [`Config::files`]: how long a file is kept, in days.
    pub file_retention_days: Option<u64>,
}

/// The config file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {reason}")]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let err = |reason: String| ConfigFileError {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_and_reject_typos() {
        let parsed: FileConfig = toml::from_str(
            "data_dir = \"/d\"\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\nbackup_interval_secs = 60\n",
        )
        .unwrap();
        assert_eq!(parsed.data_dir.as_deref(), Some(Path::new("/d")));
        assert_eq!(parsed.backup_interval_secs, Some(60));
        assert!(toml::from_str::<FileConfig>("data_dri = \"/d\"").is_err());
    }

    #[test]
    fn broadcast_settings_parse() {
        let parsed: FileConfig = toml::from_str(
            "broadcast_policy = \"admins\"\nbroadcast_admins = [\"ann\"]\n\
             broadcast_max_entries = 5\nbroadcast_retention_days = 2\n\
             broadcast_rate_per_minute = 6\nbroadcast_burst = 3\n",
        )
        .unwrap();
        assert_eq!(parsed.broadcast_policy, Some(BroadcastPolicy::Admins));
        assert_eq!(parsed.broadcast_admins, Some(vec!["ann".to_owned()]));
        assert_eq!(parsed.broadcast_max_entries, Some(5));
        assert_eq!(parsed.broadcast_retention_days, Some(2));
        assert_eq!(parsed.broadcast_rate_per_minute, Some(6));
        assert_eq!(parsed.broadcast_burst, Some(3));
        assert!(toml::from_str::<FileConfig>("broadcast_policy = \"friends\"").is_err());
        let defaults = Config::new("/d");
        assert_eq!(defaults.broadcast_policy, BroadcastPolicy::Anyone);
        assert_eq!(defaults.broadcast_max_entries, 10_000);
        assert_eq!(
            defaults.broadcast_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        assert_eq!(
            (defaults.broadcast_rate_per_minute, defaults.broadcast_burst),
            (30, 10)
        );
    }
}
