//! Where the recorded traffic lives.
//!
//! Two places share one layout (`manifest.tsv` + `pcap/`, `payloads/manifest.tsv` +
//! `payloads/`):
//!
//! - the project's own `testdata/`, recorded by `testdata/record.sh`: always there, in every
//!   clone, so that no test depends on data that may be absent;
//! - an extra conformance corpus, when present: `$BULKHEAD_CORPUS`, else `../shared/corpus`
//!   beside the workspace. Setting `BULKHEAD_CORPUS` to a directory without a `manifest.tsv`
//!   (`BULKHEAD_CORPUS=/nonexistent`) hides the default one too, which is how to check that the
//!   suite passes on a fresh clone.
//!
//! Manifests are tab-separated; `#` starts a comment line. Columns: file (relative to the
//! manifest's directory), transport (`TCP`, `UDP`, `UDP/QUIC`), expected server names (comma
//! separated, `-` = none may be found), then columns the tests here do not read.

use std::path::{Path, PathBuf};
use std::sync::Once;

/// The project's own recorded traffic (`testdata/` at the workspace root).
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// The extra conformance corpus, when present; says once per process where it looked when it is
/// not.
pub fn extra_corpus() -> Option<PathBuf> {
    let dir = match std::env::var_os("BULKHEAD_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
    };
    if dir.join("manifest.tsv").is_file() {
        return Some(dir);
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        eprintln!(
            "note: no extra corpus at {} (set BULKHEAD_CORPUS): running on testdata/ only",
            dir.display()
        );
    });
    None
}

/// Every corpus directory with its origin (`testdata`, `extra`): the project's `testdata/` first,
/// then the extra corpus if present.
pub fn corpus_dirs() -> Vec<(&'static str, PathBuf)> {
    let mut dirs = vec![("testdata", testdata_dir())];
    dirs.extend(extra_corpus().map(|d| ("extra", d)));
    dirs
}

/// One row of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    /// `testdata` or `extra`: which corpus the row comes from.
    pub origin: &'static str,
    /// The file, resolved against the manifest's directory.
    pub path: PathBuf,
    /// The file column as written (`pcap/x.pcap`, `client__curl.bin`).
    pub file: String,
    /// `TCP`, `UDP` or `UDP/QUIC`.
    pub transport: String,
    /// The expected server names column as written (`-` = none).
    pub expected: String,
}

impl ManifestRow {
    /// `origin:file`, for messages and tables (the same file name may be in both corpora).
    pub fn label(&self) -> String {
        format!("{}:{}", self.origin, self.file)
    }

    /// The expected names in order, without the `-` placeholders.
    pub fn expected_names(&self) -> Vec<String> {
        expected_names(&self.expected)
    }

    /// Reads the file; panics with its path when it cannot (the manifest promised it).
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path)
            .unwrap_or_else(|e| panic!("{} (listed in a manifest): {e}", self.path.display()))
    }
}

/// The names of an expected-names column, in order; `-` and empty entries are dropped.
pub fn expected_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "-")
        .map(str::to_owned)
        .collect()
}

/// Parses the manifest at `manifest`, tagging its rows with `origin`; panics on a missing file or
/// a short row, since both mean the recorded data itself is broken.
pub fn read_manifest(manifest: &Path, origin: &'static str) -> Vec<ManifestRow> {
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let text =
        std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert!(
                cols.len() >= 3,
                "{}: short row: {line:?}",
                manifest.display()
            );
            ManifestRow {
                origin,
                path: dir.join(cols[0]),
                file: cols[0].to_owned(),
                transport: cols[1].to_owned(),
                expected: cols[2].to_owned(),
            }
        })
        .collect()
}

/// The capture rows (`manifest.tsv`) of every corpus directory, testdata first.
pub fn captures() -> Vec<ManifestRow> {
    corpus_dirs()
        .iter()
        .flat_map(|(origin, d)| read_manifest(&d.join("manifest.tsv"), origin))
        .collect()
}

/// The payload rows (`payloads/manifest.tsv`) of every corpus directory whose file name starts
/// with one of `prefixes` (all rows when `prefixes` is empty), testdata first.
pub fn payloads(prefixes: &[&str]) -> Vec<ManifestRow> {
    corpus_dirs()
        .iter()
        .flat_map(|(origin, d)| read_manifest(&d.join("payloads/manifest.tsv"), origin))
        .filter(|r| prefixes.is_empty() || prefixes.iter().any(|p| r.file.starts_with(p)))
        .collect()
}

/// The real TLS ClientHellos among the payloads whose file name starts with one of `prefixes`
/// (every corpus directory, testdata first): TCP rows that expect exactly one name and hold a TLS
/// handshake record, with their bytes.
pub fn tls_hellos(prefixes: &[&str]) -> Vec<(ManifestRow, Vec<u8>)> {
    payloads(prefixes)
        .into_iter()
        .filter(|r| r.transport == "TCP" && r.expected_names().len() == 1)
        .filter_map(|r| {
            let bytes = r.bytes();
            (bytes.first() == Some(&22)).then_some((r, bytes))
        })
        .collect()
}

/// A payload of the project's testdata by file name; panics when it is missing.
pub fn testdata_payload(file: &str) -> Vec<u8> {
    let path = testdata_dir().join("payloads").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A capture of the project's testdata by file name (`pcap/NAME`); panics when it is missing.
pub fn testdata_capture(file: &str) -> PathBuf {
    let path = testdata_dir().join("pcap").join(file);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testdata_is_always_there_and_well_formed() {
        let caps = read_manifest(&testdata_dir().join("manifest.tsv"), "testdata");
        let pays = read_manifest(&testdata_dir().join("payloads/manifest.tsv"), "testdata");
        assert!(caps.len() >= 4 && pays.len() >= 6);
        for r in caps.iter().chain(&pays) {
            assert!(r.path.is_file(), "{} is listed but missing", r.file);
        }
    }

    #[test]
    fn expected_names_drop_placeholders() {
        assert_eq!(expected_names("-"), Vec::<String>::new());
        assert_eq!(
            expected_names("a.example, -,b.example"),
            ["a.example", "b.example"]
        );
    }
}
