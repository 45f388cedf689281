//! Who is calling: gateway keys looked up by hash, with a short cache so a
//! database hiccup never turns valid keys into 401s (a known failure of
//! other gateways) and a revocation takes effect within the cache's TTL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::keys::{ApiKey, KeyHash, looks_like_key};
use crate::store::{Store, StoreError};

/// Keys held in the cache at most; past it, the oldest half is dropped.
const MAX_CACHED_KEYS: usize = 10_000;
/// How long a request with a stale cached key waits for the database to
/// confirm it before the stale key is used.
const STALE_LOOKUP_TIMEOUT: Duration = Duration::from_millis(300);
/// After such a lookup failed, stale keys are used without asking the
/// database for this long (so an outage costs one slow lookup per period,
/// not one per request).
const OUTAGE_BACKOFF: Duration = Duration::from_secs(5);

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send `Authorization: Bearer <tollgate key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    /// The database could not be asked and the key is not cached.
    #[error("cannot check the API key right now")]
    Unavailable(StoreError),
}

#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    ttl: Duration,
    cache: RwLock<HashMap<KeyHash, (ApiKey, Instant)>>,
    /// One database lookup per key at a time: a burst of first requests
    /// with the same key waits for one lookup instead of exhausting the
    /// connection pool with identical ones.
    lookups: tokio::sync::Mutex<HashMap<KeyHash, Arc<tokio::sync::Mutex<()>>>>,
    /// Until when stale keys are used without a lookup (the database failed
    /// one recently).
    unavailable_until: RwLock<Option<Instant>>,
}

impl Authenticator {
    pub fn new(store: Store, ttl: Duration) -> Self {
        Authenticator {
            store,
            ttl,
            cache: RwLock::new(HashMap::new()),
            lookups: tokio::sync::Mutex::new(HashMap::new()),
            unavailable_until: RwLock::new(None),
        }
    }

    fn database_unavailable(&self) -> bool {
        self.unavailable_until
            .read()
            .ok()
            .and_then(|until| *until)
            .is_some_and(|until| Instant::now() < until)
    }

    fn note_unavailable(&self) {
        if let Ok(mut until) = self.unavailable_until.write() {
            *until = Some(Instant::now() + OUTAGE_BACKOFF);
        }
    }

    /// Drops every cached key, so a revocation or an erased user's keys
    /// stop working at once on this instance (others within the TTL).
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    fn fresh(&self, hash: &KeyHash) -> Option<(ApiKey, Instant)> {
        self.cache
            .read()
            .ok()
            .and_then(|cache| cache.get(hash).cloned())
    }

    /// The live key behind a bearer token.
    pub async fn gateway_key(&self, token: Option<&str>) -> Result<ApiKey, AuthError> {
        let token = token
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        if !looks_like_key(token) {
            return Err(AuthError::Invalid);
        }
        self.key_with_hash(KeyHash::of(token)).await
    }

    /// The live key with this stored hash (a dashboard session names its
    /// key so).
    pub async fn key_with_hash(&self, hash: KeyHash) -> Result<ApiKey, AuthError> {
        let cached = self.fresh(&hash);
        if let Some((key, fetched)) = &cached
            && (fetched.elapsed() < self.ttl || self.database_unavailable())
        {
            return live(key.clone());
        }
        let gate = Arc::clone(self.lookups.lock().await.entry(hash.clone()).or_default());
        let result = {
            let _turn = gate.lock().await;
            // Whoever held the turn before may have just fetched it.
            match self.fresh(&hash) {
                Some((key, fetched))
                    if fetched.elapsed() < self.ttl || self.database_unavailable() =>
                {
                    live(key)
                }
                _ => self.look_up(hash.clone(), cached).await,
            }
        };
        let mut lookups = self.lookups.lock().await;
        if Arc::strong_count(&gate) <= 2 {
            lookups.remove(&hash);
        }
        result
    }

    async fn look_up(
        &self,
        hash: KeyHash,
        cached: Option<(ApiKey, Instant)>,
    ) -> Result<ApiKey, AuthError> {
        let found = match &cached {
            // A caller we know waits only briefly for the confirmation: a
            // database that does not answer (a partition, an exhausted
            // pool) must not hold every request for its acquire timeout.
            Some((key, _)) => {
                match tokio::time::timeout(STALE_LOOKUP_TIMEOUT, self.store.key_by_hash(&hash))
                    .await
                {
                    Ok(found) => found,
                    Err(_) => {
                        tracing::warn!(
                            "the database did not confirm a cached key in time; using the cached key"
                        );
                        self.note_unavailable();
                        return live(key.clone());
                    }
                }
            }
            None => self.store.key_by_hash(&hash).await,
        };
        match found {
            Ok(Some(key)) => {
                if let Ok(mut cache) = self.cache.write() {
                    if cache.len() >= MAX_CACHED_KEYS {
                        let now = Instant::now();
                        cache.retain(|_, (_, fetched)| now.duration_since(*fetched) < self.ttl / 2);
                    }
                    cache.insert(hash, (key.clone(), Instant::now()));
                }
                live(key)
            }
            Ok(None) => Err(AuthError::Invalid),
            // A stale cached key beats refusing a valid caller during an outage.
            Err(error) if error.is_transient() => match cached {
                Some((key, _)) => {
                    self.note_unavailable();
                    live(key)
                }
                None => Err(AuthError::Unavailable(error)),
            },
            Err(error) => Err(AuthError::Unavailable(error)),
        }
    }
}

fn live(key: ApiKey) -> Result<ApiKey, AuthError> {
    if key.revoked_at.is_some() {
        Err(AuthError::Revoked)
    } else {
        Ok(key)
    }
}
