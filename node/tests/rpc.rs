//! Two real `confab rpc` processes on loopback (mDNS off): the contract end to end.

mod common;

use common::RpcProcess;
use serde_json::{Value, json};
use std::time::Duration;

fn check_message(
    m: &Value,
    conversation: &str,
    from_peer: &str,
    from_name: &str,
    text: &str,
    notify: bool,
) {
    assert_eq!(m["conversation"], conversation, "{m}");
    assert_eq!(m["from"]["peer_id"], from_peer, "{m}");
    assert_eq!(m["from"]["name"], from_name, "{m}");
    assert_eq!(m["from"]["user"], Value::Null, "{m}");
    assert_eq!(m["text"], text, "{m}");
    assert_eq!(m["attachment"], Value::Null, "{m}");
    assert_eq!(m["encrypted"], false, "{m}");
    assert_eq!(m["recalled"], false, "{m}");
    assert_eq!(m["notify"], notify, "{m}");
    assert!(
        m["sent_at"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "{m}"
    );
    assert_eq!(m["id"].as_str().map(str::len), Some(32), "{m}");
}

/// Sends `text` from `from` to `to` and returns the message as `to` received it.
fn deliver(from: &mut RpcProcess, to: &mut RpcProcess, to_peer: &str, text: &str) -> Value {
    let id = from.call(
        "send",
        json!({"to": format!("peer:{to_peer}"), "text": text}),
    )["id"]
        .clone();
    from.wait_for("delivery", |p| p["id"] == id && p["state"] == "sent");
    from.wait_for("delivery", |p| p["id"] == id && p["state"] == "delivered");
    let got = to.wait_for("message", |p| p["id"] == id);
    // The sender sees its own message too, marked as not to notify.
    let own = from.wait_for("message", |p| p["id"] == id);
    assert_eq!(own["notify"], false);
    got
}

#[test]
fn two_processes_chat_both_ways_and_keep_history_across_restarts() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ann = RpcProcess::spawn(dir_a.path(), "ann");
    let mut bob = RpcProcess::spawn(dir_b.path(), "bob");
    let (ann_addr, ann_id) = ann.address();
    let (_, bob_id) = bob.address();
    assert_ne!(ann_id, bob_id);

    let me = bob.call("whoami", json!({}));
    assert_eq!(me["name"], "bob");
    assert_eq!(me["user"], Value::Null);
    assert!(
        me["listen_addrs"][0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/")
    );

    assert_eq!(
        bob.call("dial", json!({"addr": ann_addr}))["peer_id"],
        ann_id.as_str()
    );
    let found = ann.wait_for("peer_discovered", |p| p["peer_id"] == bob_id.as_str());
    assert_eq!(found["name"], "bob");
    assert_eq!(found["source"], "dial");
    let peers = bob.call("peers", json!({}));
    let ann_entry = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == ann_id.as_str())
        .expect("ann listed");
    assert_eq!(ann_entry["connected"], true);
    assert_eq!(ann_entry["name"], "ann");
    assert_eq!(ann_entry["source"], "dial");

    // Both ways, with the contract's fields.
    let m = deliver(&mut bob, &mut ann, &ann_id, "hello ann");
    check_message(
        &m,
        &format!("peer:{bob_id}"),
        &bob_id,
        "bob",
        "hello ann",
        true,
    );
    let m = deliver(&mut ann, &mut bob, &bob_id, "hello bob");
    check_message(
        &m,
        &format!("peer:{ann_id}"),
        &ann_id,
        "ann",
        "hello bob",
        true,
    );

    // The same text twice is two messages.
    let first = deliver(&mut ann, &mut bob, &bob_id, "same");
    let second = deliver(&mut ann, &mut bob, &bob_id, "same");
    assert_ne!(first["id"], second["id"]);
    assert!(
        bob.drain("message", Duration::from_millis(300)).is_empty(),
        "nothing arrives twice"
    );

    let texts = |h: &Value| {
        h.as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let history = bob.call("history", json!({"with": format!("peer:{ann_id}")}));
    assert_eq!(texts(&history), ["hello ann", "hello bob", "same", "same"]);
    check_message(
        &history[0],
        &format!("peer:{ann_id}"),
        &bob_id,
        "bob",
        "hello ann",
        false,
    );
    check_message(
        &history[1],
        &format!("peer:{ann_id}"),
        &ann_id,
        "ann",
        "hello bob",
        true,
    );
    let last = bob.call(
        "history",
        json!({"with": format!("peer:{ann_id}"), "limit": 1}),
    );
    assert_eq!(texts(&last), ["same"]);

    // Restart bob on the same data dir (EOF on stdin ends it cleanly): same identity, same history.
    assert!(bob.close().success());
    let mut bob = RpcProcess::spawn(dir_b.path(), "bob");
    let (_, bob_id_again) = bob.address();
    assert_eq!(
        bob_id_again, bob_id,
        "the peer id is stable across restarts"
    );
    let again = bob.call("history", json!({"with": format!("peer:{ann_id}")}));
    assert_eq!(again, history);

    // And the conversation goes on after the restart.
    bob.call("dial", json!({"addr": ann_addr}));
    let m = deliver(&mut bob, &mut ann, &ann_id, "back again");
    check_message(
        &m,
        &format!("peer:{bob_id}"),
        &bob_id,
        "bob",
        "back again",
        true,
    );
    assert!(ann.shutdown().success());
    assert!(bob.shutdown().success());
}

#[test]
fn a_message_to_an_unreachable_peer_waits_in_the_outbox() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut ann = RpcProcess::spawn(dir_a.path(), "ann");
    let mut bob = RpcProcess::spawn(dir_b.path(), "bob");
    let (ann_addr, ann_id) = ann.address();
    let (_, bob_id) = bob.address();
    bob.call("dial", json!({"addr": ann_addr}));
    ann.wait_for("peer_discovered", |p| p["peer_id"] == bob_id.as_str());
    // Ann goes away; bob writes to her anyway.
    assert!(ann.shutdown().success());
    bob.wait_for("peer_lost", |p| p["peer_id"] == ann_id.as_str());
    let id = bob.call(
        "send",
        json!({"to": format!("peer:{ann_id}"), "text": "while you were out"}),
    )["id"]
        .clone();
    assert!(
        bob.wait_for_within("delivery", |p| p["id"] == id, Duration::from_millis(500))
            .is_none()
    );
    // Ann returns (new port); as soon as they are connected again, the message is delivered.
    let mut ann = RpcProcess::spawn(dir_a.path(), "ann");
    let (ann_addr, _) = ann.address();
    bob.call("dial", json!({"addr": ann_addr}));
    bob.wait_for("delivery", |p| p["id"] == id && p["state"] == "delivered");
    let m = ann.wait_for("message", |p| p["id"] == id);
    assert_eq!(m["text"], "while you were out");
}

