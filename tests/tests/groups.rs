//! Groups end to end: a real bootstrap and real nodes in-process on loopback (mDNS off).
//!
//! - Four users: the owner's group reaches its members, not an outsider, who cannot post either;
//!   a member cannot remove anyone; a removed member gets nothing more; a member who was offline
//!   gets what was said at the next login.
//! - Below the RPC: a gossip message on a group's topic from a device of a non-member (with a
//!   valid certificate of its own account) is rejected by a member's node, while the same from a
//!   member's device is shown.

use std::time::Duration;

use confab_node::net::{BootstrapCodec, build_swarm, gossipsub_config, wire_behaviour};
use confab_node::{Client, Conversation, Event, GroupError, Role, SendError};
use confab_protocol::bootstrap::{BOOTSTRAP_PROTOCOL, BootstrapRequest, BootstrapResponse};
use confab_protocol::group::group_topic;
use confab_protocol::{ChatMessage, GossipFrame, encode};
use confab_tests::chat::*;
use confab_tests::nodes::node;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identity};
use tokio::sync::broadcast;
use tokio::time::{sleep, timeout};

fn group(id: &str) -> Conversation {
    Conversation::Group(id.into())
}

/// Waits a little and says whether any message arrived meanwhile (for "receives nothing").
async fn quiet(
    events: &mut broadcast::Receiver<Event>,
    wait: Duration,
) -> Vec<confab_node::Message> {
    let mut got = Vec::new();
    let _ = timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) => got.push(m),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
    got
}

/// Connects every pair of nodes directly (as on a LAN), so group messages can go by gossip.
async fn mesh(nodes: &[&Client]) {
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            let addr = b.whoami().await.unwrap().listen_addrs[0].clone();
            a.dial(&addr).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reaches_its_members_only_and_its_owner_decides_who_is_in_it() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (dir, name) in dirs.iter().zip(["ann", "ben", "cal", "dee"]) {
        let (client, events) = node(dir.path(), name, &server.addr).await;
        client.register(name, PASSWORD).await.unwrap();
        nodes.push((client, events));
    }
    let [
        (ann, mut ann_events),
        (ben, mut ben_events),
        (cal, mut cal_events),
        (dee, mut dee_events),
    ] = <[_; 4]>::try_from(nodes).ok().unwrap();
    mesh(&[&ann, &ben, &cal, &dee]).await;

    // ann creates it with ben and cal: both are told.
    let team = ann.group_create("team", &["ben", "cal"]).await.unwrap();
    assert_eq!(team.role_of("ann"), Some(Role::Owner));
    assert_eq!(team.role_of("ben"), Some(Role::Member));
    for events in [&mut ben_events, &mut cal_events] {
        expect(events, "the invitation", |e| {
            matches!(e, Event::GroupInvited { group, name } if *group == team.id && name == "team")
        })
        .await;
    }

    // A message reaches both members, from ann; dee gets nothing and cannot post.
    ann.send(&group(&team.id), "hello team").await.unwrap();
    for events in [&mut ben_events, &mut cal_events] {
        let m = expect_message(events, "hello team").await;
        assert_eq!(m.conversation, group(&team.id));
        assert_eq!(m.from.user.as_deref(), Some("ann"));
        assert!(m.notify && !m.outgoing);
    }
    assert!(matches!(
        dee.send(&group(&team.id), "let me in").await,
        Err(SendError::NotMember(_))
    ));
    assert!(matches!(
        dee.group_invite(&team.id, "dee").await,
        Err(GroupError::NotFound(_))
    ));

    // ben, a member, cannot remove cal nor invite dee.
    assert!(matches!(
        ben.group_remove(&team.id, "cal").await,
        Err(GroupError::NotAllowed(_))
    ));
    assert!(matches!(
        ben.group_invite(&team.id, "dee").await,
        Err(GroupError::NotAllowed(_))
    ));

    // ann removes cal: cal and ben are told; cal can no longer post, and gets nothing more.
    let team = ann.group_remove(&team.id, "cal").await.unwrap();
    assert_eq!(team.role_of("cal"), None);
    for events in [&mut ben_events, &mut cal_events] {
        expect(events, "cal's removal", |e| {
            matches!(e, Event::GroupMemberRemoved { group, user } if *group == team.id && user == "cal")
        })
        .await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cal.groups().await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cal still lists the group"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        cal.send(&group(&team.id), "still here?").await,
        Err(SendError::NotMember(_))
    ));
    ann.send(&group(&team.id), "without cal").await.unwrap();
    expect_message(&mut ben_events, "without cal").await;
    let at_cal = quiet(&mut cal_events, Duration::from_millis(500)).await;
    assert!(at_cal.is_empty(), "cal got {at_cal:?}");
    let at_dee = quiet(&mut dee_events, Duration::from_millis(10)).await;
    assert!(at_dee.is_empty(), "dee got {at_dee:?}");
    assert!(dee.history(&group(&team.id), 10).await.unwrap().is_empty());
    assert_eq!(
        texts(&cal.history(&group(&team.id), 10).await.unwrap()),
        ["hello team"]
    );

    // ben goes away; ann writes; ben gets it at his next login (the summary first).
    ben.shutdown().await.unwrap();
    drop(ben_events);
    ann.send(&group(&team.id), "while you were away")
        .await
        .unwrap();
    expect(&mut ann_events, "stored by the bootstrap", |e| {
        matches!(
            e,
            Event::Delivery {
                state: confab_node::DeliveryState::Sent,
                ..
            }
        )
    })
    .await;
    let (ben, mut ben_events) = node(dirs[1].path(), "ben", &server.addr).await;
    let (summary, _) = expect(&mut ben_events, "the offline summary", |e| {
        matches!(e, Event::OfflineSummary { .. })
    })
    .await;
    assert_eq!(
        summary,
        Event::OfflineSummary {
            senders: vec![(group(&team.id), 1)],
            total: 1
        }
    );
    expect_message(&mut ben_events, "while you were away").await;
    assert_eq!(
        texts(&ben.history(&group(&team.id), 10).await.unwrap()),
        ["hello team", "without cal", "while you were away"]
    );
    // ben's groups came back with the session too.
    assert_eq!(ben.groups().await.unwrap()[0].id, team.id);

    for client in [ann, ben, cal, dee] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}

