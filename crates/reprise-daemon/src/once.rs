//! Tokens that work once until they expire: the signature of a CloudStack
//! change, the mark of a request sent between hosts. A captured one
//! replayed is refused while it could still be accepted; once expired it
//! is refused for its time, so it is forgotten.
//!
//! Kept in memory by the daemon that receives the token: a mark names the
//! host it is for, so only that daemon can accept it.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct UsedOnce {
    inner: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    until: HashMap<Vec<u8>, DateTime<Utc>>,
    /// Expired tokens are dropped when the map reaches this size, so
    /// forgetting costs a constant per token taken.
    prune_at: usize,
}

impl UsedOnce {
    /// Take `token`, good until `until`: false when it was taken before.
    pub fn take(&self, token: &[u8], until: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let mut used = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if used.until.len() >= used.prune_at {
            used.until.retain(|_, t| *t >= now);
            used.prune_at = (used.until.len() * 2).max(1024);
        }
        match used.until.get(token) {
            Some(t) if *t >= now => false,
            _ => {
                used.until.insert(token.to_vec(), until);
                true
            }
        }
    }

    /// Give `token` back (what it was for was refused and changed nothing).
    pub fn give_back(&self, token: &[u8]) {
        let mut used = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        used.until.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_until_it_expires() {
        let once = UsedOnce::default();
        let now = Utc::now();
        let until = now + chrono::Duration::seconds(60);
        assert!(once.take(b"a", until, now));
        assert!(!once.take(b"a", until, now), "replayed");
        assert!(once.take(b"b", until, now), "another token");
        once.give_back(b"b");
        assert!(once.take(b"b", until, now), "given back");
        // Expired entries are forgotten as the map grows.
        let later = until + chrono::Duration::seconds(1);
        for i in 0..2000u32 {
            assert!(once.take(
                &i.to_be_bytes(),
                later + chrono::Duration::seconds(60),
                later
            ));
        }
        assert!(once.inner.lock().unwrap().until.len() <= 2001);
        assert!(!once
            .inner
            .lock()
            .unwrap()
            .until
            .contains_key(b"a".as_slice()));
    }
}
