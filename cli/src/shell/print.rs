//! How `wwt sql` prints results: aligned tables (numbers right-aligned), expanded records
//! (`\x`, one `-[ RECORD n ]-` block per row, as psql prints them), or one JSON object per
//! result (`--json`); and the time each statement took (`\timing`).

use anyhow::Result;
use wwt_query::{Outcome, Row, Value};

/// How results are printed: `--json`, and what `\x` and `\timing` toggle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// One JSON object per result.
    pub json: bool,
    /// One block of `column | value` lines per row.
    pub expanded: bool,
    /// Print how long each statement took.
    pub timing: bool,
}

impl Settings {
    /// Prints how long a statement took: `Time: 1.234 ms`, or `{"time_ms":1.234}`.
    pub fn print_time(
        &self,
        elapsed: std::time::Duration,
        out: &mut impl std::io::Write,
    ) -> Result<()> {
        if !self.timing {
            return Ok(());
        }
        let ms = elapsed.as_secs_f64() * 1e3;
        if self.json {
            writeln!(out, "{}", serde_json::json!({ "time_ms": ms }))?;
        } else {
            writeln!(out, "Time: {ms:.3} ms")?;
        }
        Ok(())
    }
}

fn json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Double(d) => serde_json::Number::from_f64(*d)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Bool(b) => (*b).into(),
        Value::Text(_) | Value::Timestamp(_) => v.to_string().into(),
        Value::Blob(b) => hex::encode(b).into(),
    }
}

/// Prints one statement's outcome: its rows as `settings` say, or what it did.
pub fn print_outcome(o: &Outcome, settings: Settings, out: &mut impl std::io::Write) -> Result<()> {
    if let Outcome::Rows(rs) = o {
        let mut printer = RowPrinter::new(rs.columns.clone(), settings);
        printer.batch(&rs.rows, out)?;
        return printer.finish(out);
    }
    if settings.json {
        let v = match o {
            Outcome::Created => serde_json::json!({ "created": true }),
            Outcome::Dropped => serde_json::json!({ "dropped": true }),
            Outcome::Inserted(n) => serde_json::json!({ "inserted": n }),
            Outcome::Updated(n) => serde_json::json!({ "updated": n }),
            Outcome::Deleted(n) => serde_json::json!({ "deleted": n }),
            Outcome::Explain(text) => serde_json::json!({ "explain": text }),
            Outcome::Rows(_) => unreachable!("printed above"),
        };
        writeln!(out, "{v}")?;
        return Ok(());
    }
    match o {
        Outcome::Created => writeln!(out, "created")?,
        Outcome::Dropped => writeln!(out, "dropped")?,
        Outcome::Inserted(n) => writeln!(out, "inserted {n} rows")?,
        Outcome::Updated(n) => writeln!(out, "updated {n} rows")?,
        Outcome::Deleted(n) => writeln!(out, "deleted {n} rows")?,
        Outcome::Explain(text) => writeln!(out, "{text}")?,
        Outcome::Rows(_) => unreachable!("printed above"),
    }
    Ok(())
}

/// Prints rows as they arrive, batch by batch: an aligned table whose header, widths and
/// alignment come from the first batch (later batches only widen columns), expanded
/// records, or one JSON object `{"columns": [...], "rows": [...]}` (with `"title"` when the
/// rows have one).
pub struct RowPrinter {
    settings: Settings,
    title: Option<String>,
    columns: Vec<String>,
    /// Set once the header is printed.
    widths: Option<Vec<usize>>,
    numeric: Vec<bool>,
    count: usize,
}

impl RowPrinter {
    /// A printer of rows with these columns.
    pub fn new(columns: Vec<String>, settings: Settings) -> Self {
        RowPrinter {
            settings,
            title: None,
            columns,
            widths: None,
            numeric: Vec::new(),
            count: 0,
        }
    }

    /// A printer whose rows are headed by `title` (psql's `List of relations`).
    pub fn titled(title: String, columns: Vec<String>, settings: Settings) -> Self {
        RowPrinter {
            title: Some(title),
            ..RowPrinter::new(columns, settings)
        }
    }

