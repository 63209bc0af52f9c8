//! The config a server runs with is the one its operator meant: a relative data directory is
//! found from the config file, environment variables override keys, and `check-config` shows
//! the effective config or every mistake before a deploy.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn roomd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_roomd"))
}

#[test]
fn a_relative_data_dir_is_taken_from_the_config_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"state\"\n",
    )
    .unwrap();
    let mut child = roomd()
        .arg("--config")
        .arg(&config)
        .current_dir(elsewhere.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line}");
    let created = dir.path().join("state").join("roomd.redb").exists();
    let stray = elsewhere.path().join("state").exists();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(created, "the database is not beside the config file");
    assert!(!stray, "the database went to the working directory");
}

#[test]
fn environment_variables_override_the_file_and_secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(
        &config,
        "[server]\nmax_connections = 100\n[[api.keys]]\nname = \"b\"\nkey = \"api-key-abcdefghijklmnop\"\nscopes = [\"read\"]\n[[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec-qrstuvwxyz\"\n",
    )
    .unwrap();
    let out = roomd()
        .arg("check-config")
        .arg(&config)
        .env("ROOMD_SERVER_MAX_CONNECTIONS", "7")
        .env("ROOMD_STORAGE_DURABILITY", "relaxed")
        .env("ROOMD_SERVER_LISTEN", "0.0.0.0:7799")
        .env(
            "ROOMD_AUTH_JWT_SECRET",
            "12345678901234567890123456789012345",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_connections = 7"), "{text}");
    assert!(text.contains("durability = \"relaxed\""), "{text}");
    assert!(text.contains("listen = \"0.0.0.0:7799\""), "{text}");
    assert!(!text.contains("1234567890"), "the secret is shown: {text}");
    assert!(text.contains("jwt_secret = \"********\""), "{text}");
    assert!(
        !text.contains("abcdefghijklmnop"),
        "an API key is shown: {text}"
    );
    assert!(
        !text.contains("qrstuvwxyz"),
        "a webhook secret is shown: {text}"
    );
}

#[test]
fn bad_api_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(
        &config,
        "[[api.keys]]\nname = \"a\"\nkey = \"short\"\nscopes = []\n\
         [[api.keys]]\nname = \"a\"\nkey = \"long-enough-key-0123\"\nscopes = [\"admin\"]\n",
    )
    .unwrap();
    let out = roomd().arg("check-config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "api.keys[0].key must be at least 16 bytes",
        "api.keys[0].scopes must name at least one scope",
        "api.keys[1].name \"a\" is used twice",
    ] {
        assert!(err.contains(problem), "{problem}: {err}");
    }
    std::fs::write(
        &config,
        "[[api.keys]]\nname = \"a\"\nkey = \"long-enough-key-0123\"\nscopes = [\"everything\"]\n",
    )
    .unwrap();
    let out = roomd().arg("check-config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("everything"));
}

#[test]
fn check_config_reports_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(
        &config,
        "[server]\nmax_connections = 0\n[limits]\npage = 0\n",
    )
    .unwrap();
    let out = roomd().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.max_connections"), "{err}");
    assert!(err.contains("limits.page"), "{err}");
    // A syntax or type mistake names its line and column.
    std::fs::write(&config, "[storage]\n\ndurability = 3\n").unwrap();
    let out = roomd().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    // A bad environment value names the variable.
    std::fs::write(&config, "").unwrap();
    let out = roomd()
        .arg("check-config")
        .arg(&config)
        .env("ROOMD_SERVER_MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ROOMD_SERVER_MAX_CONNECTIONS"),
        "{out:?}"
    );
}

#[test]
fn a_weak_jwt_secret_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomd.toml");
    std::fs::write(&config, "[auth]\njwt_secret = \"short\"\n").unwrap();
    let out = roomd().arg("check-config").arg(&config).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.jwt_secret is 5 bytes"),
        "{out:?}"
    );
}
