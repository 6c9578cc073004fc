//! Round trips, golden fixtures, typed errors and a seeded fuzz run over every frame kind.

use confab_protocol::ContentHash;
use confab_protocol::bootstrap::{
    AccountSettings, Avatar, BootstrapRequest, BootstrapResponse, BroadcastEntry, DeviceCert,
    DeviceInfo, ErrorCode, Friend, MailboxEntry, MailboxItem, Notification, NotifyAck,
    OfflineSummary, Profile, ReceiptState, UserSummary,
};
use confab_protocol::direct::RejectReason;
use confab_protocol::group::{GroupVersion, Member, Role, Roster};
use confab_protocol::limits::{MAX_AVATAR_BYTES, MAX_PASSWORD_BYTES, MAX_RECEIPT_IDS};
use confab_protocol::limits::{MAX_DIRECT_REQUEST, MAX_NAME_BYTES, MAX_TEXT_BYTES};
use confab_protocol::{
    Attachment, AttachmentKind, ChatMessage, DecodeError, DirectRequest, DirectResponse,
    EncodeError, GossipFrame, MessageId, Wire, decode, encode,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

const GROUP: &str = "0123456789abcdef0123456789abcdef";

fn sample_roster() -> Roster {
    Roster {
        group: GROUP.into(),
        name: "team".into(),
        version: 4,
        members: vec![
            Member {
                user: "ann".into(),
                role: Role::Owner,
            },
            Member {
                user: "ben".into(),
                role: Role::Member,
            },
        ],
        issued_at: 1,
        issuer: vec![0, 1],
        signature: vec![2; 64],
    }
}

fn sample_message() -> ChatMessage {
    ChatMessage {
        id: MessageId::from_bytes(*b"0123456789abcdef"),
        sent_at: 1_764_000_000_000,
        sender_name: "alice".into(),
        text: Some("hello, bob — ünïcode ok".into()),
        author_cert: None,
        attachment: None,
        sealed: None,
    }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let msg = sample_message();
    vec![
        (
            "direct_request_chat",
            encode(&DirectRequest::Chat(msg.clone())).unwrap(),
        ),
        (
            "direct_response_ack",
            encode(&DirectResponse::Ack { id: msg.id }).unwrap(),
        ),
        (
            "direct_response_rejected",
            encode(&DirectResponse::Rejected {
                id: Some(msg.id),
                reason: RejectReason::Invalid {
                    detail: "text is too long".into(),
                },
            })
            .unwrap(),
        ),
        ("gossip_chat", encode(&GossipFrame::Chat(msg)).unwrap()),
        (
            "bootstrap_login",
            encode(&BootstrapRequest::Login {
                user: "alice".into(),
                password: "correct horse".into(),
            })
            .unwrap(),
        ),
        (
            "bootstrap_session",
            encode(&BootstrapResponse::Session {
                user: "alice".into(),
                cert: sample_cert(),
            })
            .unwrap(),
        ),
        (
            "notify_presence",
            encode(&Notification::Presence {
                user: "bob".into(),
                online: true,
            })
            .unwrap(),
        ),
    ]
}

fn sample_cert() -> DeviceCert {
    DeviceCert {
        user: "alice".into(),
        device: vec![1; 38],
        issued_at: 1_764_000_000_000,
        issuer: vec![2; 38],
        signature: vec![3; 64],
    }
}

#[test]
fn bootstrap_frames_round_trip() {
    let avatar = Avatar {
        mime: "image/png".into(),
        bytes: vec![0x89, b'P', b'N', b'G'],
    };
    for request in [
        BootstrapRequest::Register {
            user: "alice".into(),
            password: "pw".into(),
        },
        BootstrapRequest::Login {
            user: "alice".into(),
            password: "pw".into(),
        },
        BootstrapRequest::Session,
        BootstrapRequest::Logout,
        BootstrapRequest::DeleteAccount {
            password: "pw".into(),
        },
        BootstrapRequest::ProfileSet {
            nickname: Some("Al".into()),
            signature: None,
            avatar: Some(avatar.clone()),
        },
        BootstrapRequest::ProfileGet { user: "bob".into() },
        BootstrapRequest::AvatarGet {
            hash: ContentHash([9; 32]),
        },
        BootstrapRequest::SearchUsers { query: "bo".into() },
        BootstrapRequest::FriendAdd { user: "bob".into() },
        BootstrapRequest::FriendAccept { user: "bob".into() },
        BootstrapRequest::FriendRemove { user: "bob".into() },
        BootstrapRequest::Friends,
        BootstrapRequest::Deposit {
            to: "bob".into(),
            message: sample_message(),
        },
        BootstrapRequest::Sync {
            after: 3,
            limit: 100,
        },
        BootstrapRequest::Summary { after: 3 },
        BootstrapRequest::Receipt {
            to: "bob".into(),
            state: ReceiptState::Read,
            ids: vec![MessageId::from_bytes([5; 16])],
        },
        BootstrapRequest::Devices { user: "bob".into() },
        BootstrapRequest::GroupCreate {
            name: "team".into(),
            members: vec!["bob".into()],
        },
        BootstrapRequest::GroupInvite {
            group: GROUP.into(),
            user: "bob".into(),
        },
        BootstrapRequest::GroupRemove {
            group: GROUP.into(),
            user: "bob".into(),
        },
        BootstrapRequest::GroupLeave {
            group: GROUP.into(),
        },
        BootstrapRequest::GroupSetRole {
            group: GROUP.into(),
            user: "bob".into(),
            role: Role::Admin,
        },
        BootstrapRequest::GroupRename {
            group: GROUP.into(),
            name: "new".into(),
        },
        BootstrapRequest::Groups,
        BootstrapRequest::Settings,
        BootstrapRequest::Broadcasts {
            after: 2,
            limit: 100,
        },
        BootstrapRequest::SetDnd { enabled: true },
        BootstrapRequest::SetMuted {
            conversation: "user:bob".into(),
            muted: true,
        },
        BootstrapRequest::SetBlocked {
            target: "group:x".into(),
            blocked: false,
        },
        BootstrapRequest::GroupInfo {
            group: GROUP.into(),
        },
        BootstrapRequest::GroupPost {
            group: GROUP.into(),
            message: sample_message(),
        },
    ] {
        roundtrip(request);
    }
    for response in [
        BootstrapResponse::Session {
            user: "alice".into(),
            cert: sample_cert(),
        },
        BootstrapResponse::Done,
        BootstrapResponse::Profile(Profile {
            user: "bob".into(),
            nickname: "Bob".into(),
            signature: "at lunch".into(),
            avatar_hash: Some(ContentHash([1; 32])),
            online: true,
        }),
        BootstrapResponse::Avatar(avatar),
        BootstrapResponse::Users {
            users: vec![UserSummary {
                user: "bob".into(),
                nickname: "Bob".into(),
                online: false,
            }],
        },
        BootstrapResponse::Friends {
            friends: vec![Friend {
                user: "bob".into(),
                nickname: "Bob".into(),
                signature: String::new(),
                online: true,
            }],
            incoming: vec!["carol".into()],
            outgoing: vec![],
        },
        BootstrapResponse::Deposited { seq: 9 },
        BootstrapResponse::Mailbox {
            entries: vec![
                MailboxEntry {
                    seq: 1,
                    conversation: "user:bob".into(),
                    from_user: "bob".into(),
                    from_device: vec![1, 2],
                    outgoing: false,
                    stored_at: 5,
                    item: MailboxItem::Message(sample_message()),
                },
                MailboxEntry {
                    seq: 2,
                    conversation: "user:bob".into(),
                    from_user: "bob".into(),
                    from_device: vec![1, 2],
                    outgoing: false,
                    stored_at: 6,
                    item: MailboxItem::Receipt {
                        state: ReceiptState::Delivered,
                        ids: vec![MessageId::from_bytes([5; 16])],
                    },
                },
            ],
            last_seq: 2,
        },
        BootstrapResponse::Summary(OfflineSummary {
            senders: vec![("user:bob".into(), 2)],
            total: 2,
        }),
        BootstrapResponse::Group(sample_roster()),
        BootstrapResponse::Broadcasts {
            entries: vec![BroadcastEntry {
                seq: 3,
                from_device: vec![1],
                stored_at: 4,
                message: sample_message(),
            }],
            last_seq: 3,
        },
        BootstrapResponse::Settings(AccountSettings {
            version: 3,
            dnd: true,
            muted: vec!["user:bob".into()],
            blocked: vec!["user:eve".into()],
        }),
        BootstrapResponse::GroupList {
            groups: vec![GroupVersion {
                group: GROUP.into(),
                version: 4,
            }],
        },
        BootstrapResponse::Devices {
            user: "bob".into(),
            devices: vec![DeviceInfo {
                peer: vec![0, 1],
                addrs: vec![serde_bytes::ByteBuf::from(vec![4, 127, 0, 0, 1])],
            }],
        },
        BootstrapResponse::Error {
            code: ErrorCode::Throttled,
            message: "slow down".into(),
            retry_after_ms: Some(1500),
        },
    ] {
        roundtrip(response);
    }
    for note in [
        Notification::Presence {
            user: "bob".into(),
            online: false,
        },
        Notification::FriendRequest { from: "bob".into() },
        Notification::FriendAdded { user: "bob".into() },
        Notification::FriendRemoved { user: "bob".into() },
        Notification::LoggedOut,
        Notification::Mailbox { last_seq: 7 },
        Notification::SettingsChanged { version: 2 },
        Notification::GroupChanged {
            group: GROUP.into(),
            version: 4,
        },
    ] {
        roundtrip(note);
    }
    roundtrip(NotifyAck {});
    // Limits beyond the types.
    let big = BootstrapRequest::ProfileSet {
        nickname: None,
        signature: None,
        avatar: Some(Avatar {
            mime: "image/png".into(),
            bytes: vec![0; MAX_AVATAR_BYTES + 1],
        }),
    };
    assert!(matches!(encode(&big), Err(EncodeError::Invalid { .. })));
    let long = BootstrapRequest::Login {
        user: "alice".into(),
        password: "p".repeat(MAX_PASSWORD_BYTES + 1),
    };
    assert!(matches!(encode(&long), Err(EncodeError::Invalid { .. })));
    for n in [0, MAX_RECEIPT_IDS + 1] {
        let receipt = BootstrapRequest::Receipt {
            to: "bob".into(),
            state: ReceiptState::Read,
            ids: vec![MessageId::from_bytes([5; 16]); n],
        };
        assert!(matches!(encode(&receipt), Err(EncodeError::Invalid { .. })));
    }
}

fn roundtrip<T: Wire + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = encode(&value).expect("encode");
    let back: T = decode(&bytes).expect("decode");
    assert_eq!(back, value);
}

