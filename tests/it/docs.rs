//! The README's configuration table matches `trace_core::config::VARIABLES`.

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
