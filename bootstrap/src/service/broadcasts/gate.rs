//! What the bootstrap does with a publication on the broadcast topic, decided without IO:
//! [`BroadcastGate::judge`] takes the gossipsub `source`, the bytes and the time, and returns a
//! [`Verdict`]; the event loop reports it to gossipsub and carries it out.
//!
//! In order:
//! 1. garbage (does not decode, or breaks a limit) is rejected; a publication without a source,
//!    one of this server's own, and kinds that do not belong on the topic (group frames, unknown
//!    kinds) are ignored;
//! 2. the author: the account of the certificate when there is one, which must be valid
//!    ([`verify_own_cert`]: issued by this server to the very device that published), else the
//!    device (a bare peer). An invalid certificate is rejected, whatever the policy;
//! 3. a broadcast under [`BroadcastPolicy::Admins`] from anyone but a listed account is
//!    rejected (recalls are not subject to the policy: they only ever take their author's own);
//! 4. each author (`user:<name>` or `peer:<base58>`) has a token bucket ([`RateLimiter`]);
//!    broadcasts and recalls beyond it are ignored (not relayed, not kept, no score penalty);
//! 5. else a broadcast is kept ([`Verdict::Keep`]) and a recall applied ([`Verdict::Recall`]),
//!    and both relayed.

use std::collections::HashSet;
use std::time::Instant;

use confab_protocol::bootstrap::{DeviceCert, normalize_username};
use confab_protocol::{ChatMessage, GossipFrame, MessageId, decode};
use libp2p::PeerId;
use libp2p::identity::PublicKey;

use super::rate::RateLimiter;
use crate::config::BroadcastPolicy;
use crate::config::limits::MAX_RATE_LIMITED_AUTHORS;

/// Why a certificate does not prove who published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// It names another device than the publisher.
    #[error("the certificate is for another device")]
    WrongDevice,
    /// Another server issued it (or claims to have).
    #[error("the certificate was not issued by this server")]
    ForeignIssuer,
    /// The signature does not match its fields.
    #[error("the signature does not verify")]
    BadSignature,
    /// The username is not canonical (this server never issues such).
    #[error("the username is not canonical")]
    BadUser,
}

/// Checks that `cert` was issued by this server (`own`: its public key) to `sender`, as the node
/// checks certificates (`node/src/cert.rs`) with this server as the one trusted issuer; returns
/// the certified username.
pub fn verify_own_cert<'a>(
    cert: &'a DeviceCert,
    sender: &PeerId,
    own: &PublicKey,
) -> Result<&'a str, CertError> {
    if cert.device != sender.to_bytes() {
        return Err(CertError::WrongDevice);
    }
    if cert.issuer != own.to_peer_id().to_bytes() {
        return Err(CertError::ForeignIssuer);
    }
    if !own.verify(&cert.to_be_signed(), &cert.signature) {
        return Err(CertError::BadSignature);
    }
    if normalize_username(&cert.user).ok().as_deref() != Some(cert.user.as_str()) {
        return Err(CertError::BadUser);
    }
    Ok(&cert.user)
}

/// Who published a broadcast or a recall.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Author {
    /// An account, by a valid certificate of this server.
    User(String),
    /// A device without a certificate (a bare peer, or a device not logged in).
    Device(PeerId),
}

impl Author {
    /// The key of its rate limit: `user:<name>` or `peer:<base58>`.
    pub fn rate_key(&self) -> String {
        match self {
            Author::User(user) => format!("user:{user}"),
            Author::Device(peer) => format!("peer:{}", peer.to_base58()),
        }
    }
}

/// Why a publication is neither relayed nor kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// It does not decode, or breaks a limit.
    #[error("malformed: {0}")]
    Malformed(String),
    /// It has no signed source (gossipsub's strict mode never lets one through).
    #[error("no source")]
    NoSource,
    /// This server published it.
    #[error("our own")]
    Own,
    /// A kind that does not belong on the broadcast topic (or that this version does not know).
    #[error("not a broadcast frame")]
    NotBroadcast,
    /// Its certificate is invalid.
    #[error("invalid certificate: {0}")]
    BadCert(CertError),
    /// The policy does not let its author broadcast.
    #[error("{0} may not broadcast here")]
    NotAllowed(String),
    /// Its author is over the rate.
    #[error("{0} is over the broadcast rate")]
    OverRate(String),
}

