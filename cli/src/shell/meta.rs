//! psql's habits in `wwt sql`: backslash commands (`\dt [pattern]`, `\d [pattern]`,
//! `\di [pattern]`, `\timing`, `\x`, `\?`, `\q`, with psql's name patterns: [`Pattern`]),
//! and `SHOW TABLES` and `DESCRIBE t` answered from the owner's catalog
//! ([`Client::tables`], [`Client::describe`]). The catalog becomes rows here and is printed as
//! any result is ([`RowPrinter`]), so `\x` and `--json` apply to it too.

use anyhow::{Result, bail};
use wwt_client::db::Client;
use wwt_query::{CatalogQuery, IndexKind, Row, TableSchema, Value};

use super::print::{RowPrinter, Settings};

/// The meta-commands, as `\?` lists them.
const HELP: &str = "\
\\dt [PATTERN]    list the tables (also: SHOW TABLES;)
\\d [PATTERN]     no PATTERN: list the tables; else each matching table's columns, primary
                 key, NOT NULL and indexes, with what each index leaks to the index provider
                 (also: DESCRIBE NAME; or DESC NAME;)
\\di [PATTERN]    the indexes, with their kinds and what each leaks
                 PATTERN: a name in which * is any run of characters and ? any one;
                 letters are lowercased except inside double quotes, where * and ? are
                 themselves too
\\timing          print how long each statement takes (on or off)
\\x               expanded display: one block of `column | value` lines per row (on or off)
\\?               this list
\\q               quit (as Ctrl-D)";

/// A backslash command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meta {
    /// `SHOW TABLES`, `\dt` or `\d`, or `DESCRIBE t` and `\d t`.
    Catalog(CatalogQuery),
    /// `\dt *pattern*`: the tables whose names match.
    Tables(Pattern),
    /// `\d *pattern*`: each table whose name matches, described.
    Describe(Pattern),
    /// `\di [pattern]`: every index, or those whose names match.
    Indexes(Option<Pattern>),
    /// `\timing`.
    Timing,
    /// `\x`.
    Expanded,
    /// `\?`.
    Help,
    /// `\q`.
    Quit,
}

/// Reads a backslash command line (`\d notes`).
pub fn parse(line: &str) -> Result<Meta> {
    let line = line.trim().trim_end_matches(';').trim_end();
    let (command, argument) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(c, a)| (c, a.trim()));
    if !matches!(command, "\\d" | "\\dt" | "\\di") {
        return simple(command, argument);
    }
    let pattern = match argument {
        "" => None,
        a => Some(Pattern::parse(a)?),
    };
    Ok(match (command, pattern) {
        ("\\di", p) => Meta::Indexes(p),
        (_, None) => Meta::Catalog(CatalogQuery::Tables),
        ("\\d", Some(p)) if p.is_literal() => return describe(argument),
        ("\\d", Some(p)) => Meta::Describe(p),
        (_, Some(p)) => Meta::Tables(p),
    })
}

/// A command that takes no argument.
fn simple(command: &str, argument: &str) -> Result<Meta> {
    let meta = match command {
        "\\timing" => Meta::Timing,
        "\\x" => Meta::Expanded,
        "\\?" => Meta::Help,
        "\\q" => Meta::Quit,
        _ => bail!("unknown command {command}: \\? lists the commands"),
    };
    if !argument.is_empty() {
        bail!("{command} takes no argument; \\? lists the commands");
    }
    Ok(meta)
}

/// A psql name pattern (`\dt no*`): `*` matches any run of characters and `?` any one;
/// letters are lowercased, as unquoted SQL names are, except inside double quotes, where
/// `*` and `?` are themselves too (and `""` is a quote).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Char(char),
    /// `*`.
    Any,
    /// `?`.
    One,
}

