//! Wrong tokens per client address (`api.auth_failures_per_minute`). The per-token rate
//! limit cannot slow a guesser down: a wrong token has no name to count against. Past the
//! limit within a minute, every authentication from that address — a right token too, or
//! guessing would simply ignore the refusals until one got in — is answered 429 until the
//! minute is over. IPv6 addresses count per /64: a single host is given a whole one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long failures are counted together, and an address refused once past the limit.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses kept before those whose window is over are dropped.
const MAX_ADDRESSES: usize = 10_000;

pub struct AuthFailures {
    /// 0: not counted.
    limit: u32,
    seen: Mutex<HashMap<IpAddr, Strikes>>,
}

#[derive(Clone, Copy)]
struct Strikes {
    count: u32,
    since: Instant,
}

impl AuthFailures {
    pub fn new(limit: u32) -> Self {
        AuthFailures {
            limit,
            seen: Mutex::default(),
        }
    }

    /// How long `client` is still refused, if it spent its failures.
    pub fn refused(&self, client: IpAddr) -> Option<Duration> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let strikes = seen.get(&key(client))?;
        let left = WINDOW.checked_sub(strikes.since.elapsed())?;
        (self.limit > 0 && strikes.count >= self.limit).then_some(left)
    }

    /// Counts a wrong token from `client`.
    pub fn failed(&self, client: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_ADDRESSES {
            seen.retain(|_, s| s.since.elapsed() < WINDOW);
        }
        let now = Instant::now();
        let strikes = seen.entry(key(client)).or_insert(Strikes {
            count: 0,
            since: now,
        });
        if strikes.since.elapsed() >= WINDOW {
            *strikes = Strikes {
                count: 0,
                since: now,
            };
        }
        strikes.count = strikes.count.saturating_add(1);
    }
}

/// An IPv4 address as is; an IPv6 one by its /64.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V4(_) => client,
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(net.into())
        }
    }
}
