//! NAT traversal on loopback against a bare libp2p relay configured as the nodes' bootstrap: a
//! node reserves a relay slot once connected; a direct message to a peer whose address nobody
//! knows goes through the relay; after the relay restarts, the node redials it and reserves again.

use std::time::Duration;

use confab_node::net::{self, BOOTSTRAP_AGENT_PREFIX, IDENTIFY_PROTOCOL};
use confab_node::{Client, Config, Conversation, Event};
use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, identify, identity, ping, relay};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const WAIT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct RelayServer {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    relay: relay::Behaviour,
}

/// A relay listening on `listen`; returns its address (with `/p2p/`) and the task serving it.
async fn relay_server(key: identity::Keypair, listen: Multiaddr) -> (Multiaddr, JoinHandle<()>) {
    let peer = key.public().to_peer_id();
    let mut swarm = net::build_swarm(key, Duration::from_secs(60), |key| {
        let mut relay = relay::Behaviour::new(key.public().to_peer_id(), relay::Config::default());
        // Serve reservations without waiting to learn an external address.
        relay.set_status(Some(relay::Status::Enable));
        Ok(RelayServer {
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
                    .with_agent_version(format!("{BOOTSTRAP_AGENT_PREFIX}test-relay")),
            ),
            ping: ping::Behaviour::default(),
            relay,
        })
    })
    .unwrap();
    swarm.listen_on(listen).unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .unwrap();
    // Reservations tell the client this address.
    swarm.add_external_address(addr.clone());
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (addr.with(Protocol::P2p(peer)), task)
}

async fn node(dir: &std::path::Path, name: &str, relay: &Multiaddr) -> Client {
    let mut config = Config::new(dir);
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = vec![relay.to_string()];
    confab_node::start(config).await.unwrap()
}

/// Whether `client` lists an address through the relay (`…/p2p/<relay>/p2p-circuit/p2p/<self>`).
async fn has_circuit_addr(client: &Client) -> bool {
    let me = client.whoami().await.unwrap();
    let suffix = format!("/p2p-circuit/p2p/{}", me.peer_id);
    me.listen_addrs.iter().any(|a| a.ends_with(&suffix))
}

async fn eventually(what: &str, client: &Client, want: bool) {
    let deadline = Instant::now() + WAIT;
    while has_circuit_addr(client).await != want {
        assert!(Instant::now() < deadline, "never: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

async fn expect_text(events: &mut broadcast::Receiver<Event>, text: &str) -> confab_node::Message {
    timeout(WAIT, async {
        loop {
            if let Ok(Event::Message(m)) = events.recv().await
                && m.text.as_deref() == Some(text)
            {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} never arrived"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_an_undialable_peer_through_the_relay_and_the_relay_is_redialled() {
    let key = identity::Keypair::generate_ed25519();
    let (relay_addr, server) =
        relay_server(key.clone(), "/ip4/127.0.0.1/tcp/0".parse().unwrap()).await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ann = node(d1.path(), "ann", &relay_addr).await;
    let bob = node(d2.path(), "bob", &relay_addr).await;
    let mut at_bob = bob.subscribe();
    let mut at_ann = ann.subscribe();

    eventually("bob reserves a relay slot", &bob, true).await;
    assert!(
        ann.peers().await.unwrap().is_empty(),
        "ann knows no address of bob's"
    );
    let sent = ann
        .send(&Conversation::Peer(bob.peer_id().into()), "via the relay")
        .await
        .unwrap();
    let got = expect_text(&mut at_bob, "via the relay").await;
    assert_eq!(got.id, sent);
    assert_eq!(got.from.peer_id, ann.peer_id());
    // And back, over the connection ann opened.
    bob.send(&Conversation::Peer(ann.peer_id().into()), "got it")
        .await
        .unwrap();
    expect_text(&mut at_ann, "got it").await;

    // The relay goes away and comes back at the same address: the node redials it (with back-off)
    // and reserves a slot again.
    server.abort();
    let _ = server.await;
    eventually("bob's circuit address goes with the relay", &bob, false).await;
    let mut listen = relay_addr.clone();
    listen.pop();
    let (_, server) = relay_server(key, listen).await;
    eventually("bob reserves a slot on the restarted relay", &bob, true).await;

    ann.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    server.abort();
}