impl Pattern {
    /// Reads `text`: one pattern (whitespace only inside quotes), its quotes closed.
    pub fn parse(text: &str) -> Result<Pattern> {
        let mut parts = Vec::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    parts.push(Part::Char('"'));
                }
                ('"', _) => quoted = !quoted,
                (c, true) => parts.push(Part::Char(c)),
                (c, false) if c.is_whitespace() => {
                    bail!("one name pattern at a time, not {text:?}")
                }
                ('*', false) => parts.push(Part::Any),
                ('?', false) => parts.push(Part::One),
                (c, false) => parts.extend(c.to_lowercase().map(Part::Char)),
            }
        }
        if quoted {
            bail!("unterminated quoted name in {text:?}");
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    /// Whether it names one name (no `*` or `?` outside quotes).
    fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Char(_)))
    }

    /// Whether all of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // The classic wildcard walk: on a mismatch, the last `*` takes one more character.
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.parts.get(p) {
                Some(Part::Any) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(Part::One) => (p, n) = (p + 1, n + 1),
                Some(Part::Char(c)) if *c == name[n] => (p, n) = (p + 1, n + 1),
                _ => match star {
                    Some((sp, sn)) => {
                        star = Some((sp, sn + 1));
                        (p, n) = (sp + 1, sn + 1);
                    }
                    None => return false,
                },
            }
        }
        self.parts[p..].iter().all(|part| *part == Part::Any)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `\d name`, named as `DESCRIBE name` names it (lowercased unless quoted).
fn describe(name: &str) -> Result<Meta> {
    let statements = wwt_query::parse(&format!("DESCRIBE {name}"))?;
    match statements.as_slice() {
        [stmt] => match wwt_query::catalog_query(stmt)? {
            Some(q) => Ok(Meta::Catalog(q)),
            None => bail!("\\d takes one table name, not {name:?}"),
        },
        _ => bail!("\\d takes one table name, not {name:?}"),
    }
}

/// Runs a backslash command or a catalog statement; toggles change `settings`. Returns
/// false for `\q`.
pub async fn run(
    client: &Client,
    meta: &Meta,
    settings: &mut Settings,
    out: &mut impl std::io::Write,
) -> Result<bool> {
    match meta {
        Meta::Catalog(CatalogQuery::Tables) => {
            print_tables(&client.tables().await?, *settings, out)?;
        }
        Meta::Catalog(CatalogQuery::Describe(name)) => {
            describe_table(&client.describe(name).await?, *settings, out)?;
        }
        Meta::Tables(pattern) => {
            let tables = matching(client, pattern).await?;
            print_tables(&tables, *settings, out)?;
        }
        Meta::Describe(pattern) => {
            let tables = matching(client, pattern).await?;
            if tables.is_empty() {
                bail!("no table matches {pattern}: \\dt lists the tables");
            }
            for table in &tables {
                describe_table(table, *settings, out)?;
            }
        }
        Meta::Indexes(pattern) => {
            let mut tables = client.tables().await?;
            if let Some(pattern) = pattern {
                for t in &mut tables {
                    t.indexes.retain(|i| pattern.matches(&i.name));
                }
            }
            print_indexes("List of indexes", &tables, *settings, out)?;
        }
        Meta::Timing => {
            settings.timing = !settings.timing;
            toggled("timing", "Timing", settings.timing, *settings, out)?;
        }
        Meta::Expanded => {
            settings.expanded = !settings.expanded;
            toggled(
                "expanded",
                "Expanded display",
                settings.expanded,
                *settings,
                out,
            )?;
        }
        Meta::Help => {
            if settings.json {
                writeln!(out, "{}", serde_json::json!({ "help": HELP }))?;
            } else {
                writeln!(out, "{HELP}")?;
            }
        }
        Meta::Quit => return Ok(false),
    }
    Ok(true)
}

/// The owner's tables whose names match `pattern`.
async fn matching(client: &Client, pattern: &Pattern) -> Result<Vec<TableSchema>> {
    let mut tables = client.tables().await?;
    tables.retain(|t| pattern.matches(&t.name));
    Ok(tables)
}

fn print_tables(
    tables: &[TableSchema],
    settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    print(
        "List of tables",
        &["table", "columns", "indexes", "primary key"],
        table_rows(tables),
        settings,
        out,
    )
}

/// A table's columns, then its indexes if it has any.
fn describe_table(
    table: &TableSchema,
    settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    print(
        &format!("Table \"{}\"", table.name),
        &["column", "type", "nullable", "key"],
        column_rows(table),
        settings,
        out,
    )?;
    if table.indexes.is_empty() {
        return Ok(());
    }
    print_indexes(
        &format!("Indexes of \"{}\"", table.name),
        std::slice::from_ref(table),
        settings,
        out,
    )
}

fn toggled(
    key: &str,
    what: &str,
    on: bool,
    settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    if settings.json {
        writeln!(out, "{}", serde_json::json!({ key: on }))?;
    } else {
        writeln!(out, "{what} is {}.", if on { "on" } else { "off" })?;
    }
    Ok(())
}

