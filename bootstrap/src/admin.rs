//! The admin interface: `confab-bootstrap user list`, `user delete`, `stats`, `backup`.
//!
//! A running server listens on the Unix socket `<data dir>/admin.sock` ([`SOCKET_FILE`], mode
//! 0600, so only its own user can connect) and answers one JSON object per line:
//!
//! ```text
//! {"cmd":"user_list"}                  -> {"ok":["alice","bob"]}
//! {"cmd":"user_delete","user":"bob"}   -> {"ok":{"user":"bob","devices":1,"relations":2}}
//! {"cmd":"stats"}                      -> {"ok":{"running":true,"users":2,...}}
//! {"cmd":"backup","out":"/abs/path"}   -> {"ok":{"path":"/abs/path","tables":7,...}}
//! anything else                        -> {"error":"..."}
//! ```
//!
//! When no server answers, the same [`Request`]s run on the database directly
//! ([`execute`] on a [`Store::open_existing`]); the binary picks the path ([`request`] returns
//! `None` when nobody answers).
//!
//! Bounds: at most [`ADMIN_MAX_CONNECTIONS`] connections at once (more are told the server is
//! busy), lines of at most [`ADMIN_MAX_LINE_BYTES`], and a connection idle for
//! [`ADMIN_IDLE_TIMEOUT`] is closed.
//!
//! `user_delete` here changes the database only (one transaction through
//! [`service::delete_user`]): the running server's presence is not updated and nobody is
//! notified. Devices of the deleted user that are connected stay connected, and count as online,
//! until they disconnect; their next request is answered "log in first". Their former friends
//! are not sent `friend_removed`; they see the change the next time they list their friends.
//! Likewise the account leaves its groups (an owner hands over, an empty group ends) without
//! `group_changed` to the other members: they see the new version the next time they list their
//! groups.

use std::fs;
use std::future::Future;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use confab_protocol::bootstrap::normalize_username;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::Stats;
use crate::config::limits::{
    ADMIN_IDLE_TIMEOUT, ADMIN_MAX_CONNECTIONS, ADMIN_MAX_LINE_BYTES, ADMIN_REPLY_TIMEOUT,
};
use crate::service;
use crate::store::backup::{self, BackupError};
use crate::store::{Store, StoreError};

/// The admin socket's file name in the data dir.
pub const SOCKET_FILE: &str = "admin.sock";

/// One admin command. The same type is sent by the client and read by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Every username, sorted. Answer: a JSON array of strings.
    UserList,
    /// Deletes an account and everything of it. Answer: [`Deleted`].
    UserDelete {
        /// The username (normalised like a login's).
        user: String,
    },
    /// Counters. Answer: [`AdminStats`].
    Stats,
    /// A consistent backup into `out`, an absolute path as the server sees it. Answer:
    /// [`backup::BackupInfo`].
    Backup {
        /// The file to write (replaced atomically if it exists).
        out: PathBuf,
    },
}

/// The answer to a [`Request`]: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done; what it returns (see each [`Request`]).
    Ok(serde_json::Value),
    /// Refused or failed, for people.
    Error(String),
}

/// The answer to [`Request::UserDelete`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The account deleted.
    pub user: String,
    /// Devices that were bound to it.
    pub devices: usize,
    /// Users it related to (friends and requests), whose side was removed too.
    pub relations: usize,
}

/// The answer to [`Request::Stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStats {
    /// Whether a running server answered (`false`: read from the database directly).
    pub running: bool,
    /// Accounts.
    pub users: u64,
    /// Devices bound to accounts.
    pub devices: u64,
    /// Peers with an open connection (running servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_peers: Option<usize>,
    /// Peers subscribed to the broadcast topic (running servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_subscribers: Option<usize>,
    /// Users with a device online (running servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_online: Option<usize>,
}

/// An admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `user_delete` of a user that does not exist.
    #[error("no user {0}")]
    UnknownUser(String),
    /// Not a valid username.
    #[error("invalid username {user:?}: {reason}")]
    InvalidUsername {
        /// As given.
        user: String,
        /// Why.
        reason: String,
    },
    /// A backup destination that is not an absolute path.
    #[error("the backup destination must be an absolute path, not {}", .0.display())]
    RelativePath(PathBuf),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backup failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Something else went wrong inside the server.
    #[error("internal error: {0}")]
    Internal(String),
}

fn to_value<T: Serialize>(v: &T) -> Result<serde_json::Value, CommandError> {
    serde_json::to_value(v).map_err(|e| CommandError::Internal(e.to_string()))
}

