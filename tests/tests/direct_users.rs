//! Messages to users go straight to their online devices as well as into the mailbox, and what
//! happens to them comes back as receipts: a real bootstrap and real nodes in-process on loopback
//! (mDNS off).
//!
//! - Two users keep chatting directly while their bootstrap is down (on a LAN, or anywhere they
//!   reach each other); when it returns, what they wrote is uploaded once and their histories
//!   agree, on every device.
//! - `delivered` reaches the author's devices even when they were offline when it happened, and
//!   `read` (after `mark_read`) reaches every device of the author and of the reader.

use std::time::Duration;

use confab_node::{Client, DeliveryState, Event, MessageId};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep};

/// Waits for `delivery {id, state}`.
async fn expect_state(
    events: &mut broadcast::Receiver<Event>,
    id: MessageId,
    state: DeliveryState,
) {
    expect(
        events,
        &format!("{id} {}", state.as_str()),
        |e| matches!(e, Event::Delivery { id: got, state: s } if *got == id && *s == state),
    )
    .await;
}

/// Polls `client`'s history with `with` until `done` holds for it.
async fn history_until(
    client: &Client,
    with: &str,
    what: &str,
    done: impl Fn(&[confab_node::Message]) -> bool,
) -> Vec<confab_node::Message> {
    let deadline = Instant::now() + WAIT;
    loop {
        let history = client.history(&user(with), 100).await.unwrap();
        if done(&history) {
            return history;
        }
        assert!(Instant::now() < deadline, "{what}: {history:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// `a` and `b` are friends (the bootstrap lists a user's devices only to friends).
async fn befriend(a: (&Client, &str), b: (&Client, &str)) {
    a.0.friend_add(b.1).await.unwrap();
    b.0.friend_accept(a.1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_keep_chatting_directly_while_the_bootstrap_is_down() {
    let server_dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let server = server_on(server_dir.path(), &listen).await;
    let addr = server.addr.clone();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, mut alice_events) = node(dirs[0].path(), "alice", &addr).await;
    alice.register("alice", PASSWORD).await.unwrap();
    let (bob, mut bob_events) = node(dirs[1].path(), "bob", &addr).await;
    bob.register("bob", PASSWORD).await.unwrap();
    befriend((&alice, "alice"), (&bob, "bob")).await;

    // Online: straight to bob's device (delivered by its acknowledgement), and into the mailbox.
    let hello = alice.send(&user("bob"), "hello bob").await.unwrap();
    let got = expect_message(&mut bob_events, "hello bob").await;
    assert_eq!(got.conversation, user("alice"));
    assert_eq!(got.from.user.as_deref(), Some("alice"));
    assert_eq!(got.from.peer_id, alice.peer_id());
    expect_state(&mut alice_events, hello, DeliveryState::Delivered).await;

    // The bootstrap goes away. They still reach each other, both ways, as users.
    server.bootstrap.shutdown().await;
    let down1 = alice.send(&user("bob"), "are you there?").await.unwrap();
    let got = expect_message(&mut bob_events, "are you there?").await;
    assert_eq!(got.conversation, user("alice"));
    expect_state(&mut alice_events, down1, DeliveryState::Delivered).await;
    let down2 = bob.send(&user("alice"), "yes, still here").await.unwrap();
    let got = expect_message(&mut alice_events, "yes, still here").await;
    assert_eq!(got.conversation, user("bob"));
    assert_eq!(got.from.user.as_deref(), Some("bob"));
    expect_state(&mut bob_events, down2, DeliveryState::Delivered).await;
    let alice_side = alice.history(&user("bob"), 100).await.unwrap();
    let bob_side = bob.history(&user("alice"), 100).await.unwrap();
    assert_eq!(ids(&alice_side), [hello, down1, down2]);
    assert_eq!(ids(&bob_side), ids(&alice_side));

    // It returns (same data, same address): what they wrote meanwhile is uploaded, once. A new
    // device of bob's gets the whole conversation from the mailbox, each message once.
    let server = server_on(server_dir.path(), &listen).await;
    assert_eq!(server.addr, addr);
    let (tablet, _) = node(dirs[2].path(), "bob's tablet", &addr).await;
    tablet.login("bob", PASSWORD).await.unwrap();
    history_until(&tablet, "alice", "all three on the new device", |h| {
        h.len() >= 3
    })
    .await;
    // One more after the uploads: it comes last everywhere, and nothing was stored twice.
    let last = alice
        .send(&user("bob"), "good, the server is back")
        .await
        .unwrap();
    let on_tablet = history_until(&tablet, "alice", "the last message", |h| {
        h.iter().any(|m| m.id == last)
    })
    .await;
    assert_eq!(on_tablet.len(), 4, "{on_tablet:?}");
    let mut uploaded = ids(&on_tablet[..3]);
    uploaded.sort();
    let mut expected = vec![hello, down1, down2];
    expected.sort();
    assert_eq!(uploaded, expected, "each message once");
    assert_eq!(on_tablet[3].id, last);
    expect_message(&mut bob_events, "good, the server is back").await;
    // Both sides agree, and nothing changed in the order they saw.
    let alice_side = alice.history(&user("bob"), 100).await.unwrap();
    let bob_side = bob.history(&user("alice"), 100).await.unwrap();
    assert_eq!(ids(&alice_side), [hello, down1, down2, last]);
    assert_eq!(ids(&bob_side), ids(&alice_side));
    assert!(
        alice_side
            .iter()
            .filter(|m| m.outgoing)
            .all(|m| m.delivery >= DeliveryState::Delivered),
        "{alice_side:?}"
    );

    for client in [alice, bob, tablet] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_and_read_reach_every_device_of_both_accounts() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[2].path(), "bob", &server.addr).await;
    let (laptop, mut laptop_events) = node(dirs[0].path(), "alice's laptop", &server.addr).await;
    laptop.register("alice", PASSWORD).await.unwrap();
    let (phone, mut phone_events) = node(dirs[1].path(), "alice's phone", &server.addr).await;
    phone.login("alice", PASSWORD).await.unwrap();

    // bob is away: two messages wait in his mailbox, `sent`.
    let first = send_stored(&laptop, &mut laptop_events, "bob", "first").await;
    let second = send_stored(&laptop, &mut laptop_events, "bob", "second").await;
    for text in ["first", "second"] {
        expect_message(&mut phone_events, text).await;
    }
    // The phone goes away before bob comes back.
    phone.shutdown().await.unwrap();

    // bob's device fetches them: `delivered` on the laptop at once...
    let (bob, mut bob_events) = node(dirs[2].path(), "bob", &server.addr).await;
    for text in ["first", "second"] {
        expect_message(&mut bob_events, text).await;
    }
    for id in [first, second] {
        expect_state(&mut laptop_events, id, DeliveryState::Delivered).await;
    }
    // ...and on the phone when it returns (the receipt waited in alice's mailbox).
    let (phone, mut phone_events) = node(dirs[1].path(), "alice's phone", &server.addr).await;
    for id in [first, second] {
        expect_state(&mut phone_events, id, DeliveryState::Delivered).await;
    }

    // bob reads them: `read` on both of alice's devices, and on bob's.
    assert_eq!(bob.mark_read(&user("alice")).await.unwrap(), 2);
    for id in [first, second] {
        expect_state(&mut bob_events, id, DeliveryState::Read).await;
        expect_state(&mut laptop_events, id, DeliveryState::Read).await;
        expect_state(&mut phone_events, id, DeliveryState::Read).await;
    }
    assert_eq!(
        bob.mark_read(&user("alice")).await.unwrap(),
        0,
        "read already"
    );
    for client in [&laptop, &phone] {
        let history = client.history(&user("bob"), 10).await.unwrap();
        assert_eq!(ids(&history), [first, second]);
        assert!(
            history.iter().all(|m| m.delivery == DeliveryState::Read),
            "{history:?}"
        );
    }

    // A new device of bob's has them read too (its account read them elsewhere).
    let (tablet, _) = node(dirs[3].path(), "bob's tablet", &server.addr).await;
    tablet.login("bob", PASSWORD).await.unwrap();
    history_until(&tablet, "alice", "both read on the new device", |h| {
        h.len() == 2 && h.iter().all(|m| m.delivery == DeliveryState::Read)
    })
    .await;
    // A message after that is unread there until bob reads it, and alice sees who read when.
    let third = laptop.send(&user("bob"), "third").await.unwrap();
    let on_tablet = history_until(&tablet, "alice", "the third message", |h| {
        h.iter().any(|m| m.id == third)
    })
    .await;
    assert_eq!(on_tablet[2].delivery, DeliveryState::Delivered);
    assert_eq!(tablet.mark_read(&user("alice")).await.unwrap(), 1);
    expect_state(&mut laptop_events, third, DeliveryState::Read).await;
    expect_state(&mut bob_events, third, DeliveryState::Read).await;

    for client in [laptop, phone, bob, tablet] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}
