//! The small things a new user hits (issue 22, "Smaller things"): each mistake gets an answer
//! that says what is wrong, with the right exit code, and changes nothing.

mod common;

use common::cluster::Api;
use common::{ControllerProcess, bin};
use serde_json::json;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

fn clustorio() -> Command {
    Command::new(bin("clustorio"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = ControllerProcess::start(dir.path());
    let api = Api::new(&c.url(""), &c.first_token);

    // A name of only digits would shadow the id of another instance or host.
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "nauvis" }))
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": format!("{}", id + 1) }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("digits"),
        "{v}"
    );
    let list = api.get("/api/v1/instances").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing created: {list}");
    // Names with a letter among the digits are fine.
    let (s, v) = api
        .post("/api/v1/instances", json!({ "name": "2nd" }))
        .await;
    assert_eq!(s, 201, "{v}");

    // A known path with a method it does not take: 405 with Allow, not 404.
    let resp = reqwest::Client::new()
        .put(c.url("/api/v1/instances"))
        .bearer_auth(&c.first_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let allow = resp.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    // An unknown path stays a 404.
    let (s, _) = api.call("PUT", "/api/v1/no-such-thing", None).await;
    assert_eq!(s, 404);

    // `ctl status` with a refused token fails (exit 1, the reason on stderr) after what the
    // controller says about itself.
    let out = clustorio()
        .args([
            "ctl",
            "--url",
            &c.url(""),
            "--token",
            "not-a-token",
            "status",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("controller"));
    let out = clustorio()
        .args([
            "ctl",
            "--url",
            &c.url(""),
            "--token",
            &c.first_token,
            "status",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Following the log of an instance no host runs says why nothing comes.
    let mut follow = clustorio()
        .args(["ctl", "--url", &c.url(""), "--token", &c.first_token])
        .args(["instance", "logs", "-f", "nauvis"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(follow.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(first.contains("not assigned to a host"), "{first}");
}

#[test]
fn completions_into_a_closed_pipe_exit_cleanly() {
    let mut child = clustorio()
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a few bytes and hang up, as `| head -c 10` does.
    let mut first = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn config_mistakes_exit_2_naming_what_the_user_set() {
    let dir = tempfile::tempdir().unwrap();
    // A host without a name.
    let out = clustorio()
        .args(["host", "run", "--dir"])
        .arg(dir.path())
        .env_remove("SLAVE_NAME")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SLAVE_NAME"), "{stderr}");

    // A bad environment value: the variable and its value, no internal key or source line.
    let out = clustorio()
        .args(["controller", "run", "--dir"])
        .arg(dir.path().join("c"))
        .env("SERVER_PORT", "abc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SERVER_PORT=abc"), "{stderr}");
    assert!(!stderr.contains(".rs"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    // A bad value in the file names the key and the file; broken JSON names the file.
    let c2 = dir.path().join("c2");
    std::fs::create_dir_all(&c2).unwrap();
    std::fs::write(c2.join("config-master.json"), r#"{"port": 0}"#).unwrap();
    let out = clustorio()
        .args(["controller", "run", "--dir"])
        .arg(&c2)
        .env_remove("SERVER_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("\"port\" in") && stderr.contains("config-master.json"),
        "{stderr}"
    );
    std::fs::write(c2.join("config-master.json"), r#"{"port": "#).unwrap();
    let out = clustorio()
        .args(["controller", "run", "--dir"])
        .arg(&c2)
        .env_remove("SERVER_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not valid JSON"), "{stderr}");
}

#[test]
fn the_demo_on_a_taken_port_says_so_and_leaves_nothing_behind() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let out = clustorio()
        .args(["demo", "--port", &port.to_string()])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("--port"),
        "{stderr}"
    );
    assert!(!stderr.contains("did not start within"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
