//! The shape of the code, checked: the invariants ARCHITECTURE.md states about modules
//! hold in the source, so that a change that breaks one fails here rather than in review.
//! Code under `#[cfg(test)]` (which starts every file's test module) is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest a source file may grow (lines before its tests).
const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The code of a file before its tests; nothing for a file of tests.
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|name| name == "tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(path).expect("read a source file");
    match text.find("#[cfg(test)]") {
        Some(tests) => text[..tests].to_string(),
        None => text,
    }
}

/// The top-level modules (`src/x.rs`, `src/x/`), without the crate roots.
fn top_level_modules() -> BTreeMap<String, PathBuf> {
    fs::read_dir(src())
        .expect("read src")
        .map(|entry| entry.expect("a directory entry").path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            (!matches!(name.as_str(), "lib" | "main")).then_some((name, path))
        })
        .collect()
}

/// Which top-level modules each one names (`crate::x`).
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_level_modules();
    let mut graph = BTreeMap::new();
    for (name, path) in &modules {
        let files = if path.is_dir() { rust_files(path) } else { vec![path.clone()] };
        let mut uses = BTreeSet::new();
        for file in files {
            let code = code(&file);
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let dependency: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                if dependency != *name && modules.contains_key(&dependency) {
                    uses.insert(dependency);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

#[test]
fn top_level_modules_depend_on_each_other_without_cycles() {
    let graph = dependencies();
    let reachable = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.to_string()];
        while let Some(module) = pending.pop() {
            for next in &graph[&module] {
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        seen
    };
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(module, uses)| uses.iter().map(move |used| (module, used)))
        .filter(|(module, used)| reachable(used).contains(*module))
        .map(|(module, used)| format!("{module} -> {used} -> ... -> {module}"))
        .collect();
    assert!(cycles.is_empty(), "import cycles between top-level modules: {cycles:#?}\n{graph:#?}");
}

#[test]
fn data_flows_one_way_from_bindings_through_the_core_to_storage() {
    let graph = dependencies();
    let below = |module: &str, forbidden: &[&str]| {
        for name in forbidden {
            assert!(!graph[module].contains(*name), "{module} must not depend on {name} (it sits below it)");
        }
    };
    below("id", &["error", "resource", "config", "storage", "core", "binding", "remote", "app"]);
    below("resource", &["config", "storage", "core", "binding", "remote", "app"]);
    below("config", &["storage", "core", "binding", "remote", "app"]);
    below("storage", &["core", "binding", "remote", "app"]);
    below("core", &["binding", "remote", "app", "bootstrap"]);
    below("remote", &["binding", "app"]);
}

#[test]
fn only_storage_knows_the_database_drivers() {
    let drivers = ["rusqlite", "tokio_postgres", "deadpool"];
    let mut offenders = Vec::new();
    for file in rust_files(&src()) {
        let relative = file.strip_prefix(src()).expect("below src").to_string_lossy().to_string();
        if relative.starts_with("storage") {
            continue;
        }
        let code = code(&file);
        for name in drivers {
            let used = code.lines().filter(|line| !line.trim_start().starts_with("//")).any(|line| line.contains(name));
            if used {
                offenders.push(format!("{relative} uses {name}"));
            }
        }
    }
    assert!(offenders.is_empty(), "a database driver outside storage/: {offenders:#?}");
}

#[test]
fn only_the_binding_knows_http() {
    let http_names = ["reqwest", "axum", "hyper", "X-M2M-", "http::header", "HeaderMap", "StatusCode"];
    let mut offenders = Vec::new();
    for file in rust_files(&src()) {
        let relative = file.strip_prefix(src()).expect("below src").to_string_lossy().to_string();
        if relative.starts_with("binding") || matches!(relative.as_str(), "app.rs" | "main.rs" | "lib.rs") {
            continue;
        }
        let code = code(&file);
        for name in http_names {
            // Documentation may mention the HTTP binding; code may not use it.
            let used = code.lines().filter(|line| !line.trim_start().starts_with("//")).any(|line| line.contains(name));
            if used {
                offenders.push(format!("{relative} uses {name}"));
            }
        }
    }
    assert!(offenders.is_empty(), "HTTP outside the binding: {offenders:#?}");
}

#[test]
fn no_source_file_outgrows_its_room() {
    let long: Vec<String> = rust_files(&src())
        .into_iter()
        .filter_map(|file| {
            let lines = code(&file).lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines of code", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "files longer than {MAX_LINES} lines (split them by what they hold): {long:#?}");
}
