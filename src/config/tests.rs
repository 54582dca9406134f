//! Config loading and validation: defaults, every problem with its path, env overrides, secrets.

// figment's Jail closures return figment::Error, which is large: its API, not ours.
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

fn key_file(dir: &std::path::Path, content: &str) -> String {
    let path = dir.join("key");
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn minimal(key: &str) -> String {
    format!(
        r#"
[upstream]
url = "http://127.0.0.1:9000/scim/v2/"
[jwt]
jwks_url = "https://idp.example.com/keys"
issuer = "https://idp.example.com"
audience = "scimgate"
[[rules]]
name = "r"
claim = "groups"
value = "scim"
service_account = "sa"
[service_accounts.sa]
scheme = "Bearer"
api_key_file = "{key}"
"#
    )
}

fn problems(text: &str) -> Vec<String> {
    Config::from_toml(text)
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn minimal_config_gets_design_defaults() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-a", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml(&minimal(&key_file(&dir, "SENTINEL\n"))).unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.server.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(config.tenants[0].jwt.leeway, Duration::from_secs(30));
    assert_eq!(
        config.tenants[0].jwt.algorithms,
        vec![Algorithm::RS256, Algorithm::ES256]
    );
    assert_eq!(config.tenants[0].jwt.audience, vec!["scimgate".to_owned()]);
    assert_eq!(config.tenants[0].upstream.base_path, "/scim/v2");
    let sa = &config.tenants[0].rules[0].account;
    assert_eq!(sa.value, "Bearer SENTINEL");
    assert!(sa.value.is_sensitive());
    assert!(
        !format!("{config:?}").contains("SENTINEL"),
        "Debug must not print the key"
    );
    assert!(
        !config.summary().contains("SENTINEL"),
        "summary must not print the key"
    );
}

#[test]
fn reports_every_problem_with_its_path() {
    let text = r#"
[server]
listen = "nowhere"
header_read_timeout = "soon"
max_connections = 0
[upstream]
url = "ftp://x"
surprise = true
[jwt]
jwks_url = "http://idp.example.com/keys"
leeway = "10m"
algorithms = ["HS256", "none"]
[[rules]]
name = "r"
claim = "a..b"
value = ""
service_account = "prov"
[service_accounts.provisioner]
header = "host"
api_key_env = "SCIMGATE_TEST_UNSET_VARIABLE"
"#;
    let found = problems(text);
    for expected in [
        "upstream.surprise: unknown key",
        "server.listen: invalid address",
        "server.header_read_timeout: invalid duration",
        "server.max_connections: must be between 1 and 1000000",
        "upstream.url: \"ftp://x\" must be an absolute",
        "jwt.jwks_url: must use https",
        "jwt.leeway: 10m is more than the 5m maximum",
        "jwt.algorithms[0]: HS256 is symmetric",
        "jwt.algorithms[1]: unknown algorithm",
        "rules[0].claim: invalid claim path",
        "rules[0].value: must not be empty",
        "service_accounts.provisioner.header: \"host\" is reserved",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
}

#[test]
fn unknown_service_account_names_the_known_ones() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-b", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = minimal(&key_file(&dir, "k"))
        .replace("service_account = \"sa\"", "service_account = \"prov\"");
    assert_eq!(
        problems(&text),
        vec!["rules[0].service_account: no service account \"prov\" (known: sa)"]
    );
}

#[test]
fn missing_or_empty_key_file_is_named_without_content() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-c", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = key_file(&dir, "\n");
    let found = problems(&minimal(&empty));
    assert_eq!(
        found,
        vec![format!(
            "service_accounts.sa.api_key_file: key file {empty} is empty"
        )]
    );
    let found = problems(&minimal("/nonexistent/scimgate/key"));
    assert!(
        found[0].contains("/nonexistent/scimgate/key: no such file"),
        "{found:?}"
    );
}

