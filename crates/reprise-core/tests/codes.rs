//! The error-code registry matches the code: every code the workspace's
//! sources build is listed in `reprise_core::codes` with the kind it is
//! built with, and every listed code is built somewhere.

use reprise_core::codes::{lookup, CODES};
use reprise_core::ErrorKind;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

fn code_shaped(s: &str) -> bool {
    s.contains('_')
        && !s.starts_with('_')
        && !s.ends_with('_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The kind an error constructor ending `before` gives its code, or None
/// for `with_code(` and helpers that keep another kind; `Err(())` when
/// `before` is no error constructor at all.
fn constructor(before: &str) -> Result<Option<ErrorKind>, ()> {
    let before: String = before.split_whitespace().collect();
    for (call, kind) in [
        ("Error::invalid(", ErrorKind::Invalid),
        ("Error::conflict(", ErrorKind::Conflict),
        ("Error::unavailable(", ErrorKind::Unavailable),
    ] {
        if before.ends_with(call) {
            return Ok(Some(kind));
        }
    }
    for (name, kind) in [
        ("NotFound", ErrorKind::NotFound),
        ("Invalid", ErrorKind::Invalid),
        ("Conflict", ErrorKind::Conflict),
        ("Unauthorized", ErrorKind::Unauthorized),
        ("Forbidden", ErrorKind::Forbidden),
        ("Unavailable", ErrorKind::Unavailable),
        ("Corrupt", ErrorKind::Corrupt),
        ("Internal", ErrorKind::Internal),
    ] {
        if before.ends_with(&format!("ErrorKind::{name},")) && before.contains("Error::new(") {
            return Ok(Some(kind));
        }
    }
    if before.ends_with("with_code(") || before.ends_with("refused(") || before.ends_with("=>") {
        return Ok(None);
    }
    Err(())
}

/// Every code the sources build, with the kinds it is built with.
fn codes_in_sources() -> BTreeMap<String, BTreeSet<String>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Test modules assert codes; they do not build them.
        let text = text.split("#[cfg(test)]").next().unwrap();
        let pieces: Vec<&str> = text.split('"').collect();
        for i in (1..pieces.len()).step_by(2) {
            let literal = pieces[i];
            let before = &pieces[i - 1][pieces[i - 1].len().saturating_sub(120)..];
            let before = before.trim_end();
            if before.ends_with("not_found(") && literal.bytes().all(|b| b.is_ascii_lowercase()) {
                found
                    .entry(format!("{literal}_not_found"))
                    .or_default()
                    .insert("not_found".into());
                continue;
            }
            let word = literal
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let kind = match constructor(before) {
                Ok(Some(kind)) if word => format!("{kind:?}"),
                Ok(None) if code_shaped(literal) => String::new(),
                _ => continue,
            };
            if before.ends_with("=>") && !literal.ends_with("_limit_reached") {
                continue;
            }
            found.entry(literal.to_string()).or_default().insert(kind);
        }
    }
    found
}

#[test]
fn every_error_code_is_listed_with_its_kind() {
    let found = codes_in_sources();
    let missing: Vec<&String> = found.keys().filter(|c| lookup(c).is_none()).collect();
    assert!(
        missing.is_empty(),
        "codes built but not listed in reprise_core::codes: {missing:?}"
    );
    for (code, kinds) in &found {
        let listed = format!("{:?}", lookup(code).unwrap().kind);
        let built: Vec<&String> = kinds
            .iter()
            .filter(|k| !k.is_empty() && *k != "not_found")
            .collect();
        assert!(
            built.is_empty() || built.contains(&&listed),
            "{code} is listed as {listed} but built as {built:?}"
        );
    }
    let unused: Vec<&str> = CODES
        .iter()
        .map(|c| c.code)
        .filter(|c| !found.contains_key(*c))
        .collect();
    assert!(unused.is_empty(), "listed but never built: {unused:?}");
}

#[test]
fn the_registry_is_sorted_and_has_no_repeats() {
    for pair in CODES.windows(2) {
        assert!(
            pair[0].code < pair[1].code,
            "{} before {}",
            pair[0].code,
            pair[1].code
        );
    }
}
