//! `confab rpc`: JSON-RPC 2.0 over a line-oriented byte stream (stdin/stdout in the binary).
//!
//! One JSON object per line in each direction. Requests are served concurrently (answers carry
//! the request's `id`); node events are sent as notifications. The contract — methods, objects,
//! notifications and error codes — is `docs/rpc.md`; this module is its only implementation.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinSet;

use crate::address::Conversation;
use crate::client::{Client, DeliveryState, Message, PeerInfo, WhoAmI};
use crate::error::{DialError, QueryError, SendError};
use crate::event::Event;

/// Stable error codes of the interface (see `docs/rpc.md`).
pub mod codes {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC 2.0 request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (or not available in this version).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Missing or ill-typed parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A failure inside the node that is not the caller's fault.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A conversation address or multiaddr that does not parse.
    pub const BAD_ADDRESS: i64 = -32010;
    /// A peer or address could not be reached.
    pub const UNREACHABLE: i64 = -32011;
    /// The message breaks a rule (empty, too long, to oneself).
    pub const INVALID_MESSAGE: i64 = -32012;
    /// The operation needs a bootstrap account and this device is not logged in.
    pub const NOT_LOGGED_IN: i64 = -32020;
    /// Too much is queued already; retry later.
    pub const BUSY: i64 = -32030;
    /// The local store failed (disk full, I/O error).
    pub const STORAGE: i64 = -32040;
    /// The node is shutting down.
    pub const NODE_STOPPED: i64 = -32050;
}

/// The longest request line accepted; a longer one is answered with an error and skipped.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Requests served at the same time; further lines wait.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Lines buffered towards the output.
const OUTPUT_QUEUE: usize = 1024;
/// The default page of `history`.
const DEFAULT_HISTORY_LIMIT: usize = 1000;