/// What to do with one publication on the broadcast topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it and keep it.
    Keep {
        /// The publishing device.
        source: PeerId,
        /// Its author.
        author: Author,
        /// The broadcast.
        message: ChatMessage,
    },
    /// Relay it and delete the kept broadcasts `id` of `by`.
    Recall {
        /// The publishing device.
        source: PeerId,
        /// Who recalls (the kept broadcasts of this author only).
        by: Author,
        /// The message recalled.
        id: MessageId,
    },
    /// Neither relay nor keep; no penalty for the peer that forwarded it.
    Ignore(Reason),
    /// Neither relay nor keep; gossipsub lowers the forwarding peer's score.
    Reject(Reason),
}

/// The broadcast rules of one server, with the rate state. Owned by the event loop.
#[derive(Debug)]
pub struct BroadcastGate {
    own_key: PublicKey,
    local: PeerId,
    policy: BroadcastPolicy,
    admins: HashSet<String>,
    limiter: RateLimiter,
}

impl BroadcastGate {
    /// The rules of the server whose public key is `own_key`: `policy` with `admins` (usernames;
    /// normalised, and ones that are no username dropped with a warning), `burst` broadcasts at
    /// once then `rate_per_minute` per author.
    pub fn new(
        own_key: PublicKey,
        policy: BroadcastPolicy,
        admins: &[String],
        rate_per_minute: u32,
        burst: u32,
    ) -> Self {
        let admins = admins
            .iter()
            .filter_map(|a| match normalize_username(a) {
                Ok(a) => Some(a),
                Err(_) => {
                    tracing::warn!("broadcast admin {a:?} is not a username; ignored");
                    None
                }
            })
            .collect();
        Self {
            local: own_key.to_peer_id(),
            own_key,
            policy,
            admins,
            limiter: RateLimiter::new(rate_per_minute, burst, MAX_RATE_LIMITED_AUTHORS),
        }
    }

    /// Judges `data`, published on the broadcast topic by `source`, at `now`.
    pub fn judge(&mut self, source: Option<PeerId>, data: &[u8], now: Instant) -> Verdict {
        let frame = match decode::<GossipFrame>(data) {
            Ok(frame) => frame,
            Err(e) => return Verdict::Reject(Reason::Malformed(e.to_string())),
        };
        let Some(source) = source else {
            return Verdict::Ignore(Reason::NoSource);
        };
        if source == self.local {
            return Verdict::Ignore(Reason::Own);
        }
        match frame {
            GossipFrame::Chat(message) => {
                let author = match self.author(message.author_cert.as_ref(), &source) {
                    Ok(author) => author,
                    Err(e) => return Verdict::Reject(Reason::BadCert(e)),
                };
                if !self.may_broadcast(&author) {
                    return Verdict::Reject(Reason::NotAllowed(author.rate_key()));
                }
                if let Err(reason) = self.take_token(&author, now) {
                    return Verdict::Ignore(reason);
                }
                Verdict::Keep {
                    source,
                    author,
                    message,
                }
            }
            GossipFrame::Recall {
                group: None,
                id,
                cert,
            } => {
                let by = match self.author(cert.as_ref(), &source) {
                    Ok(author) => author,
                    Err(e) => return Verdict::Reject(Reason::BadCert(e)),
                };
                if let Err(reason) = self.take_token(&by, now) {
                    return Verdict::Ignore(reason);
                }
                Verdict::Recall { source, by, id }
            }
            _ => Verdict::Ignore(Reason::NotBroadcast),
        }
    }

    /// The account a certificate proves, else the device.
    fn author(&self, cert: Option<&DeviceCert>, source: &PeerId) -> Result<Author, CertError> {
        match cert {
            Some(cert) => {
                verify_own_cert(cert, source, &self.own_key).map(|u| Author::User(u.to_owned()))
            }
            None => Ok(Author::Device(*source)),
        }
    }

    fn may_broadcast(&self, author: &Author) -> bool {
        match (self.policy, author) {
            (BroadcastPolicy::Anyone, _) => true,
            (BroadcastPolicy::Admins, Author::User(user)) => self.admins.contains(user),
            (BroadcastPolicy::Admins, Author::Device(_)) => false,
        }
    }

