//! The layers of docs/design.md, enforced: a module of `src/` imports only
//! from its own module and from modules of lower layers. An import that runs
//! upwards (or sideways, to a leaf listed after its own) fails here, naming
//! the file, the line and both modules. The layers are listed once, in
//! [`LAYERS`]; docs/design.md draws the same order, and src/lib.rs declares
//! exactly these modules (both checked below).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest first: each may import only the
/// ones before it. The leaves come first (each imports only earlier
/// leaves), then one layer per line of docs/design.md's diagram; `main.rs`
/// (the binary) sits on top of them all.
const LAYERS: &[&str] = &[
    "clock",
    "exit",
    "net",
    "shared_memory",
    "faults",
    "logging",
    "tuning",
    "lifecycle",
    "proto",
    "tls",
    "api",
    "metrics",
    "orders",
    "store",
    "http",
    "config",
    "worker",
    "master",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/http/server.rs` is `["http", "server"]`,
/// `src/http/mod.rs` is `["http"]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The source without comments (line comments and doc comments; block
/// comments are not used here) and without string literals, so that a path
/// named in prose or in a message is not taken for an import.
fn code_of(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| {
            let mut out = String::new();
            let mut in_string = false;
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_string => {
                        chars.next();
                    }
                    '"' => in_string = !in_string,
                    '/' if !in_string && chars.peek() == Some(&'/') => break,
                    c if !in_string => out.push(c),
                    _ => {}
                }
            }
            out
        })
        .collect()
}

/// The first identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules that `code` (the text after `crate::`, or after a
/// `super::` that reaches the crate root) names: one, or each of a
/// `{a, b::c}` group.
fn named_modules(after: &str) -> Vec<String> {
    let Some(group) = after.strip_prefix('{') else {
        return vec![ident(after).to_string()];
    };
    let mut names = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(group[start..].trim_start()).to_string());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(group[start..].trim_start()).to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Each (line number, top-level module) a file's code refers to outside
/// its own top-level module.
fn references(file: &Path) -> Vec<(usize, String)> {
    let path = module_path(file);
    let text = std::fs::read_to_string(file).unwrap();
    // Joined, so that a `use crate::{` group may span lines; each code
    // line keeps its number through `starts`.
    let lines = code_of(&text);
    let mut joined = String::new();
    let mut starts = Vec::new();
    for line in &lines {
        starts.push(joined.len());
        joined.push_str(line);
        joined.push('\n');
    }
    let line_of = |at: usize| starts.partition_point(|&s| s <= at);
    let mut out = Vec::new();
    for (at, _) in joined.match_indices("crate::") {
        if joined[..at].ends_with('$') {
            continue; // `$crate::` in a macro: this crate's own item
        }
        for name in named_modules(&joined[at + "crate::".len()..]) {
            out.push((line_of(at), name));
        }
    }
    // `super::` from a module's root file (`x/mod.rs`, `x.rs`) reaches the
    // crate root: what follows names a top-level module.
    if path.len() == 1 {
        for (at, _) in joined.match_indices("super::") {
            for name in named_modules(&joined[at + "super::".len()..]) {
                out.push((line_of(at), name));
            }
        }
    }
    out.retain(|(_, name)| name != &path[0]);
    out
}

#[test]
fn every_import_runs_downwards() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut upwards = Vec::new();
    let mut checked = 0;
    for file in &files {
        let path = module_path(file);
        if path == ["main"] || path == ["lib"] {
            continue; // the binary on top; the list of modules
        }
        let own = rank(&path[0]).unwrap_or_else(|| {
            panic!(
                "{}: module {} is in no layer of tests/layers.rs",
                file.display(),
                path[0]
            )
        });
        for (line, name) in references(file) {
            checked += 1;
            match rank(&name) {
                Some(theirs) if theirs < own => {}
                Some(_) => upwards.push(format!(
                    "{}:{line}: {} imports {name}, which is not below it",
                    file.strip_prefix(src()).unwrap().display(),
                    path[0]
                )),
                // Items of the crate root itself (none today) are fine.
                None => {}
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} references found: the scan is broken"
    );
    assert!(
        upwards.is_empty(),
        "imports that run upwards (docs/design.md, \"Layers\"):\n{}",
        upwards.join("\n")
    );
}

#[test]
fn the_layers_are_the_crates_modules_and_the_designs_diagram() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let layered: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(
        declared, layered,
        "src/lib.rs declares other modules than LAYERS"
    );

    // The diagram in docs/design.md, top (main) to bottom: one module per
    // line, first word; what is not a module (main, `leaves:`) is skipped.
    let design =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md"))
            .unwrap();
    let section = design
        .split("\n## Layers")
        .nth(1)
        .expect("docs/design.md has a \"## Layers\" section");
    let diagram = section
        .split("```")
        .nth(1)
        .expect("the Layers section opens with its diagram");
    let mut drawn: Vec<&str> = diagram
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| layered.contains(w))
        .collect();
    drawn.reverse();
    assert_eq!(
        drawn, LAYERS,
        "docs/design.md draws the layers in another order"
    );
}

#[test]
fn the_scan_sees_groups_and_roots() {
    assert_eq!(named_modules("store::Doc;"), ["store"]);
    assert_eq!(
        named_modules("{clock, http::{a, b}, metrics::X};"),
        ["clock", "http", "metrics"]
    );
    assert_eq!(
        code_of("use a; // crate::master\nlet s = \"crate::worker\"; crate::net::x()"),
        ["use a; ", "let s = ; crate::net::x()"]
    );
}
