//! Gateway keys: random `tg_` secrets shown once and stored only as a
//! SHA-256 hash, each belonging to an org and optionally a user.
//! Pure except for drawing randomness from the operating system.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Secret;

/// Every gateway key starts with this, so leaked keys are easy to spot.
pub const KEY_PREFIX: &str = "tg_";

/// Random bytes in a key: 192 bits.
const KEY_BYTES: usize = 24;

crate::usage::named_enum!(
    /// What a key may do.
    Role, "role" {
        Admin => "admin",
        OrgAdmin => "org_admin",
        Member => "member",
    }
);

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: String,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub role: Role,
    /// The first characters of the secret, to recognise a key in lists.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly made key: the secret to show once, and what to store.
pub struct NewKey {
    pub secret: Secret,
    pub hash: KeyHash,
    pub key_prefix: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NewKey")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

/// The stored form of a key: hex SHA-256 of the whole secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(secret: &str) -> KeyHash {
        let digest = Sha256::digest(secret.as_bytes());
        KeyHash(hex(&digest))
    }

    /// A hash as stored or carried (a session names its key by it); a
    /// string that is no key's hash simply matches no key.
    pub fn from_stored(hash: &str) -> KeyHash {
        KeyHash(hash.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomnessError(String);

/// Makes a new random key.
pub fn generate() -> Result<NewKey, RandomnessError> {
    let mut bytes = [0_u8; KEY_BYTES];
    fill_random(&mut bytes)?;
    let secret = format!("{KEY_PREFIX}{}", hex(&bytes));
    let key_prefix = secret.chars().take(KEY_PREFIX.len() + 6).collect();
    Ok(NewKey {
        hash: KeyHash::of(&secret),
        secret: Secret::new(secret),
        key_prefix,
    })
}

/// Fills `bytes` from the operating system's random source.
pub fn fill_random(bytes: &mut [u8]) -> Result<(), RandomnessError> {
    getrandom::fill(bytes).map_err(|error| RandomnessError(error.to_string()))
}

/// Whether a presented token looks like a gateway key at all (cheap check
/// before hashing and looking it up).
pub fn looks_like_key(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + KEY_BYTES * 2
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let first = generate().unwrap();
        let second = generate().unwrap();
        assert!(first.secret.expose().starts_with("tg_"));
        assert!(looks_like_key(first.secret.expose()));
        assert_ne!(first.secret.expose(), second.secret.expose());
        assert_eq!(first.hash, KeyHash::of(first.secret.expose()));
        assert_eq!(first.hash.as_str().len(), 64);
        assert!(!format!("{first:?}").contains(first.secret.expose()));
    }

    #[test]
    fn only_well_formed_tokens_look_like_keys() {
        assert!(!looks_like_key("tg_short"));
        assert!(!looks_like_key(
            "sk-abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdef"
        ));
        assert!(!looks_like_key(&format!("tg_{}", "z".repeat(48))));
    }
}
