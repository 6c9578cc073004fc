//! End-to-end encryption (MLS) end to end: a real bootstrap and real nodes in-process on
//! loopback (mDNS off).
//!
//! - An encrypted DM (text and a file) to a user who is offline: nothing under the bootstrap's
//!   data dir contains the plaintext; the receiver reads both at login, marked encrypted.
//! - A group of three made encrypted; a member is removed: what is sent afterwards reaches the
//!   others, and the removed member's device, with its own stored MLS state, cannot decrypt it.
//! - Two admins remove a member each at the same moment: the bootstrap stores one commit per
//!   epoch, the loser catches up and commits again; every member ends at the same epoch with
//!   the same devices and they keep reading each other.
//! - A user's second device joins the encrypted conversations and reads (and writes) new
//!   messages.
//! - Both allow-listed X25519 suites work end to end; a conversation's suite cannot be changed.

use std::path::Path;
use std::time::Duration;

use confab_node::mls::Mls;
use confab_node::{Client, Conversation, E2eError, Event};
use confab_protocol::e2e::{Suite, dm_conversation};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use libp2p::PeerId;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep};

fn group(id: &str) -> Conversation {
    Conversation::Group(id.into())
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files under `dir` that contain `needle`.
fn containing(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Waits until `check` holds for every client's view of `conversation`'s encryption.
async fn until_encryption(
    clients: &[&Client],
    conversation: &Conversation,
    what: &str,
    check: impl Fn(&[confab_node::client::Encryption]) -> bool,
) -> Vec<confab_node::client::Encryption> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut views = Vec::new();
        for c in clients {
            if let Some(e) = c.encryption(conversation).await.unwrap() {
                views.push(e);
            }
        }
        if views.len() == clients.len() && check(&views) {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}: {views:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Every view at the same epoch, with the same devices, `n` of them.
fn converged(n: usize) -> impl Fn(&[confab_node::client::Encryption]) -> bool {
    move |views| {
        let first = &views[0];
        first.epoch.is_some()
            && first.devices.len() == n
            && views.iter().all(|v| {
                let mut a = v.devices.clone();
                let mut b = first.devices.clone();
                a.sort();
                b.sort();
                v.epoch == first.epoch && a == b
            })
    }
}

/// The next message event in `conversation` with text `text`: it must be marked encrypted.
async fn expect_encrypted(events: &mut broadcast::Receiver<Event>, text: &str) {
    let m = expect_message(events, text).await;
    assert!(
        m.encrypted,
        "{text:?} arrived but not marked encrypted: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_dm_to_an_offline_user_is_only_ciphertext_at_the_bootstrap() {
    logs();
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Bob registers (his device publishes its key packages), becomes alice's friend (key
    // packages are handed to friends and fellow group members), and goes away.
    let (alice, mut alice_events) = registered(dirs[0].path(), "alice", &server.addr).await;
    let (bob, _) = registered(dirs[1].path(), "bob", &server.addr).await;
    befriend(&alice, &bob).await;
    bob.shutdown().await.unwrap();

    let suite = alice.encrypt(&user("bob"), None).await.unwrap();
    assert_eq!(suite, Suite::DEFAULT);
    let secret = "the plaintext marker 7f3a9c — only bob may read this";
    let id = send_stored(&alice, &mut alice_events, "bob", secret).await;
    // A file too: it goes to the bootstrap (bob is away), as ciphertext.
    let source = dirs[2].path().join("plans.txt");
    let file_marker = b"FILE-PLAINTEXT-MARKER-0123456789";
    let mut content = Vec::new();
    for i in 0..4096u32 {
        content.extend_from_slice(file_marker);
        content.extend_from_slice(&i.to_be_bytes());
    }
    std::fs::write(&source, &content).unwrap();
    let file_id = alice
        .send_file(&user("bob"), &source, Some("the plans"))
        .await
        .unwrap();
    expect(&mut alice_events, "the file held by the bootstrap", |e| {
        matches!(e, Event::FileHold { id, state: confab_node::FileHoldState::Held, .. } if *id == file_id)
    })
    .await;
    // Alice's own history has it in clear, marked encrypted.
    let history = alice.history(&user("bob"), 10).await.unwrap();
    let mine = history.iter().find(|m| m.id == id).unwrap();
    assert!(mine.encrypted);
    assert_eq!(mine.text.as_deref(), Some(secret));
    alice.shutdown().await.unwrap();

    // Nothing the bootstrap keeps (database, held files, backups) has the plaintext.
    for needle in [secret.as_bytes(), &file_marker[..], b"the plans"] {
        let found = containing(server_dir.path(), needle);
        assert!(
            found.is_empty(),
            "plaintext {:?} found in {found:?}",
            String::from_utf8_lossy(needle)
        );
    }
    assert!(!files_under(server_dir.path()).is_empty());

    // Bob comes back: both arrive, decrypted, marked encrypted.
    let (bob, mut bob_events) = node(dirs[1].path(), "bob", &server.addr).await;
    let got = expect_message(&mut bob_events, secret).await;
    assert!(got.encrypted);
    assert_eq!(got.from.user.as_deref(), Some("alice"));
    let (event, _) = expect(
        &mut bob_events,
        "the file message",
        |e| matches!(e, Event::Message(m) if m.id == file_id),
    )
    .await;
    let Event::Message(file_message) = event else {
        unreachable!()
    };
    assert!(file_message.encrypted);
    assert_eq!(file_message.text.as_deref(), Some("the plans"));
    let attachment = file_message.attachment.clone().unwrap();
    assert_eq!(attachment.name, "plans.txt");
    // Fetched from the bootstrap (alice is gone), decrypted on the way out.
    let dest = dirs[2].path().join("bob-downloads");
    let path = bob.fetch_file(file_id, &dest).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let enc = bob.encryption(&user("alice")).await.unwrap().unwrap();
    assert_eq!(enc.suite, Suite::DEFAULT);
    bob.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_decrypt_what_is_sent_afterwards() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (dir, name) in dirs.iter().zip(["alice", "bob", "carol"]) {
        let (client, events) = registered(dir.path(), name, &server.addr).await;
        nodes.push((client, events));
    }
    let (owned, mut events): (Vec<Client>, Vec<_>) = nodes.into_iter().unzip();
    let clients: Vec<&Client> = owned.iter().collect();
    let g = clients[0]
        .group_create("crew", &["bob", "carol"])
        .await
        .unwrap();
    let conv = group(&g.id);
    // Every member has the roster before encryption starts.
    until_groups(&clients, &g.id, 3).await;
    clients[0].encrypt(&conv, None).await.unwrap();
    until_encryption(&clients, &conv, "all three in the group", converged(3)).await;
    clients[1].send(&conv, "hello crew").await.unwrap();
    for i in [0, 2] {
        expect_encrypted(&mut events[i], "hello crew").await;
    }

    clients[0].group_remove(&g.id, "carol").await.unwrap();
    let views =
        until_encryption(&clients[..2], &conv, "carol's device removed", converged(2)).await;
    assert!(views[0].devices.iter().all(|(u, _)| u != "carol"));
    clients[0].send(&conv, "carol is gone").await.unwrap();
    expect_encrypted(&mut events[1], "carol is gone").await;

    // At the node level, with the states the nodes stored: what Alice's device encrypts now
    // Bob's device reads, Carol's cannot.
    let peers: Vec<PeerId> = clients
        .iter()
        .map(|c| c.peer_id().parse().unwrap())
        .collect();
    for client in &clients {
        client.shutdown().await.unwrap();
    }
    let name = format!("group:{}", g.id);
    let state =
        |i: usize, user: &str| Mls::open(&dirs[i].path().join("mls.redb"), user, peers[i]).unwrap();
    let alice = state(0, "alice");
    let ciphertext = alice.encrypt(&name, b"sent after carol left").unwrap();
    let bob = state(1, "bob");
    assert_eq!(
        bob.decrypt(&name, &ciphertext).unwrap().plaintext,
        b"sent after carol left"
    );
    let carol = state(2, "carol");
    let refused = carol.decrypt(&name, &ciphertext);
    assert!(refused.is_err(), "carol's device decrypted it: {refused:?}");
}

/// A node on `dir` with a new account `name` (its key packages published).
async fn registered(
    dir: &Path,
    name: &str,
    bootstrap: &str,
) -> (Client, broadcast::Receiver<Event>) {
    let (client, events) = node(dir, name, bootstrap).await;
    client.register(name, PASSWORD).await.unwrap();
    (client, events)
}

/// Logs to the test's output with `RUST_LOG` set (e.g. `RUST_LOG=confab_node=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Makes alice and bob friends.
async fn befriend(alice: &Client, bob: &Client) {
    alice.friend_add("bob").await.unwrap();
    let deadline = Instant::now() + WAIT;
    while bob.friend_accept("alice").await.is_err() {
        assert!(Instant::now() < deadline, "bob never saw alice's request");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every client knows the group with `n` members.
async fn until_groups(clients: &[&Client], id: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    for c in clients {
        loop {
            let groups = c.groups().await.unwrap();
            if groups.iter().any(|g| g.id == id && g.members.len() == n) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not reach everyone"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_change_membership_at_once_and_everyone_converges() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let dirs: Vec<_> = names.iter().map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (dir, name) in dirs.iter().zip(names) {
        let (client, events) = registered(dir.path(), name, &server.addr).await;
        nodes.push((client, events));
    }
    let (owned, mut events): (Vec<Client>, Vec<_>) = nodes.into_iter().unzip();
    let clients: Vec<&Client> = owned.iter().collect();
    let g = clients[0]
        .group_create("admins", &["bob", "carol", "dave", "erin"])
        .await
        .unwrap();
    clients[0]
        .group_set_role(&g.id, "bob", confab_node::Role::Admin)
        .await
        .unwrap();
    let conv = group(&g.id);
    until_groups(&clients, &g.id, 5).await;
    clients[0]
        .encrypt(&conv, Some(Suite::X25519ChaCha20Poly1305))
        .await
        .unwrap();
    let before = until_encryption(&clients, &conv, "all five in the group", converged(5)).await;
    let start_epoch = before[0].epoch.unwrap();

    // Both admins at the same moment: alice removes carol, bob removes dave.
    let (a, b) = tokio::join!(
        clients[0].group_remove(&g.id, "carol"),
        clients[1].group_remove(&g.id, "dave"),
    );
    a.unwrap();
    b.unwrap();
    let remaining = [clients[0], clients[1], clients[4]];
    let after =
        until_encryption(&remaining, &conv, "the same epoch everywhere", converged(3)).await;
    let users: Vec<&str> = after[0].devices.iter().map(|(u, _)| u.as_str()).collect();
    assert!(
        !users.contains(&"carol") && !users.contains(&"dave"),
        "{users:?}"
    );
    // One commit per epoch: two removals moved the group one or two epochs on, never more
    // than the commits that won.
    let end_epoch = after[0].epoch.unwrap();
    assert!(
        (start_epoch + 1..=start_epoch + 2).contains(&end_epoch),
        "{start_epoch} -> {end_epoch}"
    );

    for (from, text) in [(0, "from alice"), (1, "from bob"), (4, "from erin")] {
        clients[from].send(&conv, text).await.unwrap();
        for to in [0, 1, 4].into_iter().filter(|t| *t != from) {
            expect_encrypted(&mut events[to], text).await;
        }
    }
    for client in &clients {
        client.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_device_joins_the_encrypted_conversations() {
    logs();
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, mut alice_events) = registered(dirs[0].path(), "alice", &server.addr).await;
    let (bob, mut bob_events) = registered(dirs[1].path(), "bob", &server.addr).await;
    befriend(&alice, &bob).await;
    alice.encrypt(&user("bob"), None).await.unwrap();
    let g = alice.group_create("pair", &["bob"]).await.unwrap();
    until_groups(&[&alice, &bob], &g.id, 2).await;
    alice.encrypt(&group(&g.id), None).await.unwrap();
    until_encryption(
        &[&alice, &bob],
        &group(&g.id),
        "both in the group",
        converged(2),
    )
    .await;

    // Alice's laptop logs in: it joins both conversations by itself.
    let (laptop, mut laptop_events) = node(dirs[2].path(), "alice-laptop", &server.addr).await;
    laptop.login("alice", PASSWORD).await.unwrap();
    until_encryption(
        &[&alice, &laptop],
        &group(&g.id),
        "the laptop in the group",
        converged(3),
    )
    .await;
    let dm = until_encryption(&[&laptop], &user("bob"), "the laptop in the DM", |v| {
        v[0].epoch.is_some() && v[0].devices.len() == 3
    })
    .await;
    assert!(dm[0].devices.iter().filter(|(u, _)| u == "alice").count() == 2);
    // Bob's device has caught up with the join before it writes.
    until_encryption(&[&bob], &user("alice"), "bob sees the laptop", |v| {
        v.iter().all(|e| e.devices.len() == 3)
    })
    .await;

    bob.send(&user("alice"), "to both of alice's devices")
        .await
        .unwrap();
    expect_encrypted(&mut laptop_events, "to both of alice's devices").await;
    expect_encrypted(&mut alice_events, "to both of alice's devices").await;
    bob.send(&group(&g.id), "in the group").await.unwrap();
    expect_encrypted(&mut laptop_events, "in the group").await;
    laptop.send(&user("bob"), "from the laptop").await.unwrap();
    expect_encrypted(&mut bob_events, "from the laptop").await;

    // The laptop logs out: the others remove it from both conversations.
    laptop.logout().await.unwrap();
    until_encryption(&[&alice], &user("bob"), "the laptop out of the DM", |v| {
        v[0].devices.len() == 2
    })
    .await;
    until_encryption(&[&bob], &user("alice"), "bob without the laptop", |v| {
        v[0].devices.len() == 2
    })
    .await;
    until_encryption(
        &[&alice, &bob],
        &group(&g.id),
        "the laptop out of the group",
        converged(2),
    )
    .await;
    for c in [alice, bob, laptop] {
        c.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_member_joins_an_encrypted_group_and_reads_it() {
    logs();
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, _) = registered(dirs[0].path(), "alice", &server.addr).await;
    let (bob, mut bob_events) = registered(dirs[1].path(), "bob", &server.addr).await;
    let (dave, mut dave_events) = registered(dirs[2].path(), "dave", &server.addr).await;
    let g = alice.group_create("later", &["bob"]).await.unwrap();
    until_groups(&[&alice, &bob], &g.id, 2).await;
    alice.encrypt(&group(&g.id), None).await.unwrap();
    until_encryption(
        &[&alice, &bob],
        &group(&g.id),
        "both in the group",
        converged(2),
    )
    .await;
    alice.send(&group(&g.id), "before dave").await.unwrap();
    expect_encrypted(&mut bob_events, "before dave").await;

    alice.group_invite(&g.id, "dave").await.unwrap();
    until_encryption(
        &[&alice, &bob, &dave],
        &group(&g.id),
        "dave in the group",
        converged(3),
    )
    .await;
    bob.send(&group(&g.id), "welcome dave").await.unwrap();
    expect_encrypted(&mut dave_events, "welcome dave").await;
    dave.send(&group(&g.id), "thanks").await.unwrap();
    expect_encrypted(&mut bob_events, "thanks").await;
    for c in [alice, bob, dave] {
        c.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_suites_work_and_a_suite_cannot_change() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, mut alice_events) = registered(dirs[0].path(), "alice", &server.addr).await;
    let (bob, mut bob_events) = registered(dirs[1].path(), "bob", &server.addr).await;
    let g = alice.group_create("chacha", &["bob"]).await.unwrap();
    until_groups(&[&alice, &bob], &g.id, 2).await;

    let cases = [
        (user("bob"), user("alice"), Suite::X25519Aes128Gcm),
        (group(&g.id), group(&g.id), Suite::X25519ChaCha20Poly1305),
    ];
    for (from_alice, from_bob, suite) in &cases {
        assert_eq!(
            alice.encrypt(from_alice, Some(*suite)).await.unwrap(),
            *suite
        );
        until_encryption(&[&alice], from_alice, "alice in it", |v| {
            v[0].devices.len() == 2
        })
        .await;
        until_encryption(&[&bob], from_bob, "bob in it", |v| v[0].epoch.is_some()).await;
        let text = format!("sealed with {suite}");
        alice.send(from_alice, &text).await.unwrap();
        expect_encrypted(&mut bob_events, &text).await;
        let reply = format!("and back with {suite}");
        bob.send(from_bob, &reply).await.unwrap();
        expect_encrypted(&mut alice_events, &reply).await;
        assert_eq!(
            bob.encryption(from_bob).await.unwrap().unwrap().suite,
            *suite
        );
        // Another suite is refused, from either side; the suite stays.
        let other = if *suite == Suite::X25519Aes128Gcm {
            Suite::X25519ChaCha20Poly1305
        } else {
            Suite::X25519Aes128Gcm
        };
        for (client, conv) in [(&alice, from_alice), (&bob, from_bob)] {
            match client.encrypt(conv, Some(other)).await {
                Err(E2eError::SuiteFixed(s)) => assert_eq!(s, *suite),
                other => panic!("changing the suite: {other:?}"),
            }
            assert_eq!(
                client.encryption(conv).await.unwrap().unwrap().suite,
                *suite
            );
        }
    }
    // The bootstrap knows the DM under its canonical name.
    assert_eq!(dm_conversation("bob", "alice"), "dm:alice:bob");
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}
