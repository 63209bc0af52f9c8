//! Logs are for people and for collectors: no colour codes when stderr is not a terminal, one
//! JSON object per line when asked, and connection logs that name the client's address (the
//! forwarded one only behind a trusted proxy).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs roomd with `config`, makes one WebSocket connection with `headers`, stops it, and
/// returns what it logged.
async fn logs_of_one_connection(config: &str, headers: &[(&'static str, &str)]) -> String {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("roomd.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomd"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening on http://").unwrap();
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    futures_util::StreamExt::next(&mut ws)
        .await
        .unwrap()
        .unwrap();
    drop(ws);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    std::fs::read_to_string(&log).unwrap()
}

#[tokio::test]
async fn text_logs_to_a_file_carry_no_colour_codes_and_name_the_client() {
    let logs = logs_of_one_connection("", &[]).await;
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI codes in a log file:\n{logs}"
    );
    let opened = logs
        .lines()
        .find(|l| l.contains("connection opened"))
        .unwrap_or_else(|| panic!("no connection log:\n{logs}"));
    assert!(opened.contains("addr=127.0.0.1"), "{opened}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let logs = logs_of_one_connection("[server]\nlog_format = \"json\"\n", &[]).await;
    let mut opened = false;
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["fields"]["message"] == "connection opened" {
            assert_eq!(v["fields"]["addr"], "127.0.0.1", "{line}");
            opened = true;
        }
    }
    assert!(opened, "no connection log:\n{logs}");
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address_and_others_do_not() {
    let forwarded = [("x-forwarded-for", "203.0.113.7")];
    let trusted = logs_of_one_connection(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        &forwarded,
    )
    .await;
    assert!(trusted.contains("addr=203.0.113.7"), "{trusted}");
    let untrusted = logs_of_one_connection("", &forwarded).await;
    assert!(!untrusted.contains("203.0.113.7"), "{untrusted}");
}