/// A bare libp2p peer with gossipsub and the bootstrap protocol: a device that speaks Confab's
/// wire format by hand, to publish what a real node never would.
#[derive(NetworkBehaviour)]
struct Raw {
    gossipsub: gossipsub::Behaviour,
    bootstrap: request_response::Behaviour<BootstrapCodec>,
}

struct RawDevice {
    swarm: Swarm<Raw>,
}

impl RawDevice {
    fn new() -> Self {
        let swarm = build_swarm(
            identity::Keypair::generate_ed25519(),
            Duration::from_secs(60),
            |key| {
                let config = gossipsub_config(Duration::from_millis(100))?;
                Ok(Raw {
                    gossipsub: gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Signed(key.clone()),
                        config,
                    )
                    .map_err(|e| e.to_string())?,
                    bootstrap: wire_behaviour(
                        BOOTSTRAP_PROTOCOL,
                        ProtocolSupport::Outbound,
                        request_response::Config::default(),
                    ),
                })
            },
        )
        .unwrap();
        Self { swarm }
    }

    async fn connect(&mut self, addr: &str) -> PeerId {
        let addr: Multiaddr = addr.parse().unwrap();
        self.swarm.dial(addr).unwrap();
        timeout(WAIT, async {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } =
                    self.swarm.select_next_some().await
                {
                    return peer_id;
                }
            }
        })
        .await
        .expect("connected")
    }

    /// Logs this device into `user` on the bootstrap `peer`; returns its certificate.
    async fn login(&mut self, peer: PeerId, user: &str) -> confab_protocol::bootstrap::DeviceCert {
        let request = BootstrapRequest::Login {
            user: user.into(),
            password: PASSWORD.into(),
        };
        self.swarm
            .behaviour_mut()
            .bootstrap
            .send_request(&peer, request);
        timeout(WAIT, async {
            loop {
                if let SwarmEvent::Behaviour(RawEvent::Bootstrap(
                    request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                response: BootstrapResponse::Session { cert, .. },
                                ..
                            },
                        ..
                    },
                )) = self.swarm.select_next_some().await
                {
                    return cert;
                }
            }
        })
        .await
        .expect("a session")
    }

    /// Subscribes to `topic` and waits until `peer` is subscribed to it too.
    async fn join(&mut self, topic: &gossipsub::IdentTopic, peer: PeerId) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .unwrap();
        let hash = topic.hash();
        timeout(WAIT, async {
            loop {
                if let SwarmEvent::Behaviour(RawEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id,
                    topic,
                })) = self.swarm.select_next_some().await
                    && peer_id == peer
                    && topic == hash
                {
                    return;
                }
            }
        })
        .await
        .expect("the member subscribed");
    }

    /// Publishes `frame` on `topic` and keeps the swarm running for `run`.
    async fn publish(&mut self, topic: &gossipsub::IdentTopic, frame: &GossipFrame, run: Duration) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), encode(frame).unwrap())
            .unwrap();
        let _ = timeout(run, async {
            loop {
                self.swarm.select_next_some().await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_node_rejects_group_gossip_from_a_non_members_device() {
    let server_dir = tempfile::tempdir().unwrap();
    let server = server_on(server_dir.path(), "/ip4/127.0.0.1/tcp/0").await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (ann, _) = node(dirs[0].path(), "ann", &server.addr).await;
    ann.register("ann", PASSWORD).await.unwrap();
    let (ben, mut ben_events) = node(dirs[1].path(), "ben", &server.addr).await;
    ben.register("ben", PASSWORD).await.unwrap();
    // cal (a member) and dee (not) have accounts; their devices here are bare peers.
    registered_then_away(dirs[2].path(), "dee", &server.addr).await;
    let cal_dir = tempfile::tempdir().unwrap();
    registered_then_away(cal_dir.path(), "cal", &server.addr).await;
    let team = ann.group_create("team", &["ben", "cal"]).await.unwrap();
    expect(
        &mut ben_events,
        "the invitation",
        |e| matches!(e, Event::GroupInvited { group, .. } if *group == team.id),
    )
    .await;

    let topic = gossipsub::IdentTopic::new(group_topic(&team.id));
    let ben_addr = ben.whoami().await.unwrap().listen_addrs[0].clone();
    let ben_peer: PeerId = ben.peer_id().parse().unwrap();
    let post = |cert, text: &str| GossipFrame::Group {
        group: team.id.clone(),
        message: ChatMessage {
            author_cert: Some(cert),
            ..ChatMessage::text("raw", text, 1)
        },
    };

    // dee's device: a valid certificate of dee's, but dee is not a member.
    let mut dee = RawDevice::new();
    let boot = dee.connect(&server.addr).await;
    let dee_cert = dee.login(boot, "dee").await;
    dee.connect(&ben_addr).await;
    dee.join(&topic, ben_peer).await;
    dee.publish(
        &topic,
        &post(dee_cert, "from an outsider"),
        Duration::from_millis(300),
    )
    .await;

    // cal's device, the same way: cal is a member, so this one is shown.
    let mut cal = RawDevice::new();
    let boot = cal.connect(&server.addr).await;
    let cal_cert = cal.login(boot, "cal").await;
    cal.connect(&ben_addr).await;
    cal.join(&topic, ben_peer).await;
    cal.publish(
        &topic,
        &post(cal_cert, "from a member"),
        Duration::from_millis(300),
    )
    .await;

    let (shown, before) = expect(
        &mut ben_events,
        "cal's gossip message",
        |e| matches!(e, Event::Message(m) if m.text.as_deref() == Some("from a member")),
    )
    .await;
    let Event::Message(shown) = shown else {
        unreachable!()
    };
    assert_eq!(shown.conversation, group(&team.id));
    assert_eq!(shown.from.user.as_deref(), Some("cal"));
    assert!(before.is_empty(), "shown before it: {before:?}");
    let history = ben.history(&group(&team.id), 10).await.unwrap();
    assert_eq!(texts(&history), ["from a member"], "dee's was rejected");

    for client in [ann, ben] {
        client.shutdown().await.unwrap();
    }
    server.bootstrap.shutdown().await;
}
