//! Calendar dates, times of day, date-times and the two FEEL duration kinds.
//!
//! Everything is computed with plain integer arithmetic on the proleptic Gregorian calendar, at
//! millisecond precision, so that results never depend on the host's clock or time-zone database.
//! Offsets are fixed (`Z`, `+02:00`); named zones (`@Europe/Berlin`) are not supported.

use std::cmp::Ordering;
use std::fmt;

pub(crate) const MILLIS_PER_DAY: i64 = 86_400_000;

/// A calendar date, stored as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    days: i64,
}

/// A time of day with an optional fixed UTC offset (in seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Time {
    millis: i64,
    offset: Option<i32>,
}

/// A local date and time of day; the time's offset, if any, places it on the global timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    date: Date,
    time: Time,
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl Date {
    /// The date with the given year, month (1-12) and day, if it exists.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if !(-999_999..=999_999).contains(&year) {
            return None;
        }
        // Count from March so that the leap day is the last day of the counted year.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let month_from_march = i64::from((month + 9) % 12);
        let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        Some(Date { days: era * 146_097 + day_of_era - 719_468 })
    }

    pub(crate) fn from_days(days: i64) -> Date {
        Date { days }
    }

    pub(crate) fn days(self) -> i64 {
        self.days
    }

    /// Year, month (1-12) and day of month.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// ISO day of week: 1 = Monday ... 7 = Sunday.
    pub fn weekday(self) -> u32 {
        ((self.days + 3).rem_euclid(7) + 1) as u32
    }

    /// Day of the year, 1-based.
    pub fn day_of_year(self) -> u32 {
        let (year, _, _) = self.ymd();
        let first = Date::from_ymd(year, 1, 1).map_or(self.days, |d| d.days);
        (self.days - first + 1) as u32
    }

    /// ISO-8601 week number.
    pub fn iso_week(self) -> u32 {
        // The week belongs to the year of its Thursday.
        let thursday = Date { days: self.days - i64::from(self.weekday()) + 4 };
        (thursday.day_of_year() - 1) / 7 + 1
    }

    pub fn last_day_of_month(self) -> u32 {
        let (year, month, _) = self.ymd();
        days_in_month(year, month)
    }

    /// Adds calendar months, clamping the day to the end of the resulting month.
    pub fn add_months(self, months: i64) -> Option<Date> {
        let (year, month, day) = self.ymd();
        let total = year * 12 + i64::from(month) - 1 + months;
        let (year, month) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        Date::from_ymd(year, month, day.min(days_in_month(year, month)))
    }

    /// Parses `YYYY-MM-DD` (optionally with a sign and more than four year digits).
    pub fn parse(s: &str) -> Option<Date> {
        let (negative, rest) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let mut parts = rest.splitn(3, '-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if y.len() < 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let year: i64 = digits(y)?;
        Date::from_ymd(if negative { -year } else { year }, digits(m)? as u32, digits(d)? as u32)
    }
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.ymd();
        if year < 0 {
            write!(f, "-{:04}-{month:02}-{day:02}", -year)
        } else {
            write!(f, "{year:04}-{month:02}-{day:02}")
        }
    }
}

fn parse_offset(s: &str) -> Option<Option<i32>> {
    if s.is_empty() {
        return Some(None);
    }
    if s == "Z" {
        return Some(Some(0));
    }
    let sign = match s.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (digits(h)?, digits(m)?);
    if h > 18 || m > 59 {
        return None;
    }
    Some(Some(sign * (h * 3600 + m * 60) as i32))
}

fn write_offset(f: &mut fmt::Formatter<'_>, offset: Option<i32>) -> fmt::Result {
    match offset {
        None => Ok(()),
        Some(0) => f.write_str("Z"),
        Some(secs) => {
            let sign = if secs < 0 { '-' } else { '+' };
            let secs = secs.abs();
            write!(f, "{sign}{:02}:{:02}", secs / 3600, secs % 3600 / 60)
        }
    }
}

