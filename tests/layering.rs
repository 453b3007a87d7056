//! The module graph points one way: every `crate::...` path in src/ names a module on the
//! same layer or a lower one (docs/DESIGN.md, "Layers"). This test reads the sources
//! (no external tools) and fails naming file, line and import for each path that
//! reaches up; an intra-doc link (``[`crate::x`]``) in a doc comment counts too. Test
//! code is exempt: `#[cfg(test)]` items and the test-only files
//! (`*_tests.rs`, `src/codec/tests/`, `src/testing.rs`) may reach anywhere.
//!
//! Every top-level module must be placed in `LAYERS`, so a new one is placed on purpose.

use std::path::{Path, PathBuf};

/// Top to bottom. A module may import from its own layer and the layers below it.
/// The leaves at the bottom import nothing of the crate.
const LAYERS: &[&[&str]] = &[
    // The binary and its CLI (src/main.rs reaches the library as `midge::`); `cli` is
    // where `passwd` is headed (issue 13, item 6).
    &["main", "passwd", "cli"],
    // `midge check-config`: the files and listeners the server would open.
    &["check"],
    // Accepts sockets, owns shutdown.
    &["server"],
    // The operator's HTTP listener: reads the broker, the metrics and the store's health.
    &["http"],
    &["tls"],
    // MQTT over WebSockets: the HTTP upgrade, and a byte stream over binary frames.
    &["websocket"],
    // One connection's read/write loop.
    &["connection"],
    &["handshake"],
    // One handler per packet type.
    &["handlers"],
    // A connected client's state and its withheld-acknowledgement gate.
    &["client"],
    // The `$SYS` publisher: reads the broker's figures, publishes through the broker.
    &["sys"],
    &["broker"],
    &["retain"],
    &["router"],
    &["session"],
    &["subscriptions"],
    &["outbox"],
    &["store"],
    &["auth"],
    &["message"],
    &["config"],
    &["expiry"],
    &["codec"],
    // Leaves.
    // The park lot: idle connections' sockets in one epoll instance, outside tokio.
    &["park"],
    &["chain"],
    &["id_hash"],
    &["buffers"],
    &["topic"],
    &["log_limit"],
    &["log_peer"],
    &["memory"],
    // Event counters, histograms and listener gauges for `$SYS` and `/metrics`.
    &["metrics"],
    &["linger"],
    &["log_file"],
    &["systemd"],
];

