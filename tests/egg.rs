//! The egg imports unchanged into Pterodactyl 1.11+ and Pelican: every rule of
//! `research/egg.md` §1.2–§1.3, §2 and the §9 checklist that can be checked on the file, and its
//! variables agree with the configuration the binary reads.

use clustorio::config::{
    LogLevel, Schema, controller_env, controller_schema, host_env, host_schema,
};
use serde_json::Value;
use std::collections::HashSet;

fn egg() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/egg/egg-clustorio.json"
    ))
    .unwrap();
    serde_json::from_str(&text).expect("the egg is valid JSON")
}

const PTERODACTYL_RESERVED: &[&str] = &[
    "SERVER_MEMORY",
    "SERVER_IP",
    "SERVER_PORT",
    "ENV",
    "HOME",
    "USER",
    "STARTUP",
    "SERVER_UUID",
    "UUID",
];
const PELICAN_RESERVED: &[&str] = &[
    "P_SERVER_UUID",
    "P_SERVER_ALLOCATION_LIMIT",
    "MODIFIED_STARTUP",
    "INTERNAL_IP",
    "HOSTNAME",
    "TERM",
    "LANG",
    "PWD",
    "TZ",
    "TIMEZONE",
];
/// Laravel rules this egg may use (all real ones).
const KNOWN_RULES: &[&str] = &[
    "required", "nullable", "string", "max", "min", "in", "regex", "integer", "numeric", "between",
    "boolean", "url",
];