/// Methods of the contract that later versions implement; until then they answer
/// [`codes::METHOD_NOT_FOUND`] with a message that says so.
const NOT_YET: &[&str] = &[
    "register",
    "login",
    "logout",
    "delete_account",
    "profile_set",
    "profile_get",
    "search_users",
    "friend_add",
    "friend_accept",
    "friend_remove",
    "friends",
    "group_create",
    "group_invite",
    "group_remove",
    "group_leave",
    "groups",
    "group_members",
    "recall",
    "delete",
    "block",
    "unblock",
    "blocked",
    "dnd",
    "mute",
    "mark_read",
    "fetch_file",
];

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// One of [`codes`].
    pub code: i64,
    /// For people.
    pub message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<QueryError> for RpcError {
    fn from(e: QueryError) -> Self {
        let code = match e {
            QueryError::Store(_) => codes::STORAGE,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

impl From<SendError> for RpcError {
    fn from(e: SendError) -> Self {
        let code = match &e {
            SendError::BadAddress(_) => codes::BAD_ADDRESS,
            SendError::NotLoggedIn(_) => codes::NOT_LOGGED_IN,
            SendError::Invalid(_) => codes::INVALID_MESSAGE,
            SendError::QueueFull(_) => codes::BUSY,
            SendError::Store(_) => codes::STORAGE,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

impl From<DialError> for RpcError {
    fn from(e: DialError) -> Self {
        let code = match &e {
            DialError::BadAddress { .. } => codes::BAD_ADDRESS,
            DialError::Unreachable { .. } | DialError::SelfDial => codes::UNREACHABLE,
            _ => codes::NODE_STOPPED,
        };
        RpcError::new(code, e.to_string())
    }
}

/// The JSON form of a message (the contract's message object).
pub fn message_json(m: &Message) -> Value {
    json!({
        "id": m.id.to_string(),
        "conversation": m.conversation.to_string(),
        "from": {"peer_id": m.from.peer_id, "user": m.from.user, "name": m.from.name},
        "sent_at": m.sent_at,
        "text": m.text,
        "attachment": null,
        "encrypted": m.encrypted,
        "recalled": m.recalled,
        "notify": m.notify,
    })
}

fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "peer_id": p.peer_id,
        "name": p.name,
        "user": p.user,
        "addrs": p.addrs,
        "source": p.source.as_str(),
        "connected": p.connected,
    })
}

fn whoami_json(w: &WhoAmI) -> Value {
    json!({"peer_id": w.peer_id, "name": w.name, "user": w.user, "listen_addrs": w.listen_addrs})
}

/// The notification for an event, if it has one.
pub fn event_notification(event: &Event) -> Option<Value> {
    let (method, params) = match event {
        Event::Message(m) => ("message", message_json(m)),
        Event::PeerDiscovered {
            peer_id,
            name,
            source,
        } => (
            "peer_discovered",
            json!({"peer_id": peer_id, "name": name, "source": source.as_str()}),
        ),
        Event::PeerLost { peer_id } => ("peer_lost", json!({ "peer_id": peer_id })),
        Event::Delivery { id, state } if *state != DeliveryState::Pending => (
            "delivery",
            json!({"id": id.to_string(), "state": state.as_str()}),
        ),
        _ => return None,
    };
    Some(json!({"jsonrpc": "2.0", "method": method, "params": params}))
}

fn param_str<'a>(params: &'a Value, name: &str) -> Result<&'a str, RpcError> {
    params.get(name).and_then(Value::as_str).ok_or_else(|| {
        RpcError::new(
            codes::INVALID_PARAMS,
            format!("`{name}` (a string) is required"),
        )
    })
}

fn parse_conversation(text: &str) -> Result<Conversation, RpcError> {
    text.parse()
        .map_err(|e: crate::address::AddressError| RpcError::new(codes::BAD_ADDRESS, e.to_string()))
}

/// Runs one method. `shutdown` is handled by [`serve`] itself.
pub async fn call(client: &Client, method: &str, params: &Value) -> Result<Value, RpcError> {
    if !(params.is_object() || params.is_null()) {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            "params must be an object (by name)",
        ));
    }
    match method {
        "whoami" => Ok(whoami_json(&client.whoami().await?)),
        "peers" => Ok(Value::Array(
            client.peers().await?.iter().map(peer_json).collect(),
        )),
        "dial" => {
            let addr = param_str(params, "addr")?;
            Ok(json!({ "peer_id": client.dial(addr).await? }))
        }
        "send" => {
            let to = parse_conversation(param_str(params, "to")?)?;
            if params.get("file").is_some_and(|f| !f.is_null()) {
                return Err(RpcError::new(
                    codes::INVALID_PARAMS,
                    "file messages are not available in this version",
                ));
            }
            if params.get("encrypt").and_then(Value::as_bool) == Some(true) {
                return Err(RpcError::new(
                    codes::INVALID_PARAMS,
                    "end-to-end encryption is not available in this version",
                ));
            }
            let text = param_str(params, "text")?;
            let id = client.send(&to, text).await?;
            Ok(json!({ "id": id.to_string() }))
        }
        "history" => {
            let with = parse_conversation(param_str(params, "with")?)?;
            let limit = match params.get("limit") {
                None | Some(Value::Null) => DEFAULT_HISTORY_LIMIT,
                Some(v) => v.as_u64().ok_or_else(|| {
                    RpcError::new(
                        codes::INVALID_PARAMS,
                        "`limit` must be a non-negative integer",
                    )
                })? as usize,
            };
            let messages = client.history(&with, limit).await?;
            Ok(Value::Array(messages.iter().map(message_json).collect()))
        }
        m if NOT_YET.contains(&m) => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("method `{m}` is not available in this version"),
        )),
        m => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("no method `{}`", m.chars().take(64).collect::<String>()),
        )),
    }
}

fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
        }
    }
}

/// A parsed request line.
enum Parsed {
    Call {
        id: Option<Value>,
        method: String,
        params: Value,
    },
    Bad(Value),
}

fn parse_line(line: &[u8]) -> Parsed {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Parsed::Bad(response(
                Value::Null,
                Err(RpcError::new(
                    codes::PARSE_ERROR,
                    format!("parse error: {e}"),
                )),
            ));
        }
    };
    let id = value.get("id").cloned();
    let valid_id = matches!(
        id,
        None | Some(Value::Null | Value::Number(_) | Value::String(_))
    );
    let method = value.get("method").and_then(Value::as_str);
    match (
        value.get("jsonrpc").and_then(Value::as_str),
        method,
        valid_id,
    ) {
        (Some("2.0"), Some(method), true) => Parsed::Call {
            id,
            method: method.to_owned(),
            params: value.get("params").cloned().unwrap_or(Value::Null),
        },
        _ => Parsed::Bad(response(
            if valid_id {
                id.unwrap_or(Value::Null)
            } else {
                Value::Null
            },
            Err(RpcError::new(
                codes::INVALID_REQUEST,
                "not a JSON-RPC 2.0 request (needs \"jsonrpc\": \"2.0\" and a string \"method\")",
            )),
        )),
    }
}

