//! Dashboard sessions: what a login with a key turns into, kept in the
//! browser as an HttpOnly cookie rather than in any table.
//!
//! A session token names who logged in (a key, by its stored hash, or the
//! bootstrap admin token, by a MAC of it), when the session ends, and a
//! random nonce, all signed with HMAC-SHA256 under the server's session
//! secret. Nothing is stored server-side: every request re-checks the key
//! behind the session, so revoking the key (or changing the admin token)
//! ends its sessions at once. The CSRF token is a second MAC over the
//! nonce, so it is bound to one session and needs no storage either.
//! Pure except for drawing randomness from the operating system.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::keys::{KeyHash, RandomnessError};

/// The cookie's name.
pub const COOKIE: &str = "tollgate_session";

const VERSION: &str = "v1";
const NONCE_BYTES: usize = 16;

/// Logged-out sessions remembered at most (about 100 bytes each).
const MAX_ENDED: usize = 100_000;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A Tollgate key, by the hash the keys table stores.
    Key(KeyHash),
    /// The bootstrap admin token (`TOLLGATE_ADMIN_TOKEN`).
    AdminToken,
}

/// An open session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub subject: Subject,
    pub expires_at: DateTime<Utc>,
    nonce: String,
}

/// Why a session token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session is not valid; log in again")]
    Invalid,
    #[error("the session has expired; log in again")]
    Expired,
}

/// Issues and checks session tokens under one secret.
pub struct Sessions {
    secret: [u8; 32],
    lifetime: TimeDelta,
    /// Sessions logged out before they expired, by nonce, until they would
    /// have expired (this instance only: see ARCHITECTURE.md).
    ended: RwLock<HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sessions")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions signed with a key derived from `secret`, or with a random
    /// one (sessions then end when the process does, and each instance
    /// behind a load balancer has its own).
    pub fn new(secret: Option<&Secret>, lifetime: TimeDelta) -> Result<Self, RandomnessError> {
        let secret = match secret {
            Some(secret) => {
                let mut derived = [0_u8; 32];
                derived.copy_from_slice(&mac(b"tollgate session secret", &[secret.expose()]));
                derived
            }
            None => {
                let mut random = [0_u8; 32];
                crate::keys::fill_random(&mut random)?;
                random
            }
        };
        Ok(Sessions {
            secret,
            lifetime,
            ended: RwLock::new(HashMap::new()),
        })
    }

    pub fn lifetime(&self) -> TimeDelta {
        self.lifetime
    }

    /// A new session for `subject`, and the token that carries it.
    /// `admin_token` is the configured token, which an admin-token session
    /// is bound to.
    pub fn issue(
        &self,
        subject: Subject,
        admin_token: Option<&Secret>,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), RandomnessError> {
        let mut nonce = [0_u8; NONCE_BYTES];
        crate::keys::fill_random(&mut nonce)?;
        let session = Session {
            subject,
            expires_at: now + self.lifetime,
            nonce: crate::keys::hex(&nonce),
        };
        let subject = self.subject_text(&session.subject, admin_token);
        let expires = session.expires_at.timestamp().to_string();
        let signature = crate::keys::hex(&mac(
            &self.secret,
            &[VERSION, &subject, &expires, &session.nonce],
        ));
        let token = format!(
            "{VERSION}.{subject}.{expires}.{}.{signature}",
            session.nonce
        );
        Ok((token, session))
    }

    /// The session a token carries, if its signature holds, it has not
    /// expired, and (for the admin token) the token is still the configured one.
    pub fn open(
        &self,
        token: &str,
        admin_token: Option<&Secret>,
        now: DateTime<Utc>,
    ) -> Result<Session, SessionError> {
        let mut parts = token.split('.');
        let (Some(VERSION), Some(subject), Some(expires), Some(nonce), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(SessionError::Invalid);
        };
        let expected = mac(&self.secret, &[VERSION, subject, expires, nonce]);
        if !same_bytes(signature.as_bytes(), crate::keys::hex(&expected).as_bytes()) {
            return Err(SessionError::Invalid);
        }
        let expires_at = expires
            .parse::<i64>()
            .ok()
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
            .ok_or(SessionError::Invalid)?;
        if expires_at <= now {
            return Err(SessionError::Expired);
        }
        if self
            .ended
            .read()
            .map_or(true, |ended| ended.contains_key(nonce))
        {
            return Err(SessionError::Invalid);
        }
        let subject = match subject.split_once('-') {
            Some(("k", hash)) => Subject::Key(KeyHash::from_stored(hash)),
            Some(("t", bound)) => {
                let current = admin_token
                    .map(|token| self.admin_binding(token))
                    .ok_or(SessionError::Invalid)?;
                if !same_bytes(bound.as_bytes(), current.as_bytes()) {
                    return Err(SessionError::Invalid);
                }
                Subject::AdminToken
            }
            _ => return Err(SessionError::Invalid),
        };
        Ok(Session {
            subject,
            expires_at,
            nonce: nonce.to_owned(),
        })
    }

