//! Time windows of access control rules (`acco` / `actw`): a cron-like line of seven
//! fields — second, minute, hour, day of month, month, day of week (0 Sunday to 6
//! Saturday; 7 is Sunday too), year — each `*`, or a comma list of numbers, ranges `a-b`,
//! stepped ranges `a-b/s` and steps `*/s`. Evaluated in UTC.
//!
//! Hand-written because the cron crates number the days of the week differently (Sunday
//! as 1, or names only) and take no year field; the grammar is small and checked whole
//! when an ACP is created, not when a request meets it.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The bounds of each field, in order.
const FIELDS: [(&str, u32, u32); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
    ("year", 1, 9999),
];

/// One checked time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeWindow {
    fields: [Field; 7],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Any,
    /// `(first, last, step)` items, any of which may match.
    Items(Vec<(u32, u32, u32)>),
}

impl TimeWindow {
    /// Parse a window; the reason when it is not one.
    pub fn parse(text: &str) -> Result<TimeWindow, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != FIELDS.len() {
            return Err(format!(
                "time window {text:?} must have 7 fields (second minute hour day month weekday year), not {}",
                parts.len()
            ));
        }
        let mut fields = Vec::with_capacity(FIELDS.len());
        for (part, (name, min, max)) in parts.into_iter().zip(FIELDS) {
            fields.push(field(part, min, max).map_err(|reason| format!("time window {text:?}: {name} {reason}"))?);
        }
        let fields = fields.try_into().map_err(|_| format!("time window {text:?} is malformed"))?;
        Ok(TimeWindow { fields })
    }

    /// Does `time` lie in the window?
    pub fn contains(&self, time: DateTime<Utc>) -> bool {
        let weekday = time.weekday().num_days_from_sunday();
        let values = [
            time.second(),
            time.minute(),
            time.hour(),
            time.day(),
            time.month(),
            weekday,
            u32::try_from(time.year()).unwrap_or(0),
        ];
        self.fields.iter().zip(values).enumerate().all(|(index, (field, value))| match field {
            Field::Any => true,
            Field::Items(items) => items.iter().any(|&(first, last, step)| {
                let hit = |value: u32| value >= first && value <= last && (value - first).is_multiple_of(step);
                // Day of week 7 is Sunday as well.
                hit(value) || (index == 5 && value == 0 && hit(7))
            }),
        })
    }
}

fn field(part: &str, min: u32, max: u32) -> Result<Field, String> {
    if part == "*" {
        return Ok(Field::Any);
    }
    let number = |text: &str| -> Result<u32, String> {
        let value: u32 = text.parse().map_err(|_| format!("{part:?} is not a number, range or step"))?;
        if value < min || value > max {
            return Err(format!("{value} is outside {min}-{max}"));
        }
        Ok(value)
    };
    let mut items = Vec::new();
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|step| *step > 0)
                    .ok_or_else(|| format!("step {step:?} must be a positive number"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (first, last) = match range {
            "*" if step > 1 || item.contains('/') => (min, max),
            "*" => return Err("* must stand alone".into()),
            _ => match range.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None if item.contains('/') => return Err(format!("{item:?}: a step needs a range or *")),
                None => {
                    let value = number(range)?;
                    (value, value)
                }
            },
        };
        if first > last {
            return Err(format!("range {range:?} runs backwards"));
        }
        items.push((first, last, step));
    }
    Ok(Field::Items(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, month, day, hour, minute, second).single().expect("a valid time")
    }

    #[test]
    fn windows_match_their_fields() {
        // 2026-11-30 is a Monday.
        let monday_morning = at(2026, 11, 30, 9, 30, 0);
        let window = |text: &str| TimeWindow::parse(text).expect(text);
        assert!(window("* * * * * * *").contains(monday_morning));
        assert!(window("* * 8-17 * * 1-5 *").contains(monday_morning), "office hours");
        assert!(!window("* * 8-17 * * 0,6 *").contains(monday_morning), "weekends");
        assert!(window("0 */15 * * * * *").contains(monday_morning));
        assert!(!window("0 */20 * * * * *").contains(monday_morning));
        assert!(window("* * * * 11 * 2026").contains(monday_morning));
        assert!(!window("0 0 0 1 1 * 2020").contains(monday_morning), "a window in the past");
        assert!(window("* * * * * 7 *").contains(at(2026, 11, 29, 0, 0, 0)), "7 is Sunday");
    }

    #[test]
    fn malformed_windows_are_refused_with_a_reason() {
        for text in [
            "bogus",
            "1 2 3",
            "",
            "*/0 * * * * * *",
            "a-b * * * * * *",
            "*,5 * * * * * *",
            "5/2 * * * * * *",
            "60 * * * * * *",
            "* * * * 13 * *",
            "* * * * * 8 *",
            "* * 5-3 * * * *",
        ] {
            assert!(TimeWindow::parse(text).is_err(), "{text:?}");
        }
    }
}