#[test]
fn bad_input_gets_clear_errors_and_the_process_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = RpcProcess::spawn(dir.path(), "carl");

    node.send_line(b"{this is not json");
    let answer = node.response(&Value::Null);
    assert_eq!(answer["error"]["code"], -32700);
    assert!(
        node.call("whoami", json!({}))["peer_id"].is_string(),
        "still serving"
    );

    node.send_line(br#"{"id": 5, "method": "whoami"}"#);
    assert_eq!(
        node.response(&json!(5))["error"]["code"],
        -32600,
        "jsonrpc field missing"
    );
    node.send_line(b"[1, 2, 3]");
    assert_eq!(node.response(&Value::Null)["error"]["code"], -32600);

    assert_eq!(node.call_err("teleport", json!({})), -32601);
    assert_eq!(
        node.call_err("fetch_file", json!({"id": "00", "dest": "/tmp"})),
        -32602
    );
    assert_eq!(
        node.call_err(
            "fetch_file",
            json!({"id": "00112233445566778899aabbccddeeff", "dest": "/tmp"})
        ),
        -32064,
        "no such message"
    );
    assert_eq!(node.call_err("recall", json!({"id": "00"})), -32602);
    assert_eq!(
        node.call_err("recall", json!({"id": "00112233445566778899aabbccddeeff"})),
        -32064,
        "no such message"
    );
    assert_eq!(
        node.call_err("group_create", json!({"name": "x", "members": []})),
        -32020,
        "groups need an account"
    );
    assert_eq!(
        node.call_err("mark_read", json!({"conversation": "nonsense"})),
        -32010
    );
    assert_eq!(node.call_err("dnd", json!({"enabled": "yes"})), -32602);
    // Accounts need a bootstrap; this node has none (and no mDNS to find one).
    assert_eq!(
        node.call_err("login", json!({"user": "xavier", "password": "y"})),
        -32060
    );
    assert_eq!(node.call_err("friends", json!({})), -32020);
    assert_eq!(node.call_err("login", json!({"user": "xavier"})), -32602);
    assert_eq!(
        node.call_err("send", json!({"to": "bob", "text": "hi"})),
        -32010
    );
    assert_eq!(
        node.call_err("send", json!({"to": "peer:not-a-peer-id", "text": "hi"})),
        -32010
    );
    assert_eq!(
        node.call_err("send", json!({"to": "user:bob", "text": "hi"})),
        -32020
    );
    assert_eq!(node.call_err("send", json!({"text": "hi"})), -32602);
    assert_eq!(node.call_err("send", json!(["broadcast", "hi"])), -32602);
    assert_eq!(
        node.call_err("send", json!({"to": "broadcast", "text": ""})),
        -32012
    );
    let huge = "x".repeat(70_000);
    assert_eq!(
        node.call_err("send", json!({"to": "broadcast", "text": huge})),
        -32012
    );
    assert_eq!(
        node.call_err("history", json!({"with": "broadcast", "limit": "ten"})),
        -32602
    );
    assert_eq!(
        node.call_err("dial", json!({"addr": "not a multiaddr"})),
        -32010
    );
    assert_eq!(
        node.call_err("dial", json!({"addr": "/ip4/127.0.0.1/tcp/1"})),
        -32011
    );

    // A line longer than the limit is refused as a whole, and the next line is served.
    let mut long = br#"{"jsonrpc":"2.0","id":99,"method":"whoami","params":{"pad":""#.to_vec();
    long.extend(std::iter::repeat_n(b'a', 1_100_000));
    long.extend_from_slice(br#""}}"#);
    node.send_line(&long);
    assert_eq!(node.response(&Value::Null)["error"]["code"], -32600);
    assert_eq!(node.call("whoami", json!({}))["name"], "carl");

    // A notification (no id) gets no answer; the next request does.
    node.send_line(br#"{"jsonrpc":"2.0","method":"peers"}"#);
    assert!(node.call("peers", json!({})).is_array());
    assert!(node.shutdown().success());
}
