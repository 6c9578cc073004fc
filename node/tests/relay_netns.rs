//! NAT traversal through the bootstrap's relay, for real: three network namespaces — a hub where
//! the bootstrap runs, and two hosts that each reach only the hub (no route between them, and the
//! hub does not forward). The two nodes exchange direct messages anyway, through the relay.
//!
//! Needs root and `ip`; skipped without them unless `CI` is set, when it fails.

mod common;

use std::time::{Duration, Instant};

use common::netns::{self, Netns};
use common::{BootstrapProcess, RpcProcess};
use serde_json::json;

/// Waits (bounded) until the node holds a relay reservation; returns its relayed address.
fn relayed_address(node: &mut RpcProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let me = node.call("whoami", json!({}));
        if let Some(a) = me["listen_addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/p2p-circuit/"))
        {
            return a.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{}: no relay reservation: {me}",
            node.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_that_cannot_reach_each_other_talk_through_the_relay() {
    if !netns::require("the relay test") {
        return;
    }
    let (hub, a, b) = (
        Netns::create("hub").unwrap(),
        Netns::create("a").unwrap(),
        Netns::create("b").unwrap(),
    );
    let net = netns::subnet();
    let (hub_a, a_ip) = (format!("{net}.1.1"), format!("{net}.1.2"));
    let (hub_b, b_ip) = (format!("{net}.2.1"), format!("{net}.2.2"));
    netns::link(&hub, "to-a", &hub_a, &a, "to-hub", &a_ip).unwrap();
    netns::link(&hub, "to-b", &hub_b, &b, "to-hub", &b_ip).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("{:>6} ms  {what}", t0.elapsed().as_millis());

    let server = BootstrapProcess::spawn(
        &tmp.path().join("hub"),
        &["/ip4/0.0.0.0/tcp/0"],
        Some(&hub.exec_prefix()),
    );
    let via = |ip: &str| {
        server
            .addrs
            .iter()
            .find(|a| a.starts_with(&format!("/ip4/{ip}/tcp/")))
            .unwrap_or_else(|| panic!("no bootstrap address on {ip}: {:?}", server.addrs))
            .clone()
    };
    let (boot_a, boot_b) = (via(&hub_a), via(&hub_b));
    let start = |ns: &Netns, name: &str, bootstrap: &str| {
        RpcProcess::spawn_with(
            &tmp.path().join(name),
            name,
            &[
                "--no-mdns",
                "--listen",
                "/ip4/0.0.0.0/tcp/0",
                "--bootstrap",
                bootstrap,
            ],
            Some(&ns.exec_prefix()),
        )
    };
    let mut ann = start(&a, "ann", &boot_a);
    let mut bob = start(&b, "bob", &boot_b);
    let (_, ann_id) = ann.address();
    let bob_me = bob.call("whoami", json!({}));
    let bob_id = bob_me["peer_id"].as_str().unwrap().to_owned();
    let bob_direct = bob_me["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .find(|a| a.starts_with(&format!("/ip4/{b_ip}/")))
        .expect("bob listens on his link")
        .to_owned();

    step("nodes up");
    // The direct path really does not exist.
    assert_eq!(ann.call_err("dial", json!({"addr": bob_direct})), -32011);

    step("direct dial refused");
    // With reservations on both sides, messages go through the relay both ways.
    relayed_address(&mut bob);
    relayed_address(&mut ann);
    step("reservations held");
    let id = ann.call(
        "send",
        json!({"to": format!("peer:{bob_id}"), "text": "over the relay"}),
    )["id"]
        .clone();
    let got = bob.wait_for("message", |m| m["id"] == id);
    assert_eq!(got["from"]["peer_id"], ann_id.as_str());
    assert_eq!(got["text"], "over the relay");
    ann.wait_for("delivery", |d| d["id"] == id && d["state"] == "delivered");
    step("ann -> bob delivered");

    let id = bob.call(
        "send",
        json!({"to": format!("peer:{ann_id}"), "text": "and back"}),
    )["id"]
        .clone();
    let got = ann.wait_for("message", |m| m["id"] == id && m["notify"] == true);
    assert_eq!(got["from"]["peer_id"], bob_id.as_str());
    step("bob -> ann delivered");

    assert!(ann.shutdown().success());
    assert!(bob.shutdown().success());
    drop(server);
}
