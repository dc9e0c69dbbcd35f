//! The pieces the nodes' pages are made of: a self-refreshing document, tables, and a bar
//! chart as inline SVG. Everything shown passes through [`escape`]: a provider's zone or
//! address is whatever it said in its heartbeat.

use std::fmt::Write;

/// Seconds between a page's refreshes.
const REFRESH_SECS: u32 = 10;

/// `text` with HTML's special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page titled `title` around `body` (HTML), refreshing itself.
pub fn document(title: &str, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><h1>{title}</h1>{body}\
         <p class=\"foot\">Refreshes every {REFRESH_SECS} s. \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/health\">/health</a></p></body></html>\n"
    )
}

/// [`document`] around `body`, or around what kept it from being made.
pub fn document_or_error(title: &str, body: Result<String, impl std::fmt::Display>) -> String {
    match body {
        Ok(body) => document(title, &body),
        Err(e) => document(
            title,
            &format!("<p class=\"bad\">{}</p>", escape(&e.to_string())),
        ),
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #ddd;\
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.bad{color:#b00}.good{color:#070}.foot{color:#777;margin-top:28px}\
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#555}";

/// `<h2>` then a table with `headers` and `rows` (each cell is HTML: escape text first).
/// A cell starting with a digit is aligned right.
pub fn table(title: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<h2>{}</h2>", escape(title));
    if rows.is_empty() {
        out.push_str("<p>None.</p>");
        return out;
    }
    out.push_str("<table><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let numeric = cell.starts_with(|c: char| c.is_ascii_digit());
            let class = if numeric { " class=\"n\"" } else { "" };
            let _ = write!(out, "<td{class}>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// A definition list of `(name, value)` pairs (values are HTML).
pub fn facts(pairs: &[(&str, String)]) -> String {
    let mut out = String::from("<dl>");
    for (name, value) in pairs {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", escape(name));
    }
    out.push_str("</dl>");
    out
}

/// One series of a [`bar_chart`]: its name, colour and a value per bucket.
pub struct Series<'a> {
    /// Its name, in the legend.
    pub name: &'a str,
    /// A CSS colour.
    pub colour: &'a str,
    /// A value per bucket, oldest first.
    pub values: Vec<u64>,
}

/// A bar chart as inline SVG: per bucket, the series' bars side by side; `labels` under
/// some buckets (index, text).
pub fn bar_chart(title: &str, series: &[Series], labels: &[(usize, String)]) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 160.0;
    const BOTTOM: f64 = 20.0;
    let buckets = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut out = format!(
        "<h2>{}</h2><svg width=\"{WIDTH}\" height=\"{}\" role=\"img\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        escape(title),
        HEIGHT + BOTTOM
    );
    if buckets > 0 && !series.is_empty() {
        let slot = WIDTH / buckets as f64;
        let bar = (slot * 0.8) / series.len() as f64;
        for (k, s) in series.iter().enumerate() {
            for (i, v) in s.values.iter().enumerate() {
                let h = HEIGHT * *v as f64 / top as f64;
                let _ = write!(
                    out,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" \
                     fill=\"{}\"><title>{}: {v}</title></rect>",
                    slot * i as f64 + bar * k as f64,
                    HEIGHT - h,
                    bar.max(1.0),
                    escape(s.colour),
                    escape(s.name),
                );
            }
        }
        for (i, text) in labels {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#555\">{}</text>",
                slot * *i as f64,
                HEIGHT + 14.0,
                escape(text)
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{WIDTH}\" y=\"12\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">\
         max {top}</text></svg><p>"
    );
    for s in series {
        let _ = write!(
            out,
            "<span style=\"color:{}\">■</span> {} ",
            escape(s.colour),
            escape(s.name)
        );
    }
    out.push_str("</p>");
    out
}

/// `n` bytes in KiB, MiB, GiB as fits.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first 12 hex digits of an id: enough to tell a network's nodes apart on a page.
pub fn short(id: &impl std::fmt::Display) -> String {
    id.to_string().chars().take(12).collect()
}

/// How long ago `then_ms` was at `now_ms`, in words ("never" for 0).
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    if then_ms == 0 {
        return "never".into();
    }
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        let evil = "<script>alert('x')</script>&\"";
        let page = document(
            evil,
            &table("t", &["h"], &[vec![escape(evil)]])
                .chars()
                .chain(
                    bar_chart(
                        evil,
                        &[Series {
                            name: evil,
                            colour: evil,
                            values: vec![1],
                        }],
                        &[(0, evil.into())],
                    )
                    .chars(),
                )
                .collect::<String>(),
        );
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn sizes_and_ages_read_as_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(ago(0, 5_000), "never");
        assert_eq!(ago(1_000, 91_000), "1 min ago");
    }
}