#[test]
fn every_frame_kind_round_trips() {
    let msg = sample_message();
    roundtrip(DirectRequest::Chat(msg.clone()));
    roundtrip(DirectRequest::UserChat {
        to: "bob".into(),
        message: msg.clone(),
    });
    roundtrip(DirectResponse::Ack { id: msg.id });
    for reason in [
        RejectReason::Invalid { detail: "x".into() },
        RejectReason::Unsupported,
        RejectReason::StorageFailed,
    ] {
        roundtrip(DirectResponse::Rejected {
            id: Some(msg.id),
            reason: reason.clone(),
        });
        roundtrip(DirectResponse::Rejected { id: None, reason });
    }
    roundtrip(GossipFrame::Chat(msg.clone()));
    // A file: a caption is optional; the description's limits hold.
    let mut with_file = msg.clone();
    with_file.text = None;
    with_file.attachment = Some(Box::new(Attachment {
        name: "x.bin".into(),
        size: 5_000_000,
        mime: "image/png".into(),
        hash: ContentHash([3; 32]),
        kind: AttachmentKind::Image,
        width: Some(640),
        height: Some(480),
        duration_ms: None,
        thumbnail: Some(vec![0xff; 100]),
    }));
    roundtrip(DirectRequest::Chat(with_file.clone()));
    let mut fat = with_file.clone();
    if let Some(a) = fat.attachment.as_mut() {
        a.thumbnail = Some(vec![0; 24 * 1024 + 1]);
    }
    assert!(matches!(
        encode(&DirectRequest::Chat(fat)),
        Err(EncodeError::Invalid { .. })
    ));
    let mut bare = with_file;
    bare.attachment = None;
    assert!(matches!(
        encode(&DirectRequest::Chat(bare)),
        Err(EncodeError::Invalid { .. })
    ));
    roundtrip(GossipFrame::Group {
        group: GROUP.into(),
        message: msg.clone(),
    });
    let bad_group = GossipFrame::Group {
        group: "not-a-group".into(),
        message: msg.clone(),
    };
    assert!(matches!(
        encode(&bad_group),
        Err(EncodeError::Invalid { .. })
    ));
    // Extremes that are still legal.
    let mut big = msg;
    big.sender_name = "n".repeat(MAX_NAME_BYTES);
    big.text = Some("t".repeat(MAX_TEXT_BYTES));
    roundtrip(DirectRequest::Chat(big));
}

