//! Cron schedules: the classic five fields (minute hour day-of-month month
//! day-of-week), or six with seconds first, in UTC; `*`, lists, ranges,
//! steps, month and day names, and `@hourly`-style shorthands. Pure: the
//! scheduler asks for the next tick after an instant.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64, // bit set, 0..60
    minutes: u64, // 0..60
    hours: u32,   // 0..24
    days: u32,    // 1..=31
    months: u16,  // 1..=12
    weekdays: u8, // 0..7, Sunday 0
    /// Both day fields restricted: a day matches if either does (as in
    /// Vixie cron); otherwise both must.
    either_day: bool,
}

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let bad = |why: String| format!("schedule {text:?} is not a valid cron expression: {why}");
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(bad(format!(
                    "{n} fields; use 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
                )));
            }
        };
        let field = |s: &str, what: &str, lo: u32, hi: u32, names: &[&str], base: u32| {
            parse_field(s, lo, hi, names, base).map_err(|e| bad(format!("{what} {s:?}: {e}")))
        };
        let mut weekdays = field(rest[4], "day of week", 0, 7, &WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Schedule {
            seconds: field(sec, "second", 0, 59, &[], 0)?,
            minutes: field(rest[0], "minute", 0, 59, &[], 0)?,
            hours: field(rest[1], "hour", 0, 23, &[], 0)? as u32,
            days: field(rest[2], "day of month", 1, 31, &[], 0)? as u32,
            months: field(rest[3], "month", 1, 12, &MONTHS, 1)? as u16,
            weekdays: (weekdays & 0x7f) as u8,
            either_day: !rest[2].starts_with('*') && !rest[4].starts_with('*'),
        })
    }

    /// The first tick strictly after `after` (Unix seconds, UTC); None if
    /// there is none in the next five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let start = after + 1;
        let first_day = start / 86_400;
        for day in first_day..first_day + 5 * 366 {
            let (_, month, dom) = civil_from_days(day as i64);
            let weekday = ((day + 4) % 7) as u32; // 1970-01-01 was a Thursday
            let dom_ok = self.days & (1 << dom) != 0;
            let dow_ok = self.weekdays & (1 << weekday) != 0;
            let day_ok = if self.either_day { dom_ok || dow_ok } else { dom_ok && dow_ok };
            if self.months & (1 << month) == 0 || !day_ok {
                continue;
            }
            let from = if day == first_day { start % 86_400 } else { 0 };
            for h in (from / 3600)..24 {
                if self.hours & (1 << h) == 0 {
                    continue;
                }
                for m in 0..60 {
                    if self.minutes & (1 << m) == 0 {
                        continue;
                    }
                    for s in 0..60 {
                        let t = day * 86_400 + h * 3600 + m * 60 + s;
                        if self.seconds & (1 << s) != 0 && t >= start {
                            return Some(t);
                        }
                    }
                }
            }
        }
        None
    }
}

/// One field as a bit set of the values it allows.
fn parse_field(s: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<u64, String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + base);
        }
        let n: u32 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
        if n < lo || n > hi { Err(format!("{n} is outside {lo}-{hi}")) } else { Ok(n) }
    };
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => {
                let st: u32 = st.parse().map_err(|_| format!("step {st:?} is not a number"))?;
                if st == 0 {
                    return Err("a step of 0".into());
                }
                (r, st)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (value(r)?, hi),
                None => (value(r)?, value(r)?),
            },
        };
        if from > to {
            return Err(format!("range {from}-{to} runs backwards"));
        }
        for v in (from..=to).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01; Howard
/// Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-24 15:00:00 UTC, a Tuesday.
    const T: u64 = 1_795_532_400;

    fn next(expr: &str, after: u64) -> u64 {
        Schedule::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn calendar_is_right() {
        assert_eq!(civil_from_days((T / 86_400) as i64), (2026, 11, 24));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn next_ticks() {
        assert_eq!(next("* * * * *", T), T + 60);
        assert_eq!(next("*/5 * * * *", T + 1), T + 300);
        assert_eq!(next("*/2 * * * * *", T), T + 2);
        assert_eq!(next("30 15 * * *", T), T + 1800);
        assert_eq!(next("0 9 * * *", T), T + 18 * 3600);
        assert_eq!(next("@hourly", T), T + 3600);
        // Next Monday 00:00 is six days on (Tue 24 → Mon 30).
        assert_eq!(next("0 0 * * mon", T), T - 15 * 3600 + 6 * 86_400);
        assert_eq!(next("0 0 1 jan *", T), 1_798_761_600); // 2027-01-01
        // Day of month or day of week when both are given: the 25th (Wed)
        // comes before the next Sunday.
        assert_eq!(next("0 0 25 * sun", T), T - 15 * 3600 + 86_400);
        assert_eq!(next("0 0 29 2 *", T), 1_835_395_200); // 2028-02-29
        assert_eq!(Schedule::parse("0 0 30 2 *").unwrap().next_after(T), None);
    }

    #[test]
    fn errors_name_the_field() {
        for (bad, says) in [
            ("* * *", "3 fields"),
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day of month"),
            ("* * * foo *", "month"),
            ("* * * * 8", "day of week"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "backwards"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
