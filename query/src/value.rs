//! Column types and values: SQL comparison with NULL, the sort order of SQLite, timestamps.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// The type of a column. `INT` and `BIGINT` are both 64-bit integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `INT`, `INTEGER`, `BIGINT`, `SMALLINT`: a signed 64-bit integer.
    Int,
    /// `DOUBLE`, `REAL`, `FLOAT`: an IEEE 754 double (never NaN).
    Double,
    /// `TEXT`, `VARCHAR`: UTF-8 text.
    Text,
    /// `BOOL`, `BOOLEAN`.
    Bool,
    /// `TIMESTAMP`: microseconds since 1970-01-01 00:00:00 UTC.
    Timestamp,
    /// `BLOB`, `BYTEA`: bytes.
    Blob,
}

impl ColumnType {
    /// True if a btree orders values of this type by a prefix only (text: its first 8
    /// bytes), so ties past the prefix are unordered: no limit, MIN or MAX is pushed onto
    /// it, and an exclusive bound widens to an inclusive one that the client re-checks.
    pub fn btree_orders_by_prefix(self) -> bool {
        self == ColumnType::Text
    }

    /// The SQL name wwt prints for the type.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Int => "BIGINT",
            ColumnType::Double => "DOUBLE",
            ColumnType::Text => "TEXT",
            ColumnType::Bool => "BOOL",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Blob => "BLOB",
        }
    }

    /// Whether values of the type are numbers (compare and add with each other).
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Double)
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One SQL value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// A double, never NaN.
    Double(f64),
    /// UTF-8 text.
    Text(String),
    /// A boolean.
    Bool(bool),
    /// Microseconds since the Unix epoch, UTC.
    Timestamp(i64),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A row: one value per column, in the order of the table's columns (or of a result's).
pub type Row = Vec<Value>;

impl Value {
    /// The value's type, `None` for NULL.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Int(_) => ColumnType::Int,
            Value::Double(_) => ColumnType::Double,
            Value::Text(_) => ColumnType::Text,
            Value::Bool(_) => ColumnType::Bool,
            Value::Timestamp(_) => ColumnType::Timestamp,
            Value::Blob(_) => ColumnType::Blob,
        })
    }

    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The canonical form: `-0.0` becomes `0.0`, so that equal values encode (and hash into
    /// index tokens) alike.
    pub fn canonical(self) -> Value {
        match self {
            // The pattern matches -0.0 too (float patterns compare with `==`).
            Value::Double(0.0) => Value::Double(0.0),
            v => v,
        }
    }

    /// SQL comparison: `None` when either side is NULL or the types do not compare.
    /// Integers and doubles compare as numbers; text compares bytewise (SQLite's BINARY).
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Double(b)) => cmp_int_double(*a, *b),
            (Value::Double(a), Value::Int(b)) => cmp_int_double(*b, *a).map(Ordering::reverse),
            (Value::Text(a), Value::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Blob(a), Value::Blob(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// The total order ORDER BY uses (NULL first, as SQLite sorts ascending).
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self.is_null(), other.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => self.sql_cmp(other).unwrap_or(Ordering::Equal),
        }
    }

    /// The value converted to `ty` for storage in a column of that type: integers widen to
    /// doubles, integral doubles narrow to integers, text parses as a timestamp. NULL stays.
    pub fn coerce_to(self, ty: ColumnType) -> Result<Value> {
        let v = match (self, ty) {
            (Value::Null, _) => Value::Null,
            (Value::Int(i), ColumnType::Double) => Value::Double(i as f64),
            // Every integral double in [-2^63, 2^63) is an i64, -2^63 = i64::MIN included.
            (Value::Double(d), ColumnType::Int)
                if d.fract() == 0.0 && (i64::MIN as f64..-(i64::MIN as f64)).contains(&d) =>
            {
                Value::Int(d as i64)
            }
            (Value::Text(s), ColumnType::Timestamp) => Value::Timestamp(parse_timestamp(&s)?),
            (v, ty) if v.column_type() == Some(ty) => v,
            (v, ty) => {
                return Err(Error::TypeMismatch(format!(
                    "{} is {}, not {ty}; write a {ty} value",
                    v.to_sql(),
                    v.column_type().map_or("NULL", ColumnType::sql_name),
                )));
            }
        };
        Ok(v.canonical())
    }

    /// Appends bytes that identify the value among values of its type (NULL included), for
    /// grouping, DISTINCT and hash joins. Equal values (as `=` sees them) give equal bytes.
    pub fn group_key(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Int(i) | Value::Timestamp(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Value::Double(d) => {
                out.push(2);
                let d = if *d == 0.0 { 0.0 } else { *d };
                out.extend_from_slice(&d.to_bits().to_be_bytes());
            }
            Value::Bool(b) => out.extend_from_slice(&[3, u8::from(*b)]),
            Value::Text(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u64).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Blob(b) => {
                out.push(5);
                out.extend_from_slice(&(b.len() as u64).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// The value as an SQL literal that parses back to the same value.
    pub fn to_sql(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => format_double(*d),
            Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            Value::Timestamp(t) => format!("TIMESTAMP '{}'", format_timestamp(*t)),
            Value::Blob(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("X'{hex}'")
            }
        }
    }
}

impl fmt::Display for Value {
    /// The value as a result cell: text without quotes, NULL as `NULL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Timestamp(t) => f.write_str(&format_timestamp(*t)),
            v => f.write_str(&v.to_sql()),
        }
    }
}

