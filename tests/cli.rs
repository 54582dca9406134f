//! `scimgate check`: exit codes, one line per problem with its key path, no secrets printed.

mod support;

use support::CheckOutput;
use support::gateway::binary;
use support::{GatewayConfig, TempDir, run_check, run_check_file};

fn assert_no_secret(out: &CheckOutput, secret: &str) {
    assert!(
        !out.stdout.contains(secret),
        "secret in check stdout:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains(secret),
        "secret in check stderr:\n{}",
        out.stderr
    );
}

/// A config that is valid apart from what a test changes.
fn base() -> GatewayConfig {
    GatewayConfig::new(
        "https://scim.example.com/api/scim/v2",
        "https://idp.example.com/oauth2/v1/keys",
    )
}

#[test]
fn shipped_config_passes_check() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scimgate.toml");
    assert!(path.exists(), "{} is missing", path.display());
    let out = run_check_file(&path, &[]);
    assert_eq!(
        out.code,
        Some(0),
        "check config/scimgate.toml\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stdout.trim().is_empty(), "check prints a summary");
}

#[test]
fn valid_config_passes_check_without_printing_the_key() {
    let dir = TempDir::new("check-ok");
    let (path, sentinels) = base().write_to(&dir);
    let out = run_check_file(&path, &["--strict"]);
    assert_eq!(
        out.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert_no_secret(&out, &sentinels["provisioner"]);
}

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let dir = TempDir::new("check-bad");
    let cfg = base()
        .rule("typo", "groups", "scim-admins", "prov")
        .set("jwt", "leeway", "\"10m\"");
    let (path, sentinels) = cfg.write_to(&dir);
    let out = run_check_file(&path, &[]);
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    // The unknown account is in the second rule: rules[1] (0-based, as in docs/contract.md).
    let rule_line = lines
        .iter()
        .find(|l| l.starts_with("  - rules[1].service_account:"))
        .unwrap_or_else(|| panic!("no rules[1].service_account line in:\n{}", out.stderr));
    assert!(rule_line.contains("\"prov\""), "{rule_line}");
    assert!(
        rule_line.contains("provisioner"),
        "names the known accounts: {rule_line}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  - jwt.leeway:")),
        "no jwt.leeway line in:\n{}",
        out.stderr
    );
    assert_no_secret(&out, &sentinels["provisioner"]);
}

#[test]
fn check_rejects_unknown_keys_by_path() {
    let out = run_check(&format!(
        "{}\n[server]\nlisten = \"127.0.0.1:0\"\nlisten_addr = \"x\"\n",
        "[upstream]\nurl = \"https://scim.example.com/v2\"\n\
             [jwt]\njwks_url = \"https://idp.example.com/keys\"\n\
             [[rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"v\"\nservice_account = \"a\"\n\
             [service_accounts.a]\nheader = \"x-api-key\"\napi_key_env = \"A_KEY\"\n"
    ));
    assert_eq!(
        out.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("  - server.listen_addr")),
        "unknown key not named:\n{}",
        out.stderr
    );
}

#[test]
fn unreadable_key_is_a_warning_unless_strict() {
    let dir = TempDir::new("check-key");
    let (path, _) = base().write_to(&dir);
    std::fs::remove_file(dir.path().join("provisioner.key")).expect("remove key file");
    let lenient = run_check_file(&path, &[]);
    assert_eq!(
        lenient.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        lenient.stdout,
        lenient.stderr
    );
    let strict = run_check_file(&path, &["--strict"]);
    assert_eq!(
        strict.code,
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        strict.stdout,
        strict.stderr
    );
    assert!(
        strict
            .stderr
            .lines()
            .any(|l| l.starts_with("  - service_accounts.provisioner")),
        "the problem names the account's key path:\n{}",
        strict.stderr
    );
}

#[test]
fn serve_with_an_invalid_config_exits_1_without_listening() {
    let dir = TempDir::new("serve-bad");
    let (path, sentinels) = base().set("jwt", "leeway", "\"10m\"").write_to(&dir);
    let output = std::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run scimgate serve");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("jwt.leeway"),
        "stderr names the problem:\n{stderr}"
    );
    assert!(!stdout.contains("\"listening\""));
    assert!(
        !stdout.contains(&sentinels["provisioner"]) && !stderr.contains(&sentinels["provisioner"])
    );
}
