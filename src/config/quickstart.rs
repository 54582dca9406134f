//! Configuration from environment variables alone, mirroring Harness's four "SCIM through JWT"
//! settings: one tenant, one rule, one service account.
//!
//! Used only when no config file is given and `SCIMGATE_UPSTREAM_URL` is set. The variables are
//! turned into the equivalent TOML, which then goes through the normal loader (so every check and
//! every `SCIMGATE_<SECTION>__<KEY>` override still applies); `scimgate check` prints that TOML.

/// The TOML equivalent of the quick-start variables, or `None` when `SCIMGATE_UPSTREAM_URL` is
/// unset. `lookup` reads a variable (the process environment, or a map in tests).
pub fn toml(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let var = |name: &str| lookup(&format!("SCIMGATE_{name}")).filter(|v| !v.is_empty());
    let upstream = var("UPSTREAM_URL")?;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut out = String::from("# Generated from SCIMGATE_* quick-start variables.\n");
    out.push_str(&format!("[upstream]\nurl = {}\n\n[jwt]\n", q(&upstream)));
    if let Some(v) = var("JWKS_URL") {
        out.push_str(&format!("jwks_url = {}\n", q(&v)));
    }
    if let Some(v) = var("ISSUER") {
        out.push_str(&format!("issuer = {}\n", q(&v)));
    }
    if let Some(v) = var("AUDIENCE") {
        let list: Vec<String> = v
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(q)
            .collect();
        out.push_str(&format!("audience = [{}]\n", list.join(", ")));
    }
    let claim = var("KEY_FIELD").unwrap_or_default();
    let value = var("VALUE_FIELD").unwrap_or_default();
    out.push_str(&format!(
        "\n[[rules]]\nname = \"quickstart\"\nclaim = {}\nvalue = {}\nservice_account = \"quickstart\"\n\n",
        q(&claim),
        q(&value)
    ));
    let header = var("API_KEY_HEADER")
        .unwrap_or_else(|| "authorization".into())
        .to_ascii_lowercase();
    out.push_str(&format!(
        "[service_accounts.quickstart]\nheader = {}\n",
        q(&header)
    ));
    if header == "authorization" {
        out.push_str("scheme = \"Bearer\"\n");
    }
    match var("API_KEY_FILE") {
        Some(file) => out.push_str(&format!("api_key_file = {}\n", q(&file))),
        // The key itself stays in the environment; the TOML only names the variable.
        None => out.push_str("api_key_env = \"SCIMGATE_API_KEY\"\n"),
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (format!("SCIMGATE_{k}"), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn harness_settings_become_one_rule() {
        let text = toml(env(&[
            (
                "UPSTREAM_URL",
                "https://app.harness.io/gateway/ng/api/scim/account/abc",
            ),
            ("JWKS_URL", "https://idp.example.com/keys"),
            ("KEY_FIELD", "scim_role"),
            ("VALUE_FIELD", "provisioner \"x\""),
            ("API_KEY_HEADER", "X-Api-Key"),
            ("API_KEY", "SENTINEL-never-in-toml"),
            ("AUDIENCE", "a, b"),
        ]))
        .unwrap();
        assert!(text.contains("claim = \"scim_role\""), "{text}");
        assert!(text.contains("value = \"provisioner \\\"x\\\"\""), "{text}");
        assert!(
            text.contains("header = \"x-api-key\"") && !text.contains("scheme"),
            "{text}"
        );
        assert!(text.contains("api_key_env = \"SCIMGATE_API_KEY\""));
        assert!(text.contains("audience = [\"a\", \"b\"]"));
        assert!(
            !text.contains("SENTINEL"),
            "the key never appears in the TOML"
        );
        let parsed = toml_check::from_str(&text);
        assert!(parsed.as_dict().is_some_and(|d| d.contains_key("rules")));
    }

    #[test]
    fn needs_the_upstream_url() {
        assert!(toml(env(&[("JWKS_URL", "https://x")])).is_none());
    }

    /// Minimal TOML parse check through figment (already a dependency).
    mod toml_check {
        pub(super) use figment::value::Value;
        pub(super) fn from_str(text: &str) -> Value {
            use figment::providers::{Format, Toml};
            figment::Figment::from(Toml::string(text))
                .extract::<Value>()
                .unwrap()
        }
    }
}
