//! The crate root is the user's vocabulary: at most 35 names. Implementer types live in `raw`,
//! the rest in their modules (`codec`, `query`, `snapshot`, `subscription`, `projection`, …).

#[test]
fn the_root_re_exports_at_most_35_names() {
    let lib = include_str!("../src/lib.rs");
    let mut names = Vec::new();
    let mut statement = String::new();
    for line in lib.lines() {
        // Root-level `pub use` statements only (those of inline modules are indented).
        if statement.is_empty() && !line.starts_with("pub use ") {
            continue;
        }
        statement.push_str(line);
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let list = statement
            .trim_start_matches("pub use ")
            .trim_end_matches(';')
            .to_string();
        statement.clear();
        let inner = match (list.find('{'), list.rfind('}')) {
            (Some(a), Some(b)) => list[a + 1..b].to_string(),
            _ => list.rsplit("::").next().unwrap_or_default().to_string(),
        };
        names.extend(inner.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()));
    }
    assert!(names.len() >= 20, "the count read the root's re-exports: {names:?}");
    assert!(names.len() <= 35, "{} names at the root: {names:?}", names.len());
}