fn print(
    title: &str,
    columns: &[&str],
    rows: Vec<Row>,
    settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let columns = columns.iter().map(|c| c.to_string()).collect();
    let mut printer = RowPrinter::titled(title.to_string(), columns, settings);
    printer.batch(&rows, out)?;
    printer.finish(out)
}

/// The columns of an index listing (`\di`, `\d t`).
const INDEX_HEADERS: [&str; 6] = [
    "table",
    "index",
    "column",
    "kind",
    "leaks when stored",
    "leaks per query",
];

fn print_indexes(
    title: &str,
    tables: &[TableSchema],
    settings: Settings,
    out: &mut impl std::io::Write,
) -> Result<()> {
    print(title, &INDEX_HEADERS, index_rows(tables), settings, out)
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// One row per table: its name, how many columns and indexes, the primary key.
fn table_rows(tables: &[TableSchema]) -> Vec<Row> {
    tables
        .iter()
        .map(|t| {
            vec![
                text(&t.name),
                Value::Int(t.columns.len() as i64),
                Value::Int(t.indexes.len() as i64),
                text(&t.primary_key_column().name),
            ]
        })
        .collect()
}

/// One row per column: name, type, NOT NULL, and whether it is the primary key.
fn column_rows(table: &TableSchema) -> Vec<Row> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                text(&c.name),
                text(c.ty.sql_name()),
                text(if c.not_null { "not null" } else { "" }),
                text(if i == table.primary_key {
                    "primary key"
                } else {
                    ""
                }),
            ]
        })
        .collect()
}