#[test]
fn env_overrides_file_and_loads_env_secrets() {
    Jail::expect_with(|jail| {
        jail.create_file("key", "from-file")?;
        let dir = jail.directory().display().to_string();
        jail.create_file("scimgate.toml", &minimal(&format!("{dir}/key")))?;
        jail.set_env("SCIMGATE_JWT__LEEWAY", "1m");
        jail.set_env("SCIMGATE_SERVICE_ACCOUNTS__SA__API_KEY_FILE", "");
        jail.set_env("PROVISIONER_KEY", "from-env");
        let path = jail.directory().join("scimgate.toml");
        // api_key_file set to "" via env plus api_key_env: both set → a problem with its path.
        jail.set_env(
            "SCIMGATE_SERVICE_ACCOUNTS__SA__API_KEY_ENV",
            "PROVISIONER_KEY",
        );
        let err = Config::load(Some(&path)).unwrap_err();
        assert!(err.problems[0].to_string().contains("not both"), "{err}");
        jail.clear_env();
        jail.set_env("SCIMGATE_JWT__LEEWAY", "1m");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.tenants[0].jwt.leeway, Duration::from_secs(60));
        Ok(())
    });
}

#[test]
fn check_mode_downgrades_unreadable_keys_to_warnings() {
    Jail::expect_with(|jail| {
        jail.create_file("scimgate.toml", &minimal("/nonexistent/key"))?;
        let path = jail.directory().join("scimgate.toml");
        assert!(Config::load_with(Some(&path), Secrets::Required).is_err());
        let config = Config::load_with(Some(&path), Secrets::Optional).unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.contains("/nonexistent/key"))
        );
        Ok(())
    });
}

#[test]
fn shipped_configs_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files = vec![root.join("scimgate.toml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        files.push(entry.unwrap().path());
    }
    assert!(files.len() >= 3);
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "toml"))
    {
        Jail::expect_with(|_| {
            if let Err(e) = Config::load_with(Some(file), Secrets::Optional) {
                panic!("{} does not pass check:\n{e}", file.display());
            }
            Ok(())
        });
    }
}

#[test]
fn warns_about_shadowed_rules() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-d", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = minimal(&key_file(&dir, "k"));
    let extra = |allow_first: &str, allow_second: &str| {
        format!(
            "{base}\n[[rules]]\nname = \"a\"\nclaim = \"groups\"\nvalue = \"ops\"\nservice_account = \"sa\"\n{allow_first}\n\
             [[rules]]\nname = \"b\"\nclaim = \"groups\"\nvalue = \"ops\"\nservice_account = \"sa\"\n{allow_second}\n"
        )
    };
    let shadowed = Config::from_toml(&extra("", "allow = [\"read\"]")).unwrap();
    assert!(
        shadowed
            .warnings
            .iter()
            .any(|w| w.contains("rules[2]") && w.contains("never be chosen")),
        "{:?}",
        shadowed.warnings
    );
    let fine = Config::from_toml(&extra("allow = [\"read\"]", "")).unwrap();
    assert!(
        !fine.warnings.iter().any(|w| w.contains("never be chosen")),
        "{:?}",
        fine.warnings
    );
}

#[test]
fn variables_without_a_section_separator_are_not_overrides() {
    Jail::expect_with(|jail| {
        let dir = jail.directory().display().to_string();
        jail.create_file("key", "k")?;
        jail.create_file("scimgate.toml", &minimal(&format!("{dir}/key")))?;
        // What Kubernetes injects for a Service named `scimgate`.
        jail.set_env("SCIMGATE_PORT", "tcp://10.0.0.1:8080");
        jail.set_env("SCIMGATE_SERVICE_HOST", "10.0.0.1");
        jail.set_env("SCIMGATE_SERVER__MAX_BODY_BYTES", "1024");
        let path = jail.directory().join("scimgate.toml");
        let config = Config::load(Some(&path)).unwrap();
        assert_eq!(config.server.max_body_bytes, 1024);
        jail.set_env("SCIMGATE_SERVER__BOGUS", "1");
        let err = Config::load(Some(&path)).unwrap_err();
        assert!(
            err.to_string().contains("server.bogus: unknown key"),
            "{err}"
        );
        Ok(())
    });
}

