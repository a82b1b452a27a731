//! The README's configuration table matches `trace_core::config::VARIABLES`; the workspace's
//! `rust-version` matches the lockfile.

#[test]
fn readme_lists_every_variable_with_its_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    for v in trace_core::config::VARIABLES {
        let default = if v.default.is_empty() { "(unset)".to_owned() } else { format!("`{}`", v.default) };
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| `{}` |", v.name)))
            .unwrap_or_else(|| panic!("README configuration table has no row for {}", v.name));
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells.get(1).copied(), Some(default.as_str()), "README default of {}", v.name);
        assert!(row.contains(v.read_by), "README 'read by' of {}", v.name);
    }
    let documented = rows.iter().filter(|r| r.starts_with("| `") && r.contains("` | ")).count();
    assert!(documented >= trace_core::config::VARIABLES.len());
}

/// A `rust-version` like `1.94.1` as numbers (`1.94` is `1.94.0`).
fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text.split('.').map(|p| p.parse().expect("a rust-version number")).collect();
    parts.resize(3, 0);
    parts
}

/// The workspace's `rust-version` is the toolchain the lockfile really needs: the highest
/// `rust-version` of every locked package (read with `cargo metadata`, offline: no toolchain is
/// downloaded to check it). A dependency update that raises it fails here until the workspace says so.
#[test]
fn the_rust_version_is_the_lockfile_s_highest() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // The packages of this host's platform (Lambda's are Linux too): the others' sources (Android's,
    // Windows') are never downloaded by a build, and offline metadata cannot read them.
    let rustc = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()))
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc names its host");
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &host])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let members: Vec<&serde_json::Value> =
        metadata["workspace_members"].as_array().expect("members").iter().collect();
    let mut needed: Option<(Vec<u64>, String)> = None;
    let mut declared = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let Some(rust_version) = package["rust_version"].as_str() else { continue };
        if members.contains(&&package["id"]) {
            declared.push((package["name"].as_str().unwrap_or_default().to_owned(), version(rust_version)));
        } else if needed.as_ref().is_none_or(|(v, _)| version(rust_version) > *v) {
            needed = Some((
                version(rust_version),
                format!(
                    "{} {}",
                    package["name"].as_str().unwrap_or_default(),
                    package["version"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    let (needed, by) = needed.expect("locked packages declare rust-version");
    assert!(!declared.is_empty(), "the workspace declares a rust-version");
    for (name, declared) in declared {
        assert_eq!(declared, needed, "{name}'s rust-version: the lockfile needs {needed:?} ({by})");
    }
}
