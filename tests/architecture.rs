//! The module structure README's Architecture section describes, checked on the sources: no
//! import cycle between the crate's top-level modules (only `app` and `main` may depend on
//! everything, and nothing on them), no `crate::grpc` outside the gRPC adapter and the wiring,
//! and a domain (edge, routing, federation) free of transport crates and generated types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/http/play.rs` → `http`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules `text` names as `crate::X` (in paths, `use` lists and doc links).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            // `use crate::{a, b::c, ...}`: the first segment of each item.
            let end = list.find('}').unwrap_or(list.len());
            for item in list[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found.retain(|n| !n.is_empty() && n != "self");
    found
}

/// Top-level module → the modules it names.
type Deps = BTreeMap<String, BTreeSet<String>>;
/// Top-level module → its files and their texts.
type Texts = BTreeMap<String, Vec<(PathBuf, String)>>;

fn graph() -> (Deps, Texts) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut deps = Deps::new();
    let mut texts = Texts::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "bin" || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        let named = crate_paths(&text);
        let entry = deps.entry(module.clone()).or_default();
        entry.extend(named.into_iter().filter(|n| *n != module));
        texts.entry(module).or_default().push((file, text));
    }
    (deps, texts)
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let (deps, _) = graph();
    for wiring in ["app", "main"] {
        for (module, named) in &deps {
            assert!(
                !named.contains(wiring) || module == "app" || module == "main",
                "{module} depends on {wiring}, which only wires"
            );
        }
    }
    // Depth-first search for a back edge, ignoring the wiring.
    fn visit<'a>(
        node: &'a str,
        deps: &'a Deps,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node);
        for next in deps.get(node).into_iter().flatten() {
            if deps.contains_key(next.as_str()) {
                visit(next, deps, path, done);
            }
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for module in deps.keys().filter(|m| *m != "app" && *m != "main") {
        visit(module, &deps, &mut Vec::new(), &mut done);
    }
}

#[test]
fn grpc_is_named_only_by_its_adapter_and_the_wiring() {
    let (deps, _) = graph();
    for (module, named) in &deps {
        if named.contains("grpc") {
            assert!(
                ["grpc", "app", "main"].contains(&module.as_str()),
                "{module} names crate::grpc"
            );
        }
    }
}

#[test]
fn the_domain_is_free_of_transports() {
    let (deps, texts) = graph();
    let transports = ["tonic", "axum", "hyper", "sqlx", "redis", "prost"];
    for domain in ["edge", "routing", "federation"] {
        for forbidden in ["proto", "grpc", "http", "api", "state", "replicas", "wire"] {
            assert!(
                !deps[domain].contains(forbidden),
                "{domain} names crate::{forbidden}"
            );
        }
        for (file, text) in &texts[domain] {
            for crate_name in transports {
                let used = text.contains(&format!("{crate_name}::"))
                    && text.lines().any(|line| {
                        let code = line.split("//").next().unwrap_or("");
                        code.contains(&format!("{crate_name}::"))
                            && !code.contains(&format!("_{crate_name}::"))
                    });
                assert!(!used, "{} uses {crate_name}", file.display());
            }
        }
    }
}

#[test]
fn the_scanner_sees_imports() {
    let named = crate_paths("use crate::{a::B, c};\nfn f() { crate::d::e(); } // [`crate::f`]");
    assert_eq!(named.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "f"]);
}