impl Time {
    /// The time `hour:minute:second` (second may carry a fraction) with an optional offset in seconds.
    pub fn from_hms(hour: i64, minute: i64, second: f64, offset: Option<i32>) -> Option<Time> {
        if !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0.0..60.0).contains(&second) {
            return None;
        }
        let millis = (hour * 3600 + minute * 60) * 1000 + (second * 1000.0).round() as i64;
        Some(Time { millis, offset })
    }

    pub(crate) fn from_millis(millis: i64, offset: Option<i32>) -> Time {
        Time { millis: millis.rem_euclid(MILLIS_PER_DAY), offset }
    }

    /// Milliseconds since midnight (local).
    pub fn millis_of_day(self) -> i64 {
        self.millis
    }

    /// The fixed UTC offset in seconds, if the time has one.
    pub fn offset(self) -> Option<i32> {
        self.offset
    }

    pub fn hour(self) -> i64 {
        self.millis / 3_600_000
    }

    pub fn minute(self) -> i64 {
        self.millis / 60_000 % 60
    }

    pub fn second(self) -> i64 {
        self.millis / 1000 % 60
    }

    /// Parses `HH:MM[:SS[.fff]]` followed by an optional `Z` or `±HH:MM`.
    pub fn parse(s: &str) -> Option<Time> {
        let split = s.find(['Z', '+', '-']).unwrap_or(s.len());
        let (clock, offset) = s.split_at(split);
        let offset = parse_offset(offset)?;
        let mut parts = clock.splitn(3, ':');
        let (h, m) = (parts.next()?, parts.next()?);
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let second = match parts.next() {
            None => 0.0,
            Some(sec) => {
                let (whole, fraction) = sec.split_once('.').unwrap_or((sec, ""));
                if whole.len() != 2 || (sec.contains('.') && digits(fraction).is_none()) {
                    return None;
                }
                let whole = digits(whole)? as f64;
                let fraction = if fraction.is_empty() { 0.0 } else { format!("0.{fraction}").parse::<f64>().ok()? };
                whole + fraction
            }
        };
        Time::from_hms(digits(h)?, digits(m)?, second, offset)
    }

    fn compare(self, other: Time) -> Option<Ordering> {
        match (self.offset, other.offset) {
            (None, None) => Some(self.millis.cmp(&other.millis)),
            (Some(a), Some(b)) => Some((self.millis - i64::from(a) * 1000).cmp(&(other.millis - i64::from(b) * 1000))),
            _ => None,
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.hour(), self.minute(), self.second())?;
        let fraction = self.millis % 1000;
        if fraction != 0 {
            let text = format!("{fraction:03}");
            write!(f, ".{}", text.trim_end_matches('0'))?;
        }
        write_offset(f, self.offset)
    }
}

impl DateTime {
    pub fn new(date: Date, time: Time) -> DateTime {
        DateTime { date, time }
    }

    /// The UTC date-time at the given epoch milliseconds.
    pub fn from_epoch_millis(millis: i64) -> DateTime {
        DateTime { date: Date::from_days(millis.div_euclid(MILLIS_PER_DAY)), time: Time::from_millis(millis, Some(0)) }
    }

    pub fn date(self) -> Date {
        self.date
    }

    pub fn time(self) -> Time {
        self.time
    }

    /// Milliseconds since the epoch of the local wall-clock reading (ignoring the offset).
    fn local_millis(self) -> i64 {
        self.date.days * MILLIS_PER_DAY + self.time.millis
    }

    fn from_local_millis(millis: i64, offset: Option<i32>) -> DateTime {
        DateTime { date: Date::from_days(millis.div_euclid(MILLIS_PER_DAY)), time: Time::from_millis(millis, offset) }
    }