/// Reads one line of at most [`MAX_LINE_BYTES`]. `Ok(None)` at end of input; `Ok(Some(Err(())))`
/// for an oversized line, whose rest is skipped.
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), ()>>> {
    buf.clear();
    let n = (&mut *input)
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
        // Skip to the end of this line.
        let mut sink = Vec::new();
        loop {
            sink.clear();
            let m = (&mut *input)
                .take(64 * 1024)
                .read_until(b'\n', &mut sink)
                .await?;
            if m == 0 || sink.last() == Some(&b'\n') {
                break;
            }
        }
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(())))
}

/// Serves JSON-RPC on `input`/`output` until end of input or `shutdown`; then stops the node
/// (flushing its store) and returns.
pub async fn serve<R, W>(client: Client, mut input: R, output: W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Value>(OUTPUT_QUEUE);
    let writer = tokio::spawn(write_lines(output, out_rx));
    let mut events = client.subscribe();
    let forward_tx = out_tx.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(note) = event_notification(&event)
                        && forward_tx.send(note).await.is_err()
                    {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("rpc output fell behind; {n} events were dropped");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });

    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    let mut calls = JoinSet::new();
    let mut line = Vec::new();
    let mut shutdown_id = None;
    loop {
        let read = read_line(&mut input, &mut line).await?;
        let parsed = match read {
            None => break,
            Some(Err(())) => Parsed::Bad(response(
                Value::Null,
                Err(RpcError::new(
                    codes::INVALID_REQUEST,
                    format!("request line longer than {MAX_LINE_BYTES} bytes"),
                )),
            )),
            Some(Ok(())) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Some(Ok(())) => parse_line(&line),
        };
        // Reap finished calls so the set does not grow.
        while calls.try_join_next().is_some() {}
        match parsed {
            Parsed::Bad(answer) => {
                let _ = out_tx.send(answer).await;
            }
            Parsed::Call { id, method, .. } if method == "shutdown" => {
                shutdown_id = Some(id);
                break;
            }
            Parsed::Call { id, method, params } => {
                // The semaphore is never closed, so this only fails if that changes.
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (client, out) = (client.clone(), out_tx.clone());
                calls.spawn(async move {
                    let result = call(&client, &method, &params).await;
                    if let Some(id) = id {
                        let _ = out.send(response(id, result)).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    // Let calls in progress answer, then stop the node and say so.
    while calls.join_next().await.is_some() {}
    let stopped = client.shutdown().await.map_err(RpcError::from);
    if let Some(Some(id)) = shutdown_id {
        let _ = out_tx.send(response(id, stopped.map(|()| json!({})))).await;
    } else if let Err(e) = stopped {
        tracing::error!("shutdown: {}", e.message);
    }
    forwarder.abort();
    drop(out_tx);
    writer.await.map_err(std::io::Error::other)?
}

async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut lines: mpsc::Receiver<Value>,
) -> std::io::Result<()> {
    while let Some(value) = lines.recv().await {
        let mut bytes = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        output.write_all(&bytes).await?;
        // Flush when nothing else is waiting, so bursts go out in one write.
        if lines.is_empty() {
            output.flush().await?;
        }
    }
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        assert!(
            matches!(parse_line(b"{oops"), Parsed::Bad(v) if v["error"]["code"] == codes::PARSE_ERROR)
        );
        assert!(
            matches!(parse_line(b"[1,2]"), Parsed::Bad(v) if v["error"]["code"] == codes::INVALID_REQUEST)
        );
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":{"x":1},"method":"peers"}"#),
            Parsed::Bad(v) if v["error"]["code"] == codes::INVALID_REQUEST && v["id"].is_null()
        ));
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","id":7,"method":"peers"}"#),
            Parsed::Call { id: Some(Value::Number(_)), ref method, .. } if method == "peers"
        ));
    }
}
