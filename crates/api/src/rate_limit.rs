//! Rate limits at the edge: per user and per client for authenticated requests, per
//! network address for the authorization endpoints and for requests without a valid token
//! (which slows down guessing). Each limit is a keyed GCRA from the `governor` crate.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Requests per second allowed for each key; 0 turns that limit off. A key may send a
/// burst of [`BURST_SECONDS`] seconds' worth at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Per user (the token's FHIR user — the person signed in — else its subject: a
    /// system client).
    pub per_user: u32,
    /// Per client application or system (all its users together).
    pub per_client: u32,
    /// Per network address, on `/auth/*` and on requests with a missing or bad token.
    pub per_address: u32,
}

/// How many seconds of the rate a key may spend at once.
pub const BURST_SECONDS: u32 = 4;

/// Keys forgotten when a limiter remembers more than this many (idle keys are dropped).
const MAX_KEYS: usize = 100_000;

/// How often (in checks) a limiter counts its keys: counting visits every shard, so it is
/// kept off most requests.
const SWEEP_EVERY: u64 = 4096;

struct Limiter<K: Hash + Eq + Clone> {
    keyed: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(per_second: u32) -> Option<Limiter<K>> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = rate.saturating_mul(NonZeroU32::new(BURST_SECONDS).expect("non-zero"));
        Some(Limiter {
            keyed: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    fn check(&self, key: &K) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) && self.keyed.len() > MAX_KEYS {
            self.keyed.retain_recent();
        }
        self.keyed
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The server's rate limiters.
pub struct RateLimits {
    user: Option<Limiter<String>>,
    client: Option<Limiter<String>>,
    address: Option<Limiter<IpAddr>>,
}

impl RateLimits {
    /// Limiters for these settings.
    pub fn new(settings: RateSettings) -> RateLimits {
        RateLimits {
            user: Limiter::new(settings.per_user),
            client: Limiter::new(settings.per_client),
            address: Limiter::new(settings.per_address),
        }
    }

    /// Counts one request of an actor: their user (the person signed in, their FHIR
    /// resource; a system client has none and counts by its subject) and their client;
    /// Err(wait) when either is over its rate.
    pub fn check_principal(&self, actor: &sijill_auth::Principal) -> Result<(), Duration> {
        if let Some(l) = &self.user {
            l.check(actor.fhir_user.as_ref().unwrap_or(&actor.subject))?;
        }
        // The built-in portal is every citizen's app: its users have their own budgets, and
        // one shared budget would let a few of them lock all the others out.
        if let Some(l) = self
            .client
            .as_ref()
            .filter(|_| actor.client_id != crate::portal::CLIENT_ID)
        {
            l.check(&actor.client_id)?;
        }
        Ok(())
    }

    /// Counts one request from a network address (unknown addresses are not limited).
    pub fn check_address(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        match (&self.address, address) {
            (Some(l), Some(a)) => l.check(&a),
            _ => Ok(()),
        }
    }
}

/// The `Retry-After` value for a wait: whole seconds, at least one.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user of a client.
    fn who(user: &str, client: &str) -> sijill_auth::Principal {
        sijill_auth::Principal {
            role: sijill_auth::Role::Practitioner,
            subject: "subject".into(),
            fhir_user: Some(user.into()),
            patient: None,
            organization: None,
            scopes: sijill_auth::Scopes::parse(""),
            context: sijill_auth::ScopeContext::User,
            client_id: client.into(),
        }
    }

    #[test]
    fn a_user_over_the_burst_is_told_to_wait_and_others_are_not() {
        let limits = RateLimits::new(RateSettings {
            per_user: 2,
            per_client: 0,
            per_address: 0,
        });
        for _ in 0..2 * BURST_SECONDS {
            assert!(limits.check_principal(&who("alice", "app")).is_ok());
        }
        let wait = limits.check_principal(&who("alice", "app")).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.check_principal(&who("bob", "app")).is_ok());
    }

    #[test]
    fn a_client_limit_counts_all_its_users_together() {
        let limits = RateLimits::new(RateSettings {
            per_user: 0,
            per_client: 1,
            per_address: 0,
        });
        for n in 0..BURST_SECONDS {
            assert!(limits.check_principal(&who(&format!("user-{n}"), "app")).is_ok());
        }
        assert!(limits.check_principal(&who("someone-else", "app")).is_err());
        assert!(limits.check_principal(&who("someone-else", "other-app")).is_ok());
    }

    #[test]
    fn the_built_in_portal_has_no_shared_budget_only_its_users_do() {
        let limits = RateLimits::new(RateSettings {
            per_user: 1,
            per_client: 1,
            per_address: 0,
        });
        for n in 0..3 * BURST_SECONDS {
            let citizen = who(&format!("Patient/{n}"), crate::portal::CLIENT_ID);
            assert!(limits.check_principal(&citizen).is_ok(), "citizen {n}");
        }
        let busy = who("Patient/0", crate::portal::CLIENT_ID);
        while limits.check_principal(&busy).is_ok() {}
        assert!(limits.check_principal(&busy).is_err(), "each citizen keeps a budget");
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = RateLimits::new(RateSettings {
            per_user: 0,
            per_client: 0,
            per_address: 0,
        });
        for _ in 0..10_000 {
            assert!(limits.check_principal(&who("u", "c")).is_ok());
            assert!(limits.check_address(Some([127, 0, 0, 1].into())).is_ok());
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2500)), 3);
    }
}
