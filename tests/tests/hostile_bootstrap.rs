//! A bootstrap under hostile input: connections that never finish their handshake, raw garbage on
//! the port, and malformed or oversized frames on `/confab/bootstrap/1` do not stop it serving
//! well-behaved clients.

use std::time::Duration;

use confab_protocol::bootstrap::{BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse};
use confab_protocol::limits::MAX_BOOTSTRAP_REQUEST;
use confab_protocol::{decode, encode};
use confab_tests::raw::{exchange, raw_swarm};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_half_open_connections_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = confab_bootstrap::Config::new(dir.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    let server = confab_bootstrap::start(config).await.unwrap();
    let addr: Multiaddr = server.listen_addrs[0].parse().unwrap();
    let server_id: PeerId = server.peer_id.parse().unwrap();
    let port = addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();

    // Connections that never say a word, and connections that say nonsense.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut noisy = Vec::new();
    for i in 0..50u8 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        // The server may hang up on the first bad byte; that is its right.
        let _ = s.write_all(&vec![i.wrapping_mul(37); 64 * 1024]).await;
        noisy.push(s);
    }

    // An authenticated peer with bad frames on the request protocol.
    let mut raw = raw_swarm(BOOTSTRAP_PROTOCOL);
    raw.dial(addr.clone()).unwrap();
    exchange(
        &mut raw,
        server_id,
        b"\x00\x01 definitely not cbor".to_vec(),
    )
    .await
    .unwrap_err();
    exchange(&mut raw, server_id, vec![0u8; MAX_BOOTSTRAP_REQUEST + 4096])
        .await
        .unwrap_err();
    // A frame claiming a huge string.
    exchange(
        &mut raw,
        server_id,
        vec![0x82, 0x01, 0x7b, 0x40, 0, 0, 0, 0, 0, 0, 0],
    )
    .await
    .unwrap_err();

    // The same connection still gets real answers.
    let register = BootstrapRequest::Register {
        user: "mallory".into(),
        password: "correct horse battery".into(),
    };
    let answer = exchange(&mut raw, server_id, encode(&register).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        decode::<BootstrapResponse>(&answer).unwrap(),
        BootstrapResponse::Session { ref user, .. } if user == "mallory"
    ));
    // A request kind from the future is refused with an error, not a dropped connection.
    let future = cbor4ii::serde::to_vec(
        Vec::new(),
        &(
            1u16,
            std::collections::BTreeMap::from([("type", "teleport")]),
        ),
    )
    .unwrap();
    let answer = exchange(&mut raw, server_id, future).await.unwrap();
    assert!(matches!(
        decode::<BootstrapResponse>(&answer).unwrap(),
        BootstrapResponse::Error { .. }
    ));

    // And a newcomer is served while all that junk is still connected.
    let mut newcomer = raw_swarm(BOOTSTRAP_PROTOCOL);
    newcomer.dial(addr).unwrap();
    let login = BootstrapRequest::Login {
        user: "mallory".into(),
        password: "correct horse battery".into(),
    };
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(&mut newcomer, server_id, encode(&login).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(
        decode::<BootstrapResponse>(&answer).unwrap(),
        BootstrapResponse::Session { .. }
    ));
    let stats = server.stats().await.expect("still running");
    assert_eq!(stats.users, 1);
    assert!(stats.connected_peers >= 2);
    drop((silent, noisy));
    server.shutdown().await;
}
