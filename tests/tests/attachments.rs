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
use confab_tests::files::{fetch_with_progress, random_file};
use confab_tests::raw::{exchange, raw_swarm};
use confab_tests::rpc::Rpc;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

/// A node on `dir`: loopback TCP, mDNS off.
async fn start_node(dir: &std::path::Path) -> Result<confab_node::Client, confab_node::StartError> {
    let mut config = Config::new(dir);
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    confab_node::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_description_arrives_with_its_thumbnail() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await.unwrap();
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

/// Fetches the whole file `root` from `peer` over `/confab/file/1` with a bare client: the hash
/// list page by page, then every chunk, each checked against its hash. Returns the bytes.
async fn fetch_raw(
    raw: &mut libp2p::Swarm<confab_tests::raw::Raw>,
    peer: PeerId,
    root: ContentHash,
) -> Vec<u8> {
    use confab_protocol::file::{FileRequest, FileResponse};
    let answer = exchange(
        raw,
        peer,
        encode(&FileRequest::HashList { root, start: 0 }).unwrap(),
    )
    .await
    .unwrap();
    let FileResponse::HashList {
        size,
        chunk_size,
        hashes,
        ..
    } = decode::<FileResponse>(&answer).unwrap()
    else {
        panic!("no hash list")
    };
    let chunks = size.div_ceil(u64::from(chunk_size)) as usize;
    assert_eq!(hashes.len(), chunks * 32, "one page holds them all here");
    let mut bytes = Vec::new();
    for index in 0..chunks {
        let request = FileRequest::Chunk {
            root,
            index: index as u32,
        };
        let answer = exchange(raw, peer, encode(&request).unwrap())
            .await
            .unwrap();
        let FileResponse::Chunk { bytes: chunk, .. } = decode::<FileResponse>(&answer).unwrap()
        else {
            panic!("no chunk {index}")
        };
        assert_eq!(
            blake3::hash(&chunk).as_bytes(),
            &hashes[index * 32..(index + 1) * 32],
            "chunk {index} matches its hash"
        );
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(bytes.len() as u64, size);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_file_is_described_from_its_content_and_served_by_its_hash() {
    use confab_protocol::file::FILE_PROTOCOL;
    use rand::RngCore;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = start_node(dirs[0].path()).await.unwrap();
    let bob = start_node(dirs[1].path()).await.unwrap();
    let mut bob_events = bob.subscribe();
    let bob_addr = bob.whoami().await.unwrap().listen_addrs[0].clone();
    alice.dial(&bob_addr).await.unwrap();
    let to_bob = Conversation::Peer(bob.peer_id().to_owned());

    // A PNG named as if it were anything else: an image, by its content.
    let png = dirs[2].path().join("x.bin");
    let picture = image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 128]));
    picture
        .save_with_format(&png, image::ImageFormat::Png)
        .unwrap();
    let id = alice
        .send_file(&to_bob, &png, Some("the view"))
        .await
        .unwrap();
    let (shown, _) = expect(
        &mut bob_events,
        "the picture",
        |e| matches!(e, Event::Message(m) if m.id == id),
    )
    .await;
    let Event::Message(shown) = shown else {
        unreachable!()
    };
    assert_eq!(shown.text.as_deref(), Some("the view"));
    let a = shown.attachment.expect("an attachment");
    assert_eq!(a.kind, AttachmentKind::Image);
    assert_eq!(a.mime, "image/png");
    assert_eq!(a.name, "x.bin");
    assert_eq!((a.width, a.height), (Some(300), Some(200)));
    let thumbnail = a.thumbnail.as_ref().expect("a thumbnail");
    assert!(thumbnail.len() <= 24 * 1024);
    let small = image::load_from_memory(thumbnail).expect("the thumbnail decodes");
    assert!(small.width() <= 256 && small.height() <= 256);

    // Its bytes come from the sender by its hash, chunk by chunk, each verified.
    let mut raw = raw_swarm(FILE_PROTOCOL);
    raw.dial(
        alice.whoami().await.unwrap().listen_addrs[0]
            .parse::<Multiaddr>()
            .unwrap(),
    )
    .unwrap();
    let alice_peer: PeerId = alice.peer_id().parse().unwrap();
    let fetched = fetch_raw(&mut raw, alice_peer, a.hash).await;
    assert_eq!(fetched, std::fs::read(&png).unwrap());

    // A 3.5 MiB file of random bytes named .png: a file (not an image), four chunks.
    let blob = dirs[2].path().join("holiday.png");
    let mut data = vec![0u8; 3 * 1024 * 1024 + 512 * 1024];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(&blob, &data).unwrap();
    let id = alice.send_file(&to_bob, &blob, None).await.unwrap();
    let (shown, _) = expect(
        &mut bob_events,
        "the file",
        |e| matches!(e, Event::Message(m) if m.id == id),
    )
    .await;
    let Event::Message(shown) = shown else {
        unreachable!()
    };
    let a = shown.attachment.expect("an attachment");
    assert_eq!(a.kind, AttachmentKind::File);
    assert_eq!(a.size, data.len() as u64);
    assert!(a.thumbnail.is_none());
    assert_eq!(fetch_raw(&mut raw, alice_peer, a.hash).await, data);
    // An unknown root is not found.
    let unknown = exchange(
        &mut raw,
        alice_peer,
        encode(&confab_protocol::file::FileRequest::HashList {
            root: ContentHash([1; 32]),
            start: 0,
        })
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        decode::<confab_protocol::file::FileResponse>(&unknown).unwrap(),
        confab_protocol::file::FileResponse::NotFound
    );
    // A missing file is a clear error.
    assert!(matches!(
        alice
            .send_file(&to_bob, &dirs[2].path().join("nope"), None)
            .await,
        Err(confab_node::SendError::File(_))
    ));

    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}

