//! What a command prints: aligned tables for people, JSON for scripts, and times in UTC.

use std::time::Duration;

use cqrsx_core::{ContentType, RecordedEvent, Timestamp};
use serde_json::{json, Value};

use crate::Failure;

/// A command's result: the JSON a script reads, and the text a person reads.
pub struct Output {
    /// What `--json` prints.
    pub json: Value,
    /// What is printed otherwise.
    pub text: String,
}

/// A table with aligned columns.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per header).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text; `empty` when it has no rows.
    pub fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, (cell, w)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(&mut self.headers.iter().copied());
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        out
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A time as `2026-12-07T10:20:01.123Z`.
pub fn utc(t: Timestamp) -> String {
    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

/// Parses `--since`: an RFC 3339 UTC time (`2026-12-07T10:00:00Z`, fractions allowed),
/// milliseconds since the epoch, or an age before `now` (`90s`, `15m`, `2h`, `7d`).
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, Failure> {
    let bad = || {
        Failure::usage(format!(
            "--since {text:?} is not a time: use 2026-12-07T10:00:00Z, milliseconds since the epoch, or an age such as 15m"
        ))
    };
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        // Before 1973 in milliseconds: far more likely seconds since the epoch.
        if ms < 100_000_000_000 {
            return Err(Failure::usage(format!(
                "--since {text} looks like seconds since the epoch: it takes milliseconds ({text}000)"
            )));
        }
        return Ok(Timestamp(ms));
    }
    let age = text.char_indices().last().filter(|(_, unit)| "smhd".contains(*unit));
    if let Some((at, unit)) = age.filter(|(at, _)| *at > 0 && text[..*at].bytes().all(|b| b.is_ascii_digit())) {
        let n: u64 = text[..at].parse().map_err(|_| bad())?;
        let secs = match unit {
            's' => n,
            'm' => n.saturating_mul(60),
            'h' => n.saturating_mul(3600),
            'd' => n.saturating_mul(86_400),
            _ => return Err(bad()),
        };
        return Ok(Timestamp(now.as_millis().saturating_sub(secs.saturating_mul(1000))));
    }
    let rest = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix('z'))
        .ok_or_else(bad)?;
    let (date, time) = rest.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = whole.split(':').collect();
    let ([y, mo, day], [h, mi, s]) = (d.as_slice(), t.as_slice()) else {
        return Err(bad());
    };
    let (y, mo, day, h, mi, s) = (num(y)?, num(mo)?, num(day)?, num(h)?, num(mi)?, num(s)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 || y < 1970 {
        return Err(bad());
    }
    let ms = match fraction {
        "" => 0,
        f if f.chars().all(|c| c.is_ascii_digit()) => num(&format!("{f:0<3}")[..3])?,
        _ => return Err(bad()),
    };
    let total = (days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms;
    Ok(Timestamp(u64::try_from(total).map_err(|_| bad())?))
}

/// A duration as people read it: `850ms`, `12.3s`, `4m 05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        _ => format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60),
    }
}

/// An event's payload as JSON: as stored when JSON, decoded when MessagePack.
pub fn payload(event: &RecordedEvent) -> Value {
    let decoded = match event.content_type {
        ContentType::Json => serde_json::from_slice(&event.payload).ok(),
        ContentType::MessagePack => rmp_serde::from_slice(&event.payload).ok(),
    };
    decoded.unwrap_or_else(|| json!({ "undecodable_bytes": event.payload.len() }))
}

/// An event as `--json` prints it.
pub fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "stream": event.stream.key(),
        "version": event.version,
        "position": event.position.to_string(),
        "event_type": event.event_type,
        "event_id": event.event_id.to_string(),
        "schema_version": event.schema_version,
        "content_type": event.content_type.as_str(),
        "recorded_at": utc(event.recorded_at),
        "metadata": serde_json::to_value(&event.metadata).unwrap_or(Value::Null),
        "payload": payload(event),
    })
}

/// A payload shortened to fit a table cell.
pub fn short(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_the_calendar() {
        let t = parse_since("2026-12-07T10:20:01.123Z", Timestamp(0)).expect("parse");
        assert_eq!(utc(t), "2026-12-07T10:20:01.123Z");
        assert_eq!(utc(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_since("2000-02-29T00:00:00Z", Timestamp(0)).expect("leap").0,
            951_782_400_000
        );
        assert_eq!(parse_since("15m", Timestamp(1_000_000)).expect("age").0, 100_000);
        assert_eq!(
            parse_since("1796639410000", Timestamp(0)).expect("ms").0,
            1_796_639_410_000
        );
        assert!(
            parse_since("1796639410", Timestamp(0)).is_err(),
            "seconds, not milliseconds"
        );
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-07",
            "5w",
            "T10:00Z",
            "-3m",
        ] {
            assert!(parse_since(bad, Timestamp(0)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_align_their_columns() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render("none"), "A          LONGER\nwide cell  x\n");
        assert_eq!(Table::new(&["A"]).render("none"), "none\n");
    }
}
