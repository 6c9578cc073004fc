//! Device certificates: a bootstrap's signature that a device (peer id) belongs to a user.
//!
//! A message is shown as `user:alice` only if it carries a certificate that
//! - names the authenticated sender as its device (the connection's peer for a direct message, the
//!   gossipsub `source` for a broadcast), so alice's certificate cannot be replayed by anyone else;
//! - was issued by a peer id this node trusts as a bootstrap (configured, or found on the LAN);
//! - carries a valid ed25519 signature over [`DeviceCert::to_be_signed`] by the issuer's key, which
//!   the issuer's peer id contains (an identity multihash of the protobuf-encoded public key).

use confab_protocol::bootstrap::{DeviceCert, normalize_username};
use libp2p::PeerId;
use libp2p::identity::PublicKey;

/// The multihash code of an identity hash (the "digest" is the data itself).
const IDENTITY_MULTIHASH: u64 = 0x00;

/// Why a certificate does not prove who sent a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertError {
    /// The certificate is for another device than the one that sent it.
    #[error("the certificate is for another device")]
    WrongDevice,
    /// The issuer is not a bootstrap this node trusts.
    #[error("the issuer {0} is not a trusted bootstrap")]
    UntrustedIssuer(String),
    /// The issuer's peer id does not contain a usable public key.
    #[error("the issuer's peer id carries no public key: {0}")]
    IssuerKey(String),
    /// The signature does not match the certificate's fields.
    #[error("the signature does not verify")]
    BadSignature,
    /// The username is not in canonical form (no bootstrap issues that).
    #[error("the username is not canonical")]
    BadUser,
}

/// Checks `cert` as presented by `sender`; returns the certified username.
pub(crate) fn verify<'a>(
    cert: &'a DeviceCert,
    sender: &PeerId,
    trusted: impl Fn(&PeerId) -> bool,
) -> Result<&'a str, CertError> {
    if cert.device != sender.to_bytes() {
        return Err(CertError::WrongDevice);
    }
    let issuer = PeerId::from_bytes(&cert.issuer)
        .map_err(|e| CertError::IssuerKey(format!("not a peer id: {e}")))?;
    if !trusted(&issuer) {
        return Err(CertError::UntrustedIssuer(issuer.to_base58()));
    }
    let key = issuer_key(&issuer)?;
    if !key.verify(&cert.to_be_signed(), &cert.signature) {
        return Err(CertError::BadSignature);
    }
    if normalize_username(&cert.user).ok().as_deref() != Some(cert.user.as_str()) {
        return Err(CertError::BadUser);
    }
    Ok(&cert.user)
}

/// The public key inside an (identity-hashed, i.e. ed25519) peer id.
pub(crate) fn issuer_key(issuer: &PeerId) -> Result<PublicKey, CertError> {
    let hash = issuer.as_ref();
    if hash.code() != IDENTITY_MULTIHASH {
        return Err(CertError::IssuerKey(
            "the key is hashed, not inlined".into(),
        ));
    }
    let key = PublicKey::try_decode_protobuf(hash.digest())
        .map_err(|e| CertError::IssuerKey(e.to_string()))?;
    if key.to_peer_id() != *issuer {
        return Err(CertError::IssuerKey("the key does not match".into()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    /// What a bootstrap does: sign the fields with its key.
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
        bootstrap: Keypair,
        device: PeerId,
    }

    impl Setup {
        fn new() -> Self {
            Self {
                bootstrap: Keypair::generate_ed25519(),
                device: Keypair::generate_ed25519().public().to_peer_id(),
            }
        }

        fn trusted(&self) -> impl Fn(&PeerId) -> bool + '_ {
            |p| *p == self.bootstrap.public().to_peer_id()
        }
    }

    #[test]
    fn a_valid_certificate_names_its_user() {
        let s = Setup::new();
        let cert = issue(&s.bootstrap, "alice", &s.device);
        assert_eq!(verify(&cert, &s.device, s.trusted()), Ok("alice"));
    }

    #[test]
    fn the_same_certificate_from_another_device_is_refused() {
        let s = Setup::new();
        let cert = issue(&s.bootstrap, "alice", &s.device);
        let mallory = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(
            verify(&cert, &mallory, s.trusted()),
            Err(CertError::WrongDevice)
        );
    }

    #[test]
    fn a_certificate_from_a_key_that_is_not_a_bootstrap_is_refused() {
        let s = Setup::new();
        let forger = Keypair::generate_ed25519();
        let cert = issue(&forger, "alice", &s.device);
        assert!(matches!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::UntrustedIssuer(_))
        ));
        // Claiming the trusted bootstrap as issuer does not help: the signature is the forger's.
        let mut claimed = cert.clone();
        claimed.issuer = s.bootstrap.public().to_peer_id().to_bytes();
        assert_eq!(
            verify(&claimed, &s.device, s.trusted()),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_user_is_refused() {
        let s = Setup::new();
        let mut cert = issue(&s.bootstrap, "alice", &s.device);
        cert.user = "bob".into();
        assert_eq!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::BadSignature)
        );
        let mut cert = issue(&s.bootstrap, "alice", &s.device);
        cert.issued_at += 1;
        assert_eq!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn a_truncated_or_missing_signature_is_refused() {
        let s = Setup::new();
        let mut cert = issue(&s.bootstrap, "alice", &s.device);
        cert.signature.truncate(32);
        assert_eq!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::BadSignature)
        );
        cert.signature.clear();
        assert_eq!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn garbage_issuers_and_odd_usernames_are_refused() {
        let s = Setup::new();
        let mut cert = issue(&s.bootstrap, "alice", &s.device);
        cert.issuer = vec![1, 2, 3];
        assert!(matches!(
            verify(&cert, &s.device, |_| true),
            Err(CertError::IssuerKey(_))
        ));
        // A bootstrap never signs a non-canonical name; refuse one even if signed.
        let cert = issue(&s.bootstrap, "Alice", &s.device);
        assert_eq!(
            verify(&cert, &s.device, s.trusted()),
            Err(CertError::BadUser)
        );
    }
}
