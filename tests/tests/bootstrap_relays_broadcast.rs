//! A real bootstrap and two real nodes on loopback: nodes that only know the bootstrap still get
//! each other's broadcasts, exactly once, and do not list the server as a chat peer.

use std::time::Duration;

use confab_node::{Client, Config, Conversation, Event};
use tokio::time::{Instant, sleep, timeout};

const WAIT: Duration = Duration::from_secs(20);

async fn node(name: &str, bootstrap: &str) -> (Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = vec![bootstrap.into()];
    config.gossip_heartbeat = Duration::from_millis(100);
    (confab_node::start(config).await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_only_know_the_bootstrap_hear_each_others_broadcasts() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut config = confab_bootstrap::Config::new(server_dir.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    let server = confab_bootstrap::start(config).await.unwrap();
    let server_addr = server.listen_addrs[0].clone();
    assert!(server_addr.contains(&format!("/p2p/{}", server.peer_id)));

    let (ann, _d1) = node("ann", &server_addr).await;
    let (ben, _d2) = node("ben", &server_addr).await;
    let mut at_ben = ben.subscribe();

    // Both nodes are in the server's broadcast mesh before anything is sent.
    let deadline = Instant::now() + WAIT;
    while server.stats().await.unwrap().broadcast_subscribers < 2 {
        assert!(
            Instant::now() < deadline,
            "nodes never subscribed at the bootstrap"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats().await.unwrap().connected_peers, 2);

    let id = ann
        .send(&Conversation::Broadcast, "via the bootstrap")
        .await
        .unwrap();
    let got = timeout(WAIT, async {
        loop {
            if let Ok(Event::Message(m)) = at_ben.recv().await
                && m.id == id
            {
                return m;
            }
        }
    })
    .await
    .expect("ben gets ann's broadcast through the bootstrap");
    assert_eq!(got.from.peer_id, ann.peer_id());
    assert_eq!(got.from.name, "ann");
    assert_eq!(got.text.as_deref(), Some("via the bootstrap"));

    // Exactly once, and the server is not listed as a peer.
    sleep(Duration::from_millis(800)).await;
    let history = ben.history(&Conversation::Broadcast, 10).await.unwrap();
    assert_eq!(history.iter().filter(|m| m.id == id).count(), 1);
    for n in [&ann, &ben] {
        assert!(
            n.peers()
                .await
                .unwrap()
                .iter()
                .all(|p| p.peer_id != server.peer_id)
        );
    }
    ann.shutdown().await.unwrap();
    ben.shutdown().await.unwrap();
    server.shutdown().await;
}
