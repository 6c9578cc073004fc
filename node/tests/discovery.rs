//! mDNS discovery end to end: two `confab rpc` processes, each in a network namespace of its own
//! joined by a veth pair, find each other over mDNS, connect, and exchange direct messages and a
//! small file (downloaded at once, as small files from LAN peers are).
//!
//! mDNS never runs on a real interface here: the namespaces (and the 10.x.y.0/24 addresses on the
//! veth ends) exist only for the duration of the test and are deleted by a drop guard, also when
//! the test fails. Creating namespaces needs root and the `ip` command; without them the test is
//! skipped, unless `CI` is set, in which case it fails.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::RpcProcess;
use common::netns::{self, Netns};
use serde_json::{Value, json};

// ---- the test -----------------------------------------------------------------------------------

fn start_in(ns: &Netns, name: &str, data_dir: &std::path::Path) -> RpcProcess {
    // Default listen addresses (every interface of the namespace) and mDNS on.
    RpcProcess::spawn_with(data_dir, name, &[], Some(&ns.exec_prefix()))
}

/// Waits (bounded) until `node` lists `peer` as found by mDNS.
fn listed_as_mdns(node: &mut RpcProcess, peer: &str) -> bool {
    for _ in 0..100 {
        let peers = node.call("peers", json!({}));
        let found = peers
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["peer_id"] == peer && p["source"] == "mdns" && p["connected"] == true);
        if found {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn two_nodes_in_namespaces_find_each_other_over_mdns_and_chat() {
    // Declaration order matters: locals drop in reverse, so the processes are killed before
    // their data dirs and the namespaces are removed.
    if !netns::require("the mDNS discovery test") {
        return;
    }
    let (a, b) = (Netns::create("a").unwrap(), Netns::create("b").unwrap());
    let net = netns::subnet();
    let (a_addr, b_addr) = (format!("{net}.1.1"), format!("{net}.1.2"));
    netns::link(&a, "veth-a", &a_addr, &b, "veth-b", &b_addr).unwrap();
    let tmp = tempfile::tempdir().expect("temp dir");

    let started = Instant::now();
    let mut ann = start_in(&a, "ann", &tmp.path().join("ann"));
    let mut ben = start_in(&b, "ben", &tmp.path().join("ben"));
    let ann_me = ann.call("whoami", json!({}));
    let ben_me = ben.call("whoami", json!({}));
    let ann_id = ann_me["peer_id"].as_str().unwrap().to_owned();
    let ben_id = ben_me["peer_id"].as_str().unwrap().to_owned();
    let listens_on = |me: &Value, addr: &str| {
        me["listen_addrs"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str().is_some_and(|x| x.contains(addr)))
        })
    };
    assert!(
        listens_on(&ann_me, &a_addr),
        "ann does not listen on the veth: {ann_me}"
    );
    assert!(
        listens_on(&ben_me, &b_addr),
        "ben does not listen on the veth: {ben_me}"
    );

    // Neither node is told about the other: whatever connects them is mDNS.
    let ann_saw = ann.wait_for("peer_discovered", |p| p["peer_id"] == ben_id.as_str());
    let ann_at = started.elapsed();
    let ben_saw = ben.wait_for("peer_discovered", |p| p["peer_id"] == ann_id.as_str());
    let ben_at = started.elapsed();
    eprintln!(
        "discovery took {} ms (ann saw ben after {} ms via {}; ben saw ann after {} ms via {})",
        ann_at.max(ben_at).as_millis(),
        ann_at.as_millis(),
        ann_saw["source"],
        ben_at.as_millis(),
        ben_saw["source"],
    );
    assert_eq!(ann_saw["name"], "ben");
    assert_eq!(ben_saw["name"], "ann");
    // The node whose browser resolves the other first dials it; the other may learn of the peer
    // from that inbound connection ("dial") a moment before its own browser resolves it. Either
    // way, each ends up listing the other as found by mDNS.
    for saw in [&ann_saw, &ben_saw] {
        assert!(saw["source"] == "mdns" || saw["source"] == "dial", "{saw}");
    }
    assert!(ann_saw["source"] == "mdns" || ben_saw["source"] == "mdns");
    assert!(
        listed_as_mdns(&mut ann, &ben_id),
        "ann's mDNS never resolved ben"
    );
    assert!(
        listed_as_mdns(&mut ben, &ann_id),
        "ben's mDNS never resolved ann"
    );

    // Ann writes to ben; ben answers.
    let id = ann.call(
        "send",
        json!({"to": format!("peer:{ben_id}"), "text": "hello over mdns"}),
    )["id"]
        .clone();
    let got = ben.wait_for("message", |m| m["id"] == id);
    assert_eq!(got["conversation"], format!("peer:{ann_id}"));
    assert_eq!(got["from"]["peer_id"], ann_id.as_str());
    assert_eq!(got["from"]["name"], "ann");
    assert_eq!(got["text"], "hello over mdns");
    ann.wait_for("delivery", |d| d["id"] == id && d["state"] == "delivered");

    let id = ben.call(
        "send",
        json!({"to": format!("peer:{ann_id}"), "text": "hello back"}),
    )["id"]
        .clone();
    let got = ann.wait_for("message", |m| m["id"] == id && m["notify"] == true);
    assert_eq!(got["from"]["peer_id"], ben_id.as_str());
    assert_eq!(got["text"], "hello back");

    // A small file from a peer on the LAN downloads at once, without a `fetch_file`, into the
    // receiver's downloads directory.
    let small = tmp.path().join("notes.txt");
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&small, &content).unwrap();
    let file_id = ann.call(
        "send",
        json!({"to": format!("peer:{ben_id}"), "file": small.display().to_string()}),
    )["id"]
        .clone();
    let got = ben.wait_for("message", |m| m["id"] == file_id);
    assert_eq!(got["attachment"]["name"], "notes.txt");
    let done = ben.wait_for("transfer_complete", |t| t["id"] == file_id);
    let path = std::path::PathBuf::from(done["path"].as_str().unwrap());
    assert!(
        path.starts_with(tmp.path().join("ben").join("downloads")),
        "{path:?}"
    );
    assert!(std::fs::read(&path).unwrap() == content, "the file differs");

    let history = ann.call("history", json!({"with": format!("peer:{ben_id}")}));
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["hello over mdns", "hello back"]);

    assert!(ann.shutdown().success(), "ann exited with an error");
    assert!(ben.shutdown().success(), "ben exited with an error");
}