/// Modules that exist only for tests (declared `#[cfg(test)]` in lib.rs).
const TEST_ONLY: &[&str] = &["testing"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to (`None` for lib.rs, the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

fn is_test_file(src: &Path, file: &Path) -> bool {
    let rel = file.strip_prefix(src).unwrap_or(file).to_string_lossy();
    rel.ends_with("_tests.rs")
        || rel.split('/').any(|part| part == "tests")
        || module_of(src, file).is_some_and(|m| TEST_ONLY.contains(&m.as_str()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments, string and character literals blanked out (newlines kept,
/// so line numbers stay right): a `crate::` in a doc comment or a message is not an
/// import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { '\n' } else { ' ' };
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(' ');
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                out.push(blank(b[i]));
                i += 1;
            }
            out.push_str("  ");
            i += 2;
        } else if b[i] == b'"' {
            // Raw strings (r"..", r#".."#) have no escapes; the few in src/ hold no quote.
            let raw = i > 0 && (b[i - 1] == b'r' || b[i - 1] == b'#');
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && !raw {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A character literal such as '{' (a lifetime has no closing quote).
            out.push_str("   ");
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // An escaped character literal such as '\'' or '\n': up to its closing quote.
            let end = b[i + 3..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(b.len(), |k| i + 3 + k + 1);
            while i < end {
                out.push(' ');
                i += 1;
            }
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// `code` with every `#[cfg(test)]` item blanked out (the item's braces are matched;
/// an item ending in `;`, such as `mod tests;`, ends there).
fn without_test_items(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= out.len() {
        if out[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        let mut j = i + marker.len();
        let mut depth = 0usize;
        while j < out.len() {
            match out[j] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                ';' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = j.min(out.len() - 1) + 1;
        for c in &mut out[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j + 1;
    }
    out.into_iter().collect()
}

/// Every `crate::<module>` a line of code names, with the path as written. A grouped
/// `crate::{a, b::c}` names each of its members.
fn crate_paths(line: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // Not the tail of another identifier (`midge_crate::`).
        let before = rest[..at].chars().last();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        push_member(&group[start..k], &mut found);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_member(&group[start..k], &mut found);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            push_member(after, &mut found);
        }
    }
    found
}

fn push_member(path: &str, found: &mut Vec<(String, String)>) {
    let path = path.trim();
    let module: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !module.is_empty() {
        let mut shown: String = path
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | ':'))
            .collect();
        if path[shown.len()..].starts_with('{') {
            shown.push_str("{..}");
        }
        found.push((module, format!("crate::{shown}")));
    }
}

/// The imports of one file that reach up, as "file:line: ..." lines.
fn violations(file: &str, module: &str, text: &str) -> Vec<String> {
    let Some(own) = layer_of(module) else {
        return vec![format!("{file}: module `{module}` is not placed in LAYERS")];
    };
    let code = without_test_items(&code_only(text));
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        for (target, path) in crate_paths(line) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(layer) if layer >= own => {}
                Some(_) => found.push(format!(
                    "{file}:{}: `{module}` imports `{path}`, from a layer above it",
                    n + 1
                )),
                None => found.push(format!(
                    "{file}:{}: `{path}` names module `{target}`, which is not placed in LAYERS",
                    n + 1
                )),
            }
        }
    }
    // An intra-doc link is a reference too (rustdoc resolves it): a doc comment may
    // mention a module above in words, but not link to it.
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !(trimmed.starts_with("///") || trimmed.starts_with("//!")) {
            continue;
        }
        for (i, _) in line.match_indices("[`crate::") {
            let Some((target, path)) = crate_paths(&line[i + 2..]).into_iter().next() else {
                continue;
            };
            if target != module && layer_of(&target).is_some_and(|layer| layer < own) {
                found.push(format!(
                    "{file}:{}: `{module}` links to `{path}` in a doc comment, a layer above it",
                    n + 1
                ));
            }
        }
    }
    found
}

#[test]
fn every_import_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if is_test_file(&src, file) {
            continue;
        }
        modules.insert(module.clone());
        let text = std::fs::read_to_string(file).expect("source is readable");
        checked += without_test_items(&code_only(&text))
            .lines()
            .map(|line| crate_paths(line).len())
            .sum::<usize>();
        let name = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(violations(&name, &module, &text));
    }
    for module in &modules {
        if layer_of(module).is_none() && !TEST_ONLY.contains(&module.as_str()) {
            problems.push(format!("src/{module}: not placed in LAYERS"));
        }
    }
    // A reader that silently saw nothing would pass too.
    assert!(checked > 100, "only {checked} crate:: paths found in src/");
    assert!(
        problems.is_empty(),
        "imports against the layering (docs/DESIGN.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn an_upward_import_is_named_with_file_and_line() {
    let text = "//! crate::handlers in a comment is fine\n\
                /// but not a link: [`crate::server::run`]\n\
                use crate::codec::QoS;\n\
                use crate::{router::Target, handlers::publish};\n\
                fn f() { let _ = \"crate::server\"; crate::connection::serve(); }\n\
                #[cfg(test)]\nmod tests { use crate::server::run; }\n";
    let found = violations("src/broker/x.rs", "broker", text);
    assert_eq!(
        found,
        [
            "src/broker/x.rs:4: `broker` imports `crate::handlers::publish`, from a layer above it",
            "src/broker/x.rs:5: `broker` imports `crate::connection::serve`, from a layer above it",
            "src/broker/x.rs:2: `broker` links to `crate::server::run` in a doc comment, a layer above it",
        ]
    );
}

#[test]
fn the_layers_name_each_module_once() {
    let mut all: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n);
}