/// BLAKE3 of a file, read in pieces.
fn file_hash(path: &std::path::Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path).unwrap();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_file_arrives_byte_identical_with_progress() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = start_node(dirs[0].path()).await.unwrap();
    let bob = start_node(dirs[1].path()).await.unwrap();
    let mut bob_events = bob.subscribe();
    alice
        .dial(&bob.whoami().await.unwrap().listen_addrs[0])
        .await
        .unwrap();

    // 64 MiB of random bytes, written in pieces.
    let big = dirs[2].path().join("big.dat");
    random_file(&big, 64);
    let id = alice
        .send_file(&Conversation::Peer(bob.peer_id().to_owned()), &big, None)
        .await
        .unwrap();
    expect(
        &mut bob_events,
        "the file message",
        |e| matches!(e, Event::Message(m) if m.id == id),
    )
    .await;

    // The first chunk is reported before the end, then the end.
    let dest = dirs[1].path().join("downloads");
    let path = fetch_with_progress(&bob, &mut bob_events, id, &dest).await;
    assert_eq!(path, dest.join("big.dat"));
    assert_eq!(file_hash(&path), file_hash(&big), "byte-identical");

    // Fetching again exports another copy from the blob store, without overwriting.
    let again = bob.fetch_file(id, &dest).await.unwrap();
    assert_eq!(again, dest.join("big (1).dat"));
    assert_eq!(file_hash(&again), file_hash(&big));

    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_download_resumes_without_fetching_verified_chunks_again() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = start_node(dirs[0].path()).await.unwrap();
    let alice_addr = alice.whoami().await.unwrap().listen_addrs[0].clone();
    let bob = start_node(dirs[1].path()).await.unwrap();
    let mut bob_events = bob.subscribe();
    bob.dial(&alice_addr).await.unwrap();

    let big = dirs[2].path().join("big.dat");
    random_file(&big, 48);
    let id = alice
        .send_file(&Conversation::Peer(bob.peer_id().to_owned()), &big, None)
        .await
        .unwrap();
    expect(
        &mut bob_events,
        "the file message",
        |e| matches!(e, Event::Message(m) if m.id == id),
    )
    .await;

    // Bob stops once part of it is verified on disk.
    let dest = dirs[1].path().join("downloads");
    let fetch = {
        let (bob, dest) = (bob.clone(), dest.clone());
        tokio::spawn(async move { bob.fetch_file(id, &dest).await })
    };
    let (event, _) = expect(
        &mut bob_events,
        "some progress",
        |e| matches!(e, Event::TransferProgress { done, total, .. } if *done >= 4 << 20 && done < total),
    )
    .await;
    let Event::TransferProgress { done: before, .. } = event else {
        unreachable!()
    };
    bob.shutdown().await.unwrap();
    assert!(fetch.await.unwrap().is_err(), "stopped with the node");

    // Restarted: the first progress already counts what was verified before, and the file
    // completes byte-identical.
    let bob = start_node(dirs[1].path()).await.unwrap();
    let mut bob_events = bob.subscribe();
    bob.dial(&alice_addr).await.unwrap();
    let fetch = {
        let (bob, dest) = (bob.clone(), dest.clone());
        tokio::spawn(async move { bob.fetch_file(id, &dest).await })
    };
    let (event, _) = expect(&mut bob_events, "progress after the restart", |e| {
        matches!(e, Event::TransferProgress { .. })
    })
    .await;
    let Event::TransferProgress { done, total, .. } = event else {
        unreachable!()
    };
    assert!(
        done > before,
        "resumed at {done} of {total}, not from 0 (had {before} before the stop)"
    );
    let path = fetch.await.unwrap().expect("downloaded");
    assert_eq!(file_hash(&path), file_hash(&big), "byte-identical");

    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}