fn tenants_config(key: &str) -> String {
    format!(
        r#"
[[tenants]]
name = "harness"
path_prefix = "/ng/api/scim/account/{{account}}"
upstream.url = "https://app.harness.io/gateway/ng/api/scim/account/{{account}}"
jwt.jwks_url = "https://idp-a.example.com/keys"
jwt.issuer = "https://idp-a.example.com"
[[tenants.rules]]
name = "a"
claim = "groups"
value = "scim"
service_account = "a"
[tenants.service_accounts.a]
api_key_file = "{key}"

[[tenants]]
name = "other"
path_prefix = "/other"
upstream.url = "http://127.0.0.1:9000/scim"
jwt.jwks_url = "https://idp-b.example.com/keys"
[[tenants.rules]]
name = "b"
claim = "roles"
value = "scim"
service_account = "b"
[tenants.service_accounts.b]
header = "x-api-key"
api_key_file = "{key}"
"#
    )
}

#[test]
fn tenants_route_by_prefix_and_capture_the_account() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-e", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml(&tenants_config(&key_file(&dir, "k"))).unwrap();
    assert_eq!(config.tenants.len(), 2);
    let harness = &config.tenants[0];
    let m = harness
        .prefix
        .matches("/ng/api/scim/account/acme-1/Users/7")
        .unwrap();
    assert_eq!((m.account, m.rest), (Some("acme-1"), "/Users/7"));
    assert_eq!(
        harness.upstream.base_path,
        "/gateway/ng/api/scim/account/{account}"
    );
    assert!(
        harness
            .prefix
            .matches("/ng/api/scim/account/../Users")
            .is_none()
    );
    assert!(
        harness
            .prefix
            .matches("/ng/api/scim/accountx/a/Users")
            .is_none()
    );
    assert!(
        harness
            .prefix
            .matches("/ng/api/scim/account/a%2fb/Users")
            .is_none()
    );
    let other = &config.tenants[1];
    assert_eq!(other.prefix.matches("/other/Users").unwrap().rest, "/Users");
    assert!(other.prefix.matches("/otherwise/Users").is_none());
    assert!(config.summary().contains("tenant \"other\" at /other"));
}

#[test]
fn tenant_problems_carry_the_tenant_path() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-f", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = tenants_config(&key_file(&dir, "k"))
        .replace("path_prefix = \"/other\"", "path_prefix = \"/other/\"")
        .replace("service_account = \"b\"", "service_account = \"zz\"")
        + "\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let found = problems(&text);
    for expected in [
        "upstream.url: not allowed at the top level",
        "tenants[1].path_prefix: \"/other/\" must start with / and not end with /",
        "tenants[1].rules[0].service_account: no service account \"zz\" (known: b)",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "missing {expected:?} in {found:#?}"
        );
    }
    let no_placeholder = tenants_config(&key_file(&dir, "k")).replace(
        "/ng/api/scim/account/{account}\"\nupstream",
        "/ng\"\nupstream",
    );
    assert!(
        problems(&no_placeholder)
            .iter()
            .any(|p| p.starts_with("tenants[0].upstream.url: uses {account}"))
    );
}

