//! A message that describes a file (an image with its thumbnail) from a peer: stored and shown
//! with its description, over the node's event stream, history and JSON-RPC. The transfer of
//! the file's bytes is the next step of issue 6; this checks the description end to end. A real
//! node in-process on loopback (mDNS off) and a bare libp2p peer.

use confab_node::{Config, Conversation, Event};
use confab_protocol::direct::DIRECT_PROTOCOL;
use confab_protocol::{
    Attachment, AttachmentKind, ChatMessage, ContentHash, DirectRequest, DirectResponse, decode,
    encode,
};
use confab_tests::chat::expect;
use confab_tests::raw::{exchange, raw_swarm};
use confab_tests::rpc::Rpc;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_description_arrives_with_its_thumbnail() {
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
    raw.dial(addr).unwrap();
    let mut message = ChatMessage::text("mallory", "the plan", 1);
    message.text = None;
    message.attachment = Some(Box::new(Attachment {
        name: "../plan.png".into(),
        size: 123_456,
        mime: "image/png".into(),
        hash: ContentHash([9; 32]),
        kind: AttachmentKind::Image,
        width: Some(800),
        height: Some(600),
        duration_ms: None,
        thumbnail: Some(vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]),
    }));
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

    let (shown, _) = expect(
        &mut events,
        "the file message",
        |e| matches!(e, Event::Message(m) if m.id == message.id),
    )
    .await;
    let Event::Message(shown) = shown else {
        unreachable!()
    };
    assert_eq!(shown.text, None);
    assert_eq!(shown.attachment, message.attachment);
    let from = Conversation::Peer(raw.local_peer_id().to_base58());
    let history = node.history(&from, 10).await.unwrap();
    assert_eq!(history[0].attachment, message.attachment);

    let mut rpc = Rpc::serve(node.clone());
    let listed = rpc.ok("history", json!({"with": from.to_string()})).await;
    let a = &listed[0]["attachment"];
    assert_eq!(a["kind"], "image");
    assert_eq!(
        a["name"], "../plan.png",
        "shown as sent; sanitised only when saved"
    );
    assert_eq!(a["width"], 800);
    assert_eq!(a["hash"], hex_of(&[9; 32]));
    assert_eq!(a["thumbnail"], "/9j/4AECAw==");
    node.shutdown().await.unwrap();
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