#[test]
fn message_ids_print_and_parse() {
    let id = MessageId::random();
    assert_eq!(id.to_string().len(), 32);
    assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
    assert!("xyz".parse::<MessageId>().is_err());
    assert!("00".repeat(17).parse::<MessageId>().is_err());
    assert_ne!(MessageId::random(), MessageId::random());
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The encoding of each frame kind is pinned: a change here is a wire change and must be deliberate
/// (bump the version). `CONFAB_BLESS=1 cargo test -p confab-protocol` rewrites the fixtures.
#[test]
fn golden_fixtures_are_stable() {
    let bless = std::env::var_os("CONFAB_BLESS").is_some();
    for (name, bytes) in samples() {
        let path = fixture_dir().join(format!("{name}.hex"));
        if bless {
            std::fs::write(&path, hex::encode(&bytes) + "\n").unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        assert_eq!(
            hex::encode(&bytes),
            want.trim(),
            "encoding of {name} changed"
        );
    }
}

#[test]
fn golden_fixtures_decode() {
    let want = sample_message();
    let read = |name: &str| {
        hex::decode(
            std::fs::read_to_string(fixture_dir().join(name))
                .unwrap()
                .trim(),
        )
        .unwrap()
    };
    assert_eq!(
        decode::<DirectRequest>(&read("direct_request_chat.hex")).unwrap(),
        DirectRequest::Chat(want.clone())
    );
    assert_eq!(
        decode::<GossipFrame>(&read("gossip_chat.hex")).unwrap(),
        GossipFrame::Chat(want.clone())
    );
    assert_eq!(
        decode::<DirectResponse>(&read("direct_response_ack.hex")).unwrap(),
        DirectResponse::Ack { id: want.id }
    );
}

/// Builds a frame by hand, as a newer or hostile peer might.
fn raw<T: serde::Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).unwrap()
}