fn run(
    store: &Store,
    request: &Request,
    live: Option<Stats>,
) -> Result<serde_json::Value, CommandError> {
    match request {
        Request::UserList => to_value(&store.read(|tx| tx.usernames())?),
        Request::UserDelete { user } => {
            let name = normalize_username(user).map_err(|e| CommandError::InvalidUsername {
                user: user.clone(),
                reason: e.to_string(),
            })?;
            let deleted = store.write(|tx| {
                if tx.user(&name)?.is_none() {
                    return Err(CommandError::UnknownUser(name.clone()));
                }
                service::delete_user(tx, &name).map_err(|r| CommandError::Internal(r.to_string()))
            })?;
            tracing::info!("admin: deleted account {name}");
            to_value(&Deleted {
                user: name,
                devices: deleted.devices.len(),
                relations: deleted.related.len(),
            })
        }
        Request::Stats => {
            let counts = store.stats()?;
            to_value(&AdminStats {
                running: live.is_some(),
                users: counts.users,
                devices: counts.devices,
                connected_peers: live.map(|s| s.connected_peers),
                broadcast_subscribers: live.map(|s| s.broadcast_subscribers),
                users_online: live.map(|s| s.users_online),
            })
        }
        Request::Backup { out } => {
            if !out.is_absolute() {
                return Err(CommandError::RelativePath(out.clone()));
            }
            let info = backup::backup(store, out)?;
            tracing::info!("admin: backup written to {}", out.display());
            to_value(&info)
        }
    }
}

/// Runs `request` on `store` (blocking: call it off the async runtime). `live` is the running
/// server's counters for `stats`, `None` offline.
pub fn execute(store: &Store, request: &Request, live: Option<Stats>) -> Reply {
    match run(store, request, live) {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e.to_string()),
    }
}

// ---- server -------------------------------------------------------------------------------------

type StatsFn =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Option<Stats>> + Send + Sync + 'static>;

#[derive(Clone)]
struct Context {
    store: Store,
    stats: StatsFn,
}

