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

#[test]
fn demo_reads_every_row_after_losing_two_providers_and_stores_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let out = wwt(
        dir.path(),
        &[
            "demo",
            "--rows",
            "3000",
            "--dir",
            dir.path().join("net").to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": 0 plaintext hits"), "{stdout}");
    assert!(
        stdout.contains("lost provider-1, provider-4: 3000/3000 rows read back"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cannot be decoded: 3 intact pieces of the 4 needed"),
        "{stdout}"
    );
    // The provider folders hold pieces, and none contains a sample value.
    let piece_dir = dir.path().join("net/provider-0");
    for e in std::fs::read_dir(piece_dir).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"example.org"));
    }
}
