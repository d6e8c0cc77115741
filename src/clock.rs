//! Wall-clock time behind a trait, so expiry rules (ticket validity, allocation holds) can be
//! tested by moving a clock instead of sleeping.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::domain::UtcTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UtcTime;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UtcTime {
        UtcTime::now()
    }
}

/// A clock that only moves when told to (tests, the simulator).
pub struct ManualClock(Mutex<UtcTime>);

impl ManualClock {
    pub fn new(start: UtcTime) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.plus(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UtcTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
