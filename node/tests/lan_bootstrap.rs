//! Zero configuration on a LAN: a bootstrap advertises itself over mDNS and a node that was told
//! nothing finds it, uses it to register, and gets its certificate. Runs in two network namespaces
//! of the test's own (mDNS never touches a real interface); needs root and `ip`, skipped without
//! them unless `CI` is set.

mod common;

use std::time::{Duration, Instant};

use common::netns::{self, Netns};
use common::{BootstrapProcess, RpcProcess};
use serde_json::json;

#[test]
fn a_node_finds_the_lan_bootstrap_by_itself() {
    if !netns::require("the LAN bootstrap test") {
        return;
    }
    let (hub, a) = (
        Netns::create("lanhub").unwrap(),
        Netns::create("lana").unwrap(),
    );
    let net = netns::subnet();
    netns::link(
        &hub,
        "veth-h",
        &format!("{net}.3.1"),
        &a,
        "veth-a",
        &format!("{net}.3.2"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let _server = BootstrapProcess::spawn_with_mdns(
        &tmp.path().join("server"),
        &["/ip4/0.0.0.0/tcp/0"],
        Some(&hub.exec_prefix()),
        true,
    );
    // No --bootstrap, mDNS on.
    let mut ann =
        RpcProcess::spawn_with(&tmp.path().join("ann"), "ann", &[], Some(&a.exec_prefix()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let registered = loop {
        let response = ann.request(
            "register",
            json!({"user": "ann", "password": "correct horse battery"}),
        );
        if response.get("error").is_none() {
            break response["result"].clone();
        }
        // -32060: no bootstrap reachable (yet).
        assert_eq!(response["error"]["code"], -32060, "{response}");
        assert!(
            Instant::now() < deadline,
            "the node never found the LAN bootstrap"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "registered through the LAN bootstrap {} ms after start",
        started.elapsed().as_millis()
    );
    assert_eq!(registered, json!({"user": "ann"}));
    assert_eq!(ann.call("whoami", json!({}))["user"], "ann");
    // The bootstrap is infrastructure, not a person to chat with.
    assert_eq!(ann.call("peers", json!({})), json!([]));
    assert!(ann.shutdown().success());
}
