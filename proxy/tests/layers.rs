//! The proxy's layering, held: every `crate::` path in `proxy/src` is read (comments aside) and
//! checked against the layer picture of `docs/design.md`.
//!
//! - A file may name its own layer or a layer below it, never one above ([`RANKS`]).
//! - Inside a layer, its modules (the files and folders directly in it) import each other without a
//!   cycle. A layer's `mod.rs` holds only its doc, its module list and its state: it is the layer's
//!   root, which its modules may read, so it is not a node of that graph.
//!
//! Reading source text rather than compiler output keeps the test fast and dependency-free; a path
//! spelled through a `use` alias still starts with `crate::`, which is all it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; a layer may import those of a lower rank, and its own.
const RANKS: &[(&str, u8)] = &[
    ("config", 0),
    ("metrics", 0),
    ("telemetry", 1),
    ("backend", 2),
    ("mcp", 3),
    ("edge", 4),
    ("ops", 5),
];

fn rank(layer: &str) -> Option<u8> {
    RANKS
        .iter()
        .find(|(name, _)| *name == layer)
        .map(|(_, r)| *r)
}

/// A file, by its path under `src` (`mcp/relay/fast.rs`).
struct Source {
    path: String,
    text: String,
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(Source {
                path: rel.to_string_lossy().replace('\\', "/"),
                text,
            });
        }
    }
}

/// The code of a file without its comments (line and doc comments; the proxy has no block ones).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string literal ("http://...") is not a comment.
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` in `code`, as its first two segments (`b` may be empty).
fn crate_paths(code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`
        }
        let segment = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let first = segment(rest);
        let after = &rest[first.len()..];
        let second = after.strip_prefix("::").map(segment).unwrap_or_default();
        out.push((first, second));
    }
    out
}

/// Where a file sits: its layer (first folder, or the file's own module at the top) and its module
/// inside the layer (`None` for the layer's `mod.rs`).
fn place(path: &str) -> (String, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    let strip = |s: &str| s.trim_end_matches(".rs").to_string();
    match parts.as_slice() {
        [file] => (strip(file), None),
        [layer, "mod.rs"] => (layer.to_string(), None),
        [layer, module, ..] => (layer.to_string(), Some(strip(module))),
        [] => (String::new(), None),
    }
}

fn read_all() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&root, &root, &mut out);
    assert!(
        out.len() > 20,
        "found the proxy's sources in {}",
        root.display()
    );
    out
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let mut upward = Vec::new();
    for source in read_all() {
        let (layer, _) = place(&source.path);
        // The crate root (lib.rs, main.rs) composes the layers; it is above them all.
        let Some(own) = rank(&layer) else {
            assert!(
                ["lib", "main"].contains(&layer.as_str()),
                "{} is in no layer: add its folder to RANKS and to docs/design.md",
                source.path
            );
            continue;
        };
        for (target, _) in crate_paths(&code(&source.text)) {
            if target == layer {
                continue;
            }
            match rank(&target) {
                Some(r) if r < own => {}
                _ => upward.push(format!("{} imports crate::{target}", source.path)),
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports that point up or sideways (see docs/design.md, The layers):\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_modules_of_a_layer_import_each_other_without_a_cycle() {
    // layer -> module -> the modules of the same layer it imports
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for source in read_all() {
        let (layer, Some(module)) = place(&source.path) else {
            continue;
        };
        let graph = graphs.entry(layer.clone()).or_default();
        let edges = graph.entry(module.clone()).or_default();
        for (target, second) in crate_paths(&code(&source.text)) {
            if target == layer && !second.is_empty() && second != module {
                edges.insert(second);
            }
        }
    }
    for (layer, graph) in &graphs {
        if let Some(cycle) = find_cycle(graph) {
            panic!("a cycle among {layer}'s modules: {}", cycle.join(" -> "));
        }
    }
}

/// A cycle in `graph`, as the modules on it (first repeated last), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_checks_read_paths_the_way_the_proxy_spells_them() {
    let text = "use crate::mcp::relay::{self, Watch}; // crate::ops::admin in a comment\n\
                let url = \"http://x\"; crate::backend::sessions::open(app);\n\
                /// [`crate::edge`]\n\
                mycrate::no";
    let paths = crate_paths(&code(text));
    assert_eq!(
        paths,
        vec![
            ("mcp".to_string(), "relay".to_string()),
            ("backend".to_string(), "sessions".to_string()),
        ]
    );
    assert_eq!(
        place("mcp/relay/fast.rs"),
        ("mcp".into(), Some("relay".into()))
    );
    assert_eq!(place("mcp/mod.rs"), ("mcp".into(), None));
    assert_eq!(place("lib.rs"), ("lib".into(), None));
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&graph).is_some());
    graph.insert("b".to_string(), BTreeSet::new());
    assert!(find_cycle(&graph).is_none());
}
