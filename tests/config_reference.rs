//! The README's configuration tables are the settings schema's: a field added, removed or
//! re-described in `src/config/fields.rs` fails this test until the README says the same.
//! `CLUSTORIO_BLESS=1 cargo test --test config_reference` rewrites the tables from the schema.

use clustorio::config::{Schema, controller_schema, host_schema, instance_schema};

fn readme_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// The text between `<!-- settings:KIND -->` and `<!-- /settings:KIND -->`.
fn section<'a>(readme: &'a str, kind: &str) -> (usize, usize, &'a str) {
    let open = format!("<!-- settings:{kind} -->\n");
    let close = format!("<!-- /settings:{kind} -->");
    let start = readme
        .find(&open)
        .unwrap_or_else(|| panic!("README.md has no {open:?} marker"))
        + open.len();
    let end = start
        + readme[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("README.md has no {close:?} marker"));
    (start, end, &readme[start..end])
}

#[test]
fn the_readme_configuration_tables_are_the_schemas() {
    let kinds: [(&str, Schema); 3] = [
        ("controller", controller_schema(&[])),
        ("host", host_schema(&[])),
        ("instance", instance_schema(&[])),
    ];
    let mut readme = std::fs::read_to_string(readme_path()).expect("reading README.md");
    let bless = std::env::var_os("CLUSTORIO_BLESS").is_some();
    for (kind, schema) in &kinds {
        let want = schema.markdown_table();
        let (start, end, have) = section(&readme, kind);
        if have != want {
            if bless {
                readme.replace_range(start..end, &want);
                continue;
            }
            panic!(
                "README.md's {kind} settings table drifted from the schema; run \
                 CLUSTORIO_BLESS=1 cargo test --test config_reference, or paste:\n{want}"
            );
        }
    }
    if bless {
        std::fs::write(readme_path(), readme).expect("writing README.md");
    }
}

#[test]
fn every_field_is_in_the_readme_once() {
    let readme = std::fs::read_to_string(readme_path()).expect("reading README.md");
    for (kind, schema) in [
        ("controller", controller_schema(&[])),
        ("host", host_schema(&[])),
        ("instance", instance_schema(&[])),
    ] {
        let (_, _, table) = section(&readme, kind);
        for f in schema.fields() {
            let row = format!("| `{}` |", f.name);
            assert_eq!(table.matches(&row).count(), 1, "{kind}: {}", f.name);
        }
    }
}