/// Compares an integer with a double exactly (no rounding of large integers).
fn cmp_int_double(i: i64, d: f64) -> Option<Ordering> {
    if d.is_nan() {
        return None;
    }
    if d >= 9.223_372_036_854_776e18 {
        return Some(Ordering::Less);
    }
    if d < -9.223_372_036_854_776e18 {
        return Some(Ordering::Greater);
    }
    let t = d.trunc();
    // `t` is integral and in range, so the cast is exact.
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(d - t)),
        o => Some(o),
    }
}

/// A double as an SQL literal: always with a decimal point or exponent.
fn format_double(d: f64) -> String {
    let s = format!("{d:?}");
    if s.contains(['.', 'e', 'E']) || !d.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Parses `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS`, with up to six
/// fractional digits and an optional `Z`, as microseconds since the epoch (UTC).
pub fn parse_timestamp(text: &str) -> Result<i64> {
    let bad = || {
        Error::TypeMismatch(format!(
            "'{text}' is not a timestamp; write 'YYYY-MM-DD HH:MM:SS[.ffffff]' (UTC)"
        ))
    };
    let s = text.trim();
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let number = |part: &str, min: i64, max: i64| -> Result<i64> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: i64 = part.parse().map_err(|_| bad())?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        }
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(dd), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    if y.len() != 4 {
        return Err(bad());
    }
    let (year, month) = (number(y, 0, 9999)?, number(m, 1, 12)?);
    let day = number(dd, 1, days_in_month(year, month))?;
    let mut micros = days_from_civil(year, month, day) * SECONDS_PER_DAY * MICROS_PER_SECOND;
    if let Some(time) = time {
        let (hms, frac) = match time.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (time, None),
        };
        let mut t = hms.split(':');
        let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
            return Err(bad());
        };
        let seconds = number(h, 0, 23)? * 3600 + number(mi, 0, 59)? * 60 + number(sec, 0, 59)?;
        micros += seconds * MICROS_PER_SECOND;
        if let Some(frac) = frac {
            if frac.len() > 6 {
                return Err(bad());
            }
            let digits = number(frac, 0, 999_999)?;
            micros += digits * 10i64.pow(6 - frac.len() as u32);
        }
    }
    Ok(micros)
}

/// Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
pub fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    let days = secs.div_euclid(SECONDS_PER_DAY);
    let rem = secs.rem_euclid(SECONDS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("1970-01-01").unwrap(), 0);
        let t = parse_timestamp("2024-02-29 13:45:07.25").unwrap();
        assert_eq!(format_timestamp(t), "2024-02-29 13:45:07.250000");
        assert_eq!(parse_timestamp("2024-02-29T13:45:07.25Z").unwrap(), t);
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999999");
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "24-01-01",
            "2024-01-01 25:00:00",
            "x",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sql_comparison_and_sort_order() {
        assert_eq!(
            Value::Int(2).sql_cmp(&Value::Double(2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(
            Value::Double(3.0).sql_cmp(&Value::Int(3)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            Value::Int(i64::MAX).sql_cmp(&Value::Double(9.3e18)),
            Some(Ordering::Less)
        );
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
        assert_eq!(Value::Null.sort_cmp(&Value::Int(1)), Ordering::Less);
        assert_eq!(
            Value::Text("B".into()).sql_cmp(&Value::Text("a".into())),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn coercion_and_literals() {
        assert_eq!(
            Value::Int(3).coerce_to(ColumnType::Double).unwrap(),
            Value::Double(3.0)
        );
        assert_eq!(
            Value::Double(-0.0)
                .coerce_to(ColumnType::Double)
                .unwrap()
                .to_sql(),
            "0.0"
        );
        assert!(Value::Double(1.5).coerce_to(ColumnType::Int).is_err());
        // The ends of i64 as doubles: -2^63 is i64::MIN, 2^63 is past i64::MAX.
        assert_eq!(
            Value::Double(i64::MIN as f64)
                .coerce_to(ColumnType::Int)
                .unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            Value::Double(9.2e18).coerce_to(ColumnType::Int).unwrap(),
            Value::Int(9_200_000_000_000_000_000)
        );
        assert!(
            Value::Double(-(i64::MIN as f64))
                .coerce_to(ColumnType::Int)
                .is_err()
        );
        assert!(Value::Text("1".into()).coerce_to(ColumnType::Int).is_err());
        assert_eq!(Value::Text("it's".into()).to_sql(), "'it''s'");
        assert_eq!(Value::Blob(vec![0, 255]).to_sql(), "X'00ff'");
    }
}