#[derive(serde::Serialize)]
struct FutureChat<'a> {
    r#type: &'a str,
    id: serde_bytes_16,
    sent_at: u64,
    sender_name: &'a str,
    text: &'a str,
    reactions: Vec<&'a str>,
}

#[allow(non_camel_case_types)]
struct serde_bytes_16([u8; 16]);
impl serde::Serialize for serde_bytes_16 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[test]
fn newer_peers_are_understood_where_possible() {
    // An unknown field is ignored.
    let frame = raw(&(
        1u16,
        FutureChat {
            r#type: "chat",
            id: serde_bytes_16([7; 16]),
            sent_at: 5,
            sender_name: "eve",
            text: "hi",
            reactions: vec!["+1"],
        },
    ));
    match decode::<DirectRequest>(&frame).unwrap() {
        DirectRequest::Chat(m) => assert_eq!(m.text.as_deref(), Some("hi")),
        other => panic!("{other:?}"),
    }
    // An unknown request kind decodes to Unknown instead of failing.
    let frame = raw(&(
        1u16,
        std::collections::BTreeMap::from([("type", "video_call"), ("room", "x")]),
    ));
    assert_eq!(
        decode::<DirectRequest>(&frame).unwrap(),
        DirectRequest::Unknown
    );
    assert_eq!(decode::<GossipFrame>(&frame).unwrap(), GossipFrame::Unknown);
}

