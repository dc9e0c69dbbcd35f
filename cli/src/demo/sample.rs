//! The demo's sample rows, and what each of its queries must return on them: the demo
//! computes every expected result from the rows it generated and checks what the network
//! gave back against it, row by row.

use wwt_query::{Outcome, Row, Value};

const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: [&str; 8] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
];
const CITY: [&str; 6] = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tallinn", "Winnipeg"];
const TOPICS: [&str; 10] = [
    "compilers",
    "databases",
    "cryptography",
    "operating systems",
    "distributed consensus",
    "type theory",
    "networking",
    "graphics",
    "numerical analysis",
    "formal verification",
];

/// Column positions of a sample row.
pub const NAME: usize = 1;
/// The `balance` column.
pub const BALANCE: usize = 5;

/// Sample person `i`: id, name, email, city, bio, balance, joined. The same every run.
pub fn row(i: usize) -> Row {
    let first = FIRST[i % 8];
    let last = LAST[(i / 8) % 8];
    let bio = format!(
        "{first} {last} works on {} and teaches {}; based in {}.",
        TOPICS[(i * 3) % 10],
        TOPICS[(i * 7 + 1) % 10],
        CITY[(i * 7) % 6]
    );
    vec![
        Value::Int(i as i64),
        Value::Text(format!("{first} {last}")),
        Value::Text(format!(
            "{}.{}{i}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        )),
        Value::Text(CITY[(i * 7) % 6].into()),
        Value::Text(bio),
        Value::Double(((i * 7919) % 100_000) as f64 / 10.0),
        Value::Timestamp(1_600_000_000_000_000 + (i as i64 % 1000) * 86_400_000_000),
    ]
}

/// What a query must return.
#[derive(Debug)]
pub enum Expect {
    /// Exactly these rows, in this order.
    Rows(Vec<Row>),
    /// `count` distinct rows of `pool`, in any order (a ranking the sample rows alone do not
    /// fix), each as `pool` has it; `what` says what makes a row one of them.
    AnyOf {
        /// Every row that qualifies.
        pool: Vec<Row>,
        /// How many the query returns.
        count: usize,
        /// What the rows of `pool` have in common.
        what: &'static str,
    },
}

/// One of the demo's queries: a title, its SQL, and its expected result.
#[derive(Debug)]
pub struct Query {
    /// What it shows.
    pub title: &'static str,
    /// The statement.
    pub sql: String,
    /// What it must return on the sample rows.
    pub expect: Expect,
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(s) => s,
        _ => "",
    }
}

fn double(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        _ => f64::NAN,
    }
}

