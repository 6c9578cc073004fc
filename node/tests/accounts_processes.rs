//! Accounts between real processes: a `confab-bootstrap` and `confab rpc` nodes on loopback (mDNS
//! off). Search, profiles with an avatar, friend request / accept / remove, and presence — offline
//! within seconds of a `kill -9` of the friend, online again when it returns.

mod common;

use std::time::{Duration, Instant};

use common::{BootstrapProcess, RpcProcess};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// A real 1×1 PNG.
const PNG: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, b'I', b'H', b'D', b'R', 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0d, b'I', b'D', b'A', b'T',
    0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d,
    0x1d, 0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82,
];

#[test]
fn friends_profiles_and_presence_between_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let server =
        BootstrapProcess::spawn(&tmp.path().join("server"), &["/ip4/127.0.0.1/tcp/0"], None);
    let boot = server.addrs[0].clone();
    let (ann_dir, bob_dir) = (tmp.path().join("ann"), tmp.path().join("bob"));
    let mut ann = RpcProcess::spawn_for_bootstrap(&ann_dir, "ann", &boot);
    let mut bob = RpcProcess::spawn_for_bootstrap(&bob_dir, "bob", &boot);

    assert_eq!(
        ann.call_when_connected("register", json!({"user": "Ann", "password": PASSWORD})),
        json!({"user": "ann"})
    );
    bob.call_when_connected("register", json!({"user": "bob", "password": PASSWORD}));
    assert_eq!(ann.call("whoami", json!({}))["user"], "ann");

    // Profile with an avatar, seen from the other process.
    let avatar = tmp.path().join("me.png");
    std::fs::write(&avatar, PNG).unwrap();
    ann.call(
        "profile_set",
        json!({"nickname": "Ann Lee", "signature": "in the lab", "avatar": avatar}),
    );
    let profile = bob.call("profile_get", json!({"user": "ann"}));
    assert_eq!(profile["nickname"], "Ann Lee");
    assert_eq!(profile["signature"], "in the lab");
    assert_eq!(profile["online"], true);
    let expected_hash = blake3_hex(PNG);
    assert_eq!(profile["avatar_hash"], expected_hash.as_str());
    let found = bob.call("search_users", json!({"query": "lee"}));
    assert_eq!(
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user"].clone())
            .collect::<Vec<_>>(),
        [json!("ann")]
    );

    // Friend request, acceptance, both sides told.
    bob.call("friend_add", json!({"user": "ann"}));
    let request = ann.wait_for("friend_request", |p| p["from"] == "bob");
    assert_eq!(request["from"], "bob");
    ann.call("friend_accept", json!({"user": "bob"}));
    ann.wait_for("friend_added", |p| p["user"] == "bob");
    bob.wait_for("friend_added", |p| p["user"] == "ann");
    let friends = ann.call("friends", json!({}));
    assert_eq!(friends[0]["user"], "bob");
    assert_eq!(friends[0]["online"], true);

    // kill -9 of bob: ann hears he is offline within seconds.
    let killed = Instant::now();
    bob.kill();
    ann.wait_for("presence", |p| p["user"] == "bob" && p["online"] == false);
    let offline_after = killed.elapsed();
    eprintln!(
        "offline presence {} ms after kill -9",
        offline_after.as_millis()
    );
    assert!(
        offline_after < Duration::from_secs(10),
        "took {offline_after:?}"
    );
    assert_eq!(ann.call("friends", json!({}))[0]["online"], false);

    // Bob returns on the same data dir, still logged in: online again.
    let returned = Instant::now();
    let mut bob = RpcProcess::spawn_for_bootstrap(&bob_dir, "bob", &boot);
    ann.wait_for("presence", |p| p["user"] == "bob" && p["online"] == true);
    eprintln!(
        "online presence {} ms after restart",
        returned.elapsed().as_millis()
    );
    assert_eq!(bob.call("whoami", json!({}))["user"], "bob");

    // Removal reaches the other side and empties both lists.
    bob.call("friend_remove", json!({"user": "ann"}));
    ann.wait_for("friend_removed", |p| p["user"] == "bob");
    assert_eq!(ann.call("friends", json!({})), json!([]));
    assert_eq!(bob.call("friends", json!({})), json!([]));
    assert!(ann.shutdown().success());
    assert!(bob.shutdown().success());
}

fn blake3_hex(bytes: &[u8]) -> String {
    // The avatar hash is BLAKE3 of the file; ask the same library the server uses.
    confab_node::ContentHash(*blake3::hash(bytes).as_bytes()).to_string()
}