/// `rules` applied to `value` the way the panel does when an admin accepts the defaults.
fn passes(rules: &str, value: &str) -> Result<(), String> {
    let empty = value.is_empty();
    let parts: Vec<&str> = rules.split('|').collect();
    if empty {
        return if parts.contains(&"required") {
            Err("required but empty".into())
        } else if parts.contains(&"nullable") {
            Ok(())
        } else {
            Err("empty without nullable".into())
        };
    }
    for part in parts {
        let (name, arg) = part.split_once(':').unwrap_or((part, ""));
        match name {
            "max" if value.chars().count() > arg.parse::<usize>().unwrap() => {
                return Err(format!("longer than {arg}"));
            }
            "in" if !arg.split(',').any(|a| a == value) => return Err(format!("not in {arg}")),
            "regex" => {
                let pattern = arg.trim_start_matches('/').trim_end_matches('/');
                let re = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
                if !re.is_match(value) {
                    return Err(format!("does not match {arg}"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn the_egg_follows_the_import_rules() {
    let egg = egg();
    let obj = egg.as_object().unwrap();
    // §1.1/§9.1: version, author, name; only PTDL keys.
    assert_eq!(egg["meta"]["version"], "PTDL_v2");
    let author = egg["author"].as_str().unwrap();
    assert!(
        regex_lite::Regex::new(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
            .unwrap()
            .is_match(author),
        "author must be an e-mail"
    );
    assert!(
        !egg["name"].as_str().unwrap().is_empty() && egg["name"].as_str().unwrap().len() <= 191
    );
    let allowed: HashSet<&str> = [
        "_comment",
        "meta",
        "exported_at",
        "name",
        "author",
        "description",
        "features",
        "docker_images",
        "file_denylist",
        "startup",
        "config",
        "scripts",
        "variables",
    ]
    .into();
    for k in obj.keys() {
        assert!(allowed.contains(k.as_str()), "unexpected top-level key {k}");
    }
    assert!(egg["features"].is_null() || egg["features"].is_array());
    assert!(egg["file_denylist"].is_array());
    // §9.2-3: config fields are JSON strings holding objects.
    for f in ["files", "startup", "logs"] {
        let s = egg["config"][f]
            .as_str()
            .unwrap_or_else(|| panic!("config.{f} must be a string"));
        let v: Value =
            serde_json::from_str(s).unwrap_or_else(|_| panic!("config.{f} must hold JSON"));
        assert!(v.is_object(), "config.{f} must decode to an object");
    }
    let startup: Value = serde_json::from_str(egg["config"]["startup"].as_str().unwrap()).unwrap();
    assert_eq!(startup["done"], "Started", "the ready line");
    assert_eq!(startup["strip_ansi"], true);
    let stop = egg["config"]["stop"].as_str().unwrap();
    assert!(
        !stop.is_empty() && stop.len() <= 191 && !stop.starts_with('^'),
        "stop is a console command"
    );
    assert_eq!(stop, "stop");
    // §9.4: images.
    let images = egg["docker_images"].as_object().unwrap();
    assert!(!images.is_empty());
    let image_re = regex_lite::Regex::new(r"^[\w#\./\- ]*\|?~?[\w\./\-:@ ]*$").unwrap();
    for v in images.values() {
        let v = v.as_str().unwrap();
        assert!(v.len() <= 191 && image_re.is_match(v), "bad image {v}");
    }
    // §9.5: install script.
    let inst = &egg["scripts"]["installation"];
    assert!(inst["container"].is_string() && inst["entrypoint"].is_string());
    let script = inst["script"].as_str().unwrap();
    assert!(!script.contains('\r'), "LF line endings");
    let mkdir = script.find("mkdir -p /mnt/server").unwrap();
    let cd = script.find("cd /mnt/server").unwrap();
    assert!(mkdir < cd);
    let on_disk =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/egg/install.sh")).unwrap();
    assert_eq!(script, on_disk, "the egg carries egg/install.sh unchanged");
    // §9.6-9.8: variables.
    let keys: HashSet<&str> = [
        "name",
        "description",
        "env_variable",
        "default_value",
        "user_viewable",
        "user_editable",
        "rules",
        "field_type",
    ]
    .into();
    let mut names = HashSet::new();
    let env_re = regex_lite::Regex::new("^[A-Z0-9_]+$").unwrap();
    for v in egg["variables"].as_array().unwrap() {
        let o = v.as_object().unwrap();
        assert_eq!(
            o.keys().map(String::as_str).collect::<HashSet<_>>(),
            keys,
            "variable keys of {v}"
        );
        let env = v["env_variable"].as_str().unwrap();
        assert!(env_re.is_match(env));
        assert!(
            !PTERODACTYL_RESERVED.contains(&env) && !PELICAN_RESERVED.contains(&env),
            "{env} is reserved"
        );
        assert!(names.insert(env), "{env} twice");
        assert!(
            v["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && n.len() <= 191)
        );
        assert!(v["description"].is_string() && v["default_value"].is_string());
        assert!(v["user_viewable"].is_boolean() && v["user_editable"].is_boolean());
        let rules = v["rules"].as_str().unwrap();
        assert!(!rules.is_empty());
        for part in rules.split('|') {
            let name = part.split(':').next().unwrap();
            assert!(KNOWN_RULES.contains(&name), "{env}: unknown rule {name}");
        }
        assert!(
            rules.starts_with("required") || rules.starts_with("nullable"),
            "{env}: optional variables start with nullable"
        );
        passes(rules, v["default_value"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{env}: default fails its rules: {e}"));
    }
    // §9.9-10: the mode switch; no {{VAR}} with free text in the startup line.
    let mode = egg["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["env_variable"] == "SERVER_MODE")
        .unwrap();
    for m in ["master", "slave", "controller", "host"] {
        passes(mode["rules"].as_str().unwrap(), m).unwrap();
    }
    assert!(passes(mode["rules"].as_str().unwrap(), "both").is_err());
    assert!(
        !egg["startup"].as_str().unwrap().contains("{{"),
        "values reach the program as env vars"
    );
    assert!(
        !":/home/container$ clustorio entrypoint".contains("Started"),
        "the echoed startup line is not the ready line"
    );
}

#[test]
fn the_egg_variables_are_the_ones_the_binary_reads() {
    let egg = egg();
    let in_egg: HashSet<String> = egg["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["env_variable"].as_str().unwrap().to_string())
        .collect();
    let read: HashSet<&str> = controller_env()
        .into_iter()
        .chain(host_env())
        .map(|(v, _)| v)
        .collect();
    // Read by the install script or the entrypoint itself, not by a config file.
    let extra = ["SERVER_MODE", "FACTORIO_VERSION"];
    for v in &in_egg {
        assert!(
            read.contains(v.as_str()) || extra.contains(&v.as_str()),
            "egg variable {v} is read by nothing"
        );
    }
    // Everything the binary reads is offered, except what the panel sets itself and the aliases.
    let not_offered = [
        "SERVER_PORT",
        "CONTROLLER_URL",
        "CONTROLLER_TOKEN",
        "HOST_NAME",
        // The Docker backend: a panel server has no Docker socket (research/egg.md §8).
        "FACTORIO_BACKEND",
        "DOCKER_IMAGE",
        "DOCKER_NETWORK",
        "DOCKER_DATA_DIR",
        "DOCKER_MEMORY_LIMIT_MB",
        "DOCKER_CPU_LIMIT",
        "DOCKER_KEEP_RUNNING",
        // A mirror of the mod portal is rare: set on the web UI's settings page.
        "MOD_PORTAL_URL",
        // Factorio release mirrors (tests, sites without internet): the egg's install script
        // reads the same two when set, a panel user rarely needs them.
        "FACTORIO_DOWNLOAD_URL",
        "FACTORIO_SHA256_URL",
    ];
    for v in read {
        assert!(
            in_egg.contains(v) || not_offered.contains(&v),
            "{v} is read but not in the egg"
        );
    }
}

/// The field `var` sets in `schema`, if it is one of its environment variables.
fn field_of(schema: &Schema, var: &str) -> Option<&'static clustorio::config::Field> {
    schema.fields().find(|f| f.env.contains(&var))
}

#[test]
fn the_egg_describes_the_variables_as_the_binary_declares_them() {
    let egg = egg();
    let (controller_schema, host_schema) = (controller_schema(&[]), host_schema(&[]));
    for v in egg["variables"].as_array().unwrap() {
        let var = v["env_variable"].as_str().unwrap();
        let description = v["description"].as_str().unwrap();
        let default = v["default_value"].as_str().unwrap();
        let controller = field_of(&controller_schema, var);
        let host = field_of(&host_schema, var);
        // FACTORIO_VERSION is read by the install script, which only slaves need.
        let slaves_only = host.is_some() || var == "FACTORIO_VERSION";
        // "Master only" / "Slaves only" exactly when only that role reads the variable.
        let rest = match (controller.is_some(), slaves_only) {
            (true, false) => description.strip_prefix("Master only: "),
            (false, true) => description.strip_prefix("Slaves only: "),
            _ => (!description.contains("Master only") && !description.contains("Slaves only"))
                .then_some(description),
        };
        let rest = rest.unwrap_or_else(|| {
            panic!("{var}: \"Master only: \" / \"Slaves only: \" exactly when one role reads it: {description}")
        });
        for field in [controller, host].into_iter().flatten() {
            // The egg says what the field's declaration says (then what the panel user needs).
            let declared = field.description.trim_end_matches('.');
            let (first, tail) = declared.split_at(1);
            assert!(
                rest.starts_with(&format!("{}{tail}", first.to_lowercase()))
                    || rest.starts_with(&format!("{}{tail}", first.to_uppercase())),
                "{var}: the egg's description drifted from {}'s declaration\n egg:      {rest}\n declared: {}",
                field.name,
                field.description
            );
            // A default the egg fills in is the binary's own default for that key.
            if !default.is_empty() {
                let config_default = match field.default.to_value() {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                assert_eq!(default, config_default, "{var}: egg and binary defaults");
            }
        }
    }
    // The log levels are the binary's, in the rule and in the description.
    let log = egg["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["env_variable"] == "LOG_LEVEL")
        .unwrap();
    let names: Vec<&str> = LogLevel::NAMES.split(", ").collect();
    assert!(
        log["rules"]
            .as_str()
            .unwrap()
            .ends_with(&format!("in:{}", names.join(","))),
        "LOG_LEVEL rule lists {names:?}"
    );
    for n in &names {
        assert!(log["description"].as_str().unwrap().contains(n), "{n}");
    }
}

#[test]
fn rule_checks_catch_bad_values() {
    assert!(passes("required|string", "").is_err());
    assert!(passes("nullable|string|max:3", "").is_ok());
    assert!(passes("nullable|string|max:3", "abcd").is_err());
    assert!(passes("nullable|string|regex:/^[0-9,-]*$/", "34197,34200-34210").is_ok());
    assert!(passes("nullable|string|regex:/^[0-9,-]*$/", "34197; rm").is_err());
    let url = egg()["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["env_variable"] == "MASTER_URL")
        .unwrap()["rules"]
        .as_str()
        .unwrap()
        .to_string();
    for good in ["http://172.18.0.1:8081", "https://cluster.example/", ""] {
        assert!(passes(&url, good).is_ok(), "{good}");
    }
    for bad in ["172.18.0.1:8081", "http://", "ws://master:8081"] {
        assert!(passes(&url, bad).is_err(), "{bad}");
    }
}
