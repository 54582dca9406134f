//! Dependency hygiene (threats.md T45, also T13 and T34): the resolved versions in Cargo.lock
//! must include the fixes this gateway relies on. `cargo audit` does not know every advisory
//! (CVE-2026-25537 is a GitHub advisory only), so the minimums are pinned here.

use std::collections::BTreeMap;

/// Every (name → versions) pair resolved in Cargo.lock.
fn resolved() -> BTreeMap<String, Vec<Vec<u64>>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock");
    let text = std::fs::read_to_string(path).expect("read Cargo.lock");
    let mut out: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "[[package]]" {
            name = None;
        } else if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_owned());
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), &name) {
            out.entry(n.clone())
                .or_default()
                .push(parse(v.trim_matches('"')));
        }
    }
    out
}

/// `1.2.3` → [1, 2, 3, 1]; a pre-release (`1.2.3-rc.1`) → [1, 2, 3, 0], so it sorts before the
/// release (SemVer §11); build metadata is ignored.
fn parse(version: &str) -> Vec<u64> {
    let version = version.split('+').next().unwrap_or("");
    let (core, pre) = match version.split_once('-') {
        Some((core, _)) => (core, true),
        None => (version, false),
    };
    let mut out: Vec<u64> = core.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    out.push(u64::from(!pre));
    out
}

/// Crate, minimum version, and why.
const MINIMUMS: &[(&str, &str, &str)] = &[
    (
        "jsonwebtoken",
        "10.3.0",
        "CVE-2026-25537 / GHSA-h395-gr6q-cpjc: wrongly typed exp/nbf skipped validation",
    ),
    (
        "h2",
        "0.4.16",
        "RUSTSEC-2026-0258: unbounded empty DATA frames (also RUSTSEC-2024-0332, -2024-0003)",
    ),
    (
        "hyper",
        "1.0.0",
        "hyper 0.14 smuggling/parsing advisories; header_read_timeout needs 1.x with a timer",
    ),
    (
        "rustls",
        "0.23.18",
        "RUSTSEC-2024-0399 (Acceptor panic) and RUSTSEC-2024-0336 (complete_io loop)",
    ),
    (
        "rustls-webpki",
        "0.101.4",
        "RUSTSEC-2023-0053: CPU denial of service in certificate path building",
    ),
];

/// T45 Cargo.lock resolves no vulnerable version of the crates the gateway's security rests on;
/// each must be present, and every resolved copy must meet the minimum.
#[test]
fn t45_lockfile_pins_patched_versions() {
    let lock = resolved();
    let mut failures = Vec::new();
    for (name, minimum, why) in MINIMUMS {
        let min = parse(minimum);
        match lock.get(*name) {
            None => failures.push(format!("{name}: not in Cargo.lock (expected >= {minimum})")),
            Some(versions) => {
                for v in versions.iter().filter(|v| **v < min) {
                    failures.push(format!("{name} {v:?} < {minimum}: {why}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The parser itself: comparisons are numeric, not lexical.
#[test]
fn lockfile_versions_compare_numerically() {
    assert!(parse("0.4.9") < parse("0.4.16"));
    assert!(parse("10.3.0") > parse("9.99.99"));
    assert!(parse("0.23.18-alpha") < parse("0.23.18"));
    assert!(parse("0.23.18+build.5") == parse("0.23.18"));
    assert!(resolved().contains_key("jsonwebtoken"));
}
