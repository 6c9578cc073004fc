//! The mailbox's promise, with real processes: a message the bootstrap acknowledged survives a
//! `kill -9` of the bootstrap right after, and reaches its offline receiver exactly once; the
//! receiver's `mark_read` comes back to the sender as `read`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{BootstrapProcess, RpcProcess, free_port};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

#[test]
fn twenty_acknowledged_messages_survive_a_kill_9_of_the_bootstrap() {
    let tmp = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let server_dir = tmp.path().join("server");
    let server = BootstrapProcess::spawn(&server_dir, &[&listen], None);
    let boot = server.addrs[0].clone();
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = RpcProcess::spawn_for_bootstrap(&alice_dir, "alice", &boot);
    let mut bob = RpcProcess::spawn_for_bootstrap(&bob_dir, "bob", &boot);
    alice.call_when_connected("register", json!({"user": "alice", "password": PASSWORD}));
    bob.call_when_connected("register", json!({"user": "bob", "password": PASSWORD}));
    assert!(bob.shutdown().success());

    // Twenty messages to bob while he is away, each acknowledged only after the commit.
    let mut sent = HashSet::new();
    for i in 0..20 {
        let id = alice.call(
            "send",
            json!({"to": "user:bob", "text": format!("message {i}")}),
        )["id"]
            .clone();
        sent.insert(id.as_str().unwrap().to_owned());
    }
    let mut acked = HashSet::new();
    while acked.len() < 20 {
        let d = alice.wait_for("delivery", |d| d["state"] == "sent");
        acked.insert(d["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(acked, sent);

    // The moment the last ack is out: kill -9, then the server comes back on the same address.
    server.kill();
    let _server = BootstrapProcess::spawn(&server_dir, &[&listen], None);

    // Bob returns (still logged in) and gets all twenty, once each.
    let mut bob = RpcProcess::spawn_for_bootstrap(&bob_dir, "bob", &boot);
    let summary = bob.wait_for("offline_summary", |_| true);
    assert_eq!(summary["total"], 20, "{summary}");
    assert_eq!(summary["senders"]["user:alice"], 20, "{summary}");
    let mut got = HashSet::new();
    while got.len() < 20 {
        let m = bob.wait_for("message", |m| m["conversation"] == "user:alice");
        assert!(
            got.insert(m["id"].as_str().unwrap().to_owned()),
            "shown twice: {m}"
        );
    }
    assert_eq!(got, sent);
    assert!(
        bob.drain("message", Duration::from_millis(500)).is_empty(),
        "nothing arrives twice"
    );
    let history = bob.call("history", json!({"with": "user:alice"}));
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want, "in the order alice sent them");

    // Bob reads them: each becomes `read` for alice (through a receipt in her mailbox).
    let marked = bob.call("mark_read", json!({"conversation": "user:alice"}));
    assert_eq!(marked, json!({"marked": 20}));
    let mut read = HashSet::new();
    while read.len() < 20 {
        let d = alice.wait_for("delivery", |d| d["state"] == "read");
        read.insert(d["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(read, sent);
    let again = bob.call("mark_read", json!({"conversation": "user:alice"}));
    assert_eq!(again, json!({"marked": 0}));
    assert!(bob.shutdown().success());
    assert!(alice.shutdown().success());
}
