//! Helpers for the save, backup, new-map and schedule tests: instances set up on sim hosts and
//! zips looked into.

use super::cluster::Api;
use serde_json::{Value, json};
use std::io::{Read, Write};

/// Creates `name` (with `config`), assigns it to `host` and starts it.
pub async fn create_started(api: &Api, name: &str, host: &str, config: Value) -> Value {
    let (s, v) = api
        .post(
            "/api/v1/instances",
            json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(s, 201, "create {name}: {v}");
    let (s, v) = api
        .post(
            &format!("/api/v1/instances/{name}/assign"),
            json!({ "host": host }),
        )
        .await;
    assert_eq!(s, 200, "assign {name}: {v}");
    let (s, v) = api
        .post(&format!("/api/v1/instances/{name}/start"), json!({}))
        .await;
    assert_eq!(s, 200, "start {name}: {v}");
    v
}

/// The names in `GET …/saves` that are on the host.
pub async fn host_saves(api: &Api, instance: &str) -> Vec<String> {
    api.get(&format!("/api/v1/instances/{instance}/saves"))
        .await
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|s| s["on_host"] == json!(true))
                .filter_map(|s| s["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The save the next start of `instance` loads.
pub async fn load_next(api: &Api, instance: &str) -> Option<String> {
    api.get(&format!("/api/v1/instances/{instance}/saves"))
        .await
        .as_array()?
        .iter()
        .find(|s| s["load_next"] == json!(true))
        .and_then(|s| s["name"].as_str().map(String::from))
}

/// A zip of `files` (path, content), e.g. a scenario to upload.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        for (name, content) in files {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            w.write_all(content).expect("write");
        }
        w.finish().expect("zip");
    }
    out.into_inner()
}

/// `zip` with one more entry `<root>/<file>` holding `content`.
pub fn with_entry(zip: &[u8], file: &str, content: &[u8]) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("a zip");
    let root = archive
        .file_names()
        .filter_map(|n| n.ok())
        .next()
        .and_then(|n| n.split('/').next().map(String::from))
        .unwrap_or_else(|| "save".to_string());
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        for i in 0..archive.len() {
            let mut f = archive.by_index(i).expect("entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("entry data");
            let name = f.name().map(|n| n.to_string()).expect("entry name");
            w.start_file(name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            w.write_all(&data).expect("write");
        }
        w.start_file(
            format!("{root}/{file}"),
            zip::write::SimpleFileOptions::default(),
        )
        .expect("entry");
        w.write_all(content).expect("write");
        w.finish().expect("zip");
    }
    out.into_inner()
}

/// Whether `zip` has an entry ending in `/<file>` with `content`.
pub fn has_entry(zip: &[u8], file: &str, content: &[u8]) -> bool {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(zip)) else {
        return false;
    };
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .collect();
    names.iter().any(|n| {
        n.ends_with(&format!("/{file}"))
            && archive.by_name(n).is_ok_and(|mut f| {
                let mut data = Vec::new();
                f.read_to_end(&mut data).is_ok() && data == content
            })
    })
}
