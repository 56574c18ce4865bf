//! Remembering token work that every request would otherwise repeat: a client sends the same
//! session id with each request, and consecutive calls of one work session send the backend the
//! same assertion. Verifying or signing a JWT costs 2-10 µs with an HMAC key and 50-60 µs with
//! Ed25519; a hit here costs one hash of the token and a map lookup.
//!
//! Both caches are bounded ([`CAPACITY`] entries): when full, expired entries go, and if none has
//! expired the cache starts over (the next requests verify or sign again). Neither changes what is
//! accepted: an entry is made only from a full verification, found again only by the exact same
//! token text, and refused once its token has expired, exactly when [`KeyRing::verify`] would
//! refuse it. The ring is fixed for the life of the process, so a cached verification cannot
//! outlive the key that made it.
//!
//! Shared state: each cache is one map behind a mutex, held only to look up or insert (never
//! across a signature). Two requests missing at once both verify (or sign) and both insert the same
//! value, so a race costs work, never correctness.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

use super::{KeyRing, LEEWAY_SECS, TokenError};

/// Entries per cache (about 1 KiB each for session ids, which carry the `initialize` params).
pub const CAPACITY: usize = 4096;

/// Claims by token text, with the token's `exp`.
type VerifiedMap<T> = HashMap<Box<str>, (Arc<T>, u64)>;
/// Tokens by claims, with when they were signed.
type SignedMap<K> = HashMap<K, (Arc<str>, u64)>;

/// Verified tokens of one audience, by their exact text.
pub struct Verified<T> {
    audience: &'static str,
    map: Mutex<VerifiedMap<T>>,
}

impl<T: DeserializeOwned> Verified<T> {
    pub fn new(audience: &'static str) -> Self {
        Self {
            audience,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of `token`, verified by `ring` now or earlier; refused as [`KeyRing::verify`]
    /// refuses it (a token that expired since it was cached is [`TokenError::Expired`]).
    pub fn verify(&self, ring: &KeyRing, token: &str, now_secs: u64) -> Result<Arc<T>, TokenError> {
        if let Some((claims, exp)) = self.lock().get(token) {
            return if now_secs <= exp + LEEWAY_SECS {
                Ok(claims.clone())
            } else {
                Err(TokenError::Expired)
            };
        }
        let (claims, exp) = ring.verify_with_expiry::<T>(self.audience, token)?;
        let claims = Arc::new(claims);
        let mut map = self.lock();
        make_room(&mut map, |(_, exp)| now_secs <= exp + LEEWAY_SECS);
        map.insert(token.into(), (claims.clone(), exp));
        Ok(claims)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerifiedMap<T>> {
        // A panic while holding the lock leaves a consistent map (inserts are single calls).
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Tokens signed for one audience and lifetime, by their claims: the same claims signed less than
/// `reuse` ago get the same token back, so it always has at least `lifetime - reuse` left.
pub struct Signed<K> {
    audience: String,
    lifetime: Duration,
    reuse: Duration,
    map: Mutex<SignedMap<K>>,
}

impl<K: Serialize + Eq + Hash + Clone> Signed<K> {
    pub fn new(audience: impl Into<String>, lifetime: Duration, reuse: Duration) -> Self {
        Self {
            audience: audience.into(),
            lifetime,
            reuse: reuse.min(lifetime / 2),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `claims`: the one signed within the reuse period, else a new one.
    pub fn sign(&self, ring: &KeyRing, claims: &K, now_secs: u64) -> Result<Arc<str>, TokenError> {
        let fresh = |signed_at: u64| now_secs < signed_at + self.reuse.as_secs();
        if let Some((token, signed_at)) = self.lock().get(claims)
            && fresh(*signed_at)
            && *signed_at <= now_secs
        {
            return Ok(token.clone());
        }
        let token: Arc<str> = ring
            .sign(&self.audience, self.lifetime, now_secs, claims)?
            .into();
        let mut map = self.lock();
        make_room(&mut map, |(_, signed_at)| fresh(*signed_at));
        map.insert(claims.clone(), (token.clone(), now_secs));
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SignedMap<K>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps a map below [`CAPACITY`]: drops the entries no longer `live`, then, if none was, all.
fn make_room<K: Eq + Hash, V>(map: &mut HashMap<K, V>, live: impl Fn(&V) -> bool) {
    if map.len() < CAPACITY {
        return;
    }
    map.retain(|_, value| live(value));
    if map.len() >= CAPACITY {
        map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::tests::{OTHER, SECRET, handle, now};
    use crate::tokens::{HANDLE_AUDIENCE, HandleClaims};

    #[test]
    fn a_cached_verification_answers_as_the_ring_would() {
        let ring = KeyRing::hs256("broker", SECRET).expect("ring");
        let other = KeyRing::hs256("broker", OTHER).expect("ring");
        let cache = Verified::<HandleClaims>::new(HANDLE_AUDIENCE);
        let claims = handle();
        let now = now();
        let token = ring
            .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now, &claims)
            .expect("sign");
        for _ in 0..2 {
            assert_eq!(cache.verify(&ring, &token, now).as_deref(), Ok(&claims));
        }
        // Found again only by the exact text: a changed byte is verified, and refused.
        let mut forged = token.clone();
        forged.push('A');
        assert!(cache.verify(&ring, &forged, now).is_err());
        // Refused once expired (past the leeway), as the ring refuses it.
        assert_eq!(
            cache
                .verify(&ring, &token, now + 60 + LEEWAY_SECS + 1)
                .err(),
            Some(TokenError::Expired)
        );
        assert!(cache.verify(&ring, &token, now + 60 + LEEWAY_SECS).is_ok());
        // Another key's token is never in the cache.
        let foreign = other
            .sign(HANDLE_AUDIENCE, Duration::from_secs(60), now, &claims)
            .expect("sign");
        assert!(cache.verify(&ring, &foreign, now).is_err());
    }

    #[test]
    fn the_caches_stay_bounded() {
        let ring = KeyRing::hs256("broker", SECRET).expect("ring");
        let verified = Verified::<HandleClaims>::new(HANDLE_AUDIENCE);
        let signed = Signed::new(
            HANDLE_AUDIENCE,
            Duration::from_secs(60),
            Duration::from_secs(10),
        );
        let now = now();
        for _ in 0..CAPACITY + 10 {
            let claims = handle();
            let token = signed.sign(&ring, &claims, now).expect("sign");
            verified.verify(&ring, &token, now).expect("verify");
        }
        assert!(verified.lock().len() <= CAPACITY);
        assert!(signed.lock().len() <= CAPACITY);
    }

    #[test]
    fn a_signed_token_is_reused_only_within_the_reuse_period() {
        let ring = KeyRing::hs256("broker", SECRET).expect("ring");
        let signed = Signed::new(
            HANDLE_AUDIENCE,
            Duration::from_secs(120),
            Duration::from_secs(10),
        );
        let claims = handle();
        let now = now();
        let first = signed.sign(&ring, &claims, now).expect("sign");
        assert_eq!(signed.sign(&ring, &claims, now + 9).expect("sign"), first);
        let later = signed.sign(&ring, &claims, now + 10).expect("sign");
        assert_ne!(later, first, "signed again once the reuse period is over");
        let other = signed.sign(&ring, &handle(), now + 10).expect("sign");
        assert_ne!(other, later, "other claims, another token");
        let verified: HandleClaims = ring.verify(HANDLE_AUDIENCE, &first).expect("valid");
        assert_eq!(verified, claims);
    }
}
