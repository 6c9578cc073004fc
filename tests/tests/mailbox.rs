//! Messages to users end to end: a real bootstrap and real nodes in-process on loopback (mDNS
//! off).
//!
//! Offline delivery (the summary first, then the messages in the order sent); the whole history
//! on a newly logged-in device, and every new message on every device of both accounts; a retried
//! deposit stored and shown once; the outbox surviving a restart while the bootstrap is down, and
//! deposited once when it returns.

use confab_tests::chat::*;
use confab_tests::nodes::node;
use std::time::Duration;

use confab_node::{DeliveryState, Event, Message, MessageId, rpc};
use confab_protocol::bootstrap::{BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse};
use confab_protocol::{ChatMessage, decode, encode};
use confab_tests::raw::{exchange, raw_swarm};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;
use tokio::time::{Instant, sleep};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_user_gets_a_summary_then_the_messages_in_the_order_sent() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[0].path(), "bob", &server.addr).await;
    let (alice, mut alice_events) = node(dirs[1].path(), "alice", &server.addr).await;
    alice.register("alice", PASSWORD).await.unwrap();
    let (carol, mut carol_events) = node(dirs[2].path(), "carol", &server.addr).await;
    carol.register("carol", PASSWORD).await.unwrap();

    // Sending to a user needs a session; usernames ignore case.
    let sent: Vec<MessageId> = {
        let mut ids = Vec::new();
        for text in ["one", "two", "three"] {
            ids.push(send_stored(&alice, &mut alice_events, "Bob", text).await);
        }
        ids
    };
    send_stored(&carol, &mut carol_events, "bob", "from carol").await;
    let mine = alice.history(&user("bob"), 10).await.unwrap();
    assert_eq!(ids(&mine), sent);
    assert!(
        mine.iter()
            .all(|m| m.outgoing && m.delivery == DeliveryState::Sent)
    );

    // Bob comes back: first who wrote how many, then the messages, oldest first.
    let (bob, mut bob_events) = node(dirs[0].path(), "bob", &server.addr).await;
    let (summary, before) = expect(&mut bob_events, "the offline summary", |e| {
        matches!(e, Event::OfflineSummary { .. })
    })
    .await;
    assert!(before.is_empty(), "messages before the summary: {before:?}");
    assert_eq!(
        rpc::event_notification(&summary).unwrap(),
        json!({"jsonrpc": "2.0", "method": "offline_summary",
               "params": {"senders": {"user:alice": 3, "user:carol": 1}, "total": 4}})
    );
    let Event::OfflineSummary { senders, total } = summary else {
        unreachable!()
    };
    assert_eq!(total, 4);
    let mut senders = senders;
    senders.sort();
    assert_eq!(senders, [(user("alice"), 3), (user("carol"), 1)]);

    let arrived = messages(&mut bob_events, 4).await;
    let from_alice: Vec<&Message> = arrived
        .iter()
        .filter(|m| m.conversation == user("alice"))
        .collect();
    assert_eq!(
        from_alice.iter().map(|m| m.id).collect::<Vec<_>>(),
        sent,
        "alice's in the order sent"
    );
    for m in &from_alice {
        assert_eq!(m.from.user.as_deref(), Some("alice"));
        assert_eq!(m.from.peer_id, alice.peer_id());
        assert_eq!(m.from.name, "alice");
        assert!(m.notify && !m.outgoing);
    }
    let from_carol: Vec<&Message> = arrived
        .iter()
        .filter(|m| m.conversation == user("carol"))
        .collect();
    assert_eq!(from_carol.len(), 1);

    // Once bob's device has them, alice hears that each was delivered, and her history says so.
    for id in &sent {
        expect(&mut alice_events, "a delivered receipt", |e| {
            matches!(e, Event::Delivery { id: got, state: DeliveryState::Delivered } if got == id)
        })
        .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = alice.history(&user("bob"), 10).await.unwrap();
        if now.iter().all(|m| m.delivery == DeliveryState::Delivered) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(from_carol[0].text.as_deref(), Some("from carol"));

    let history = bob.history(&user("alice"), 100).await.unwrap();
    assert_eq!(texts(&history), ["one", "two", "three"]);
    assert_eq!(
        texts(&bob.history(&user("carol"), 100).await.unwrap()),
        ["from carol"]
    );
    // The same through JSON-RPC (usernames ignore case there too).
    let listed = rpc::call(&bob, "history", &json!({"with": "user:Alice"}))
        .await
        .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["text"], "one");
    assert_eq!(listed[0]["conversation"], "user:alice");
    assert_eq!(listed[0]["from"]["user"], "alice");
    assert_eq!(listed[0]["notify"], true);

    // Online now: a new message (sent over JSON-RPC) arrives at once, no summary this time.
    let answer = rpc::call(&alice, "send", &json!({"to": "user:bob", "text": "four"}))
        .await
        .unwrap();
    assert!(answer["id"].is_string(), "{answer}");
    let (_, before) = expect(
        &mut bob_events,
        "message \"four\"",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("four")),
    )
    .await;
    assert!(before.is_empty(), "nothing shown twice: {before:?}");

    // Bob restarts: he is up to date, so no summary and nothing again.
    bob.shutdown().await.unwrap();
    let (bob, mut bob_events) = node(dirs[0].path(), "bob", &server.addr).await;
    send_stored(&carol, &mut carol_events, "bob", "welcome back").await;
    let (_, before) = expect(
        &mut bob_events,
        "message \"welcome back\"",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("welcome back")),
    )
    .await;
    assert!(before.is_empty(), "shown again after a restart: {before:?}");
    assert_eq!(
        texts(&bob.history(&user("alice"), 100).await.unwrap()),
        ["one", "two", "three", "four"]
    );

    // Sending to an account that does not exist fails for good.
    let id = alice.send(&user("nobody"), "hello?").await.unwrap();
    expect(
        &mut alice_events,
        "the deposit to nobody failing",
        |e| matches!(e, Event::Delivery { id: got, state: DeliveryState::Failed } if *got == id),
    )
    .await;

    for client in [alice, bob, carol] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_of_an_account_shows_the_whole_conversation() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (laptop, mut laptop_events) = node(d1.path(), "alice's laptop", &server.addr).await;
    laptop.register("alice", PASSWORD).await.unwrap();
    let (bob, mut bob_events) = node(d2.path(), "bob", &server.addr).await;
    bob.register("bob", PASSWORD).await.unwrap();

    // A conversation, one message at a time.
    for (from_alice, text) in [
        (true, "hi bob"),
        (false, "hi alice"),
        (true, "how are you?"),
    ] {
        if from_alice {
            laptop.send(&user("bob"), text).await.unwrap();
            expect_message(&mut bob_events, text).await;
        } else {
            bob.send(&user("alice"), text).await.unwrap();
            expect_message(&mut laptop_events, text).await;
        }
    }
    let on_laptop = laptop.history(&user("bob"), 100).await.unwrap();
    assert_eq!(texts(&on_laptop), ["hi bob", "hi alice", "how are you?"]);

    // A new device: the whole history with bob, in the same order, both directions.
    let (phone, mut phone_events) = node(d3.path(), "alice's phone", &server.addr).await;
    phone.login("alice", PASSWORD).await.unwrap();
    let arrived = messages(&mut phone_events, 3).await;
    assert_eq!(ids(&arrived), ids(&on_laptop));
    let on_phone = phone.history(&user("bob"), 100).await.unwrap();
    assert_eq!(ids(&on_phone), ids(&on_laptop));
    for (m, outgoing) in on_phone.iter().zip([true, false, true]) {
        assert_eq!(m.outgoing, outgoing, "{m:?}");
        assert_eq!(m.notify, !outgoing, "{m:?}");
        assert_eq!(m.conversation, user("bob"));
        let author = if outgoing {
            laptop.peer_id()
        } else {
            bob.peer_id()
        };
        assert_eq!(m.from.peer_id, author);
    }
    assert_eq!(on_phone[0].from.user.as_deref(), Some("alice"));
    assert_eq!(on_phone[1].from.user.as_deref(), Some("bob"));

    // A new message from bob arrives on both devices.
    bob.send(&user("alice"), "fine, thanks").await.unwrap();
    expect_message(&mut laptop_events, "fine, thanks").await;
    expect_message(&mut phone_events, "fine, thanks").await;

    // What alice writes on one device appears on the other: hers, without an alert.
    phone.send(&user("bob"), "from my phone").await.unwrap();
    let echo = expect_message(&mut laptop_events, "from my phone").await;
    assert!(echo.outgoing && !echo.notify, "{echo:?}");
    assert_eq!(echo.from.peer_id, phone.peer_id());
    assert_eq!(echo.conversation, user("bob"));
    let at_bob = expect_message(&mut bob_events, "from my phone").await;
    assert!(!at_bob.outgoing && at_bob.notify);
    assert_eq!(at_bob.conversation, user("alice"));

    // Both devices agree, and bob's side too.
    let on_laptop = laptop.history(&user("bob"), 100).await.unwrap();
    let on_phone = phone.history(&user("bob"), 100).await.unwrap();
    assert_eq!(ids(&on_phone), ids(&on_laptop));
    assert_eq!(
        ids(&bob.history(&user("alice"), 100).await.unwrap()),
        ids(&on_laptop)
    );
    assert_eq!(
        texts(&on_laptop),
        [
            "hi bob",
            "hi alice",
            "how are you?",
            "fine, thanks",
            "from my phone"
        ]
    );

    for client in [laptop, phone, bob] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_deposit_is_stored_and_shown_once() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (laptop, mut laptop_events) = node(d1.path(), "alice's laptop", &server.addr).await;
    laptop.register("alice", PASSWORD).await.unwrap();
    let (bob, mut bob_events) = node(d2.path(), "bob", &server.addr).await;
    bob.register("bob", PASSWORD).await.unwrap();

    // Another device of alice's that speaks the protocol by hand: it deposits a message, loses
    // the acknowledgement (as far as it knows) and deposits the very same message again.
    let addr: Multiaddr = server.addr.parse().unwrap();
    let Some(Protocol::P2p(server_id)) = addr.iter().last() else {
        panic!("no peer id in {addr}")
    };
    let server_id: PeerId = server_id;
    let mut raw = raw_swarm(BOOTSTRAP_PROTOCOL);
    raw.dial(addr).unwrap();
    let mut ask = async |request: BootstrapRequest| {
        let answer = exchange(&mut raw, server_id, encode(&request).unwrap())
            .await
            .unwrap();
        decode::<BootstrapResponse>(&answer).unwrap()
    };
    let login = ask(BootstrapRequest::Login {
        user: "alice".into(),
        password: PASSWORD.into(),
    })
    .await;
    assert!(
        matches!(login, BootstrapResponse::Session { .. }),
        "{login:?}"
    );
    let message = ChatMessage::text("alice's tablet", "only once", 1);
    let deposit = BootstrapRequest::Deposit {
        to: "bob".into(),
        message: message.clone(),
    };
    let first = ask(deposit.clone()).await;
    assert!(
        matches!(first, BootstrapResponse::Deposited { .. }),
        "{first:?}"
    );
    let again = ask(deposit).await;
    assert_eq!(again, first, "a retry gets the same answer");
    let after = ask(BootstrapRequest::Deposit {
        to: "bob".into(),
        message: ChatMessage::text("alice's tablet", "after", 2),
    })
    .await;
    assert!(
        matches!(after, BootstrapResponse::Deposited { .. }),
        "{after:?}"
    );

    // Bob and alice's laptop each show it once, before the next one.
    for events in [&mut bob_events, &mut laptop_events] {
        let got = messages(events, 2).await;
        assert_eq!(texts(&got), ["only once", "after"]);
        assert_eq!(got[0].id, message.id);
    }
    let at_bob = bob.history(&user("alice"), 100).await.unwrap();
    assert_eq!(texts(&at_bob), ["only once", "after"]);
    let at_laptop = laptop.history(&user("bob"), 100).await.unwrap();
    assert_eq!(texts(&at_laptop), ["only once", "after"]);
    assert!(at_laptop.iter().all(|m| m.outgoing && !m.notify));

    laptop.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    server.bootstrap.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_restart_and_is_deposited_once_when_the_bootstrap_returns() {
    let server_dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let server = server_on(server_dir.path(), &listen).await;
    let addr = server.addr.clone();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    registered_then_away(d2.path(), "bob", &addr).await;
    let (alice, _) = node(d1.path(), "alice", &addr).await;
    alice.register("alice", PASSWORD).await.unwrap();

    // The bootstrap goes away; alice writes, restarts, writes again.
    server.bootstrap.shutdown().await;
    let first = alice
        .send(&user("bob"), "while you were down")
        .await
        .unwrap();
    alice.shutdown().await.unwrap();
    let (alice, mut alice_events) = node(d1.path(), "alice", &addr).await;
    let second = alice
        .send(&user("bob"), "and after a restart")
        .await
        .unwrap();
    let waiting = alice.history(&user("bob"), 10).await.unwrap();
    assert_eq!(ids(&waiting), [first, second]);
    assert!(waiting.iter().all(|m| m.delivery == DeliveryState::Pending));

    // It comes back (same data dir, same address): both are deposited, in order.
    let server = server_on(server_dir.path(), &listen).await;
    assert_eq!(server.addr, addr);
    for id in [first, second] {
        expect(
            &mut alice_events,
            "a deposit once the bootstrap is back",
            |e| matches!(e, Event::Delivery { id: got, state: DeliveryState::Sent } if *got == id),
        )
        .await;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let now = alice.history(&user("bob"), 10).await.unwrap();
        if now.iter().all(|m| m.delivery == DeliveryState::Sent) {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {now:?}");
        sleep(Duration::from_millis(50)).await;
    }

    // A restart now deposits nothing again; bob gets each once, in order.
    alice.shutdown().await.unwrap();
    let (alice, _) = node(d1.path(), "alice", &addr).await;
    let (bob, mut bob_events) = node(d2.path(), "bob", &addr).await;
    let (summary, _) = expect(&mut bob_events, "the offline summary", |e| {
        matches!(e, Event::OfflineSummary { .. })
    })
    .await;
    assert_eq!(
        summary,
        Event::OfflineSummary {
            senders: vec![(user("alice"), 2)],
            total: 2
        }
    );
    let got = messages(&mut bob_events, 2).await;
    assert_eq!(ids(&got), [first, second]);
    // One more message, deposited after those: nothing in between was a copy.
    alice.send(&user("bob"), "last").await.unwrap();
    let (_, before) = expect(
        &mut bob_events,
        "message \"last\"",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("last")),
    )
    .await;
    assert!(before.is_empty(), "copies: {before:?}");
    assert_eq!(
        texts(&bob.history(&user("alice"), 100).await.unwrap()),
        ["while you were down", "and after a restart", "last"]
    );

    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
    server.bootstrap.shutdown().await;
}