/// The admin socket of a running server. [`AdminServer::stop`] closes it (answering requests in
/// progress first) and removes the socket file; dropping it aborts it.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Binds `<data_dir>/admin.sock` with mode 0600, replacing a stale one. Only call it while
/// holding the data dir's database (as a running server does): a socket already there then
/// belongs to a server that is gone.
fn bind(data_dir: &Path) -> io::Result<(UnixListener, PathBuf)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = data_dir.join(SOCKET_FILE);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => fs::remove_file(&path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Bound under another name and restricted before it appears under its real one, so nobody
    // can connect while its mode is still the umask's.
    let tmp = data_dir.join(format!("{SOCKET_FILE}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, &path)?;
    Ok((listener, path))
}

/// Starts the admin socket of the server whose database is `store`, in `data_dir`. `stats`
/// fetches the running server's counters. On failure (e.g. the path is too long for a Unix
/// socket) it logs a warning and returns `None`: the server serves without it.
pub fn spawn<F, Fut>(data_dir: &Path, store: Store, stats: F) -> Option<AdminServer>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Stats>> + Send + 'static,
{
    let (listener, path) = match bind(data_dir) {
        Ok(bound) => bound,
        Err(e) => {
            tracing::warn!(
                "no admin socket in {} ({e}); admin commands will not reach this server",
                data_dir.display()
            );
            return None;
        }
    };
    let context = Context {
        store,
        stats: Arc::new(move || Box::pin(stats())),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, context, stopped));
    Some(AdminServer {
        path,
        stop,
        task: Some(task),
    })
}

impl AdminServer {
    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets requests in progress finish, and removes the socket file.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!("admin socket: {e}");
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Resolves once a stop was asked for (or the [`AdminServer`] is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(listener: UnixListener, context: Context, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (context, stop) = (context.clone(), stop.clone());
                        connections.spawn(async move {
                            serve_connection(stream, context, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // Told without waiting on the client: a full socket buffer just drops it.
                        let busy = reply_line(&Reply::Error("the server is busy; try again".into()));
                        let _ = stream.try_write(busy.as_bytes());
                    }
                },
                Err(e) => {
                    // E.g. out of file descriptors: do not spin.
                    tracing::warn!("admin socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    // Idle connections see the stop at once; requests in progress are answered first.
    while connections.join_next().await.is_some() {}
}

fn reply_line(reply: &Reply) -> String {
    let mut line = serde_json::to_string(reply)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the reply: {e}\"}}"));
    line.push('\n');
    line
}

/// What reading one request line gave.
enum Line {
    Request(String),
    TooLong,
    Closed,
}

async fn read_line(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> io::Result<Line> {
    let mut buf = Vec::new();
    let limit = ADMIN_MAX_LINE_BYTES as u64 + 1;
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(if n as u64 >= limit {
            Line::TooLong
        } else {
            // The peer closed mid-line: answer what it sent.
            Line::Request(String::from_utf8_lossy(&buf).into_owned())
        });
    }
    buf.pop();
    Ok(Line::Request(String::from_utf8_lossy(&buf).into_owned()))
}

async fn serve_connection(stream: UnixStream, context: Context, mut stop: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line = tokio::select! {
            _ = stopped(&mut stop) => return,
            line = tokio::time::timeout(ADMIN_IDLE_TIMEOUT, read_line(&mut reader)) => line,
        };
        let (reply, last) = match line {
            Err(_) | Ok(Err(_)) | Ok(Ok(Line::Closed)) => return,
            Ok(Ok(Line::TooLong)) => (
                Reply::Error(format!(
                    "a request is one line of at most {ADMIN_MAX_LINE_BYTES} bytes"
                )),
                true,
            ),
            Ok(Ok(Line::Request(text))) if text.trim().is_empty() => continue,
            Ok(Ok(Line::Request(text))) => (answer(&context, &text).await, false),
        };
        let sent = tokio::time::timeout(
            ADMIN_IDLE_TIMEOUT,
            write.write_all(reply_line(&reply).as_bytes()),
        )
        .await;
        if last || !matches!(sent, Ok(Ok(()))) {
            return;
        }
    }
}

async fn answer(context: &Context, text: &str) -> Reply {
    let request: Request = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return Reply::Error(format!("not a request: {e}")),
    };
    let live = match request {
        Request::Stats => (context.stats)().await,
        _ => None,
    };
    let store = context.store.clone();
    tokio::task::spawn_blocking(move || execute(&store, &request, live))
        .await
        .unwrap_or_else(|e| Reply::Error(format!("internal error: {e}")))
}

// ---- client -------------------------------------------------------------------------------------

/// Talking to a server's admin socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server closed the connection without answering.
    #[error("the server at {} closed the connection without answering", path.display())]
    NoAnswer {
        /// The socket.
        path: PathBuf,
    },
    /// The answer is not a [`Reply`].
    #[error("the server at {} answered something unreadable: {reason}", path.display())]
    BadReply {
        /// The socket.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Sends `request` to the server running in `data_dir` and waits (up to
/// [`ADMIN_REPLY_TIMEOUT`]) for its reply. `Ok(None)` when no server answers there: there is no
/// socket, or nobody listens on it any more (a server that was killed leaves its socket behind).
/// Blocking.
pub fn request(data_dir: &Path, request: &Request) -> Result<Option<Reply>, ClientError> {
    let path = data_dir.join(SOCKET_FILE);
    let failed = |source: io::Error| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        // No socket; a stale one; or a path too long for a socket, where a server cannot have
        // bound one either.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::InvalidInput
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(failed(e)),
    };
    stream
        .set_read_timeout(Some(ADMIN_REPLY_TIMEOUT))
        .map_err(failed)?;
    stream
        .set_write_timeout(Some(ADMIN_IDLE_TIMEOUT))
        .map_err(failed)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::BadReply {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(failed)?;
    let mut answer = String::new();
    let n = io::BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(failed)?;
    if n == 0 {
        return Err(ClientError::NoAnswer { path });
    }
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| ClientError::BadReply {
            path,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Relation, UserRecord};

    #[test]
    fn the_wire_format_is_the_documented_one() {
        let parse = |s: &str| serde_json::from_str::<Request>(s).unwrap();
        assert_eq!(parse(r#"{"cmd":"user_list"}"#), Request::UserList);
        assert_eq!(
            parse(r#"{"cmd":"user_delete","user":"x"}"#),
            Request::UserDelete { user: "x".into() }
        );
        assert_eq!(parse(r#"{"cmd":"stats"}"#), Request::Stats);
        assert_eq!(
            parse(r#"{"cmd":"backup","out":"/b"}"#),
            Request::Backup { out: "/b".into() }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"drop_all"}"#).is_err());
        assert_eq!(
            reply_line(&Reply::Ok(serde_json::json!(["a"]))),
            "{\"ok\":[\"a\"]}\n"
        );
        assert_eq!(
            reply_line(&Reply::Error("no".into())),
            "{\"error\":\"no\"}\n"
        );
    }

    fn user(name: &str) -> UserRecord {
        UserRecord {
            user: name.into(),
            password_phc: String::new(),
            created_at: 0,
            nickname: name.into(),
            signature: String::new(),
            avatar: None,
        }
    }

    #[test]
    fn commands_run_on_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1; 40]).unwrap();
        store
            .write(|tx| {
                tx.put_user(&user("ann"))?;
                tx.put_user(&user("bob"))?;
                tx.bind_device("d1", "bob", 0)?;
                tx.set_relation("ann", "bob", Relation::Friends)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let ok = |r: Reply| match r {
            Reply::Ok(v) => v,
            Reply::Error(e) => panic!("{e}"),
        };
        assert_eq!(
            ok(execute(&store, &Request::UserList, None)),
            serde_json::json!(["ann", "bob"])
        );
        let deleted = ok(execute(
            &store,
            &Request::UserDelete { user: "BOB".into() },
            None,
        ));
        assert_eq!(
            serde_json::from_value::<Deleted>(deleted).unwrap(),
            Deleted {
                user: "bob".into(),
                devices: 1,
                relations: 1
            }
        );
        store
            .read(|tx| {
                assert_eq!(tx.device_user("d1")?, None);
                assert_eq!(tx.relations("ann")?, []);
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(
            execute(&store, &Request::UserDelete { user: "bob".into() }, None),
            Reply::Error("no user bob".into())
        );
        let stats: AdminStats =
            serde_json::from_value(ok(execute(&store, &Request::Stats, None))).unwrap();
        assert_eq!((stats.running, stats.users, stats.devices), (false, 1, 0));
        let Reply::Error(e) = execute(
            &store,
            &Request::Backup {
                out: "relative.redb".into(),
            },
            None,
        ) else {
            panic!("a relative path was accepted")
        };
        assert!(e.contains("absolute"), "{e}");
        let Reply::Error(e) = execute(
            &store,
            &Request::Backup {
                out: store.path().to_owned(),
            },
            None,
        ) else {
            panic!("the live database was overwritten")
        };
        assert!(e.contains("live database"), "{e}");
    }

    #[tokio::test]
    async fn the_socket_answers_refuses_garbage_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), vec![1; 40]).unwrap();
        // A stale socket from a server that died is replaced.
        drop(std::os::unix::net::UnixListener::bind(dir.path().join(SOCKET_FILE)).unwrap());
        let server = spawn(dir.path(), store, || async {
            Some(Stats {
                connected_peers: 3,
                ..Stats::default()
            })
        })
        .unwrap();
        let mode = fs::metadata(server.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let data_dir = dir.path().to_owned();
        let (stats, garbage, long) = tokio::task::spawn_blocking(move || {
            let stats = request(&data_dir, &Request::Stats).unwrap().unwrap();
            let mut s =
                std::os::unix::net::UnixStream::connect(data_dir.join(SOCKET_FILE)).unwrap();
            s.write_all(b"{\"cmd\":\"nope\"}\n").unwrap();
            let mut reader = io::BufReader::new(s.try_clone().unwrap());
            let mut garbage = String::new();
            reader.read_line(&mut garbage).unwrap();
            s.write_all(&vec![b'x'; ADMIN_MAX_LINE_BYTES + 10]).unwrap();
            let mut long = String::new();
            reader.read_line(&mut long).unwrap();
            // Closed after an oversized line (a reset, as the rest of it was never read).
            let mut rest = String::new();
            let end = reader.read_line(&mut rest);
            assert!(matches!(end, Ok(0) | Err(_)), "{end:?} {rest:?}");
            (stats, garbage, long)
        })
        .await
        .unwrap();
        let Reply::Ok(stats) = stats else {
            panic!("{stats:?}")
        };
        let stats: AdminStats = serde_json::from_value(stats).unwrap();
        assert!(stats.running);
        assert_eq!(stats.connected_peers, Some(3));
        assert!(
            garbage.starts_with("{\"error\":\"not a request"),
            "{garbage}"
        );
        assert!(long.contains("at most"), "{long}");

        let path = server.path().to_owned();
        server.stop().await;
        assert!(!path.exists(), "the socket is removed on stop");
        let data_dir = dir.path().to_owned();
        let none = tokio::task::spawn_blocking(move || request(&data_dir, &Request::Stats))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none, None);
    }
}
