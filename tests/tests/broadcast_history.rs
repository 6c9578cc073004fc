//! Broadcasts are part of history: a real bootstrap and real nodes in-process on loopback (mDNS
//! off). A broadcast reaches every user online once (through the bootstrap, which relays), and a
//! user who logs in later finds it in history, from the bootstrap's kept broadcasts.

use std::collections::HashMap;
use std::time::Duration;

use confab_node::{Conversation, Event, MessageId};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use tokio::sync::broadcast;
use tokio::time::timeout;

/// How many times each message id arrives within `wait`.
async fn arrivals(
    events: &mut broadcast::Receiver<Event>,
    wait: Duration,
) -> HashMap<MessageId, usize> {
    let mut seen = HashMap::new();
    let _ = timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) if m.conversation == Conversation::Broadcast => {
                    *seen.entry(m.id).or_insert(0) += 1;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_everyone_online_once_and_later_users_find_it_in_history() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[3].path(), "dee", &server.addr).await;
    let mut online = Vec::new();
    for (dir, name) in dirs.iter().zip(["ann", "ben", "cal"]) {
        let (client, events) = node(dir.path(), name, &server.addr).await;
        client.register(name, PASSWORD).await.unwrap();
        online.push((client, events));
    }
    // Let the gossip meshes through the bootstrap form (heartbeat 100 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (ann, _) = &online[0];
    let id = ann
        .send(&Conversation::Broadcast, "all hands at 3")
        .await
        .unwrap();
    for (client, events) in online.iter_mut().skip(1) {
        let m = expect_message(events, "all hands at 3").await;
        assert_eq!(m.id, id);
        assert_eq!(m.from.user.as_deref(), Some("ann"));
        // Once: no second copy (from the relay, or from the kept broadcasts) follows.
        let again = arrivals(events, Duration::from_millis(500)).await;
        assert_eq!(again.get(&id), None, "{again:?}");
        let history = client.history(&Conversation::Broadcast, 10).await.unwrap();
        assert_eq!(ids(&history), [id]);
    }

    // dee was away: logging in brings it into history.
    let (dee, mut dee_events) = node(dirs[3].path(), "dee", &server.addr).await;
    let m = expect_message(&mut dee_events, "all hands at 3").await;
    assert_eq!(m.id, id);
    assert_eq!(m.from.user.as_deref(), Some("ann"));
    let history = dee.history(&Conversation::Broadcast, 10).await.unwrap();
    assert_eq!(ids(&history), [id]);
    // A restart does not fetch it again.
    dee.shutdown().await.unwrap();
    let (dee, mut dee_events) = node(dirs[3].path(), "dee", &server.addr).await;
    let again = arrivals(&mut dee_events, Duration::from_millis(800)).await;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        ids(&dee.history(&Conversation::Broadcast, 10).await.unwrap()),
        [id]
    );

    for (client, _) in online {
        client.shutdown().await.unwrap();
    }
    dee.shutdown().await.unwrap();
    server.bootstrap.shutdown().await;
}
