//! oneM2M timestamps with a bounded range.
//!
//! A [`Timestamp`] is a UTC instant between 0001-01-01 and 9999-12-31 with microsecond
//! precision. Its text form (`YYYYMMDDTHHMMSS,ffffff`) always has a four-digit year, so
//! stored timestamps compare as strings in time order (the store's expiry index relies on
//! it). Arithmetic that would leave the range fails instead of producing a `+YYYYY` year
//! that compares as earlier than now; parsing accepts exactly eight date digits.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Timelike, Utc};

/// A UTC instant in years 0001–9999, to the microsecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// The longest duration between two timestamps (about 10,000 years), in seconds: the bound
/// of duration attributes such as `mia`.
pub const MAX_SPAN_SECONDS: u64 = 315_537_897_599;

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        Timestamp::from_datetime(Utc::now()).unwrap_or_else(Timestamp::max)
    }

    /// The latest representable instant: 9999-12-31T23:59:59.999999.
    pub fn max() -> Timestamp {
        let max = NaiveDateTime::parse_from_str("99991231T235959", "%Y%m%dT%H%M%S")
            .map(|naive| naive.and_utc() + TimeDelta::microseconds(999_999))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Timestamp(max)
    }

    /// `time`, truncated to microseconds, if it lies in the range.
    pub fn from_datetime(time: DateTime<Utc>) -> Option<Timestamp> {
        if !(1..=9999).contains(&time.year()) {
            return None;
        }
        let micros = time.timestamp_subsec_micros();
        time.with_nanosecond(micros * 1000).map(Timestamp)
    }

    /// Parse `YYYYMMDDTHHMMSS`, optionally followed by `,ffffff` (or `.ffffff`, up to nine
    /// digits) and optionally `Z`. Anything else, or a year outside 0001–9999, is `None`.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let text = text.strip_suffix('Z').unwrap_or(text);
        let (whole, fraction) = match text.split_once([',', '.']) {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let bytes = whole.as_bytes();
        let shape_ok =
            bytes.len() == 15 && bytes[8] == b'T' && bytes[..8].iter().chain(&bytes[9..]).all(u8::is_ascii_digit);
        if !shape_ok || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let naive = NaiveDateTime::parse_from_str(whole, "%Y%m%dT%H%M%S").ok()?;
        let nanos: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().ok()? };
        Timestamp::from_datetime(naive.and_utc() + TimeDelta::nanoseconds(nanos))
    }

    /// `self + duration`, or `None` past the range.
    pub fn checked_add(self, duration: Duration) -> Option<Timestamp> {
        let delta = TimeDelta::from_std(duration).ok()?;
        Timestamp::from_datetime(self.0.checked_add_signed(delta)?)
    }

    /// `self - duration`, or `None` before the range.
    pub fn checked_sub(self, duration: Duration) -> Option<Timestamp> {
        let delta = TimeDelta::from_std(duration).ok()?;
        Timestamp::from_datetime(self.0.checked_sub_signed(delta)?)
    }

    /// `self + duration`, at most [`Timestamp::max`].
    pub fn saturating_add(self, duration: Duration) -> Timestamp {
        self.checked_add(duration).unwrap_or_else(Timestamp::max)
    }

    /// How long until `self` from `now`; zero when it has passed.
    pub fn duration_since(self, now: Timestamp) -> Duration {
        (self.0 - now.0).to_std().unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    /// The fixed-width oneM2M form `YYYYMMDDTHHMMSS,ffffff`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digit by digit into a buffer: written on every answer (`X-M2M-OT`), every
        // CSEBase RETRIEVE (`ctm`) and every write, where `write!` with padded fields took
        // as long as the rest of formatting the answer's headers.
        let (date, time) = (self.0.date_naive(), self.0.time());
        let mut text = *b"00000000T000000,000000";
        let year = u32::try_from(date.year()).map_err(|_| fmt::Error)?;
        let fields = [
            (0..4, year),
            (4..6, date.month()),
            (6..8, date.day()),
            (9..11, time.hour()),
            (11..13, time.minute()),
            (13..15, time.second()),
            (16..22, time.nanosecond() / 1000 % 1_000_000),
        ];
        for (range, mut value) in fields {
            for digit in text[range].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl From<Timestamp> for serde_json::Value {
    fn from(timestamp: Timestamp) -> serde_json::Value {
        serde_json::Value::String(timestamp.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_fixed_width_and_round_trips() {
        let now = Timestamp::now();
        let text = now.to_string();
        assert_eq!(text.len(), "20260101T120000,000000".len());
        assert_eq!(Timestamp::parse(&text), Some(now));
        assert_eq!(
            Timestamp::parse("20300101T000000").map(|t| t.to_string()).as_deref(),
            Some("20300101T000000,000000")
        );
        assert_eq!(
            Timestamp::parse("20300101T000000,5Z").map(|t| t.to_string()).as_deref(),
            Some("20300101T000000,500000")
        );
        assert_eq!(Timestamp::max().to_string(), "99991231T235959,999999");
    }

    #[test]
    fn the_text_form_is_chronos_fixed_pattern() {
        for text in ["00010101T000000", "20261201T093005,000001", "99991231T235959,999999", "20240229T120000,5"] {
            let timestamp = Timestamp::parse(text).expect("valid");
            assert_eq!(timestamp.to_string(), timestamp.0.format("%Y%m%dT%H%M%S,%6f").to_string(), "{text}");
        }
    }

    #[test]
    fn malformed_and_out_of_range_texts_are_refused() {
        for text in [
            "yesterday",
            "",
            "123450101T000000",
            "+123450101T000000",
            "00000101T000000",
            "2030011T000000",
            "20300101 000000",
            "20300101T0000000",
            "20301301T000000",
            "20300101T000000,1234567890",
            "20300101T000000,x",
        ] {
            assert_eq!(Timestamp::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn arithmetic_past_the_calendar_fails_instead_of_wrapping_the_text_form() {
        let now = Timestamp::now();
        assert_eq!(now.checked_add(Duration::from_secs(u64::MAX)), None);
        assert_eq!(now.checked_add(Duration::from_secs(MAX_SPAN_SECONDS)), None);
        assert_eq!(now.saturating_add(Duration::from_secs(337_150_827 * 365 * 86_400)), Timestamp::max());
        let later = now.saturating_add(Duration::from_secs(3600));
        assert!(later > now && later.to_string() > now.to_string());
        assert_eq!(later.duration_since(now), Duration::from_secs(3600));
        assert_eq!(now.duration_since(later), Duration::ZERO);
    }
}
