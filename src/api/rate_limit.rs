//! Per-token rate limits of the operator API (`api.rate_limit_per_second`, `_burst`): one
//! GCRA bucket per token name (governor), shared by every worker of this process. Mints and
//! the wait queue (`sessions:mint`) are not counted: they are players arriving, bounded by
//! the fleet's free phones, and throttling them would turn a busy evening into refused
//! players; the limit protects the fleet from an operator's runaway script.

use std::num::NonZeroU32;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, web};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::ApiSettings;
use crate::http::{ErrorCode, error_response};

/// How many buckets are kept before the full ones are dropped.
const MAX_KEYS: usize = 10_000;

/// Checks between two looks at the number of buckets.
const CLEAN_EVERY: u64 = 1024;

/// The buckets, `None` when the limit is off (`rate_limit_per_second = 0`), and how many
/// checks were made.
pub struct RateLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub fn new(settings: &ApiSettings) -> RateLimit {
        let Some(rate) = NonZeroU32::new(settings.rate_limit_per_second) else {
            return RateLimit::of(None);
        };
        let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        RateLimit::of(Some(DefaultKeyedRateLimiter::keyed(quota)))
    }

    fn of(limiter: Option<DefaultKeyedRateLimiter<String>>) -> RateLimit {
        let checks = std::sync::atomic::AtomicU64::new(0);
        RateLimit { limiter, checks }
    }
}

/// A 429 answer if `token_name` has spent its bucket, None if the call may go on.
pub(crate) fn check(req: &ServiceRequest, token_name: &str) -> Option<HttpResponse> {
    req.app_data::<web::Data<RateLimit>>()?
        .check_key(token_name)
}

impl RateLimit {
    /// A 429 answer if `key` (a token's name, or the console's sign-in key of a client) has
    /// spent its bucket, None if the call may go on.
    pub fn check_key(&self, key: &str) -> Option<HttpResponse> {
        let limiter = self.limiter.as_ref()?;
        // Keys are token names, and the console's sign-in keys of client addresses, which
        // anyone can make more of: past this many, the buckets back to full are dropped.
        // Looked at once every so many checks: `retain_recent` walks every key, and with
        // more than MAX_KEYS busy ones it would otherwise run on every request.
        let checks = self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks.is_multiple_of(CLEAN_EVERY) && limiter.len() > MAX_KEYS {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let refused = limiter.check_key(&key.to_owned()).err()?;
        let wait = refused.wait_time_from(DefaultClock::default().now());
        // Whole seconds (RFC 9110), rounded up so a client that obeys is let through.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut res = error_response(
            ErrorCode::RateLimited,
            "too many requests with this token; retry after the Retry-After seconds",
        );
        res.headers_mut().insert(RETRY_AFTER, secs.max(1).into());
        Some(res)
    }
}