#[test]
fn bad_input_gets_a_typed_error() {
    let good = encode(&DirectRequest::Chat(sample_message())).unwrap();

    // Oversize: rejected before parsing.
    let huge = vec![0u8; MAX_DIRECT_REQUEST + 1];
    assert!(matches!(
        decode::<DirectRequest>(&huge),
        Err(DecodeError::TooLarge { .. })
    ));

    // Truncation at every point.
    for cut in 0..good.len() {
        let err = decode::<DirectRequest>(&good[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::Malformed { .. }
            ),
            "cut at {cut}: {err:?}"
        );
    }
    assert!(matches!(
        decode::<DirectRequest>(&good[..good.len() - 1]),
        Err(DecodeError::Truncated { .. })
    ));

    // Another version.
    let v2 = raw(&(2u16, "whatever comes next"));
    assert!(matches!(
        decode::<DirectRequest>(&v2),
        Err(DecodeError::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));

    // Wrong types.
    assert!(matches!(
        decode::<DirectRequest>(&raw(&("one", 2))),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        decode::<DirectRequest>(&raw(&42u8)),
        Err(DecodeError::Malformed { .. })
    ));
    let bad_id = raw(&(
        1u16,
        std::collections::BTreeMap::from([("type", "ack"), ("id", "not bytes")]),
    ));
    assert!(matches!(
        decode::<DirectResponse>(&bad_id),
        Err(DecodeError::Malformed { .. })
    ));

    // Trailing garbage.
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        decode::<DirectRequest>(&trailing),
        Err(DecodeError::TrailingBytes { .. })
    ));

    // A length that claims far more than the input: no allocation, a clean error.
    // [1, {"type": "chat", "text": <byte string of 2^62 bytes>}]
    let mut lying = vec![0x82, 0x01, 0xa1, 0x64];
    lying.extend_from_slice(b"text");
    lying.extend_from_slice(&[0x7b, 0x40, 0, 0, 0, 0, 0, 0, 0]);
    assert!(decode::<DirectRequest>(&lying).is_err());

    // Deep nesting: an error, not a stack overflow.
    let deep = [vec![0x82, 0x01], vec![0x81; 100_000]].concat();
    assert!(decode::<DirectRequest>(&deep).is_err());

    // Rules beyond the types.
    let mut long = sample_message();
    long.text = Some("x".repeat(MAX_TEXT_BYTES + 1));
    assert!(matches!(
        encode(&DirectRequest::Chat(long.clone())),
        Err(EncodeError::Invalid { .. })
    ));
    let frame = raw(&(1u16, DirectRequest::Chat(long)));
    assert!(matches!(
        decode::<DirectRequest>(&frame),
        Err(DecodeError::Invalid { .. })
    ));
    let mut empty = sample_message();
    empty.text = None;
    let frame = raw(&(1u16, GossipFrame::Chat(empty)));
    assert!(matches!(
        decode::<GossipFrame>(&frame),
        Err(DecodeError::Invalid { .. })
    ));
}

fn check_no_panic(buf: &[u8]) {
    // Whatever decodes must survive a round trip unchanged.
    if let Ok(v) = decode::<DirectRequest>(buf)
        && v != DirectRequest::Unknown
    {
        assert_eq!(decode::<DirectRequest>(&encode(&v).unwrap()).unwrap(), v);
    }
    if let Ok(v) = decode::<DirectResponse>(buf)
        && let Ok(again) = encode(&v)
    {
        assert_eq!(decode::<DirectResponse>(&again).unwrap(), v);
    }
    if let Ok(v) = decode::<BootstrapRequest>(buf)
        && v != BootstrapRequest::Unknown
    {
        assert_eq!(decode::<BootstrapRequest>(&encode(&v).unwrap()).unwrap(), v);
    }
    if let Ok(v) = decode::<Notification>(buf)
        && v != Notification::Unknown
    {
        assert_eq!(decode::<Notification>(&encode(&v).unwrap()).unwrap(), v);
    }
    let _ = decode::<BootstrapResponse>(buf);
    if let Ok(v) = decode::<GossipFrame>(buf)
        && v != GossipFrame::Unknown
    {
        assert_eq!(decode::<GossipFrame>(&encode(&v).unwrap()).unwrap(), v);
    }
}

#[test]
fn thousands_of_random_and_mutated_buffers_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xC0FFEE);
    let seeds: Vec<Vec<u8>> = samples().into_iter().map(|(_, b)| b).collect();
    let mut decoded_ok = 0;
    for round in 0..6000 {
        let buf: Vec<u8> = if round % 3 == 0 {
            let len = rng.random_range(0..256);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut b = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..6) {
                match rng.random_range(0..4) {
                    0 if !b.is_empty() => {
                        let i = rng.random_range(0..b.len());
                        b[i] ^= 1 << rng.random_range(0..8);
                    }
                    1 if !b.is_empty() => {
                        let i = rng.random_range(0..b.len());
                        b[i] = rng.random();
                    }
                    2 => {
                        let i = rng.random_range(0..=b.len());
                        b.insert(i, rng.random());
                    }
                    _ if !b.is_empty() => {
                        let i = rng.random_range(0..b.len());
                        b.truncate(i);
                    }
                    _ => {}
                }
            }
            b
        };
        if decode::<DirectRequest>(&buf).is_ok() {
            decoded_ok += 1;
        }
        check_no_panic(&buf);
    }
    // Some single-bit mutations leave a valid frame (a changed letter in the text): the run must
    // exercise both paths.
    assert!(decoded_ok > 0);
}