#[test]
fn overlapping_tenant_prefixes_warn() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-g", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = tenants_config(&key_file(&dir, "k")).replace(
        "path_prefix = \"/other\"",
        "path_prefix = \"/ng/api/scim/account/x\"",
    );
    let config = Config::from_toml(&text).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("overlaps tenants[0]")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn fail_closed_settings_are_validated_with_their_paths() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-fc", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = minimal(&key_file(&dir, "SENTINEL\n"));
    let with = |server: &str, upstream: &str, rule: &str| {
        base.replacen(
            "[upstream]\n",
            &format!("[server]\n{server}\n[upstream]\n{upstream}\n"),
            1,
        )
        .replacen(
            "service_account = \"sa\"\n",
            &format!("service_account = \"sa\"\n{rule}\n"),
            1,
        )
    };
    let ok = Config::from_toml(&with(
        "path_prefix = \"/scim/v2\"\nforward_headers = [\"X-Correlation-Id\"]",
        "resource_types = [\"Devices\"]",
        "resource_types = [\"devices\", \"Users\"]",
    ))
    .unwrap();
    assert_eq!(ok.server.forward_headers, ["x-correlation-id"]);
    assert_eq!(ok.tenants[0].prefix.to_string(), "/scim/v2");
    assert_eq!(&*ok.tenants[0].upstream.resource_types[0], "Devices");
    let found = problems(&with(
        "path_prefix = \"scim/\"\nforward_headers = [\"authorization\", \"X_User\", \"x-forwarded-user\", \"x-http-method-override\", \"bad header\", \"host\"]",
        "resource_types = [\"Users\", \"1x\", \"Bulk\", \"Dev\", \"dev\"]",
        "allow = [\"other\"]\nresource_types = [\"Gadgets\"]",
    ));
    for expected in [
        "server.path_prefix:",
        "server.forward_headers[0]:",
        "server.forward_headers[1]:",
        "server.forward_headers[2]:",
        "server.forward_headers[3]:",
        "server.forward_headers[4]:",
        "server.forward_headers[5]:",
        "upstream.resource_types[0]:",
        "upstream.resource_types[1]:",
        "upstream.resource_types[2]:",
        "upstream.resource_types[4]:",
        "rules[0].allow[0]: unknown operation \"other\"",
        "rules[0].resource_types[0]: unknown resource type \"Gadgets\"",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected} missing from {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|p| p.starts_with("upstream.resource_types[3]"))
    );
}

/// `minimal` with `top` before `[upstream]` (server, guardrails) and `rule` keys in its rule.
fn guarded(top: &str, rule: &str) -> String {
    // A directory per call: tests run in parallel, and a key file being rewritten is empty.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-g{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    minimal(&key_file(&dir, "SENTINEL\n"))
        .replacen("[upstream]\n", &format!("{top}\n[upstream]\n"), 1)
        .replacen(
            "service_account = \"sa\"\n",
            &format!("service_account = \"sa\"\n{rule}\n"),
            1,
        )
}

#[test]
fn guardrails_default_off_and_parse_into_typed_values() {
    let off = Config::from_toml(&guarded("", "")).unwrap();
    assert_eq!(off.tenants[0].guardrails, Guardrails::default());
    assert_eq!(off.tenants[0].guardrails.max_deprovisions, 0);
    assert_eq!(
        off.tenants[0].guardrails.deprovision_window,
        Duration::from_secs(3600)
    );
    assert!(off.server.trusted_proxies.is_empty());
    assert!(!off.summary().contains("guardrails"));

    let on = Config::from_toml(&guarded(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n[guardrails]\nmax_deprovisions = 50\ndeprovision_window = \"30m\"",
        r#"deny_attributes = ["password", "Roles", "roles", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "name.givenName"]
protected_groups = ["admins-id", "ADMINS-ID", "g 2"]
source_ips = ["192.0.2.0/24", "2001:db8::/32"]
rate_limit = "25/s""#,
    ))
    .unwrap();
    let g = &on.tenants[0].guardrails;
    assert_eq!(
        (g.max_deprovisions, g.deprovision_window),
        (50, Duration::from_secs(1800))
    );
    let rule = &g.rules["r"];
    let names: Vec<String> = rule
        .deny_attributes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["password", "roles", "manager", "name.givenname"]);
    assert_eq!(rule.protected_groups, ["admins-id", "g 2"]);
    assert_eq!(rule.source_ips.len(), 2);
    assert_eq!(rule.rate_limit.unwrap().burst(), 7);
    assert_eq!(on.server.trusted_proxies.len(), 2);
    let summary = on.summary();
    for line in [
        "trusted      10.0.0.0/8, fd00::/8",
        "at most 50 deprovisionings per 30m",
        "deny_attributes password,roles,manager,name.givenname",
        "protected_groups 2",
        "rate_limit 25/s (burst 7)",
    ] {
        assert!(summary.contains(line), "{line} missing from\n{summary}");
    }
    assert!(
        !summary.contains("admins-id"),
        "group ids are counted, not listed"
    );
}

