//! Hostile bytes on Confab's request-response protocols: garbage, oversized and unknown frames
//! reset (or are refused on) their own stream only; the node or server keeps serving the same
//! connection and everyone else.

use std::time::Duration;

use confab_node::{Config, Conversation, DeliveryState, Event};
use confab_protocol::direct::DIRECT_PROTOCOL;
use confab_protocol::limits::MAX_DIRECT_REQUEST;
use confab_protocol::{ChatMessage, DirectRequest, DirectResponse, decode, encode};
use confab_tests::raw::{exchange, raw_swarm};
use libp2p::{Multiaddr, PeerId};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_frames_reset_only_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    let node = confab_node::start(config).await.unwrap();
    let mut events = node.subscribe();
    let addr: Multiaddr = node.whoami().await.unwrap().listen_addrs[0]
        .parse()
        .unwrap();
    let target: PeerId = node.peer_id().parse().unwrap();

    let mut raw = raw_swarm(DIRECT_PROTOCOL);
    raw.dial(addr.clone()).unwrap();

    // Not CBOR at all.
    let err = exchange(&mut raw, target, b"\xff\xfe garbage \x00\x01".to_vec())
        .await
        .unwrap_err();
    eprintln!("garbage: {err}");
    // Valid CBOR, wrong shape.
    exchange(&mut raw, target, vec![0x82, 0x01, 0x63, b'a', b'b', b'c'])
        .await
        .unwrap_err();
    // A frame that claims a huge string.
    exchange(
        &mut raw,
        target,
        vec![0x82, 0x01, 0x7b, 0x40, 0, 0, 0, 0, 0, 0, 0],
    )
    .await
    .unwrap_err();
    // Over the size limit (the reader stops at the limit and fails the stream).
    let err = exchange(&mut raw, target, vec![0u8; MAX_DIRECT_REQUEST + 4096])
        .await
        .unwrap_err();
    eprintln!("oversized: {err}");

    // The same connection still serves well-formed requests.
    assert!(
        raw.is_connected(&target),
        "the connection survived the bad streams"
    );
    let message = ChatMessage::text("mallory", "still there?", 1);
    let answer = exchange(
        &mut raw,
        target,
        encode(&DirectRequest::Chat(message.clone())).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        decode::<DirectResponse>(&answer).unwrap(),
        DirectResponse::Ack { id: message.id }
    );
    // A request kind from the future is refused, not fatal.
    let future = cbor4ii::serde::to_vec(
        Vec::new(),
        &(
            1u16,
            std::collections::BTreeMap::from([("type", "video_call")]),
        ),
    )
    .unwrap();
    let answer = exchange(&mut raw, target, future).await.unwrap();
    assert!(matches!(
        decode::<DirectResponse>(&answer).unwrap(),
        DirectResponse::Rejected { .. }
    ));
    // The one good message was stored and reported, attributed to the connection's peer id.
    let raw_peer = raw.local_peer_id().to_base58();
    let got = timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Message(m)) = events.recv().await {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(got.id, message.id);
    assert_eq!(got.from.peer_id, raw_peer);
    assert_eq!(got.conversation, Conversation::Peer(raw_peer.clone()));

    // And another, well-behaved node is served as usual.
    let other_dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(other_dir.path());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    let other = confab_node::start(config).await.unwrap();
    let mut other_events = other.subscribe();
    other.dial(&addr.to_string()).await.unwrap();
    let id = other
        .send(&Conversation::Peer(target.to_base58()), "hello")
        .await
        .unwrap();
    timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Event::Delivery {
                id: got,
                state: DeliveryState::Delivered,
            }) = other_events.recv().await
                && got == id
            {
                return;
            }
        }
    })
    .await
    .expect("a normal peer is acknowledged");
    other.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}