/// One row per index: its table, name, column and kind, and what the index provider learns
/// from storing it and from each query on it (the index crate's leakage profile).
fn index_rows(tables: &[TableSchema]) -> Vec<Row> {
    tables
        .iter()
        .flat_map(|t| t.indexes.iter().map(move |i| (t, i)))
        .map(|(t, i)| {
            let how = match i.kind {
                IndexKind::Hash => "equality tokens",
                IndexKind::BTree => "order-preserving encryption",
                IndexKind::FullText => "word tokens",
            };
            let leakage = i.kind.store_kind().leakage();
            vec![
                text(&t.name),
                text(&i.name),
                text(&i.column),
                text(format!("{} ({how})", i.kind)),
                text(leakage.storing),
                text(leakage.querying),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn catalog() -> Vec<TableSchema> {
        let mut db = wwt_query::MemoryDb::new();
        db.execute(
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, title TEXT NOT NULL, body TEXT, n DOUBLE);
             CREATE INDEX ON notes USING hash (title);
             CREATE INDEX ON notes USING fulltext (body);
             CREATE INDEX ON notes USING btree (n);
             CREATE TABLE tags (tag TEXT PRIMARY KEY)",
        )
        .unwrap();
        db.catalog().tables().cloned().collect()
    }

    fn printed(title: &str, columns: &[&str], rows: Vec<Row>, settings: Settings) -> String {
        let mut out = Vec::new();
        print(title, columns, rows, settings, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn meta_commands_parse_like_psql() {
        let tables = Meta::Catalog(CatalogQuery::Tables);
        assert_eq!(parse("\\dt").unwrap(), tables);
        assert_eq!(parse("  \\d ").unwrap(), tables);
        assert_eq!(
            parse("\\d Notes;").unwrap(),
            Meta::Catalog(CatalogQuery::Describe("notes".into()))
        );
        assert_eq!(
            parse("\\d \"Notes\"").unwrap(),
            Meta::Catalog(CatalogQuery::Describe("Notes".into()))
        );
        assert_eq!(parse("\\di").unwrap(), Meta::Indexes(None));
        assert_eq!(parse("\\timing").unwrap(), Meta::Timing);
        assert_eq!(parse("\\x").unwrap(), Meta::Expanded);
        assert_eq!(parse("\\?").unwrap(), Meta::Help);
        assert_eq!(parse("\\q").unwrap(), Meta::Quit);
        let err = parse("\\dz").unwrap_err().to_string();
        assert_eq!(err, "unknown command \\dz: \\? lists the commands");
        let err = parse("\\x on").unwrap_err().to_string();
        assert!(err.contains("\\x takes no argument"), "{err}");
        for two in ["\\d a b", "\\dt a b", "\\di a b"] {
            let err = parse(two).unwrap_err().to_string();
            assert!(err.contains("one name pattern at a time"), "{err}");
        }
        assert_eq!(
            parse("\\d \"a b\"").unwrap(),
            Meta::Catalog(CatalogQuery::Describe("a b".into()))
        );
        let pattern = |p: &str| Pattern::parse(p).unwrap();
        assert_eq!(parse("\\dt No*").unwrap(), Meta::Tables(pattern("No*")));
        assert_eq!(
            parse("\\d no?es").unwrap(),
            Meta::Describe(pattern("no?es"))
        );
        assert_eq!(
            parse("\\di *_hash").unwrap(),
            Meta::Indexes(Some(pattern("*_hash")))
        );
        // Quoted, a wildcard is itself: one table, described by its exact name.
        assert_eq!(
            parse("\\d \"a*\"").unwrap(),
            Meta::Catalog(CatalogQuery::Describe("a*".into()))
        );
        let err = parse("\\dt \"no").unwrap_err().to_string();
        assert!(err.contains("unterminated quoted name"), "{err}");
    }

    #[test]
    fn patterns_match_as_psql_does() {
        for (pattern, name, matches) in [
            ("notes", "notes", true),
            ("Notes", "notes", true),
            ("\"Notes\"", "notes", false),
            ("\"Notes\"", "Notes", true),
            ("no*", "notes", true),
            ("no*", "no", true),
            ("no*", "tags", false),
            ("*s", "notes", true),
            ("*s", "tag", false),
            ("*t*", "notes", true),
            ("n?tes", "notes", true),
            ("n?tes", "ntes", false),
            ("*", "", true),
            ("?", "", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYcZ", false),
            ("\"a*\"", "a*", true),
            ("\"a*\"", "ab", false),
            ("\"say \"\"hi\"\"\"", "say \"hi\"", true),
            ("é*", "ét", true),
        ] {
            assert_eq!(
                Pattern::parse(pattern).unwrap().matches(name),
                matches,
                "{pattern} against {name:?}"
            );
        }
    }

    #[test]
    fn tables_columns_and_indexes_read_as_a_user_expects() {
        let tables = catalog();
        let text = printed(
            "List of tables",
            &["table", "columns", "indexes", "primary key"],
            table_rows(&tables),
            Settings::default(),
        );
        assert_eq!(
            text,
            "List of tables\n\
             table | columns | indexes | primary key\n\
             ------+---------+---------+------------\n\
             notes |       4 |       3 | id\n\
             tags  |       1 |       0 | tag\n\
             (2 rows)\n"
        );
        let notes = &tables[0];
        let text = printed(
            "Table \"notes\"",
            &["column", "type", "nullable", "key"],
            column_rows(notes),
            Settings::default(),
        );
        assert_eq!(
            text,
            "Table \"notes\"\n\
             column | type   | nullable | key\n\
             -------+--------+----------+------------\n\
             id     | BIGINT | not null | primary key\n\
             title  | TEXT   | not null |\n\
             body   | TEXT   |          |\n\
             n      | DOUBLE |          |\n\
             (4 rows)\n"
        );
        let rows = index_rows(&tables);
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v.to_string()).collect())
            .collect();
        assert_eq!(cells.len(), 3);
        assert_eq!(
            cells[0][..4],
            [
                "notes",
                "notes_title_hash",
                "title",
                "hash (equality tokens)"
            ]
        );
        assert!(
            cells[0][4].contains("which rows share a value"),
            "{cells:?}"
        );
        assert_eq!(cells[1][3], "fulltext (word tokens)");
        assert!(cells[1][4].contains("token's count"), "{cells:?}");
        assert_eq!(cells[2][3], "btree (order-preserving encryption)");
        assert!(cells[2][4].contains("the order of all values"), "{cells:?}");
        assert!(cells[2][5].contains("the bounds' positions"), "{cells:?}");
    }

    #[test]
    fn catalog_rows_follow_expanded_display_and_json() {
        let tables = catalog();
        let expanded = Settings {
            expanded: true,
            ..Settings::default()
        };
        let text = printed(
            "List of indexes",
            &INDEX_HEADERS,
            index_rows(&tables[..1]),
            expanded,
        );
        assert!(text.starts_with("List of indexes\n-[ RECORD 1 ]"), "{text}");
        assert!(
            text.contains("\nkind              | btree (order-preserving encryption)\n"),
            "{text}"
        );
        let json = Settings {
            json: true,
            ..Settings::default()
        };
        let line = printed(
            "List of tables",
            &["table"],
            vec![vec![Value::Text("notes".into())]],
            json,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["title"], "List of tables");
        assert_eq!(v["rows"][0][0], "notes");
    }
}
