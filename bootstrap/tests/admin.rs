//! `user list`, `user delete`, `stats`, `backup` and `restore` of the real binary, against a
//! running server (through its admin socket) and offline (on the database directly).

mod common;

use common::*;
use confab_protocol::bootstrap::{BootstrapRequest, BootstrapResponse, ErrorCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_list_delete_and_stats_online_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = run_err(&data, &["user", "list"]);
    assert!(err.contains("no database in"), "{err}");
    assert!(!data.exists(), "an admin command never creates a database");

    let server = Server::start(&data, &[]);
    let mut devices = Vec::new();
    for user in ["ann", "bob", "cyd", "dan"] {
        let mut device = Client::connect(&server.addr).await;
        assert_session(&device.register(user).await, user);
        devices.push(device);
    }
    let add = BootstrapRequest::FriendAdd { user: "bob".into() };
    assert_eq!(devices[0].request(add).await, BootstrapResponse::Done);
    let accept = BootstrapRequest::FriendAccept { user: "ann".into() };
    assert_eq!(devices[1].request(accept).await, BootstrapResponse::Done);

    // Online, through the socket.
    assert_eq!(users(&data), ["ann", "bob", "cyd", "dan"]);
    let s = stats(&data);
    assert_eq!(stat(&s, "server"), "running");
    assert_eq!(stat(&s, "users"), "4");
    assert_eq!(stat(&s, "devices"), "4");
    assert_eq!(stat(&s, "users_online"), "4");
    assert!(stat(&s, "connected_peers").parse::<usize>().unwrap() >= 4);

    let said = run_ok(&data, &["user", "delete", "Bob"]);
    assert_eq!(
        said.trim(),
        "deleted bob (1 devices, 1 friends and requests)"
    );
    assert_eq!(users(&data), ["ann", "cyd", "dan"]);
    let err = run_err(&data, &["user", "delete", "zed"]);
    assert!(err.contains("no user zed"), "{err}");
    // bob's device is logged out, his password is gone, ann has no friend left.
    match devices[1].request(BootstrapRequest::Friends).await {
        BootstrapResponse::Error { code, .. } => assert_eq!(code, ErrorCode::NotLoggedIn),
        other => panic!("{other:?}"),
    }
    let mut other = Client::connect(&server.addr).await;
    match other.login("bob", PASSWORD).await {
        BootstrapResponse::Error { code, .. } => assert_eq!(code, ErrorCode::BadCredentials),
        other => panic!("{other:?}"),
    }
    match devices[0].request(BootstrapRequest::Friends).await {
        BootstrapResponse::Friends { friends, .. } => assert!(friends.is_empty()),
        other => panic!("{other:?}"),
    }
    let backup = dir.path().join("after-bob.redb");
    let said = run_ok(&data, &["backup", "--out", backup.to_str().unwrap()]);
    assert!(said.starts_with("backup written to"), "{said}");
    let err = run_err(&data, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(
        err.contains("is running; stop it before restoring"),
        "{err}"
    );
    server.terminate();
    assert!(
        !data.join("admin.sock").exists(),
        "the socket goes with the server"
    );

    // Offline, on the database.
    assert_eq!(users(&data), ["ann", "cyd", "dan"]);
    let s = stats(&data);
    assert_eq!(stat(&s, "server"), "stopped");
    assert_eq!(stat(&s, "users"), "3");
    assert!(!s.iter().any(|(k, _)| k == "connected_peers"), "{s:?}");
    let said = run_ok(&data, &["user", "delete", "cyd"]);
    assert!(said.starts_with("deleted cyd"), "{said}");
    assert_eq!(users(&data), ["ann", "dan"]);

    // A restarted server sees the offline change; restore brings cyd back, keeping the rest.
    let server = Server::start(&data, &[]);
    assert_eq!(users(&data), ["ann", "dan"]);
    server.terminate();
    let said = run_ok(&data, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(said.contains("bootstrap.redb.before-restore"), "{said}");
    assert_eq!(users(&data), ["ann", "cyd", "dan"]);
    let server = Server::start(&data, &[]);
    let mut device = Client::connect(&server.addr).await;
    assert_session(&device.login("cyd", PASSWORD).await, "cyd");
    server.terminate();
}
