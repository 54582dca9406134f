//! `scimgate check`: exit codes, one line per problem with its key path, no secrets printed.

use crate::support::CheckOutput;
use crate::support::gateway::binary;
use crate::support::{GatewayConfig, TempDir, run_check, run_check_file};

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

/// Runs the binary with an empty environment plus PATH and `envs`; returns (exit code, stdout,
/// stderr). For subcommands that end by themselves (`check`, a `serve` that cannot start): one
/// that is still running after 20 s is killed and fails the test.
fn run_with_env(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run scimgate");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("scimgate {args:?} was still running after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout);
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code(), stdout, stderr)
}

/// An API key that is empty once its one trailing newline is trimmed, or only whitespace, is no
/// key: accepted, it would send an empty credential and turn off the screens that look for the
/// key in upstream responses. From the environment and from a file alike; `check --strict`
/// and `serve` both refuse it with the key's path.
#[test]
fn blank_api_keys_are_refused_from_the_environment_and_from_files() {
    let blanks = ["\n", "\r\n", " \n", "\t", "  ", "\n\n"];
    let dir = TempDir::new("blank-key");
    let cfg = base()
        .rule("env-rule", "groups", "env-group", "envkey")
        .extra(
            "[service_accounts.envkey]\nheader = \"x-api-key\"\napi_key_env = \"SCIM_ENV_KEY\"\n",
        );
    let (path, _) = cfg.write_to(&dir);
    let strict = |value: &str| {
        run_with_env(
            &[
                "check".as_ref(),
                "--strict".as_ref(),
                "--config".as_ref(),
                path.as_os_str(),
            ],
            &[("SCIM_ENV_KEY", value)],
        )
    };
    let (code, stdout, stderr) = strict("SENTINEL-env-key-ok\n");
    assert_eq!(
        code,
        Some(0),
        "a real key passes\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for blank in blanks {
        let (code, stdout, stderr) = strict(blank);
        assert_eq!(
            code,
            Some(1),
            "env key {blank:?} accepted\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr.lines().any(
                |l| l.starts_with("  - service_accounts.envkey.api_key_env:")
                    && l.contains("SCIM_ENV_KEY")
            ),
            "env key {blank:?}: the problem names the variable and its key path:\n{stderr}"
        );
        let (code, stdout, stderr) = run_with_env(
            &["serve".as_ref(), "--config".as_ref(), path.as_os_str()],
            &[("SCIM_ENV_KEY", blank)],
        );
        assert_eq!(
            code,
            Some(1),
            "serve with env key {blank:?}\nstderr:\n{stderr}"
        );
        assert!(!stdout.contains("\"listening\""), "{stdout}");
    }

    let key_file = dir.path().join("provisioner.key");
    for blank in blanks {
        std::fs::write(&key_file, blank).expect("write key file");
        let (code, stdout, stderr) = strict("SENTINEL-env-key-ok");
        assert_eq!(
            code,
            Some(1),
            "key file {blank:?} accepted\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("  - service_accounts.provisioner.api_key_file:")),
            "key file {blank:?}: the problem names the key path:\n{stderr}"
        );
    }
}

/// `refetch_cooldown` bounds the fetches a stranger's unknown `kid`s can cause; zero (or less
/// than the documented 1 s floor) would leave them unbounded.
#[test]
fn refetch_cooldown_has_a_floor() {
    for (value, ok) in [
        ("\"0s\"", false),
        ("\"0\"", false),
        ("\"999ms\"", false),
        ("\"1s\"", true),
        ("\"30s\"", true),
    ] {
        let dir = TempDir::new("cooldown");
        let (path, _) = base().set("jwt", "refetch_cooldown", value).write_to(&dir);
        let out = run_check_file(&path, &[]);
        if ok {
            assert_eq!(out.code, Some(0), "{value}\nstderr:\n{}", out.stderr);
        } else {
            assert_eq!(
                out.code,
                Some(1),
                "{value} accepted\nstdout:\n{}",
                out.stdout
            );
            assert!(
                out.stderr
                    .lines()
                    .any(|l| l.starts_with("  - jwt.refetch_cooldown:") && l.contains("1s")),
                "{value}: the problem names the key and the floor:\n{}",
                out.stderr
            );
        }
    }
    // Inside [[tenants]] the path names the tenant.
    let out = run_check(
        "[[tenants]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream.url = \"https://scim.example.com/v2\"\n\
         jwt.jwks_url = \"https://idp.example.com/keys\"\njwt.refetch_cooldown = \"0s\"\n\
         [[tenants.rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"v\"\nservice_account = \"sa\"\n\
         [tenants.service_accounts.sa]\nheader = \"x-api-key\"\napi_key_env = \"PATH\"\n",
    );
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("  - tenants[0].jwt.refetch_cooldown:")),
        "{}",
        out.stderr
    );
}

/// The duplicate-name problem points at the tenant that repeats the name, counted in the config
/// as written, also when an earlier tenant has problems of its own.
#[test]
fn duplicate_tenant_name_names_the_right_tenant() {
    let tenant = |name: &str, prefix: &str, upstream: &str| {
        format!(
            "[[tenants]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\n{upstream}\
             jwt.jwks_url = \"https://idp.example.com/keys\"\n\
             [[tenants.rules]]\nname = \"r\"\nclaim = \"groups\"\nvalue = \"v\"\nservice_account = \"sa\"\n\
             [tenants.service_accounts.sa]\nheader = \"x-api-key\"\napi_key_env = \"PATH\"\n\n"
        )
    };
    let url = "upstream.url = \"https://scim.example.com/v2\"\n";
    let out = run_check(&format!(
        "{}{}{}",
        // tenants[0] has no upstream.url: a problem of its own, and no validated tenant.
        tenant("broken", "/broken", ""),
        tenant("dup", "/one", url),
        tenant("dup", "/two", url),
    ));
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  - tenants[0].upstream.url:")),
        "{}",
        out.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  - tenants[2].name:")
            && l.contains("duplicate tenant name \"dup\"")),
        "the repeated name is tenants[2]'s:\n{}",
        out.stderr
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("  - tenants[1].name:")),
        "tenants[1] is the first \"dup\", not the duplicate:\n{}",
        out.stderr
    );
}
