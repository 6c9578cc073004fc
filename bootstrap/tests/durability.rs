//! `kill -9` of the bootstrap and a restart on the same data dir: accounts, devices, friends and
//! profiles are intact, the identity is the same, and the server serves.

mod common;

use common::*;
use confab_protocol::bootstrap::{Avatar, BootstrapRequest, BootstrapResponse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_friends_and_profiles_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut ann = Client::connect(&server.addr).await;
    assert_session(&ann.register("ann").await, "ann");
    let mut bob = Client::connect(&server.addr).await;
    assert_session(&bob.register("bob").await, "bob");
    let done = BootstrapResponse::Done;
    let add = BootstrapRequest::FriendAdd { user: "bob".into() };
    assert_eq!(ann.request(add).await, done);
    let accept = BootstrapRequest::FriendAccept { user: "ann".into() };
    assert_eq!(bob.request(accept).await, done);
    let profile = BootstrapRequest::ProfileSet {
        nickname: Some("Ann A.".into()),
        signature: Some("out to lunch".into()),
        avatar: Some(Avatar {
            mime: "image/png".into(),
            bytes: png(1),
        }),
    };
    assert_eq!(ann.request(profile).await, done);
    let peer_id = server.peer_id.clone();

    server.kill9();
    // Offline, past the socket the killed server left behind.
    assert!(data.join("admin.sock").exists());
    assert_eq!(users(&data), ["ann", "bob"]);
    assert_eq!(stat(&stats(&data), "server"), "stopped");

    let server = Server::start(&data, &[]);
    assert_eq!(server.peer_id, peer_id, "the same identity");
    let online = stats(&data);
    assert_eq!(stat(&online, "server"), "running");
    assert_eq!(stat(&online, "users"), "2");
    assert_eq!(stat(&online, "devices"), "2");
    assert_eq!(users(&data), ["ann", "bob"]);

    // A new device of ann's finds her friend and her profile.
    let mut ann2 = Client::connect(&server.addr).await;
    assert_session(&ann2.login("ann", PASSWORD).await, "ann");
    match ann2.request(BootstrapRequest::Friends).await {
        BootstrapResponse::Friends { friends, .. } => {
            let names: Vec<&str> = friends.iter().map(|f| f.user.as_str()).collect();
            assert_eq!(names, ["bob"]);
        }
        other => panic!("{other:?}"),
    }
    let get = BootstrapRequest::ProfileGet { user: "ann".into() };
    let hash = match ann2.request(get).await {
        BootstrapResponse::Profile(p) => {
            assert_eq!(p.nickname, "Ann A.");
            assert_eq!(p.signature, "out to lunch");
            p.avatar_hash.expect("an avatar")
        }
        other => panic!("{other:?}"),
    };
    match ann2.request(BootstrapRequest::AvatarGet { hash }).await {
        BootstrapResponse::Avatar(a) => assert_eq!(a.bytes, png(1)),
        other => panic!("{other:?}"),
    }
    // bob's password still works, and nobody else's does.
    let mut bob2 = Client::connect(&server.addr).await;
    assert_session(&bob2.login("bob", PASSWORD).await, "bob");
    assert!(matches!(
        bob2.login("bob", "not the password").await,
        BootstrapResponse::Error { .. }
    ));
    server.terminate();
}
