//! Times on the wire are UTC like `2019-11-14T19:38:49Z`. cphub accepts any RFC 3339 time
//! (fractions, offsets) and normalises it to UTC; anything else is refused, never defaulted.

use chrono::{DateTime, Datelike, Utc};

use super::{ParseError, Problem};

/// RFC 3339 in UTC on the wire, e.g. `2019-11-14T19:38:49Z`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct UtcTime(DateTime<Utc>);

impl UtcTime {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let time = DateTime::parse_from_rfc3339(raw.trim())
            .map_err(|_| ParseError::new(field, Problem::BadTime))?
            .with_timezone(&Utc);
        Self::in_range(field, time)
    }

    /// A callback's time (chapter 6: "The value is a UTC time"): RFC 3339 as [`Self::parse`]
    /// reads it, or the same without a zone (`2019-11-14T19:38:49`, fractions allowed),
    /// which is UTC by the reference's word. A phone's engine cannot be corrected as an
    /// operator's request can, and its every enter, quit and heartbeat refused for a
    /// missing `Z` would be lost for good. The zone-less time is read as RFC 3339 with `Z`
    /// added, so both forms take exactly the same digits and separators.
    pub fn parse_callback(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        Self::parse(field, raw).or_else(|refused| {
            let as_utc = format!("{}Z", raw.trim());
            Self::parse(field, &as_utc).map_err(|second| match second.problem {
                Problem::TimeOutOfRange => second,
                _ => refused,
            })
        })
    }

    /// Both backends store and compare these; keep them inside four-digit years after the
    /// epoch so every backend orders them the same way. Every time taken from input passes
    /// here.
    pub fn in_range(field: &'static str, time: DateTime<Utc>) -> Result<Self, ParseError> {
        if !(1970..=9999).contains(&time.year()) {
            return Err(ParseError::new(field, Problem::TimeOutOfRange));
        }
        Ok(UtcTime(time))
    }

    /// A callback's time (chapter 6), refused when more than [`UtcTime::MAX_AHEAD`] ahead
    /// of `received_at`. A phone's clock may be off by hours (a local time sent as UTC is
    /// up to 14 h ahead) and cphub orders a phone's news by it; a day ahead is a clock gone
    /// wrong, and kept, one heartbeat would outrank the phone's every later one, freezing
    /// what it says it plays, and a session would end (and be billed) in that future.
    pub fn not_far_ahead(
        self,
        field: &'static str,
        received_at: UtcTime,
    ) -> Result<Self, ParseError> {
        match self > received_at.plus(Self::MAX_AHEAD) {
            true => Err(ParseError::new(field, Problem::TimeAhead)),
            false => Ok(self),
        }
    }

    pub const MAX_AHEAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

    pub fn now() -> Self {
        UtcTime(Utc::now())
    }

    pub fn from_datetime(time: DateTime<Utc>) -> Self {
        UtcTime(time)
    }

    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// Milliseconds since the Unix epoch: SQLite's storage format.
    pub fn epoch_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn from_epoch_millis(ms: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(ms).map(UtcTime)
    }

    pub fn plus(self, by: std::time::Duration) -> Self {
        UtcTime(self.0 + chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX))
    }

    pub fn minus(self, by: std::time::Duration) -> Self {
        UtcTime(self.0 - chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX))
    }

    /// Whole seconds from `earlier` to `self`, never negative.
    pub fn seconds_since(self, earlier: UtcTime) -> i64 {
        (self.0 - earlier.0).num_seconds().max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_reference_format_fractions_and_offsets() {
        let z = UtcTime::parse("t", "2019-11-14T19:38:49Z").unwrap();
        let offset = UtcTime::parse("t", "2019-11-14T21:38:49+02:00").unwrap();
        let fraction = UtcTime::parse("t", "2019-11-14T19:38:49.250Z").unwrap();
        assert_eq!(z, offset);
        assert_eq!(fraction.epoch_millis() - z.epoch_millis(), 250);
    }

    /// Chapter 6's times are "a UTC time": without a zone they are read as UTC there, and
    /// only there, with RFC 3339's separators (`T`, `t`, a space) and nothing looser; a
    /// date alone, a number, short fields, a signed year or nonsense are still refused.
    #[test]
    fn a_callback_time_without_a_zone_is_utc() {
        let zoned = UtcTime::parse("t", "2019-11-14T19:38:49.5Z").unwrap();
        let bare = UtcTime::parse_callback("t", "2019-11-14T19:38:49.5").unwrap();
        assert_eq!(bare, zoned);
        assert_eq!(
            UtcTime::parse_callback("t", "2019-11-14T19:38:49Z")
                .unwrap()
                .epoch_millis(),
            zoned.epoch_millis() - 500
        );
        let spaced = UtcTime::parse_callback("t", " 2019-11-14 19:38:49.5 ").unwrap();
        assert_eq!(spaced, zoned);
        for raw in [
            "2019-11-14",
            "1573760329",
            "yesterday",
            "2019-1-4T1:2:3",
            "2019-11-14T 19:38:49",
            "+2019-11-14T19:38:49",
            "2019-11-14T19:38:49+0100",
        ] {
            assert_eq!(
                UtcTime::parse_callback("t", raw).unwrap_err().problem,
                Problem::BadTime,
                "{raw:?}"
            );
        }
        let early = UtcTime::parse_callback("t", "1969-12-31T23:59:59");
        assert_eq!(early.unwrap_err().problem, Problem::TimeOutOfRange);
    }

    #[test]
    fn refuses_everything_else() {
        for raw in [
            "",
            "2019-11-14",
            "2019-11-14 19:38:49",
            "1573760329",
            "2019-13-14T19:38:49Z",
            "2019-11-14T19:38:49",
            "yesterday",
        ] {
            assert_eq!(
                UtcTime::parse("t", raw).unwrap_err().problem,
                Problem::BadTime,
                "{raw:?}"
            );
        }
        assert_eq!(
            UtcTime::parse("t", "1969-12-31T23:59:59Z")
                .unwrap_err()
                .problem,
            Problem::TimeOutOfRange
        );
    }

    #[test]
    fn epoch_millis_round_trips() {
        let t = UtcTime::parse("t", "2024-02-29T23:59:59.999Z").unwrap();
        assert_eq!(UtcTime::from_epoch_millis(t.epoch_millis()), Some(t));
    }
}
