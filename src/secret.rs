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
    use proptest::prelude::*;

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

    fn kind() -> impl Strategy<Value = SecretKind> {
        proptest::sample::select(SecretKind::ALL.to_vec())
    }

    /// The shape of a `kind` secret, written with the hex decoder: its prefix, then the random
    /// bytes in hex (either case) and nothing else.
    fn has_shape(kind: SecretKind, text: &str) -> bool {
        text.strip_prefix(kind.prefix())
            .is_some_and(|rest| hex::decode(rest).is_ok_and(|b| b.len() == SECRET_BYTES))
    }

    /// A secret of some kind with one edit: a character inserted, removed or replaced.
    fn near_miss() -> impl Strategy<Value = String> {
        let replacement = prop_oneof![
            proptest::char::range('0', '9'),
            proptest::char::range('a', 'z'),
            proptest::char::range('A', 'Z'),
            Just('_'),
            any::<char>(),
        ];
        (
            kind(),
            "[0-9a-fA-F]{48}",
            any::<proptest::sample::Index>(),
            0..3,
            replacement,
        )
            .prop_map(|(kind, random, at, edit, c)| {
                let mut text: Vec<char> = format!("{}{random}", kind.prefix()).chars().collect();
                let len = text.len();
                match edit {
                    0 => text.insert(at.index(len + 1), c),
                    1 => {
                        text.remove(at.index(len));
                    }
                    _ => text[at.index(len)] = c,
                }
                text.into_iter().collect()
            })
    }

    proptest! {
        /// A secret of the exact shape is recognised by its own kind only, and its lookup prefix
        /// is the kind's prefix and the first 8 hex digits.
        #[test]
        fn a_secret_is_recognised_by_its_own_kind_only(
            kind in kind(),
            random in "[0-9a-fA-F]{48}",
        ) {
            let plain = format!("{}{random}", kind.prefix());
            for other in SecretKind::ALL {
                let expected =
                    (other == kind).then(|| format!("{}{}", kind.prefix(), &random[..8]));
                prop_assert_eq!(lookup_prefix(other, &plain), expected, "{:?}", other);
            }
        }

        /// A minted secret parses back to its kind, with the lookup stored beside it, and
        /// verifies against its hash.
        #[test]
        fn a_minted_secret_parses_back_to_its_kind(kind in kind()) {
            let minted = mint(kind);
            for other in SecretKind::ALL {
                let expected = (other == kind).then(|| minted.lookup.clone());
                prop_assert_eq!(lookup_prefix(other, &minted.plain), expected, "{:?}", other);
            }
            prop_assert!(verify(&minted.plain, &minted.hash));
        }

        /// Whatever the text (arbitrary, or a secret with one character inserted, removed or
        /// replaced), it never panics and is accepted exactly when it has a kind's shape; what is
        /// accepted looks up by a prefix of it.
        #[test]
        fn only_the_exact_shape_is_accepted(
            text in prop_oneof![
                any::<String>(),
                near_miss(),
                "(fhk_|enroll_|nc_|sk_|inv_|fpc_)[0-9a-fA-Fg é]{46,50}",
            ],
        ) {
            for kind in SecretKind::ALL {
                let lookup = lookup_prefix(kind, &text);
                prop_assert_eq!(lookup.is_some(), has_shape(kind, &text), "{:?}", kind);
                if let Some(lookup) = lookup {
                    prop_assert!(text.starts_with(&lookup));
                    prop_assert_eq!(lookup.len(), kind.prefix().len() + LOOKUP_HEX);
                }
            }
        }

        /// A peer credential has the shape of a minted one, is the same each time, and differs
        /// per audience.
        #[test]
        fn peer_credentials_have_the_shape_and_differ_per_audience(
            random in "[0-9a-f]{48}",
            audience in "[a-z0-9-]{1,20}",
            other in "[a-z0-9-]{1,20}",
        ) {
            let secret = format!("{}{random}", SecretKind::PeerCredential.prefix());
            let credential = peer_credential_for(&secret, &audience);
            prop_assert!(has_shape(SecretKind::PeerCredential, &credential));
            prop_assert_eq!(&credential, &peer_credential_for(&secret, &audience));
            if other != audience {
                prop_assert_ne!(credential, peer_credential_for(&secret, &other));
            }
        }

        /// A stored hash verifies the secret it was made from and nothing else: another secret,
        /// the hash in capitals or cut short, arbitrary text.
        #[test]
        fn a_hash_verifies_its_own_secret_only(
            plain in "\\PC{0,40}",
            other in "\\PC{0,40}",
            stored in any::<String>(),
        ) {
            let hash = hash(&plain);
            prop_assert!(verify(&plain, &hash));
            prop_assert_eq!(verify(&other, &hash), other == plain);
            prop_assert!(!verify(&plain, &hash.to_uppercase()));
            prop_assert!(!verify(&plain, &hash[..63]));
            prop_assert_eq!(verify(&plain, &stored), stored == hash);
        }
    }
}
