//! `clustorio ctl` against a real controller, host and factorio-sim: every command in both output
//! modes, and the error paths (unknown instance, no permission, controller down, bad token,
//! usage). One cluster serves the whole file; each test names its own instances and users.

mod common;

use common::cluster::{HostProcess, factorio_pids_under, free_tcp_port};
use common::{ControllerProcess, bin, join_token};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The shared cluster: a controller and one host named `main`.
struct Cluster {
    root: PathBuf,
    url: String,
    token: String,
    /// Kept alive for the whole test run; `cleanup` kills them at exit.
    _procs: Mutex<(ControllerProcess, HostProcess)>,
}

/// What `cleanup` needs: statics are never dropped, so the processes are killed at exit.
static CLEANUP: OnceLock<(PathBuf, Vec<u32>)> = OnceLock::new();

extern "C" fn cleanup() {
    if let Some((root, pids)) = CLEANUP.get() {
        for pid in pids {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        for pid in factorio_pids_under(root) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(root);
    }
}

static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| {
    let root = tempfile::tempdir().expect("tempdir").keep();
    let cdir = root.join("controller");
    std::fs::create_dir_all(&cdir).expect("controller dir");
    let controller = ControllerProcess::start(&cdir);
    let url = controller.url("");
    let host = HostProcess::start(&root.join("main"), &url, &join_token(&cdir), "main", &[]);
    let pids = vec![host.child.id(), controller.child.id()];
    CLEANUP.get_or_init(|| (root.clone(), pids));
    unsafe { libc::atexit(cleanup) };
    std::fs::create_dir_all(root.join("home")).expect("home dir");
    Cluster {
        token: controller.first_token.clone(),
        root,
        url,
        _procs: Mutex::new((controller, host)),
    }
});

fn cluster() -> &'static Cluster {
    &CLUSTER
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit 1 with one `error:` line on stderr naming `what`; returns that line.
    fn fails_with(&self, what: &str) -> &str {
        assert_eq!(
            self.code, 1,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {line}");
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains(what), "'{what}' in: {line}");
        line
    }
}