    /// Prints the next rows.
    pub fn batch(&mut self, rows: &[Row], out: &mut impl std::io::Write) -> Result<()> {
        if self.settings.json {
            return self.json_batch(rows, out);
        }
        if self.widths.is_none()
            && let Some(title) = &self.title
        {
            writeln!(out, "{title}")?;
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .collect();
        if self.settings.expanded {
            return self.expanded_batch(&cells, out);
        }
        let first = self.widths.is_none();
        let widths = self
            .widths
            .get_or_insert_with(|| self.columns.iter().map(|c| c.chars().count()).collect());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        if first {
            self.numeric = (0..self.columns.len())
                .map(|i| {
                    rows.iter().all(|r| {
                        matches!(
                            r.get(i),
                            Some(Value::Int(_) | Value::Double(_) | Value::Null)
                        )
                    })
                })
                .collect();
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(widths.iter())
                .zip(&self.numeric)
                .map(|((c, w), num)| {
                    if *num {
                        format!("{c:>w$}")
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        if first {
            writeln!(out, "{}", line(&self.columns).trim_end())?;
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(out, "{}", rule.join("-+-"))?;
        }
        for row in &cells {
            writeln!(out, "{}", line(row).trim_end())?;
        }
        self.count += rows.len();
        Ok(())
    }

    fn json_batch(&mut self, rows: &[Row], out: &mut impl std::io::Write) -> Result<()> {
        if self.widths.is_none() {
            let title = match &self.title {
                Some(t) => format!("\"title\":{},", serde_json::to_string(t)?),
                None => String::new(),
            };
            write!(
                out,
                "{{{title}\"columns\":{},\"rows\":[",
                serde_json::to_string(&self.columns)?
            )?;
            self.widths = Some(Vec::new());
        }
        for row in rows {
            if self.count > 0 {
                write!(out, ",")?;
            }
            let values: Vec<serde_json::Value> = row.iter().map(json_value).collect();
            write!(out, "{}", serde_json::Value::Array(values))?;
            self.count += 1;
        }
        Ok(())
    }

    /// psql's `\x`: a `-[ RECORD n ]-` rule per row, then `column | value` lines.
    fn expanded_batch(
        &mut self,
        cells: &[Vec<String>],
        out: &mut impl std::io::Write,
    ) -> Result<()> {
        let names = self.columns.iter().map(|c| c.chars().count()).max();
        let names = names.unwrap_or(0);
        self.widths.get_or_insert_with(Vec::new);
        for row in cells {
            self.count += 1;
            let values = row.iter().map(|c| c.chars().count()).max().unwrap_or(0);
            let head = format!("-[ RECORD {} ]", self.count);
            let fill = (names + 1).saturating_sub(head.chars().count());
            writeln!(out, "{head}{}+{}", "-".repeat(fill), "-".repeat(values + 1))?;
            for (name, value) in self.columns.iter().zip(row) {
                writeln!(out, "{}", format!("{name:<names$} | {value}").trim_end())?;
            }
        }
        Ok(())
    }

    /// Ends the rows: the JSON object's end, or the row count.
    pub fn finish(mut self, out: &mut impl std::io::Write) -> Result<()> {
        if self.widths.is_none() {
            self.batch(&[], out)?;
        }
        if self.settings.json {
            writeln!(out, "]}}")?;
        } else {
            let n = self.count;
            writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wwt_query::ResultSet;

    fn rows() -> Outcome {
        Outcome::Rows(ResultSet {
            columns: vec!["name".into(), "n".into()],
            rows: vec![
                vec![Value::Text("ada".into()), Value::Int(7)],
                vec![Value::Text("grace".into()), Value::Int(1234)],
            ],
        })
    }

    fn printed(o: &Outcome, settings: Settings) -> String {
        let mut text = Vec::new();
        print_outcome(o, settings, &mut text).unwrap();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn tables_align_and_json_keeps_types() {
        assert_eq!(
            printed(&rows(), Settings::default()),
            "name  |    n\n------+-----\nada   |    7\ngrace | 1234\n(2 rows)\n"
        );
        let json = Settings {
            json: true,
            ..Settings::default()
        };
        let v: serde_json::Value = serde_json::from_str(&printed(&rows(), json)).unwrap();
        assert_eq!(v["rows"][1][1], 1234);
        assert_eq!(v["columns"][0], "name");
    }

    #[test]
    fn expanded_display_prints_a_record_per_row() {
        let expanded = Settings {
            expanded: true,
            ..Settings::default()
        };
        assert_eq!(
            printed(&rows(), expanded),
            "-[ RECORD 1 ]+----\nname | ada\nn    | 7\n\
             -[ RECORD 2 ]+------\nname | grace\nn    | 1234\n(2 rows)\n"
        );
    }

    #[test]
    fn timing_prints_milliseconds_only_when_on() {
        let mut out = Vec::new();
        let elapsed = std::time::Duration::from_micros(1234);
        Settings::default().print_time(elapsed, &mut out).unwrap();
        assert!(out.is_empty());
        let on = Settings {
            timing: true,
            ..Settings::default()
        };
        on.print_time(elapsed, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Time: 1.234 ms\n");
    }
}
