//! Secrets: API tokens, enrollment tokens, node credentials, stream keys, invites, peer credentials.
//!
//! Every secret carries ≥ 160 bits from the OS CSPRNG behind a recognisable prefix (`fhk_`,
//! `enroll_`, `sk_`, `nc_`) that secret scanners can match. Only the SHA-256 of a secret is stored;
//! a short public part (the *lookup prefix*) finds the row, then the hashes are compared in constant
//! time, so a database index never compares secret material byte by byte.

use rand::rngs::OsRng;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a secret: 24 bytes = 192 bits, of which the lookup prefix reveals 32.
const SECRET_BYTES: usize = 24;
/// Hex characters of the random part that are stored in clear to find the row.
const LOOKUP_HEX: usize = 8;

/// The kinds of secret Foghorn mints, each with its scanner-friendly prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ApiToken,
    EnrollmentToken,
    NodeCredential,
    StreamKey,
    ClusterInvite,
    /// What a cluster's Foghorn presents to its federation peers.
    PeerCredential,
}

impl SecretKind {
    /// Every kind, for code that must recognise any of them (the log scrubber).
    pub const ALL: [SecretKind; 6] = [
        SecretKind::ApiToken,
        SecretKind::EnrollmentToken,
        SecretKind::NodeCredential,
        SecretKind::StreamKey,
        SecretKind::ClusterInvite,
        SecretKind::PeerCredential,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiToken => "fhk_",
            SecretKind::EnrollmentToken => "enroll_",
            SecretKind::NodeCredential => "nc_",
            SecretKind::StreamKey => "sk_",
            SecretKind::ClusterInvite => "inv_",
            SecretKind::PeerCredential => "fpc_",
        }
    }
}

/// A freshly minted secret. `plain` is shown once and then dropped; only `hash` and `lookup` persist.
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub plain: String,
    pub lookup: String,
    pub hash: String,
}

/// Mints a new secret of `kind` from the OS CSPRNG.
pub fn mint(kind: SecretKind) -> NewSecret {
    let plain = format!("{}{}", kind.prefix(), random_hex(SECRET_BYTES));
    let lookup = lookup_prefix(kind, &plain).expect("a minted secret is well-formed");
    NewSecret {
        hash: hash(&plain),
        lookup,
        plain,
    }
}

/// The public part used to find a secret's row, or `None` when `plain` is not of `kind`'s shape.
pub fn lookup_prefix(kind: SecretKind, plain: &str) -> Option<String> {
    let rest = plain.strip_prefix(kind.prefix())?;
    if rest.len() != SECRET_BYTES * 2 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(plain[..kind.prefix().len() + LOOKUP_HEX].to_string())
}

/// Hex SHA-256 of a secret, as stored.
pub fn hash(plain: &str) -> String {
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// Whether `plain` hashes to `stored_hash`, compared in constant time.
pub fn verify(plain: &str, stored_hash: &str) -> bool {
    let computed = hash(plain);
    computed.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// The credential a Foghorn holding `secret` presents to cluster `audience`: good towards that
/// cluster only, so a peer that receives it cannot replay it to a third one. SHA-256 over the
/// secret and the audience, domain-separated; same shape as a minted peer credential.
pub fn peer_credential_for(secret: &str, audience: &str) -> String {
    let digest =
        Sha256::digest(format!("foghorn peer credential\n{secret}\n{audience}").as_bytes());
    format!(
        "{}{}",
        SecretKind::PeerCredential.prefix(),
        &hex::encode(digest)[..SECRET_BYTES * 2]
    )
}

/// `n` random bytes from the OS CSPRNG, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    OsRng
        .try_fill_bytes(&mut buf)
        .expect("the OS random source is available");
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_verify_and_are_distinct() {
        let a = mint(SecretKind::ApiToken);
        let b = mint(SecretKind::ApiToken);
        assert_ne!(a.plain, b.plain);
        assert!(a.plain.starts_with("fhk_"));
        assert_eq!(a.plain.len(), 4 + 48);
        assert!(verify(&a.plain, &a.hash));
        assert!(!verify(&b.plain, &a.hash));
        assert!(a.plain.starts_with(&a.lookup));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.plain[4..]));
    }

    #[test]
    fn peer_credentials_differ_per_audience() {
        let s = mint(SecretKind::PeerCredential).plain;
        let (a, b) = (
            peer_credential_for(&s, "alpha"),
            peer_credential_for(&s, "bravo"),
        );
        assert_ne!(a, b);
        assert_eq!(a, peer_credential_for(&s, "alpha"));
        assert!(lookup_prefix(SecretKind::PeerCredential, &a).is_some());
        assert_ne!(
            a,
            peer_credential_for(&mint(SecretKind::PeerCredential).plain, "alpha")
        );
    }

    #[test]
    fn lookup_rejects_malformed() {
        assert!(lookup_prefix(SecretKind::StreamKey, "sk_short").is_none());
        assert!(lookup_prefix(SecretKind::StreamKey, "fhk_0123").is_none());
        let s = mint(SecretKind::StreamKey);
        assert!(lookup_prefix(SecretKind::ApiToken, &s.plain).is_none());
        let mut bad = s.plain.clone();
        bad.pop();
        bad.push('z');
        assert!(lookup_prefix(SecretKind::StreamKey, &bad).is_none());
    }
}