    fn take_token(&mut self, author: &Author, now: Instant) -> Result<(), Reason> {
        let key = author.rate_key();
        self.limiter
            .take(&key, now)
            .map_err(|_| Reason::OverRate(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_protocol::encode;
    use libp2p::identity::Keypair;
    use std::time::Duration;

    /// What the accounts service does: sign the fields with the server's key.
    fn issue(issuer: &Keypair, user: &str, device: &PeerId) -> DeviceCert {
        let issuer_id = issuer.public().to_peer_id().to_bytes();
        let device = device.to_bytes();
        let signed = DeviceCert::signed_bytes(user, &device, 1_764_000_000_000, &issuer_id);
        DeviceCert {
            user: user.into(),
            device,
            issued_at: 1_764_000_000_000,
            issuer: issuer_id,
            signature: issuer.sign(&signed).unwrap(),
        }
    }

    struct Setup {
        server: Keypair,
        device: PeerId,
        t0: Instant,
    }

    impl Setup {
        fn new() -> Self {
            Self {
                server: Keypair::generate_ed25519(),
                device: PeerId::random(),
                t0: Instant::now(),
            }
        }

        fn gate(&self, policy: BroadcastPolicy, admins: &[&str]) -> BroadcastGate {
            let admins: Vec<String> = admins.iter().map(|a| a.to_string()).collect();
            BroadcastGate::new(self.server.public(), policy, &admins, 30, 10)
        }

        /// A broadcast from `self.device`, certified for `user` by `issuer` if given.
        fn chat(&self, cert: Option<DeviceCert>) -> (ChatMessage, Vec<u8>) {
            let mut message = ChatMessage::text("ann", "hello", 1);
            message.author_cert = cert;
            let data = encode(&GossipFrame::Chat(message.clone())).unwrap();
            (message, data)
        }

        fn cert(&self, user: &str) -> DeviceCert {
            issue(&self.server, user, &self.device)
        }
    }

    fn is_keep(v: &Verdict) -> bool {
        matches!(v, Verdict::Keep { .. })
    }

    #[test]
    fn anyone_may_broadcast_and_the_author_is_the_account_or_the_device() {
        let s = Setup::new();
        let mut gate = s.gate(BroadcastPolicy::Anyone, &[]);
        let (message, data) = s.chat(Some(s.cert("ann")));
        assert_eq!(
            gate.judge(Some(s.device), &data, s.t0),
            Verdict::Keep {
                source: s.device,
                author: Author::User("ann".into()),
                message,
            }
        );
        let (message, data) = s.chat(None);
        assert_eq!(
            gate.judge(Some(s.device), &data, s.t0),
            Verdict::Keep {
                source: s.device,
                author: Author::Device(s.device),
                message,
            }
        );
    }

    #[test]
    fn forged_foreign_and_replayed_certificates_are_rejected() {
        let s = Setup::new();
        let mut gate = s.gate(BroadcastPolicy::Anyone, &[]);
        let reject = |gate: &mut BroadcastGate, source, cert, why| {
            let (_, data) = s.chat(Some(cert));
            assert_eq!(
                gate.judge(Some(source), &data, s.t0),
                Verdict::Reject(Reason::BadCert(why))
            );
        };
        // Another server's certificate (a real one, for that server).
        let other = Keypair::generate_ed25519();
        reject(
            &mut gate,
            s.device,
            issue(&other, "ann", &s.device),
            CertError::ForeignIssuer,
        );
        // Signed by another key but claiming this server as its issuer.
        let mut forged = issue(&other, "ann", &s.device);
        forged.issuer = s.server.public().to_peer_id().to_bytes();
        reject(&mut gate, s.device, forged, CertError::BadSignature);
        // A tampered user.
        let mut tampered = s.cert("ann");
        tampered.user = "ben".into();
        reject(&mut gate, s.device, tampered, CertError::BadSignature);
        // Ann's real certificate, replayed by another device.
        reject(
            &mut gate,
            PeerId::random(),
            s.cert("ann"),
            CertError::WrongDevice,
        );
        // A name this server would never certify.
        reject(&mut gate, s.device, s.cert("Ann"), CertError::BadUser);
        // The same for a recall.
        let mut forged = issue(&other, "ann", &s.device);
        forged.issuer = s.server.public().to_peer_id().to_bytes();
        let recall = GossipFrame::Recall {
            group: None,
            id: MessageId::random(),
            cert: Some(forged),
        };
        assert_eq!(
            gate.judge(Some(s.device), &encode(&recall).unwrap(), s.t0),
            Verdict::Reject(Reason::BadCert(CertError::BadSignature))
        );
    }

    #[test]
    fn admins_only_lets_listed_accounts_broadcast() {
        let s = Setup::new();
        let mut gate = s.gate(BroadcastPolicy::Admins, &["Ann"]);
        let (_, data) = s.chat(Some(s.cert("ann")));
        assert!(
            is_keep(&gate.judge(Some(s.device), &data, s.t0)),
            "an admin (listed as Ann)"
        );
        let (_, data) = s.chat(Some(s.cert("ben")));
        assert_eq!(
            gate.judge(Some(s.device), &data, s.t0),
            Verdict::Reject(Reason::NotAllowed("user:ben".into()))
        );
        let (_, data) = s.chat(None);
        assert!(matches!(
            gate.judge(Some(s.device), &data, s.t0),
            Verdict::Reject(Reason::NotAllowed(_))
        ));
        // Recalls are not subject to the policy.
        let recall = encode(&GossipFrame::Recall {
            group: None,
            id: MessageId::random(),
            cert: None,
        })
        .unwrap();
        assert!(matches!(
            gate.judge(Some(s.device), &recall, s.t0),
            Verdict::Recall {
                by: Author::Device(_),
                ..
            }
        ));
    }

    #[test]
    fn each_author_is_rate_limited_without_penalty() {
        let s = Setup::new();
        let mut gate = s.gate(BroadcastPolicy::Anyone, &[]);
        let (_, certified) = s.chat(Some(s.cert("ann")));
        for i in 0..10 {
            assert!(
                is_keep(&gate.judge(Some(s.device), &certified, s.t0)),
                "{i}"
            );
        }
        assert_eq!(
            gate.judge(Some(s.device), &certified, s.t0),
            Verdict::Ignore(Reason::OverRate("user:ann".into()))
        );
        // The same device without its certificate is another author (the device).
        let (_, bare) = s.chat(None);
        assert!(is_keep(&gate.judge(Some(s.device), &bare, s.t0)));
        // Recalls count too.
        let recall = encode(&GossipFrame::Recall {
            group: None,
            id: MessageId::random(),
            cert: Some(s.cert("ann")),
        })
        .unwrap();
        assert!(matches!(
            gate.judge(Some(s.device), &recall, s.t0),
            Verdict::Ignore(Reason::OverRate(_))
        ));
        // 30 a minute: one more after 2 s.
        let later = s.t0 + Duration::from_secs(2);
        assert!(matches!(
            gate.judge(Some(s.device), &recall, later),
            Verdict::Recall {
                by: Author::User(_),
                ..
            }
        ));
        assert!(matches!(
            gate.judge(Some(s.device), &certified, later),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn garbage_own_and_foreign_kinds() {
        let s = Setup::new();
        let mut gate = s.gate(BroadcastPolicy::Anyone, &[]);
        assert!(matches!(
            gate.judge(Some(s.device), b"not cbor", s.t0),
            Verdict::Reject(Reason::Malformed(_))
        ));
        let (_, data) = s.chat(None);
        assert_eq!(
            gate.judge(None, &data, s.t0),
            Verdict::Ignore(Reason::NoSource)
        );
        let own = s.server.public().to_peer_id();
        assert_eq!(
            gate.judge(Some(own), &data, s.t0),
            Verdict::Ignore(Reason::Own)
        );
        let group = GossipFrame::Group {
            group: "a".repeat(32),
            message: ChatMessage::text("ann", "hi", 1),
        };
        assert_eq!(
            gate.judge(Some(s.device), &encode(&group).unwrap(), s.t0),
            Verdict::Ignore(Reason::NotBroadcast)
        );
        let group_recall = GossipFrame::Recall {
            group: Some("a".repeat(32)),
            id: MessageId::random(),
            cert: None,
        };
        assert_eq!(
            gate.judge(Some(s.device), &encode(&group_recall).unwrap(), s.t0),
            Verdict::Ignore(Reason::NotBroadcast)
        );
    }
}