/// `clustorio ctl …` in an empty home directory, with the given environment on top.
fn command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let home = cluster().root.join("home");
    let mut cmd = Command::new(bin("clustorio"));
    cmd.arg("ctl")
        .args(args)
        .current_dir(&home)
        .env("HOME", &home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("CLUSTORIO_CONFIG")
        .env_remove("CLUSTORIO_URL")
        .env_remove("CLUSTORIO_TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run_with(env: &[(&str, &str)], args: &[&str]) -> Run {
    let out = command(env, args).output().expect("running clustorio ctl");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// As the admin.
fn run(args: &[&str]) -> Run {
    run_as(&cluster().token, args)
}

fn run_as(token: &str, args: &[&str]) -> Run {
    let c = cluster();
    run_with(
        &[("CLUSTORIO_URL", &c.url), ("CLUSTORIO_TOKEN", token)],
        args,
    )
}

/// Human output of a command that must succeed.
fn ok(args: &[&str]) -> String {
    let r = run(args);
    assert_eq!(r.code, 0, "ctl {args:?}: {}", r.stderr);
    assert!(!r.stdout.contains('\x1b'), "no colours on a pipe");
    r.stdout
}

/// `--json` output of a command that must succeed.
fn json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let r = run(&args);
    assert_eq!(r.code, 0, "ctl {args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// A mod or save zip with one entry.
fn zip_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .expect("zip entry");
    w.write_all(data).expect("zip data");
    w.finish().expect("zip");
    buf.into_inner()
}

/// Creates `name`, assigns it to the host and starts it.
fn running_instance(name: &str) {
    json(&["instance", "create", name]);
    json(&["instance", "assign", name, "main"]);
    let v = json(&["instance", "start", name]);
    assert_eq!(v["status"], "running", "{v}");
}

#[test]
fn status_works_without_a_token_and_counts_with_one() {
    let c = cluster();
    let v = json(&["status"]);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_s"].is_u64(), "{v}");

    let text = ok(&["status"]);
    assert!(text.contains(&format!("at {}", c.url)), "{text}");
    assert!(text.contains("connected of"), "{text}");
    assert!(text.contains("running of"), "{text}");

    let anonymous = run_with(&[("CLUSTORIO_URL", &c.url)], &["status"]);
    assert_eq!(anonymous.code, 0, "{}", anonymous.stderr);
    assert!(!anonymous.stdout.contains("hosts"), "{}", anonymous.stdout);
}

#[test]
fn hosts_are_listed_revoked_and_joined_with_a_rotatable_token() {
    let c = cluster();
    let hosts = json(&["host", "list"]);
    let main = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "main")
        .expect("host main");
    assert_eq!(main["connected"], true);
    let text = ok(&["host", "ls"]);
    assert!(text.starts_with("ID  NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("main") && l.contains("connected")),
        "{text}"
    );

    let token = ok(&["host", "join-token"]);
    assert!(token.trim().starts_with("join_"), "{token}");
    assert_eq!(json(&["host", "join-token"])["token"], token.trim());

    // A second host joins with that token, then is revoked by name.
    let doomed = HostProcess::start(&c.root.join("doomed"), &c.url, token.trim(), "doomed", &[]);
    let v = json(&["host", "revoke", "doomed"]);
    assert_eq!(v["revoked"], true, "{v}");
    let text = ok(&["host", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("doomed") && l.contains("revoked")),
        "{text}"
    );
    drop(doomed);
    run(&["host", "revoke", "nosuchhost"]).fails_with("revoking host 'nosuchhost'");

    let rotated = json(&["host", "join-token", "--rotate"]);
    assert_ne!(rotated["token"], token.trim());
    assert_eq!(ok(&["host", "join-token"]).trim(), rotated["token"]);
}

#[test]
fn an_instance_goes_from_create_to_delete() {
    let v = json(&[
        "instance",
        "create",
        "life",
        "--config-json",
        r#"{"restart_on_crash":false}"#,
        "--set",
        "server_settings.name=Life on Nauvis",
    ]);
    assert_eq!(v["status"], "unassigned");
    assert_eq!(
        v["config"],
        json!({"restart_on_crash": false, "server_settings": {"name": "Life on Nauvis"}})
    );
    let id = v["id"].as_i64().unwrap().to_string();
    let text = ok(&["instance", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("life") && l.contains("unassigned")),
        "{text}"
    );
    assert_eq!(json(&["instance", "show", &id])["name"], "life");
    let text = ok(&["instance", "show", "life"]);
    assert!(text.contains("Life on Nauvis"), "{text}");

    // Config: dotted keys merge into objects, --unset removes.
    let v = json(&[
        "instance",
        "config",
        "set",
        "life",
        "server_settings.max_players",
        "8",
    ]);
    assert_eq!(
        v["config"]["server_settings"],
        json!({"name": "Life on Nauvis", "max_players": 8})
    );
    assert_eq!(
        ok(&["instance", "config", "set", "life", "auto_start", "true"]).trim(),
        "life: auto_start = true"
    );
    assert_eq!(
        ok(&["instance", "config", "set", "life", "auto_start", "--unset"]).trim(),
        "life: auto_start removed"
    );
    let cfg = json(&["instance", "config", "show", "life"]);
    assert!(cfg.get("auto_start").is_none(), "{cfg}");
    assert_eq!(cfg["server_settings"]["max_players"], 8);

    // Lifecycle.
    assert_eq!(
        ok(&["instance", "assign", "life", "main"]).trim(),
        "Assigned instance life to host main (stopped)"
    );
    let text = ok(&["instance", "start", "life"]);
    assert!(
        text.starts_with("Instance life is running on port "),
        "{text}"
    );
    let list = json(&["instance", "list"]);
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "life")
        .unwrap();
    assert_eq!(me["status"], "running");
    assert_eq!(me["host"], "main");

    let text = ok(&["instance", "rcon", "life", "/players", "online"]);
    assert!(text.contains("Online players"), "{text}");
    let v = json(&["instance", "rcon", &id, "/players online"]);
    assert!(
        v["output"].as_str().unwrap().contains("Online players"),
        "{v}"
    );

    let v = json(&["instance", "logs", "life", "-n", "3"]);
    let lines = v["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{v}");
    let text = ok(&["instance", "logs", "life", "-n", "3"]);
    assert_eq!(text.lines().count(), lines.len(), "{text}");

    run(&["instance", "restart", "life", "--timeout", "0"])
        .fails_with("restarting instance 'life': gave up waiting after 0 s");
    let text = ok(&["instance", "restart", "life", "--timeout", "60"]);
    assert!(
        text.starts_with("Instance life restarted: running"),
        "{text}"
    );
    assert_eq!(
        ok(&["instance", "stop", "life"]).trim(),
        "Instance life is stopped (saved)"
    );
    assert_eq!(json(&["instance", "start", "life"])["status"], "running");
    let v = json(&["instance", "kill", "life"]);
    assert_ne!(v["status"], "running", "{v}");
    assert_eq!(
        ok(&["instance", "delete", "life"]).trim(),
        "Deleted instance life"
    );
    run(&["instance", "show", "life"]).fails_with("getting instance 'life'");

    let v = json(&["instance", "create", "gone"]);
    assert_eq!(v["name"], "gone");
    assert_eq!(json(&["instance", "delete", "gone"])["deleted"], "gone");
}

#[test]
fn logs_follow_prints_lines_as_they_come() {
    running_instance("chatty");
    for json_mode in [false, true] {
        let mut args = vec!["instance", "logs", "chatty", "-f"];
        if json_mode {
            args.push("--json");
        }
        let c = cluster();
        let mut child = command(
            &[("CLUSTORIO_URL", &c.url), ("CLUSTORIO_TOKEN", &c.token)],
            &args,
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("ctl logs -f");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("recent lines");
        if json_mode {
            let v: Value = serde_json::from_str(&first).expect("JSON lines");
            assert!(v["line"].is_string(), "{v}");
        }
        let said = format!("hello from test {json_mode}");
        ok(&[
            "instance",
            "rcon",
            "chatty",
            &format!("/standin chat bob {said}"),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the chat line arrives while following");
            if line.contains(&format!("[CHAT] bob: {said}")) {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn saves_are_created_uploaded_downloaded_and_backed_up() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    running_instance("saves");
    let list = json(&["save", "list", "saves"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "world.zip"),
        "{list}"
    );

    let v = json(&["save", "create", "saves", "snap.zip"]);
    assert_eq!(v["name"], "snap.zip");
    let text = ok(&["save", "create", "saves", "snap2.zip"]);
    assert!(text.starts_with("Created save snap2.zip"), "{text}");

    let target = dir.path().join("snap.zip");
    let v = json(&[
        "save",
        "download",
        "saves",
        "snap.zip",
        "-o",
        target.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(v["size"], bytes.len() as u64);
    assert!(bytes.starts_with(b"PK"), "a zip");
    let to_stdout = command(
        &[("CLUSTORIO_URL", &c.url), ("CLUSTORIO_TOKEN", &c.token)],
        &["save", "download", "saves", "snap.zip", "-o", "-"],
    )
    .output()
    .unwrap();
    assert!(to_stdout.status.success());
    assert_eq!(to_stdout.stdout, bytes, "-o - writes the zip to stdout");
    let second = dir.path().join("again.zip");
    let text = ok(&[
        "save",
        "download",
        "saves",
        "snap.zip",
        "--output",
        second.to_str().unwrap(),
    ]);
    assert!(text.starts_with("Downloaded snap.zip"), "{text}");

    let v = json(&[
        "save",
        "upload",
        "saves",
        target.to_str().unwrap(),
        "--name",
        "my copy.zip",
    ]);
    assert_eq!(v["name"], "my copy.zip");
    let text = ok(&["save", "upload", "saves", second.to_str().unwrap()]);
    assert!(text.starts_with("Uploaded save again.zip"), "{text}");
    let text = ok(&["save", "ls", "saves"]);
    assert!(text.starts_with("NAME"), "{text}");
    for name in ["world.zip", "snap.zip", "my copy.zip", "again.zip"] {
        assert!(text.contains(name), "{name} in {text}");
    }

    let v = json(&["save", "backup", "saves"]);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64, "{v}");
    let text = ok(&["save", "backup", "saves"]);
    assert!(text.contains("to the controller"), "{text}");
    let copies = json(&["save", "backups", "saves"]);
    let newest = copies[0]["file"]
        .as_str()
        .expect("a backup file")
        .to_string();
    assert!(ok(&["save", "backups", "saves"]).contains(&newest));
    let copy = dir.path().join("copy.zip");
    json(&[
        "save",
        "download",
        "saves",
        &newest,
        "--backup",
        "-o",
        copy.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&copy).unwrap().starts_with(b"PK"));

    let missing = dir.path().join("missing.zip");
    run(&[
        "save",
        "download",
        "saves",
        "missing.zip",
        "-o",
        missing.to_str().unwrap(),
    ])
    .fails_with("downloading save 'missing.zip' of instance 'saves'");
    assert!(!missing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "no .part files left");
    run(&["save", "upload", "saves", "/nonexistent/x.zip"]).fails_with("/nonexistent/x.zip");
}

#[test]
fn mods_are_uploaded_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["alpha", "beta"] {
        let path = dir.path().join(format!("{name}_1.0.0.zip"));
        let info = format!(r#"{{"name":"{name}","version":"1.0.0"}}"#);
        std::fs::write(
            &path,
            zip_with(&format!("{name}_1.0.0/info.json"), info.as_bytes()),
        )
        .unwrap();
        files.push(path.to_str().unwrap().to_string());
    }
    let v = json(&["mod", "upload", &files[0], &files[1]]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let text = ok(&["mod", "list"]);
    assert!(
        text.contains("alpha_1.0.0.zip") && text.contains("beta_1.0.0.zip"),
        "{text}"
    );
    assert_eq!(
        ok(&["mod", "delete", "alpha_1.0.0.zip"]).trim(),
        "Deleted mod alpha_1.0.0.zip"
    );
    let list = json(&["mod", "list"]);
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "alpha_1.0.0.zip"),
        "{list}"
    );
    let text = ok(&["mod", "upload", &files[0]]);
    assert!(text.starts_with("Uploaded mod alpha_1.0.0.zip"), "{text}");

    let junk = dir.path().join("junk_1.0.0.zip");
    std::fs::write(&junk, zip_with("readme.txt", b"x")).unwrap();
    run(&["mod", "upload", junk.to_str().unwrap()]).fails_with("uploading mod");
    run(&["mod", "delete", "nothere_1.0.0.zip"]).fails_with("deleting mod 'nothere_1.0.0.zip'");
}

#[test]
fn users_roles_and_tokens_are_managed_by_name_or_id() {
    let role = json(&[
        "role",
        "create",
        "ops",
        "--description",
        "Operators",
        "--permission",
        "core.instance.list",
    ]);
    let role_id = role["id"].as_i64().unwrap().to_string();
    let v = json(&[
        "role",
        "edit",
        "ops",
        "--add",
        "core.instance.get,core.host.list",
        "--remove",
        "core.instance.list",
    ]);
    assert_eq!(
        v["permissions"],
        json!(["core.instance.get", "core.host.list"])
    );
    let text = ok(&["role", "edit", &role_id, "--name", "operators"]);
    assert!(text.starts_with("Role operators"), "{text}");
    let text = ok(&["role", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("operators") && l.contains("Operators")),
        "{text}"
    );

    let v = json(&[
        "user",
        "create",
        "bob",
        "--role",
        "operators",
        "--whitelisted",
    ]);
    assert_eq!(v["roles"], json!([role["id"]]));
    assert_eq!(v["is_whitelisted"], true);
    let bob_id = v["id"].as_i64().unwrap().to_string();
    let text = ok(&["user", "list"]);
    assert!(
        text.lines()
            .any(|l| l.contains("bob") && l.contains("operators") && l.contains("yes")),
        "{text}"
    );
    assert_eq!(json(&["user", "show", &bob_id])["name"], "bob");
    assert!(ok(&["user", "show", "bob"]).contains("operators"));

    assert_eq!(json(&["user", "admin", "bob"])["is_admin"], true);
    assert_eq!(
        ok(&["user", "admin", &bob_id, "--revoke"]).trim(),
        "User bob is no longer an admin"
    );
    assert_eq!(
        json(&["user", "whitelist", "bob", "--remove"])["is_whitelisted"],
        false
    );
    let v = json(&["user", "ban", "bob", "--reason", "griefing"]);
    assert_eq!(
        (v["is_banned"].clone(), v["ban_reason"].clone()),
        (json!(true), json!("griefing"))
    );
    assert!(ok(&["user", "list"]).contains("banned: griefing"));
    assert_eq!(
        ok(&["user", "unban", "bob"]).trim(),
        "User bob is no longer banned"
    );
    assert_eq!(json(&["user", "set-roles", "bob"])["roles"], json!([]));
    assert_eq!(
        ok(&["user", "set-roles", "bob", &role_id]).trim(),
        "User bob has roles operators"
    );

    // A token for bob: it can list hosts but not users (no permission), until it is revoked.
    let token = ok(&["user", "token", "bob"]).trim().to_string();
    assert!(token.starts_with("clu_"), "{token}");
    let r = run_as(&token, &["host", "list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    run_as(&token, &["user", "list"]).fails_with("lacks the permission core.user.list");
    let tokens = json(&["user", "token", "bob", "--list"]);
    assert_eq!(tokens.as_array().unwrap().len(), 1, "{tokens}");
    let text = ok(&["user", "token", "bob", "--revoke-all"]);
    assert_eq!(text.trim(), "Revoked 1 token(s) of bob");
    run_as(&token, &["host", "list"]).fails_with("invalid or revoked token");
    let second = json(&["user", "token", "bob"]);
    let id = second["id"].as_i64().unwrap().to_string();
    assert_eq!(
        ok(&["user", "token", "bob", "--revoke", &id]).trim(),
        format!("Revoked token {id}")
    );

    let perms = json(&["permission", "list"]);
    assert!(
        perms
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "core.admin")
    );
    assert!(ok(&["permission", "list"]).contains("core.instance.start"));

    let audit = json(&["audit", "-n", "3"]);
    assert_eq!(audit.as_array().unwrap().len(), 3, "{audit}");
    let text = ok(&["audit", "--limit", "50"]);
    assert!(text.starts_with("TIME (UTC)"), "{text}");
    assert!(text.contains("user.update"), "{text}");

    run(&["role", "delete", "nosuchrole"]).fails_with("no role 'nosuchrole'");
    assert_eq!(
        ok(&["role", "delete", "operators"]).trim(),
        "Deleted role operators"
    );
    assert_eq!(json(&["user", "delete", &bob_id])["deleted"], "bob");
    run(&["user", "show", "bob"]).fails_with("getting user 'bob'");
}

#[test]
fn login_saves_the_connection_and_later_commands_use_it() {
    let c = cluster();
    let home = tempfile::tempdir().unwrap();
    let login = |token: &str, extra: &[&str]| {
        let mut args = vec!["ctl", "login", c.url.as_str()];
        args.extend_from_slice(extra);
        let mut child = Command::new(bin("clustorio"))
            .args(&args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CLUSTORIO_CONFIG")
            .env_remove("CLUSTORIO_URL")
            .env_remove("CLUSTORIO_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
        child.wait_with_output().unwrap()
    };
    let saved = home.path().join(".config/clustorio/config-control.json");

    let bad = login("clu_not_a_token", &[]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("checking the token: invalid or revoked token"),
        "{err}"
    );
    assert!(!saved.exists(), "nothing saved for a bad token");

    let good = login(&c.token, &[]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let said = String::from_utf8_lossy(&good.stdout);
    assert!(said.starts_with("Logged in to "), "{said}");
    let file: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(
        file,
        json!({"controller_url": c.url, "controller_token": c.token})
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");

    let later = |extra_env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(bin("clustorio"));
        cmd.arg("ctl")
            .args(args)
            .current_dir(home.path())
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CLUSTORIO_CONFIG")
            .env_remove("CLUSTORIO_URL")
            .env_remove("CLUSTORIO_TOKEN");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = later(&[], &["host", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The saved token goes only to the saved URL.
    let other = c.url.replace("127.0.0.1", "localhost");
    let out = later(&[], &["--url", &other, "host", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing token"));

    // A config-control.json in the working directory wins; --config picks any file.
    std::fs::write(
        home.path().join("config-control.json"),
        r#"{"controller_url":"http://127.0.0.1:1","controller_token":"x"}"#,
    )
    .unwrap();
    let out = later(&[], &["host", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://127.0.0.1:1"));
    let out = later(&[], &["--config", saved.to_str().unwrap(), "host", "list"]);
    assert!(out.status.success());
    let out = later(
        &[("CLUSTORIO_CONFIG", saved.to_str().unwrap())],
        &["host", "list"],
    );
    assert!(out.status.success());

    // --token (or CLUSTORIO_TOKEN) skips the prompt.
    let tokened = login(
        "ignored",
        &[
            "--token",
            &c.token,
            "--config",
            home.path().join("t.json").to_str().unwrap(),
        ],
    );
    assert!(tokened.status.success());
    assert!(home.path().join("t.json").exists());
}

#[test]
fn config_values_are_read_by_their_type_and_refusals_name_the_rule() {
    json(&["instance", "create", "typed"]);
    // A number-looking name stays text; a comma list is a list; yes is true.
    let set = |key: &str, value: &str| ok(&["instance", "config", "set", "typed", key, value]);
    assert_eq!(
        set("server_settings.name", "2024").trim(),
        "typed: server_settings.name = \"2024\""
    );
    set("server_settings.tags", "pvp,modded");
    set("auto_start", "yes");
    let cfg = json(&["instance", "config", "show", "typed"]);
    assert_eq!(cfg["server_settings"]["name"], "2024");
    assert_eq!(cfg["server_settings"]["tags"], json!(["pvp", "modded"]));
    assert_eq!(cfg["auto_start"], true);
    // The controller's refusal, as it says it; nothing changes.
    run(&[
        "instance",
        "config",
        "set",
        "typed",
        "server_settings.max_players",
        "lots",
    ])
    .fails_with("server_settings.max_players must be an integer from 0 to 65535");
    run(&["instance", "config", "set", "typed", "game_port", "99999"])
        .fails_with("game_port must be a port number from 1 to 65535");
    run(&["instance", "config", "set", "typed", "no_such_setting", "1"])
        .fails_with("no_such_setting is not a setting");
    run(&[
        "instance",
        "create",
        "typed2",
        "--set",
        "backup_retention=0",
    ])
    .fails_with("backup_retention must be an integer from 1 to 1000");
    assert_eq!(json(&["instance", "config", "show", "typed"]), cfg);
    // Secrets: marked, never printed.
    assert_eq!(
        set("server_settings.game_password", "s3cret-pw").trim(),
        "typed: server_settings.game_password = <secret: set>"
    );
    let text = ok(&["instance", "config", "show", "typed"]);
    assert!(
        text.contains("\"game_password\": \"<secret: set>\""),
        "{text}"
    );
    assert!(text.contains("\"token\": \"<secret: not set>\""), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(!ok(&["instance", "show", "typed"]).contains("s3cret-pw"));
    // The schema, for people and for scripts.
    let text = ok(&["config", "schema"]);
    assert!(
        text.lines()
            .any(|l| l.contains("server_settings.max_players")
                && l.contains("integer")
                && l.contains("restart")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("server_settings.game_password") && l.contains("secret")),
        "{text}"
    );
    assert!(
        text.contains("controller settings") && text.contains("host settings"),
        "{text}"
    );
    let schema = json(&["config", "schema", "--kind", "instance"]);
    assert!(schema.get("controller").is_none());
    assert!(
        schema["instance"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "save_patching")
    );
}

#[test]
fn errors_are_one_line_with_exit_1_and_usage_errors_exit_2() {
    let c = cluster();
    run(&["instance", "show", "nosuch"])
        .fails_with("getting instance 'nosuch': no instance 'nosuch'");
    run(&["instance", "start", "nosuch"]).fails_with("starting instance 'nosuch'");
    run(&["instance", "rcon", "nosuch", "/help"]).fails_with("sending RCON to instance 'nosuch'");
    run(&["instance", "logs", "nosuch", "-f"]).fails_with("following the log of instance 'nosuch'");
    run(&["instance", "config", "set", "nosuch", "auto_start", "true"])
        .fails_with("changing the config of instance 'nosuch'");
    run(&["--json", "instance", "show", "987654"]).fails_with("no instance '987654'");

    // No permission.
    json(&["user", "create", "nobody"]);
    let token = ok(&["user", "token", "nobody"]).trim().to_string();
    run_as(&token, &["host", "join-token"])
        .fails_with("getting the join token: user 'nobody' lacks the permission");

    // Bad token, no token.
    run_as("clu_0000", &["instance", "list"])
        .fails_with("listing instances: invalid or revoked token");
    run_with(&[("CLUSTORIO_URL", &c.url)], &["instance", "list"]).fails_with("missing token");

    // Controller down, no URL, a URL that is not a controller.
    let down = format!("http://127.0.0.1:{}", free_tcp_port());
    run_with(&[("CLUSTORIO_URL", &down)], &["instance", "list"])
        .fails_with(&format!("cannot connect to the controller at {down}"));
    run_with(&[], &["instance", "list"])
        .fails_with("no controller URL: pass --url, set CLUSTORIO_URL");
    run_with(&[("CLUSTORIO_URL", "ftp://x")], &["status"]).fails_with("must start with http://");

    // Usage errors come from clap with exit 2.
    for args in [
        &["instance", "frobnicate"][..],
        &["instance", "start"],
        &["instance", "config", "set", "x", "key"],
        &["audit", "--limit", "many"],
        &["instance", "logs", "x", "-f", "-n", "3"],
        &["user", "token", "x", "--list", "--revoke-all"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    // Help everywhere.
    for args in [
        &["--help"][..],
        &["instance", "start", "--help"],
        &["save", "download", "--help"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 0, "{args:?}");
        assert!(r.stdout.contains("Usage: clustorio ctl"), "{}", r.stdout);
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("clustorio"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("clustorio") && text.contains("join-token"),
            "{shell}"
        );
    }
    let out = Command::new(bin("clustorio"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `clustorio ctl args` on a pseudo-terminal (util-linux `script`); None if unavailable.
fn on_terminal(env: &[(&str, &str)], args: &[&str]) -> Option<String> {
    let c = cluster();
    let line = std::iter::once(bin("clustorio").display().to_string())
        .chain(std::iter::once("ctl".to_string()))
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env("CLUSTORIO_URL", &c.url)
        .env("CLUSTORIO_TOKEN", &c.token)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    running_instance("colourful");
    let Some(tty) = on_terminal(&[], &["instance", "list"]) else {
        eprintln!("skipped: util-linux `script` is not available");
        return;
    };
    assert!(tty.contains("\x1b[32mrunning\x1b[0m"), "{tty:?}");
    let plain = on_terminal(&[("NO_COLOR", "1")], &["instance", "list"]).unwrap();
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("running"));
    let as_json = on_terminal(&[], &["instance", "list", "--json"]).unwrap();
    assert!(!as_json.contains('\x1b'), "{as_json:?}");
    // And on a pipe (every other test): no colours either.
    assert!(!ok(&["instance", "list"]).contains('\x1b'));
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with the `openssl` CLI; None if the
/// CLI is missing. Returns (ca.pem, cert.pem, key.pem).
fn make_certs(dir: &std::path::Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    let ok = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=clustorio test CA",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        )
    })
}

/// A TLS-terminating proxy on a free port in front of `backend` (a `host:port`), on its own
/// thread for the rest of the test process.
fn tls_proxy(cert: &std::path::Path, key: &std::path::Path, backend: String) -> u16 {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ServerConfig, crypto::aws_lc_rs};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert.pem")
        .map(|c| c.expect("a certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).expect("key.pem");
    let config =
        ServerConfig::builder_with_provider(std::sync::Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
    });
    port
}

#[test]
fn https_works_through_a_tls_terminating_proxy() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = make_certs(dir.path()) else {
        eprintln!("skipped: the openssl CLI is not available");
        return;
    };
    let backend = c.url.trim_start_matches("http://").to_string();
    let port = tls_proxy(&cert, &key, backend);
    let url = format!("https://127.0.0.1:{port}");
    let trusted = [
        ("CLUSTORIO_URL", url.as_str()),
        ("CLUSTORIO_TOKEN", c.token.as_str()),
        ("SSL_CERT_FILE", ca.to_str().unwrap()),
    ];
    let r = run_with(&trusted, &["instance", "list", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(serde_json::from_str::<Value>(&r.stdout).unwrap().is_array());
    let r = run_with(&trusted, &["status"]);
    assert!(r.stdout.contains(&format!("at {url}")), "{}", r.stdout);

    // A certificate nobody vouches for is refused, in one line.
    let untrusted = [
        ("CLUSTORIO_URL", url.as_str()),
        ("CLUSTORIO_TOKEN", c.token.as_str()),
        ("SSL_CERT_FILE", cert.to_str().unwrap()),
    ];
    run_with(&untrusted, &["instance", "list"])
        .fails_with("cannot connect to the controller at https://");
}
