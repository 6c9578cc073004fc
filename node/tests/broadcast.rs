//! Broadcast over gossipsub between real in-process nodes on loopback (mDNS off).

use std::time::Duration;

use confab_node::{Client, Config, Conversation, DeliveryState, Event, MessageId};
use tokio::sync::broadcast::Receiver;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

async fn node(name: &str) -> (Client, tempfile::TempDir) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.name = Some(name.into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.gossip_heartbeat = Duration::from_millis(100);
    (confab_node::start(config).await.unwrap(), dir)
}

async fn addr(client: &Client) -> String {
    client.whoami().await.unwrap().listen_addrs[0].clone()
}

/// Waits for the incoming message `id`; returns the sender's name.
async fn received(events: &mut Receiver<Event>, id: MessageId) -> String {
    timeout(WAIT, async {
        loop {
            if let Event::Message(m) = events.recv().await.unwrap()
                && m.id == id
                && !m.outgoing
            {
                assert_eq!(m.conversation, Conversation::Broadcast);
                assert!(m.notify);
                return m.from.name;
            }
        }
    })
    .await
    .expect("the broadcast arrives")
}

/// Counts further messages with `id` during `settle`.
async fn further(events: &mut Receiver<Event>, id: MessageId, settle: Duration) -> usize {
    let mut n = 0;
    let _ = timeout(settle, async {
        loop {
            if let Ok(Event::Message(m)) = events.recv().await
                && m.id == id
            {
                n += 1;
            }
        }
    })
    .await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_crosses_a_line_of_three_nodes_exactly_once() {
    let (a, _da) = node("ann").await;
    let (b, _db) = node("ben").await;
    let (c, _dc) = node("cat").await;
    let b_addr = addr(&b).await;
    // A - B - C: A and C only know B.
    let (mut at_a, mut at_b, mut at_c) = (a.subscribe(), b.subscribe(), c.subscribe());
    a.dial(&b_addr).await.unwrap();
    c.dial(&b_addr).await.unwrap();
    // B reports a peer once it is identified and subscribed to broadcasts, i.e. in B's mesh.
    let mut ready = std::collections::HashSet::new();
    timeout(WAIT, async {
        while ready.len() < 2 {
            if let Ok(Event::PeerDiscovered { peer_id, .. }) = at_b.recv().await {
                ready.insert(peer_id);
            }
        }
    })
    .await
    .expect("B sees A and C");

    let id = a
        .send(&Conversation::Broadcast, "hello, everyone")
        .await
        .unwrap();
    assert_eq!(received(&mut at_b, id).await, "ann");
    assert_eq!(received(&mut at_c, id).await, "ann");

    // Several heartbeats later nothing arrived twice, and A did not get its own message back.
    let settle = Duration::from_millis(1500);
    let (again_b, again_c) = tokio::join!(
        further(&mut at_b, id, settle),
        further(&mut at_c, id, settle)
    );
    assert_eq!((again_b, again_c), (0, 0));
    while let Ok(event) = at_a.try_recv() {
        if let Event::Message(m) = event {
            assert!(m.outgoing, "A received {m:?}");
        }
    }
    for node in [&b, &c] {
        let history = node.history(&Conversation::Broadcast, 100).await.unwrap();
        assert_eq!(history.iter().filter(|m| m.id == id).count(), 1);
    }
    // It really went through B: A and C never connected to each other.
    let c_id = c.peer_id().to_owned();
    assert!(
        !a.peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == c_id && p.connected)
    );

    // The same text again is a new message and arrives again.
    let id2 = a
        .send(&Conversation::Broadcast, "hello, everyone")
        .await
        .unwrap();
    assert_ne!(id, id2);
    received(&mut at_b, id2).await;
    received(&mut at_c, id2).await;
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_sent_before_anyone_is_around_is_delivered_later() {
    let (lonely, _d1) = node("lonely").await;
    let mut own = lonely.subscribe();
    let id = lonely
        .send(&Conversation::Broadcast, "anyone there?")
        .await
        .unwrap();
    // Not published yet: no peer subscribed.
    let early = timeout(Duration::from_millis(300), async {
        loop {
            if let Ok(Event::Delivery { id: got, state }) = own.recv().await
                && got == id
            {
                return state;
            }
        }
    })
    .await;
    assert!(
        early.is_err(),
        "nobody could have received it yet: {early:?}"
    );

    let (late, _d2) = node("late").await;
    let mut at_late = late.subscribe();
    late.dial(&addr(&lonely).await).await.unwrap();
    assert_eq!(received(&mut at_late, id).await, "lonely");
    timeout(WAIT, async {
        loop {
            if let Ok(Event::Delivery {
                id: got,
                state: DeliveryState::Sent,
            }) = own.recv().await
                && got == id
            {
                return;
            }
        }
    })
    .await
    .expect("the sender learns it went out");
    lonely.shutdown().await.unwrap();
    late.shutdown().await.unwrap();
}
