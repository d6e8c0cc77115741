//! The wait queue's parsed values: how urgent an entry is, and how long a poll may wait.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::{ParseError, Problem};

/// `raw` if within `range`, else a refusal naming the field and the range.
fn within<T: PartialOrd>(
    field: &'static str,
    raw: T,
    range: RangeInclusive<T>,
    problem: &'static str,
) -> Result<T, ParseError> {
    match range.contains(&raw) {
        true => Ok(raw),
        false => Err(ParseError::new(field, Problem::Invalid(problem))),
    }
}

/// An entry's priority: higher is served first, equal ones in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(transparent)]
pub struct Priority(i64);

impl Priority {
    pub const MAX: i64 = 100;

    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ParseError> {
        within(field, raw, 0..=Self::MAX, "must be 0 to 100").map(Priority)
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// How long a poll may wait for its entry to be served. Bounded so a poll never outlives
/// proxies' idle timeouts (commonly 60 s) and its connection is not held for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitSecs(u64);

impl WaitSecs {
    pub const MAX: u64 = 30;

    pub fn parse(field: &'static str, raw: u64) -> Result<Self, ParseError> {
        within(field, raw, 0..=Self::MAX, "must be 0 to 30").map(WaitSecs)
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_bounded_on_both_sides() {
        assert_eq!(Priority::parse("priority", 0).unwrap().value(), 0);
        assert_eq!(Priority::parse("priority", 100).unwrap().value(), 100);
        for raw in [-1, 101, i64::MIN, i64::MAX] {
            assert!(Priority::parse("priority", raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn a_poll_waits_at_most_thirty_seconds() {
        assert_eq!(
            WaitSecs::parse("wait_secs", 30)
                .unwrap()
                .duration()
                .as_secs(),
            30
        );
        assert!(WaitSecs::parse("wait_secs", 0).is_ok());
        assert!(WaitSecs::parse("wait_secs", 31).is_err());
    }
}