#[test]
fn tenant_guardrails_override_the_top_level_key_by_key() {
    let dir = std::env::temp_dir().join(format!("scimgate-cfg-{}-gt", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[guardrails]\nmax_deprovisions = 10\ndeprovision_window = \"2h\"\n{}",
        tenants_config(&key_file(&dir, "k\n"))
    )
    .replacen(
        "[tenants.service_accounts.b]",
        "[tenants.guardrails]\nmax_deprovisions = 3\n[tenants.service_accounts.b]",
        1,
    );
    let config = Config::from_toml(&text).unwrap();
    let budget = |i: usize| {
        let g = &config.tenants[i].guardrails;
        (g.max_deprovisions, g.deprovision_window)
    };
    assert_eq!(budget(0), (10, Duration::from_secs(7200)));
    assert_eq!(budget(1), (3, Duration::from_secs(7200)));
    let bad = text.replacen(
        "max_deprovisions = 3",
        "max_deprovisions = 3\ndeprovision_window = \"0s\"",
        1,
    );
    assert!(
        problems(&bad)
            .iter()
            .any(|p| p.starts_with("tenants[1].guardrails.deprovision_window:")),
        "{:?}",
        problems(&bad)
    );
}

#[test]
fn guardrail_problems_carry_their_key_paths() {
    let found = problems(&guarded(
        "[server]\ntrusted_proxies = [\"0.0.0.0/0\", \"10.0.0.1/8\", \"proxy.local\"]\n[guardrails]\nmax_deprovisions = 5000000\ndeprovision_window = \"30d\"\nmax_deletes = 1",
        r#"deny_attributes = ["roles", "emails[type eq \"work\"]", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "pass word", ""]
protected_groups = ["", " admins", "a/b"]
source_ips = ["192.0.2.1/24", "::ffff:192.0.2.0/120", "any"]
rate_limit = "25 per second"
deny_attribute = ["typo"]"#,
    ));
    for expected in [
        "server.trusted_proxies[0]: \"0.0.0.0/0\" trusts every peer",
        "server.trusted_proxies[1]:",
        "server.trusted_proxies[2]:",
        "guardrails.max_deprovisions:",
        "guardrails.deprovision_window: \"30d\" must be between 1s and 7d",
        "guardrails.max_deletes: unknown key",
        "rules[0].deny_attributes[1]:",
        "rules[0].deny_attributes[2]:",
        "rules[0].deny_attributes[3]:",
        "rules[0].deny_attributes[4]:",
        "rules[0].protected_groups[0]:",
        "rules[0].protected_groups[1]:",
        "rules[0].protected_groups[2]:",
        "rules[0].source_ips[0]: \"192.0.2.1/24\" has host bits set",
        "rules[0].source_ips[1]:",
        "rules[0].source_ips[2]:",
        "rules[0].rate_limit:",
        "rules[0].deny_attribute: unknown key",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(expected)),
            "{expected} missing from {found:#?}"
        );
    }
    assert!(
        !found
            .iter()
            .any(|p| p.starts_with("rules[0].deny_attributes[0]"))
    );
    for window in ["0s", "500ms", "soon"] {
        let found = problems(&guarded(
            &format!("[guardrails]\ndeprovision_window = \"{window}\""),
            "",
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("guardrails.deprovision_window:")),
            "{window}: {found:?}"
        );
    }
}

#[test]
fn guardrails_are_set_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("key", "k")?;
        let dir = jail.directory().display().to_string();
        jail.create_file("scimgate.toml", &minimal(&format!("{dir}/key")))?;
        jail.set_env("SCIMGATE_GUARDRAILS__MAX_DEPROVISIONS", "50");
        jail.set_env("SCIMGATE_GUARDRAILS__DEPROVISION_WINDOW", "15m");
        let config = Config::load(Some(&jail.directory().join("scimgate.toml"))).unwrap();
        let g = &config.tenants[0].guardrails;
        assert_eq!(
            (g.max_deprovisions, g.deprovision_window),
            (50, Duration::from_secs(900))
        );
        Ok(())
    });
}

#[test]
fn trusted_proxies_without_source_ips_warn() {
    let config =
        Config::from_toml(&guarded("[server]\ntrusted_proxies = [\"10.0.0.0/8\"]", "")).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.contains("no rule has source_ips")),
        "{:?}",
        config.warnings
    );
}