    /// Epoch milliseconds, if the date-time has an offset.
    pub fn epoch_millis(self) -> Option<i64> {
        self.time.offset.map(|offset| self.local_millis() - i64::from(offset) * 1000)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`.
    pub fn parse(s: &str) -> Option<DateTime> {
        let (date, time) = s.split_once('T')?;
        Some(DateTime { date: Date::parse(date)?, time: Time::parse(time)? })
    }

    pub(crate) fn add_millis(self, millis: i64) -> DateTime {
        DateTime::from_local_millis(self.local_millis() + millis, self.time.offset)
    }

    pub(crate) fn add_months(self, months: i64) -> Option<DateTime> {
        Some(DateTime { date: self.date.add_months(months)?, time: self.time })
    }

    /// Milliseconds from `other` to `self`, if both are local or both have an offset.
    pub(crate) fn millis_since(self, other: DateTime) -> Option<i64> {
        match (self.epoch_millis(), other.epoch_millis()) {
            (Some(a), Some(b)) => Some(a - b),
            (None, None) => Some(self.local_millis() - other.local_millis()),
            _ => None,
        }
    }

    fn compare(self, other: DateTime) -> Option<Ordering> {
        self.millis_since(other).map(|d| d.cmp(&0))
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}T{}", self.date, self.time)
    }
}

pub(crate) fn compare_times(a: Time, b: Time) -> Option<Ordering> {
    a.compare(b)
}

pub(crate) fn compare_date_times(a: DateTime, b: DateTime) -> Option<Ordering> {
    a.compare(b)
}

/// A parsed ISO-8601 duration: either calendar months or an exact number of milliseconds.
pub(crate) enum Duration {
    YearMonth(i64),
    DayTime(i64),
}

/// Parses `[-]PnYnMnWnDTnHnMn.nS`. Mixing year/month and day/time components is rejected because
/// FEEL has no duration type that holds both.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let rest = rest.strip_prefix('P')?;
    let (date_part, time_part) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut months = 0i64;
    let mut millis = 0i64;
    let mut has_months = false;
    let mut has_time = false;
    let mut components = 0;
    for (value, unit) in components_of(date_part)? {
        components += 1;
        let whole = value.parse::<i64>().ok()?;
        match unit {
            'Y' => (months, has_months) = (months.checked_add(whole.checked_mul(12)?)?, true),
            'M' => (months, has_months) = (months.checked_add(whole)?, true),
            'W' => (millis, has_time) = (millis.checked_add(whole.checked_mul(7 * MILLIS_PER_DAY)?)?, true),
            'D' => (millis, has_time) = (millis.checked_add(whole.checked_mul(MILLIS_PER_DAY)?)?, true),
            _ => return None,
        }
    }
    if let Some(time_part) = time_part {
        for (value, unit) in components_of(time_part)? {
            components += 1;
            has_time = true;
            let amount = match unit {
                'H' => value.parse::<i64>().ok()?.checked_mul(3_600_000)?,
                'M' => value.parse::<i64>().ok()?.checked_mul(60_000)?,
                'S' => (value.parse::<f64>().ok()? * 1000.0).round() as i64,
                _ => return None,
            };
            millis = millis.checked_add(amount)?;
        }
    }
    let sign = if negative { -1 } else { 1 };
    match (components, has_months, has_time) {
        (0, _, _) | (_, true, true) => None,
        (_, true, false) => Some(Duration::YearMonth(sign * months)),
        _ => Some(Duration::DayTime(sign * millis)),
    }
}

/// Splits `1Y2M` into `[("1", 'Y'), ("2", 'M')]`; only seconds may carry a fraction.
fn components_of(s: &str) -> Option<Vec<(&str, char)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() || c == '.' {
            continue;
        }
        let value = &s[start..i];
        if value.is_empty() || (value.contains('.') && c != 'S') {
            return None;
        }
        out.push((value, c));
        start = i + c.len_utf8();
    }
    (start == s.len()).then_some(out)
}

pub(crate) fn format_day_time(f: &mut fmt::Formatter<'_>, millis: i64) -> fmt::Result {
    if millis < 0 {
        f.write_str("-")?;
    }
    let millis = millis.unsigned_abs();
    let days = millis / MILLIS_PER_DAY as u64;
    let hours = millis / 3_600_000 % 24;
    let minutes = millis / 60_000 % 60;
    let seconds = millis / 1000 % 60;
    let fraction = millis % 1000;
    f.write_str("P")?;
    if days > 0 {
        write!(f, "{days}D")?;
    }
    if hours == 0 && minutes == 0 && seconds == 0 && fraction == 0 {
        return if days == 0 { f.write_str("T0S") } else { Ok(()) };
    }
    f.write_str("T")?;
    if hours > 0 {
        write!(f, "{hours}H")?;
    }
    if minutes > 0 {
        write!(f, "{minutes}M")?;
    }
    if seconds > 0 || fraction > 0 {
        write!(f, "{seconds}")?;
        if fraction > 0 {
            let text = format!("{fraction:03}");
            write!(f, ".{}", text.trim_end_matches('0'))?;
        }
        f.write_str("S")?;
    }
    Ok(())
}

pub(crate) fn format_year_month(f: &mut fmt::Formatter<'_>, months: i64) -> fmt::Result {
    if months < 0 {
        f.write_str("-")?;
    }
    let months = months.unsigned_abs();
    let (years, months) = (months / 12, months % 12);
    f.write_str("P")?;
    if years > 0 {
        write!(f, "{years}Y")?;
    }
    if months > 0 || years == 0 {
        write!(f, "{months}M")?;
    }
    Ok(())
}