/// A file server that answers hash lists correctly (copies it got from the real sender) and
/// every chunk with wrong bytes of the right length: a source that must be caught.
mod corrupt {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use confab_protocol::file::{FileRequest, FileResponse};
    use confab_protocol::{decode, encode};
    use confab_tests::raw::Raw;
    use futures::StreamExt;
    use libp2p::Swarm;
    use libp2p::request_response;
    use libp2p::swarm::SwarmEvent;

    /// Answers `/confab/file/1` on `swarm` (from [`confab_tests::raw::raw_server`]) with
    /// `hash_list` (an encoded `FileResponse::HashList`) and corrupt chunks of `size` /
    /// `chunk_size`; counts the chunk requests it answered.
    pub async fn serve(
        mut swarm: Swarm<Raw>,
        hash_list: Vec<u8>,
        size: u64,
        chunk_size: u64,
        served: Arc<AtomicUsize>,
    ) {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) = swarm.select_next_some().await
            {
                let answer = match decode::<FileRequest>(&request) {
                    Ok(FileRequest::HashList { .. }) => hash_list.clone(),
                    Ok(FileRequest::Chunk { index, .. }) => {
                        served.fetch_add(1, Ordering::SeqCst);
                        let offset = u64::from(index) * chunk_size;
                        let len = (size - offset).min(chunk_size) as usize;
                        encode(&FileResponse::Chunk {
                            index,
                            bytes: vec![0xAA; len],
                        })
                        .unwrap()
                    }
                    _ => encode(&FileResponse::NotFound).unwrap(),
                };
                let _ = swarm.behaviour_mut().send_response(channel, answer);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_serving_corrupt_chunks_is_caught_and_the_download_completes_elsewhere() {
    use confab_protocol::file::{FILE_PROTOCOL, FileRequest};
    use rand::RngCore;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = start_node(dirs[0].path()).await.unwrap();
    let alice_addr = alice.whoami().await.unwrap().listen_addrs[0].clone();
    let bob = start_node(dirs[1].path()).await.unwrap();
    let bob_addr: Multiaddr = bob.whoami().await.unwrap().listen_addrs[0].parse().unwrap();
    let mut bob_events = bob.subscribe();
    bob.dial(&alice_addr).await.unwrap();

    let path = dirs[2].path().join("data.bin");
    let mut data = vec![0u8; 12 << 20];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(&path, &data).unwrap();
    let id = alice
        .send_file(&Conversation::Peer(bob.peer_id().to_owned()), &path, None)
        .await
        .unwrap();
    let (event, _) = expect(
        &mut bob_events,
        "the file message",
        |e| matches!(e, Event::Message(m) if m.id == id),
    )
    .await;
    let Event::Message(message) = event else {
        unreachable!()
    };
    let root = message.attachment.unwrap().hash;

    // The corrupt server gets the true hash list from alice, then connects to bob.
    let mut client = raw_swarm(FILE_PROTOCOL);
    client
        .dial(alice_addr.parse::<Multiaddr>().unwrap())
        .unwrap();
    let alice_peer: PeerId = alice.peer_id().parse().unwrap();
    let hash_list = exchange(
        &mut client,
        alice_peer,
        encode(&FileRequest::HashList { root, start: 0 }).unwrap(),
    )
    .await
    .unwrap();
    let mut server = confab_tests::raw::raw_server(FILE_PROTOCOL);
    server.dial(bob_addr).unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(corrupt::serve(
        server,
        hash_list,
        data.len() as u64,
        1 << 20,
        served.clone(),
    ));
    // Give the connection a moment, so bob counts it among its connected peers.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let dest = dirs[1].path().join("downloads");
    let got = bob.fetch_file(id, &dest).await.expect("downloaded");
    let bytes = std::fs::read(&got).unwrap();
    assert!(bytes == data, "byte-identical despite the corrupt source");
    assert!(
        served.load(Ordering::SeqCst) >= 1,
        "the corrupt source was asked (and caught)"
    );
    task.abort();
    alice.shutdown().await.unwrap();
    bob.shutdown().await.unwrap();
}
