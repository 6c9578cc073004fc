//! Device certificates and bootstrap pushes against hostile peers, with a real bootstrap: a
//! certificate proves its user only on the device it was issued to, only when a trusted bootstrap
//! signed exactly those fields; and only the node's bootstrap may push notifications to it.

use std::time::Duration;

use confab_node::{Client, Config, Conversation, Event};
use confab_protocol::bootstrap::{
    BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse, DeviceCert, NOTIFY_PROTOCOL,
    Notification,
};
use confab_protocol::direct::DIRECT_PROTOCOL;
use confab_protocol::{ChatMessage, DirectRequest, DirectResponse, decode, encode};
use confab_tests::raw::{Raw, RawCodec, exchange};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identity};
use tokio::sync::broadcast;
use tokio::time::{sleep, timeout};

const WAIT: Duration = Duration::from_secs(20);

/// A raw client with a given identity (so one device can first log in, then send messages).
fn raw_swarm_with(key: identity::Keypair, protocol: &'static str) -> Swarm<Raw> {
    confab_node::net::build_swarm(key, Duration::from_secs(60), |_| {
        Ok(request_response::Behaviour::with_codec(
            RawCodec,
            [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        ))
    })
    .unwrap()
}

async fn message_from(events: &mut broadcast::Receiver<Event>, text: &str) -> confab_node::Message {
    timeout(WAIT, async {
        loop {
            if let Ok(Event::Message(m)) = events.recv().await
                && m.text.as_deref() == Some(text)
            {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} never arrived"))
}

/// Sends `text` to `target` from `swarm` with `cert` attached; the node must accept it.
async fn send(swarm: &mut Swarm<Raw>, target: PeerId, text: &str, cert: Option<DeviceCert>) {
    let mut message = ChatMessage::text("someone", text, 1);
    message.author_cert = cert;
    let answer = exchange(
        swarm,
        target,
        encode(&DirectRequest::Chat(message.clone())).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        decode::<DirectResponse>(&answer).unwrap(),
        DirectResponse::Ack { id: message.id },
        "a message with a bad certificate is still accepted, from a bare peer"
    );
}

/// A certificate signed by `signer` with whatever fields are given.
fn forge(signer: &identity::Keypair, user: &str, device: &PeerId, issuer: &PeerId) -> DeviceCert {
    let (device, issuer) = (device.to_bytes(), issuer.to_bytes());
    let signature = signer
        .sign(&DeviceCert::signed_bytes(user, &device, 7, &issuer))
        .unwrap();
    DeviceCert {
        user: user.into(),
        device,
        issued_at: 7,
        issuer,
        signature,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_prove_a_user_only_on_their_device_and_only_bootstraps_push() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut config = confab_bootstrap::Config::new(server_dir.path());
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.mdns = false;
    let server = confab_bootstrap::start(config).await.unwrap();
    let server_addr: Multiaddr = server.listen_addrs[0].parse().unwrap();
    let server_id: PeerId = server.peer_id.parse().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.name = Some("bob".into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap = vec![server_addr.to_string()];
    let bob: Client = confab_node::start(config).await.unwrap();
    let mut at_bob = bob.subscribe();
    bob.register("bob", "seven quiet owls").await.unwrap();
    let bob_id: PeerId = bob.peer_id().parse().unwrap();
    let bob_addr: Multiaddr = bob.whoami().await.unwrap().listen_addrs[0].parse().unwrap();

    // Mallory registers from her own device and gets a genuine certificate for it.
    let mallory_key = identity::Keypair::generate_ed25519();
    let mallory = mallory_key.public().to_peer_id();
    let mut login = raw_swarm_with(mallory_key.clone(), BOOTSTRAP_PROTOCOL);
    login.dial(server_addr.clone()).unwrap();
    let answer = exchange(
        &mut login,
        server_id,
        encode(&BootstrapRequest::Register {
            user: "mallory".into(),
            password: "correct horse battery".into(),
        })
        .unwrap(),
    )
    .await
    .unwrap();
    let BootstrapResponse::Session { cert, .. } = decode::<BootstrapResponse>(&answer).unwrap()
    else {
        panic!("no session for mallory");
    };
    drop(login);

    let mut direct = raw_swarm_with(mallory_key.clone(), DIRECT_PROTOCOL);
    direct.dial(bob_addr.clone()).unwrap();

    // On her own device her certificate proves she is mallory...
    send(&mut direct, bob_id, "one", Some(cert.clone())).await;
    let got = message_from(&mut at_bob, "one").await;
    assert_eq!(got.from.peer_id, mallory.to_base58());
    assert_eq!(got.from.user.as_deref(), Some("mallory"));

    // ...but edited to say bob, it proves nothing.
    let mut edited = cert.clone();
    edited.user = "bob".into();
    send(&mut direct, bob_id, "two", Some(edited)).await;
    assert_eq!(message_from(&mut at_bob, "two").await.from.user, None);

    // Signed by herself, naming herself as the issuer: not a bootstrap of bob's.
    let own = forge(&mallory_key, "bob", &mallory, &mallory);
    send(&mut direct, bob_id, "three", Some(own)).await;
    assert_eq!(message_from(&mut at_bob, "three").await.from.user, None);

    // Signed by herself, naming the real bootstrap as the issuer: the signature fails.
    let claimed = forge(&mallory_key, "bob", &mallory, &server_id);
    send(&mut direct, bob_id, "four", Some(claimed)).await;
    assert_eq!(message_from(&mut at_bob, "four").await.from.user, None);

    // Eve replays mallory's genuine certificate from another device.
    let eve_key = identity::Keypair::generate_ed25519();
    let mut eve = raw_swarm_with(eve_key.clone(), DIRECT_PROTOCOL);
    eve.dial(bob_addr.clone()).unwrap();
    send(&mut eve, bob_id, "five", Some(cert)).await;
    let got = message_from(&mut at_bob, "five").await;
    assert_eq!(got.from.user, None);
    assert_eq!(got.from.peer_id, eve_key.public().to_peer_id().to_base58());

    // Eve pushes notifications as if she were the bootstrap: no answer, no effect.
    let mut push = raw_swarm_with(eve_key, NOTIFY_PROTOCOL);
    push.dial(bob_addr).unwrap();
    for note in [
        Notification::FriendRequest { from: "eve".into() },
        Notification::LoggedOut,
    ] {
        exchange(&mut push, bob_id, encode(&note).unwrap())
            .await
            .unwrap_err();
    }
    sleep(Duration::from_millis(300)).await;
    while let Ok(event) = at_bob.try_recv() {
        assert!(
            !matches!(event, Event::FriendRequest { .. } | Event::LoggedOut),
            "a stranger's push took effect: {event:?}"
        );
    }
    assert_eq!(bob.whoami().await.unwrap().user.as_deref(), Some("bob"));
    // Bob's history keeps who proved what.
    let history = bob
        .history(&Conversation::Peer(mallory.to_base58()), 10)
        .await
        .unwrap();
    let users: Vec<Option<&str>> = history.iter().map(|m| m.from.user.as_deref()).collect();
    assert_eq!(users, [Some("mallory"), None, None, None]);

    bob.shutdown().await.unwrap();
    server.shutdown().await;
}