/// One query per index kind on `rows` (the sample rows written), `pick` a row that exists.
pub fn queries(rows: &[Row], pick: usize) -> Vec<Query> {
    let columns = |r: &Row, which: &[usize]| which.iter().map(|&c| r[c].clone()).collect::<Row>();
    let cities = ["Nairobi", "Osaka"];
    let counts = cities
        .iter()
        .map(|c| (c, rows.iter().filter(|r| text(&r[3]) == *c).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| vec![Value::Text(c.to_string()), Value::Int(n as i64)])
        .collect();
    let mut band: Vec<&Row> = rows
        .iter()
        .filter(|r| (1000.0..=1010.0).contains(&double(&r[BALANCE])))
        .collect();
    band.sort_by(|a, b| double(&b[BALANCE]).total_cmp(&double(&a[BALANCE])));
    let matching: Vec<Row> = rows
        .iter()
        .filter(|r| {
            let bio = text(&r[4]).to_lowercase();
            bio.contains("cryptography") && !bio.contains("lisbon")
        })
        .map(|r| columns(r, &[0, NAME]))
        .collect();
    vec![
        Query {
            title: "primary key: the index provider's primary map",
            sql: format!("SELECT name, email, city FROM people WHERE id = {pick}"),
            expect: Expect::Rows(
                rows.get(pick)
                    .map(|r| columns(r, &[1, 2, 3]))
                    .into_iter()
                    .collect(),
            ),
        },
        Query {
            title: "equality (hash) index",
            sql: "SELECT city, count(*) FROM people WHERE city IN ('Nairobi', 'Osaka') GROUP BY \
                  city ORDER BY city"
                .into(),
            expect: Expect::Rows(counts),
        },
        Query {
            title: "range (btree) index over order-preserving ciphertexts",
            sql: "SELECT name, balance FROM people WHERE balance BETWEEN 1000 AND 1010 ORDER BY \
                  balance DESC LIMIT 3"
                .into(),
            expect: Expect::Rows(band.iter().take(3).map(|r| columns(r, &[1, 5])).collect()),
        },
        Query {
            title: "full-text index over keyed word tokens, BM25-ranked",
            sql: "SELECT id, name FROM people WHERE MATCH(bio, 'cryptography AND NOT lisbon') \
                  LIMIT 3"
                .into(),
            expect: Expect::AnyOf {
                count: matching.len().min(3),
                pool: matching,
                what: "whose bio has 'cryptography' and not 'lisbon'",
            },
        },
    ]
}

fn plural(n: usize) -> String {
    match n {
        1 => "1 row".into(),
        n => format!("{n} rows"),
    }
}

fn show(row: &Row) -> String {
    let values: Vec<String> = row.iter().map(Value::to_sql).collect();
    format!("({})", values.join(", "))
}

/// Compares `got` with `want` row by row: one line per row that differs, is missing or is
/// extra.
pub fn compare(got: &[Row], want: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..got.len().max(want.len()) {
        match (got.get(i), want.get(i)) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) => {
                out.push(format!("row {i}: got {}, expected {}", show(g), show(w)))
            }
            (None, Some(w)) => out.push(format!("row {i}: missing, expected {}", show(w))),
            (Some(g), None) => out.push(format!("row {i}: got {}, expected no more rows", show(g))),
            (None, None) => {}
        }
    }
    out
}

impl Expect {
    /// Checks a statement's outcome: a line saying what matched, or every difference.
    pub fn check(&self, outcome: &[Outcome]) -> Result<String, Vec<String>> {
        let [Outcome::Rows(result)] = outcome else {
            return Err(vec![format!("expected one result set, got {outcome:?}")]);
        };
        let got = &result.rows;
        match self {
            Expect::Rows(want) => {
                let wrong = compare(got, want);
                match wrong.is_empty() {
                    true => Ok(format!("{}, as the sample rows give", plural(want.len()))),
                    false => Err(wrong),
                }
            }
            Expect::AnyOf { pool, count, what } => {
                let mut wrong: Vec<String> = got
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| !pool.contains(g))
                    .map(|(i, g)| {
                        format!("row {i}: got {}, which is no sample row {what}", show(g))
                    })
                    .collect();
                for (i, g) in got.iter().enumerate() {
                    if got[..i].contains(g) {
                        wrong.push(format!("row {i}: {} again", show(g)));
                    }
                }
                if got.len() != *count {
                    wrong.push(format!("{} rows, expected {count}", got.len()));
                }
                match wrong.is_empty() {
                    true => Ok(format!(
                        "{}, each a sample row {what} (of {} such rows)",
                        plural(*count),
                        pool.len()
                    )),
                    false => Err(wrong),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_results_come_from_the_rows() {
        let rows: Vec<Row> = (0..3000).map(row).collect();
        let q = queries(&rows, 1242);
        let Expect::Rows(pk) = &q[0].expect else {
            panic!("{q:?}")
        };
        assert_eq!(
            show(&pk[0]),
            "('Alan Dijkstra', 'alan.dijkstra1242@example.org', 'Lisbon')"
        );
        let Expect::Rows(by_city) = &q[1].expect else {
            panic!("{q:?}")
        };
        assert_eq!(by_city.len(), 2);
        assert_eq!(by_city[0][1], Value::Int(500));
        let Expect::AnyOf { pool, count, .. } = &q[3].expect else {
            panic!("{q:?}")
        };
        assert_eq!(*count, 3);
        assert!(pool.contains(&vec![Value::Int(3), Value::Text("Edsger Lovelace".into())]));
        // A mismatch names the row.
        let mut other = pk.clone();
        other[0][2] = Value::Text("Osaka".into());
        let wrong = compare(&other, pk);
        assert_eq!(wrong.len(), 1);
        assert!(wrong[0].starts_with("row 0: got ("), "{wrong:?}");
    }
}
