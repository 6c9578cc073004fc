//! Node configuration and limits.

use std::path::PathBuf;
use std::time::Duration;

/// Every bound of the node, in one place.
pub mod limits {
    use std::time::Duration;

    /// Commands queued from clients to the event loop.
    pub const COMMAND_QUEUE: usize = 256;
    /// Events buffered per subscriber before the slowest one starts missing events.
    pub const EVENT_BUFFER: usize = 4096;
    /// Requests queued to the store actor.
    pub const STORE_QUEUE: usize = 1024;
    /// Store requests committed in one transaction at most (group commit).
    pub const STORE_BATCH: usize = 256;
    /// Discovery reports queued to the event loop.
    pub const DISCOVERY_QUEUE: usize = 64;
    /// Established connections in total.
    pub const MAX_CONNECTIONS: u32 = 256;
    /// Established connections per peer.
    pub const MAX_CONNECTIONS_PER_PEER: u32 = 4;
    /// Incoming connections still in their handshake.
    pub const MAX_PENDING_INCOMING: u32 = 64;
    /// Concurrent `/confab/direct/1` streams per connection.
    pub const MAX_DIRECT_STREAMS: usize = 64;
    /// Store operations the event loop waits on at once; beyond it new inbound work is refused.
    pub const MAX_PENDING_STORE_OPS: usize = 2048;
    /// Broadcasts held while no peer is subscribed yet.
    pub const MAX_QUEUED_BROADCASTS: usize = 256;
    /// How long a direct request may wait for its response.
    pub const DIRECT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
    /// A connection with nothing to do is closed after this long.
    pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
    /// How often undelivered direct messages are retried.
    pub const OUTBOX_RETRY_INTERVAL: Duration = Duration::from_secs(5);
    /// Most messages returned by one history query.
    pub const MAX_HISTORY_PAGE: usize = 10_000;
    /// How often every connection is pinged. A ping that fails closes the connection, so a dead
    /// bootstrap connection is noticed (and redialled) within about `PING_INTERVAL + PING_TIMEOUT`.
    pub const PING_INTERVAL: Duration = Duration::from_secs(2);
    /// How long a ping may take before its connection is considered dead.
    pub const PING_TIMEOUT: Duration = Duration::from_secs(8);
    /// The first redial of a lost bootstrap waits this long; each failure doubles the wait.
    pub const BOOTSTRAP_REDIAL_MIN: Duration = Duration::from_secs(1);
    /// Redials of a bootstrap never wait longer than this.
    pub const BOOTSTRAP_REDIAL_MAX: Duration = Duration::from_secs(30);
    /// A bootstrap connection that lasted this long resets the redial back-off.
    pub const BOOTSTRAP_STABLE_AFTER: Duration = Duration::from_secs(30);
    /// Addresses remembered per bootstrap.
    pub const MAX_ADDRS_PER_BOOTSTRAP: usize = 8;
    /// How long a request to a bootstrap may take (a login hashes a password under throttling).
    pub const BOOTSTRAP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long a request waits for a bootstrap connection (just after start, or while one is
    /// being redialled) before failing with "no bootstrap reachable".
    pub const BOOTSTRAP_CONNECT_WAIT: Duration = Duration::from_secs(5);
    /// Requests waiting for a bootstrap connection at most; beyond it they fail at once.
    pub const MAX_WAITING_BOOTSTRAP_REQUESTS: usize = 64;
    /// Requests to bootstraps on the wire at once; beyond it they fail at once.
    pub const MAX_BOOTSTRAP_REQUESTS_IN_FLIGHT: usize = 256;
    /// Concurrent `/confab/bootstrap/1` and `/confab/notify/1` streams per connection.
    pub const MAX_BOOTSTRAP_STREAMS: usize = 32;
    /// How often the event loop checks bootstrap redials and waiting requests.
    pub const BOOTSTRAP_TICK: Duration = Duration::from_millis(250);
    /// Messages to users waiting to be deposited in a mailbox at most (they are on disk; this
    /// bounds what is kept in memory); beyond it `send` to a user fails with "busy".
    pub const MAX_PENDING_DEPOSITS: usize = 10_000;
    /// Deposits on the wire at once (one per receiver, so each receiver's order is kept).
    pub const MAX_DEPOSITS_IN_FLIGHT: usize = 16;
    /// A failed deposit or mailbox sync is retried after this long; each further failure
    /// doubles the wait. A new bootstrap session retries at once.
    pub const MAILBOX_RETRY_MIN: Duration = Duration::from_secs(1);
    /// Retries of deposits and syncs never wait longer than this.
    pub const MAILBOX_RETRY_MAX: Duration = Duration::from_secs(60);
    /// Entries asked for in one mailbox page (the bootstrap may send fewer).
    pub const MAILBOX_PAGE: u32 = confab_protocol::limits::MAX_SYNC_PAGE;
    /// `/confab/file/1` requests this node serves at once; beyond it a requester gets `Busy`.
    pub const MAX_FILE_SERVES: usize = 16;
    /// Concurrent `/confab/file/1` streams per connection.
    pub const MAX_FILE_STREAMS: usize = 32;
    /// How long a file request may wait for its response (a whole chunk).
    pub const FILE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Downloads (`fetch_file`) under way at once.
    pub const MAX_FETCHES: usize = 8;
    /// Files sent whose hold by the bootstrap is followed (for `file_hold` `held` events).
    pub const MAX_HOLDS_WATCHED: usize = 1024;
    /// Files up to this size sent by a peer on the LAN are downloaded at once, without a
    /// `fetch_file` (into `<data dir>/downloads`): 16 MiB.
    pub const AUTO_FETCH_MAX_BYTES: u64 = 16 * 1024 * 1024;
    /// `mark_read` looks at this many of a conversation's latest messages at most.
    pub const MAX_MARK_READ: usize = 10_000;
    /// A user's devices, as the bootstrap listed them, are asked again after this long (or at
    /// once when the user's presence changes).
    pub const DEVICES_TTL: Duration = Duration::from_secs(60);
    /// Users whose devices are remembered at most (the least recently used are forgotten).
    pub const MAX_KNOWN_USERS: usize = 1024;
    /// A message to a user waits this long at most for one of the user's devices to be
    /// reachable directly; the mailbox delivers it anyway.
    pub const DIRECT_USER_WAIT: Duration = Duration::from_secs(30);
    /// Messages to users waiting for the device list or a connection, per user or device.
    pub const MAX_DIRECT_USER_QUEUE: usize = 256;
}

/// How a node is set up. [`Config::new`] gives the defaults for a data dir.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the store (`confab.redb`) lives.
    pub data_dir: PathBuf,
    /// Display name; `None` keeps the stored one (or a default on first start).
    pub name: Option<String>,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Bootstrap multiaddrs, each ending in `/p2p/<peer id>` (a bootstrap is pinned by its peer
    /// id). The node keeps a connection to them, trusts them as certificate issuers, and sends
    /// account requests to them. Empty: the first bootstrap advertised on the LAN is used (mDNS).
    pub bootstrap: Vec<String>,
    /// Whether to advertise and discover over mDNS. When false no mDNS socket is ever opened.
    pub mdns: bool,
    /// Gossipsub heartbeat; shorter forms meshes faster (tests), longer costs less.
    pub gossip_heartbeat: Duration,
}

impl Config {
    /// Defaults: listen on every interface (TCP and QUIC, ports chosen by the system), mDNS on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            name: None,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".to_owned(),
                "/ip4/0.0.0.0/udp/0/quic-v1".to_owned(),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            gossip_heartbeat: Duration::from_millis(700),
        }
    }

    /// The platform's data directory for Confab (e.g. `~/.local/share/confab`).
    pub fn default_data_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("org", "Confab", "confab").map(|d| d.data_dir().to_owned())
    }

    /// True when `CONFAB_NO_MDNS` is set to anything but empty, `0` or `false`.
    pub fn mdns_disabled_by_env() -> bool {
        std::env::var("CONFAB_NO_MDNS")
            .map(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")))
            .unwrap_or(false)
    }
}
