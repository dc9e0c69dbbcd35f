//! Tests that run the real `wwt` binary.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn wwt(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wwt"))
        .args(args)
        .env("WWT_HOME", home)
        .output()
        .unwrap()
}

/// The stdout of a run that must have succeeded (else the test fails showing both streams).
fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn init_creates_a_private_keystore_once_and_whoami_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let before = wwt(&home, &["whoami"]);
    assert!(!before.status.success());
    assert!(String::from_utf8_lossy(&before.stderr).contains("wwt init"));

    let out = wwt(&home, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = home.join("keystore");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();

    let again = wwt(&home, &["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let who = wwt(&home, &["whoami"]);
    assert!(who.status.success());
    let id = String::from_utf8_lossy(&who.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    assert!(stdout.contains(&id), "init printed {stdout}, whoami {id}");
}

/// The seed of the demo's network (node keys, placement), printed for a replay.
const DEMO_SEED: &str = "2026";

#[test]
fn demo_queries_each_index_reads_every_row_after_losing_two_providers_and_stores_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("demo");
    println!("seed {DEMO_SEED} (replay: wwt demo --rows 3000 --seed {DEMO_SEED})");
    let out = wwt(
        dir.path(),
        &[
            "demo",
            "--rows",
            "3000",
            "--seed",
            DEMO_SEED,
            "--dir",
            net.to_str().unwrap(),
        ],
    );
    let stdout = succeeded(&out);
    assert!(stdout.contains("all parties: 0 plaintext hits"), "{stdout}");
    assert!(
        stdout.contains(
            "stopped provider-1 (one of the 3 index providers), provider-4: a fresh client with only the keys read all 3000 rows back and they match"
        ),
        "{stdout}"
    );
    // The demo compares every row read back with the row it wrote (and fails on the first
    // difference, naming the row), and each query's result with what its sample rows give.
    assert!(
        stdout.contains("read all 3000 rows back and they match the rows written, one by one"),
        "{stdout}"
    );
    for result in [
        "wwt> SELECT name, email, city FROM people WHERE id = 1242\n\
         name          | email                         | city\n\
         --------------+-------------------------------+-------\n\
         Alan Dijkstra | alan.dijkstra1242@example.org | Lisbon\n\
         (1 row)\n",
        "Nairobi |      500\nOsaka   |      500\n(2 rows)\n",
        "wwt> SELECT name, balance FROM people WHERE balance BETWEEN 1000 AND 1010 ORDER BY balance DESC LIMIT 3\n\
         name            | balance\n\
         ----------------+--------\n\
         Edsger Lovelace |  1002.9\n\
         Barbara Liskov  |  1001.2\n\
         (2 rows)\n",
        "updated 1 rows\n",
    ] {
        assert!(stdout.contains(result), "{result}: {stdout}");
    }
    let checked: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("   checked: "))
        .collect();
    assert_eq!(
        checked,
        [
            "1 row, as the sample rows give",
            "2 rows, as the sample rows give",
            "2 rows, as the sample rows give",
            "3 rows, each a sample row whose bio has 'cryptography' and not 'lisbon' (of 500 such rows)",
            "2 versions, the new one first, as written",
        ],
        "{stdout}"
    );
    // One query per index kind ran, with what the index provider learns.
    for index in [
        "primary map",
        "hash index",
        "btree index",
        "full-text index",
    ] {
        assert!(stdout.contains(&format!("- {index}")), "{index}: {stdout}");
    }
    assert!(stdout.contains("3000 rows cannot be read"), "{stdout}");
    assert!(
        stdout.contains("3 intact pieces of the 4 needed"),
        "{stdout}"
    );
    // What the providers stored: pieces on every provider, none holding a sample value.
    let found = wwt_devnet::scan(&net, &["example.org", "Lovelace"]).unwrap();
    assert!(found.hits.is_empty(), "{:?}", found.hits);
    for p in 0..6 {
        let log = net.join("net").join(format!("provider-{p}")).join("log");
        let held = wwt_devnet::scan(&log, &[]).unwrap().bytes;
        assert!(held > 0, "provider-{p} holds no piece");
    }
}

/// Stops a `wwt devnet up` child with Ctrl-C (SIGINT) when dropped.
struct Devnet(std::process::Child);

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Starts `wwt devnet up` with `args` for `home`, and waits until `wwt devnet status` succeeds
/// and says `ready`.
fn devnet_up(home: &std::path::Path, args: &[&str], ready: &str) -> Devnet {
    let devnet = Devnet(
        Command::new(env!("CARGO_BIN_EXE_wwt"))
            .args(["devnet", "up"])
            .args(args)
            .env("WWT_HOME", home)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = wwt(home, &["devnet", "status"]);
        let stdout = String::from_utf8_lossy(&status.stdout);
        if status.status.success() && stdout.contains(ready) {
            return devnet;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the devnet did not come up: {stdout}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn sql_runs_scripts_on_a_devnet_and_prints_tables_json_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(wwt(&home, &["init"]).status.success());
    // Up once every node answers and the tracker has heard from every provider, two of them
    // index providers as asked.
    let _devnet = devnet_up(
        &home,
        &["--capacity-mib", "256", "--index-providers", "2"],
        "6/6 providers alive (2 index)",
    );

    let out = wwt(
        &home,
        &[
            "sql",
            "-c",
            "CREATE TABLE books (id BIGINT PRIMARY KEY, title TEXT, year INT);
             CREATE INDEX ON books USING fulltext (title);
             CREATE INDEX ON books USING btree (year);
             INSERT INTO books VALUES (1, 'The Art of Computer Programming', 1968),
                                      (2, 'Structure and Interpretation of Computer Programs', 1985),
                                      (3, 'A Discipline of Programming', 1976);
             SELECT id, title FROM books WHERE MATCH(title, 'computer') AND year < 1980 ORDER BY id",
        ],
    );
    let stdout = succeeded(&out);
    assert!(stdout.contains("inserted 3 rows"), "{stdout}");
    assert!(
        stdout.contains("id | title\n---+--------------------------------\n 1 | The Art of Computer Programming\n(1 row)"),
        "{stdout}"
    );

    // A second invocation finds the table in the catalog the index provider keeps.
    let out = wwt(
        &home,
        &[
            "sql",
            "--json",
            "-c",
            "SELECT count(*), max(year) FROM books",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["rows"][0][0], 3);
    assert_eq!(v["rows"][0][1], 1985);

    // Both index providers hold the owner's log, at the same seq.
    let status = wwt(&home, &["devnet", "status"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    let seqs: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split(" at seq ").nth(1))
        .collect();
    assert_eq!(seqs.len(), 2, "{stdout}");
    assert!(seqs[0] == seqs[1] && seqs[0] != "0", "{stdout}");

    let script = dir.path().join("bad.sql");
    std::fs::write(&script, "SELECT 1;\nSELECT * FORM books;\n").unwrap();
    let out = wwt(&home, &["sql", "-f", script.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("statement 2 of 2") && stderr.contains("syntax error at line"),
        "{stderr}"
    );
}

/// `wwt sql` with `stdin` as its input (not a terminal: read as a script).
fn wwt_sql_stdin(home: &std::path::Path, stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wwt"))
        .arg("sql")
        .env("WWT_HOME", home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn sql_meta_commands_list_tables_columns_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(wwt(&home, &["init"]).status.success());
    let _devnet = devnet_up(
        &home,
        &["--capacity-mib", "256", "--index-providers", "2"],
        "6/6 providers alive (2 index)",
    );

    // Backslash commands take a line of their own in a -c script, between statements.
    let out = wwt(
        &home,
        &[
            "sql",
            "-c",
            "CREATE TABLE notes (id BIGINT PRIMARY KEY, title TEXT NOT NULL, body TEXT, score DOUBLE);
             CREATE INDEX ON notes USING hash (title);
             CREATE INDEX ON notes USING btree (score);
             CREATE INDEX ON notes USING fulltext (body);
             CREATE TABLE tags (tag TEXT PRIMARY KEY);
             INSERT INTO notes VALUES (1, 'hello', 'a first note', 2.5);
             \\dt
             DESCRIBE Notes;",
        ],
    );
    let stdout = succeeded(&out);
    for expected in [
        "List of tables\ntable | columns | indexes | primary key\n",
        "\nnotes |       4 |       3 | id\ntags  |       1 |       0 | tag\n(2 rows)\n",
        "Table \"notes\"\ncolumn | type   | nullable | key\n",
        "\nid     | BIGINT | not null | primary key\ntitle  | TEXT   | not null |\n",
        "\nscore  | DOUBLE |          |\n(4 rows)\nIndexes of \"notes\"\n",
        "notes_title_hash",
        "hash (equality tokens)",
        "which rows share a value",
        "btree (order-preserving encryption)",
        "the order of all values",
        "fulltext (word tokens)",
        "each token's count",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }

    // From stdin: \timing and \x change how what follows prints; an unknown command stops
    // the script with an error naming \?.
    let out = wwt_sql_stdin(
        &home,
        "\\timing\n\\x\nSELECT id, title FROM notes;\n\\di\nSHOW TABLES;\n\\?\n\\nope\nSELECT 1;\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    for expected in [
        "Timing is on.\nExpanded display is on.\n",
        "-[ RECORD 1 ]",
        "\nid    | 1\ntitle | hello\n(1 row)\nTime: ",
        "List of indexes\n-[ RECORD 1 ]",
        "\nkind              | btree (order-preserving encryption)\n",
        "\ntable       | tags\n",
        "\\timing",
        "\\q",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    assert!(
        stderr.contains("statement 7 of 8")
            && stderr.contains("unknown command \\nope: \\? lists the commands"),
        "{stderr}"
    );

    // With --json the catalog is rows like any result, one object per line.
    let out = wwt(&home, &["sql", "--json", "-c", "\\d notes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["title"], "Table \"notes\"");
    assert_eq!(lines[0]["rows"][3][1], "DOUBLE");
    assert_eq!(lines[1]["columns"][3], "kind");
    assert_eq!(lines[1]["rows"][0][3], "hash (equality tokens)");

    // psql's name patterns: `*` and `?`, lowercased outside quotes.
    let out = wwt(&home, &["sql", "-c", "\\dt N*\n\\di *_hash\n\\d t?g*"]);
    let stdout = succeeded(&out);
    for expected in [
        "List of tables\ntable | columns | indexes | primary key\n\
         ------+---------+---------+------------\nnotes |       4 |       3 | id\n(1 row)\n",
        "List of indexes\n",
        "notes_title_hash",
        "Table \"tags\"\ncolumn | type | nullable | key\n",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    for unexpected in ["btree", "fulltext", "Table \"notes\""] {
        assert!(!stdout.contains(unexpected), "{unexpected:?} in:\n{stdout}");
    }
    let out = wwt(&home, &["sql", "-c", "\\d zz*"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no table matches zz*: \\dt lists the tables"),
        "{stderr}"
    );
}

/// Each provider's bytes live and freed, from `wwt devnet status`, in provider order.
fn provider_bytes(home: &std::path::Path) -> Vec<(u64, u64)> {
    let status = wwt(home, &["devnet", "status"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{stdout}");
    stdout
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" pieces, ")?;
            let (live, rest) = rest.split_once(" bytes live of ")?;
            let (_, rest) = rest.split_once(", ")?;
            let (freed, _) = rest.split_once(" bytes freed")?;
            Some((live.parse().ok()?, freed.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_dropped_table_gives_a_devnets_bytes_back() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(wwt(&home, &["init"]).status.success());
    let _devnet = devnet_up(&home, &["--capacity-mib", "256"], "6/6 providers alive");
    let before = provider_bytes(&home);
    assert_eq!(before.len(), 6);

    // 8 MiB of 8 KiB documents, 64 to a statement.
    let mut script = String::from("CREATE TABLE docs (id BIGINT PRIMARY KEY, body TEXT);\n");
    for start in (0..1024).step_by(64) {
        let values: Vec<String> = (start..start + 64)
            .map(|i| format!("({i}, '{}')", format!("{i:07} ").repeat(1024)))
            .collect();
        script.push_str(&format!("INSERT INTO docs VALUES {};\n", values.join(", ")));
    }
    let file = dir.path().join("load.sql");
    std::fs::write(&file, script).unwrap();
    let out = wwt(&home, &["sql", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = provider_bytes(&home);

    // Most rows deleted, compaction by hand: the rows left still read.
    let out = wwt(&home, &["sql", "-c", "DELETE FROM docs WHERE id >= 100"]);
    assert!(out.status.success());
    let out = wwt(&home, &["compact", "docs"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("table docs: "),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wwt(&home, &["sql", "--json", "-c", "SELECT count(*) FROM docs"]);
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["rows"][0][0], 100);

    let out = wwt(&home, &["sql", "-c", "DROP TABLE docs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The trackers delete the pieces at their next audit steps (one a second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let after = loop {
        let now = provider_bytes(&home);
        let back = now
            .iter()
            .zip(&before)
            .zip(&loaded)
            .all(|((n, b), l)| n.0.saturating_sub(b.0) * 20 <= l.0 - b.0 && n.1 > b.1);
        if back {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bytes before {before:?}, loaded {loaded:?}, now {now:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    println!("bytes before {before:?}, loaded {loaded:?}, after the drop {after:?}");
}
