//! Recall and delete end to end: a real bootstrap and real nodes in-process on loopback (mDNS
//! off). A recall reaches the receiver online at once and offline at login, and every device of
//! both accounts; only the author may recall; a deletion leaves the other side's copy alone.

use confab_node::{Client, Conversation, Event, MessageId, RecallError};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use tokio::sync::broadcast;

/// Waits for `recalled {id}`.
async fn expect_recalled(events: &mut broadcast::Receiver<Event>, id: MessageId) {
    expect(
        events,
        &format!("recalled {id}"),
        |e| matches!(e, Event::Recalled { id: got, .. } if *got == id),
    )
    .await;
}

/// The message `id` in `client`'s history with `with`, if there.
async fn in_history(client: &Client, with: &str, id: MessageId) -> Option<confab_node::Message> {
    client
        .history(&user(with), 100)
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recall_reaches_every_copy_and_only_the_author_may_recall() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[3].path(), "carol", &server.addr).await;
    let (alice, mut alice_events) = node(dirs[0].path(), "alice", &server.addr).await;
    alice.register("alice", PASSWORD).await.unwrap();
    let (phone, mut phone_events) = node(dirs[1].path(), "alice's phone", &server.addr).await;
    phone.login("alice", PASSWORD).await.unwrap();
    let (bob, mut bob_events) = node(dirs[2].path(), "bob", &server.addr).await;
    bob.register("bob", PASSWORD).await.unwrap();

    // Online: bob has it, then it is recalled everywhere.
    let oops = send_stored(&alice, &mut alice_events, "bob", "oops, wrong chat").await;
    expect_message(&mut bob_events, "oops, wrong chat").await;
    expect_message(&mut phone_events, "oops, wrong chat").await;
    // Not bob's to recall.
    assert!(matches!(
        bob.recall(oops).await,
        Err(RecallError::NotAllowed(_))
    ));
    alice.recall(oops).await.unwrap();
    expect_recalled(&mut alice_events, oops).await;
    expect_recalled(&mut bob_events, oops).await;
    expect_recalled(&mut phone_events, oops).await;
    for (client, with) in [(&alice, "bob"), (&phone, "bob"), (&bob, "alice")] {
        let m = in_history(client, with, oops).await.expect("still listed");
        assert!(m.recalled, "{m:?}");
        assert_eq!(m.text, None, "the content is gone");
    }

    // Offline: carol never sees the text, at login or after.
    let secret = send_stored(&alice, &mut alice_events, "carol", "not for you").await;
    alice.recall(secret).await.unwrap();
    expect_recalled(&mut alice_events, secret).await;
    // (The summary does not count it either: the recalled message is not "sent to you".)
    let (carol, mut carol_events) = node(dirs[3].path(), "carol", &server.addr).await;
    // A message after it arrives; the recalled one never showed its text.
    alice.send(&user("carol"), "hello carol").await.unwrap();
    let (_, before) = expect(
        &mut carol_events,
        "the next message",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("hello carol")),
    )
    .await;
    assert!(
        before
            .iter()
            .all(|m| m.text.as_deref() != Some("not for you")),
        "{before:?}"
    );
    let history = carol.history(&user("alice"), 10).await.unwrap();
    assert!(
        history
            .iter()
            .all(|m| m.text.as_deref() != Some("not for you")),
        "{history:?}"
    );

    // Delete: gone from bob's history, still in alice's.
    let keep = send_stored(&alice, &mut alice_events, "bob", "keep or delete").await;
    expect_message(&mut bob_events, "keep or delete").await;
    bob.delete(keep).await.unwrap();
    expect(&mut bob_events, "deleted", |e| {
        matches!(e, Event::Deleted { id, conversation } if *id == keep && *conversation == Conversation::User("alice".into()))
    })
    .await;
    assert!(in_history(&bob, "alice", keep).await.is_none());
    let at_alice = in_history(&alice, "bob", keep)
        .await
        .expect("alice keeps hers");
    assert_eq!(at_alice.text.as_deref(), Some("keep or delete"));
    assert!(!at_alice.recalled);
    // A deleted message does not come back with a later sync.
    bob.shutdown().await.unwrap();
    let (bob, _) = node(dirs[2].path(), "bob", &server.addr).await;
    alice.send(&user("bob"), "after the restart").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let history = bob.history(&user("alice"), 100).await.unwrap();
        if history
            .iter()
            .any(|m| m.text.as_deref() == Some("after the restart"))
        {
            assert!(history.iter().all(|m| m.id != keep), "{history:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    for client in [alice, phone, bob, carol] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}