    /// Ends a session before it expires (logging out): its token is refused
    /// from now on.
    pub fn end(&self, session: &Session, now: DateTime<Utc>) {
        if let Ok(mut ended) = self.ended.write() {
            ended.retain(|_, expires_at| *expires_at > now);
            // Bounded: past this many live logged-out sessions, the cookie
            // is still cleared but a copy of it lives on until it expires.
            if ended.len() < MAX_ENDED {
                ended.insert(session.nonce.clone(), session.expires_at);
            }
        }
    }

    /// The CSRF token of a session: what the page sends back in
    /// `X-CSRF-Token` with every change.
    pub fn csrf_token(&self, session: &Session) -> String {
        crate::keys::hex(&mac(&self.secret, &["csrf", &session.nonce]))
    }

    /// Whether `presented` is the session's CSRF token (compared without an
    /// early exit).
    pub fn check_csrf(&self, session: &Session, presented: &str) -> bool {
        same_bytes(presented.as_bytes(), self.csrf_token(session).as_bytes())
    }

    fn subject_text(&self, subject: &Subject, admin_token: Option<&Secret>) -> String {
        match subject {
            Subject::Key(hash) => format!("k-{}", hash.as_str()),
            Subject::AdminToken => format!(
                "t-{}",
                admin_token
                    .map(|token| self.admin_binding(token))
                    .unwrap_or_default()
            ),
        }
    }

    /// A MAC of the admin token: binds a session to the token's current
    /// value without putting anything derived from it alone in the cookie.
    fn admin_binding(&self, token: &Secret) -> String {
        crate::keys::hex(&mac(&self.secret, &["admin token", token.expose()]))
    }
}

/// HMAC-SHA256 over the parts, each prefixed by its length so no bytes can
/// shift from one part to the next.
fn mac(secret: &[u8], parts: &[&str]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret) else {
        // HMAC takes keys of any length; this arm cannot be reached.
        return [0; 32];
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// Compares two byte strings in time that depends only on their lengths.
fn same_bytes(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Some(&Secret::new("s3cret")), TimeDelta::hours(12)).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_token_opens_to_its_session_until_it_expires() {
        let sessions = sessions();
        let subject = Subject::Key(KeyHash::of("tg_example"));
        let (token, session) = sessions.issue(subject.clone(), None, now()).unwrap();
        let opened = sessions.open(&token, None, now()).unwrap();
        assert_eq!(opened, session);
        assert_eq!(opened.subject, subject);
        let later = now() + TimeDelta::hours(12);
        assert_eq!(
            sessions.open(&token, None, later),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn any_change_to_a_token_invalidates_it() {
        let sessions = sessions();
        let (token, _) = sessions
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        let other_hash = KeyHash::of("tg_b");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = [
            token.replace(parts[1], &format!("k-{}", other_hash.as_str())),
            token.replace(parts[2], "9999999999"),
            format!("{token}."),
            token[..token.len() - 1].to_owned(),
            String::new(),
            "v1.k-.1.2.3".to_owned(),
        ];
        for forged in forged {
            assert_eq!(
                sessions.open(&forged, None, now()),
                Err(SessionError::Invalid),
                "{forged}"
            );
        }
        // Another secret does not accept it.
        let other = Sessions::new(Some(&Secret::new("other")), TimeDelta::hours(1)).unwrap();
        assert_eq!(other.open(&token, None, now()), Err(SessionError::Invalid));
    }

    #[test]
    fn an_admin_token_session_ends_when_the_token_changes() {
        let sessions = sessions();
        let token_a = Secret::new("admin-a");
        let (token, _) = sessions
            .issue(Subject::AdminToken, Some(&token_a), now())
            .unwrap();
        assert!(!token.contains("admin-a"));
        assert_eq!(
            sessions
                .open(&token, Some(&token_a), now())
                .unwrap()
                .subject,
            Subject::AdminToken
        );
        let token_b = Secret::new("admin-b");
        assert_eq!(
            sessions.open(&token, Some(&token_b), now()),
            Err(SessionError::Invalid)
        );
        assert_eq!(
            sessions.open(&token, None, now()),
            Err(SessionError::Invalid)
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let sessions = sessions();
        let (_, first) = sessions
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        let (_, second) = sessions
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        let csrf = sessions.csrf_token(&first);
        assert!(sessions.check_csrf(&first, &csrf));
        assert!(!sessions.check_csrf(&second, &csrf));
        assert!(!sessions.check_csrf(&first, ""));
        assert!(!sessions.check_csrf(&first, &csrf[1..]));
    }

    #[test]
    fn an_ended_session_is_refused() {
        let sessions = sessions();
        let (token, session) = sessions
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        let (other, _) = sessions
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        sessions.end(&session, now());
        assert_eq!(
            sessions.open(&token, None, now()),
            Err(SessionError::Invalid)
        );
        assert!(sessions.open(&other, None, now()).is_ok());
    }

    #[test]
    fn a_random_secret_differs_per_instance() {
        let first = Sessions::new(None, TimeDelta::hours(1)).unwrap();
        let second = Sessions::new(None, TimeDelta::hours(1)).unwrap();
        let (token, _) = first
            .issue(Subject::Key(KeyHash::of("tg_a")), None, now())
            .unwrap();
        assert!(first.open(&token, None, now()).is_ok());
        assert_eq!(second.open(&token, None, now()), Err(SessionError::Invalid));
    }
}
