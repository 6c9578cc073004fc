//! Files between users, and store-and-forward through the bootstrap: a real bootstrap and real
//! nodes in-process on loopback (mDNS off).
//!
//! - 64 MiB to a user who is online arrives byte-identical from the sender's device, with
//!   progress; nothing is held by the bootstrap (`file_hold`: `not_needed`).
//! - A file sent to a user who is offline is pulled by the bootstrap from the sender's device
//!   (`file_hold`: `pulling`, then `held`); the sender leaves; the receiver logs in later and
//!   fetches the file from the bootstrap, byte-identical, with progress; having it, the receiver
//!   reports so and the bootstrap deletes its copy.
//! - A file over the bootstrap's size limit is refused with a clear error (`file_hold`
//!   `refused`), and its message is still delivered.

use std::path::Path;
use std::time::Duration;

use confab_node::{Event, FileHoldState, MessageId};
use confab_tests::chat::*;
use confab_tests::files::{fetch_with_progress, random_file};
use confab_tests::nodes::node;
use tokio::sync::broadcast;
use tokio::time::{Instant, sleep};

/// A bootstrap on `dir` keeping files up to `max_mib` MiB for offline receivers.
async fn server_with_limit(dir: &Path, max_mib: u64) -> Server {
    let mut config = confab_bootstrap::Config::new(dir);
    config.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", free_port())];
    config.mdns = false;
    config.files.max_size = max_mib * 1024 * 1024;
    let bootstrap = confab_bootstrap::start(config).await.unwrap();
    let addr = bootstrap.listen_addrs[0].clone();
    Server { bootstrap, addr }
}

/// Waits for `file_hold {id, state}`; returns its error.
async fn expect_hold(
    events: &mut broadcast::Receiver<Event>,
    id: MessageId,
    state: FileHoldState,
) -> Option<String> {
    let (event, _) = expect(
        events,
        &format!("file_hold {id} {}", state.as_str()),
        |e| matches!(e, Event::FileHold { id: got, state: s, .. } if *got == id && *s == state),
    )
    .await;
    match event {
        Event::FileHold { error, .. } => error,
        _ => unreachable!(),
    }
}

/// The files in the bootstrap's file store.
fn held_files(server_dir: &Path) -> Vec<String> {
    std::fs::read_dir(server_dir.join("files"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_receiver_fetches_the_file_from_the_bootstrap_after_the_sender_left() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_with_limit(server_dir.path(), 64).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[1].path(), "bob", &server.addr).await;
    let (alice, mut alice_events) = node(dirs[0].path(), "alice", &server.addr).await;
    alice.register("alice", PASSWORD).await.unwrap();

    // Bob is offline: the bootstrap pulls the file from alice's device before she goes.
    let source = dirs[2].path().join("report.bin");
    random_file(&source, 6);
    let id = alice
        .send_file(&user("bob"), &source, Some("the report"))
        .await
        .unwrap();
    expect_hold(&mut alice_events, id, FileHoldState::Pulling).await;
    expect_hold(&mut alice_events, id, FileHoldState::Held).await;
    alice.shutdown().await.unwrap();
    assert!(!held_files(server_dir.path()).is_empty());

    // Bob logs in later: the message arrives from the mailbox, the file from the bootstrap (the
    // only source left).
    let (bob, mut bob_events) = node(dirs[1].path(), "bob", &server.addr).await;
    let got = expect_message(&mut bob_events, "the report").await;
    assert_eq!(got.id, id);
    let dest = dirs[1].path().join("saved");
    let path = bob.fetch_file(id, &dest).await.unwrap();
    assert_eq!(path.file_name().unwrap(), "report.bin");
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&source).unwrap());
    let (_, _) = expect(&mut bob_events, "progress", |e| {
        matches!(e, Event::TransferProgress { id: got, done, total } if *got == id && done == total)
    })
    .await;

    // Bob has it, so the bootstrap no longer keeps it.
    let deadline = Instant::now() + WAIT;
    while !held_files(server_dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still held: {:?}",
            held_files(server_dir.path())
        );
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_limit_is_refused_clearly_and_its_message_still_goes() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_with_limit(server_dir.path(), 1).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    registered_then_away(dirs[1].path(), "bob", &server.addr).await;
    let (alice, mut alice_events) = node(dirs[0].path(), "alice", &server.addr).await;
    alice.register("alice", PASSWORD).await.unwrap();

    let source = dirs[2].path().join("big.bin");
    random_file(&source, 2);
    let id = alice
        .send_file(&user("bob"), &source, Some("too big to keep"))
        .await
        .unwrap();
    let error = expect_hold(&mut alice_events, id, FileHoldState::Refused).await;
    let error = error.unwrap_or_default();
    assert!(
        error.contains("1.0 MiB") && error.contains("2.0 MiB"),
        "{error}"
    );
    assert!(held_files(server_dir.path()).is_empty());

    let (_bob, mut bob_events) = node(dirs[1].path(), "bob", &server.addr).await;
    let got = expect_message(&mut bob_events, "too big to keep").await;
    assert_eq!(got.attachment.map(|a| a.size), Some(2 * 1024 * 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_to_an_online_user_arrives_byte_identical_with_progress() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_with_limit(server_dir.path(), 1024).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (alice, mut alice_events) = node(dirs[0].path(), "alice", &server.addr).await;
    alice.register("alice", PASSWORD).await.unwrap();
    let (bob, mut bob_events) = node(dirs[1].path(), "bob", &server.addr).await;
    bob.register("bob", PASSWORD).await.unwrap();
    // Friends: each may learn where the other's devices are, so they reach each other directly.
    alice.friend_add("bob").await.unwrap();
    bob.friend_accept("alice").await.unwrap();

    let big = dirs[2].path().join("film.bin");
    random_file(&big, 64);
    let id = alice
        .send_file(&user("bob"), &big, Some("64 MiB for bob"))
        .await
        .unwrap();
    // Bob is online: the bootstrap keeps nothing.
    expect_hold(&mut alice_events, id, FileHoldState::NotNeeded).await;
    let got = expect_message(&mut bob_events, "64 MiB for bob").await;
    assert_eq!(got.conversation, user("alice"));
    assert_eq!(got.attachment.as_ref().map(|a| a.size), Some(64 << 20));

    // Progress before the end, then the end.
    let dest = dirs[1].path().join("saved");
    let path = fetch_with_progress(&bob, &mut bob_events, id, &dest).await;
    assert_eq!(path, dest.join("film.bin"));
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(&big).unwrap(),
        "byte-identical"
    );
    assert!(held_files(server_dir.path()).is_empty());
}
