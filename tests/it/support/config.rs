//! The gateway's config, built in tests: TOML text, 0600 key files holding random sentinels,
//! and the temp directory they live in.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::mint::{AUDIENCE, ISSUER, PROVISIONER_GROUP};

/// Lowercase hex of `n` random bytes.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh sentinel API key: `SENTINEL-<32 hex>`.
pub fn new_sentinel() -> String {
    format!("SENTINEL-{}", random_hex(16))
}

/// TOML basic string literal.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// === temp dirs ===

/// A unique directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "scimgate-test-{label}-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            random_hex(4)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` inside the dir with the given mode; returns the full path.
    pub fn write(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.path.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .expect("create temp file");
        file.write_all(contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// === config builder ===

/// A service account the gateway config declares; its key is a fresh sentinel.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    header: String,
    scheme: Option<String>,
}

/// A `[[rules]]` entry.
#[derive(Clone, Debug)]
struct Rule {
    name: String,
    claim: String,
    value: String,
    account: String,
    match_mode: Option<String>,
}

/// Builds the gateway's TOML. Values passed to `set` are TOML expressions (`"\"5s\""`, `1024`).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    sections: BTreeMap<String, BTreeMap<String, String>>,
    rules: Vec<Rule>,
    accounts: Vec<Account>,
    extra: String,
    env: Vec<(String, String)>,
}

impl GatewayConfig {
    /// Defaults: both listeners on `127.0.0.1:0`, JSON logs at debug, issuer/audience from
    /// `mint`, one rule `groups` contains `scim-provisioners` → account `provisioner`
    /// (`authorization: Bearer <key>`).
    pub fn new(upstream_url: &str, jwks_url: &str) -> Self {
        let mut cfg = Self {
            sections: BTreeMap::new(),
            rules: Vec::new(),
            accounts: Vec::new(),
            extra: String::new(),
            env: Vec::new(),
        };
        cfg = cfg
            .set("server", "listen", &toml_str("127.0.0.1:0"))
            .set("server", "shutdown_grace", &toml_str("5s"))
            .set("admin", "listen", &toml_str("127.0.0.1:0"))
            .set("log", "format", &toml_str("json"))
            .set("log", "level", &toml_str("debug"))
            .set("upstream", "url", &toml_str(upstream_url))
            .set("upstream", "connect_timeout", &toml_str("2s"))
            .set("upstream", "timeout", &toml_str("5s"))
            .set("jwt", "jwks_url", &toml_str(jwks_url))
            .set("jwt", "issuer", &toml_str(ISSUER))
            .set("jwt", "audience", &format!("[{}]", toml_str(AUDIENCE)))
            .account("provisioner", "authorization", Some("Bearer"))
            .rule("provisioners", "groups", PROVISIONER_GROUP, "provisioner");
        cfg
    }

    /// Sets `[section] key = value` (value is TOML text), replacing a default.
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Self {
        self.sections
            .entry(section.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Removes a default key.
    pub fn unset(mut self, section: &str, key: &str) -> Self {
        if let Some(s) = self.sections.get_mut(section) {
            s.remove(key);
        }
        self
    }

    /// Appends a rule (after the default one).
    pub fn rule(mut self, name: &str, claim: &str, value: &str, account: &str) -> Self {
        self.rules.push(Rule {
            name: name.into(),
            claim: claim.into(),
            value: value.into(),
            account: account.into(),
            match_mode: None,
        });
        self
    }

    /// Appends a rule with an explicit `match` mode (`"exact"`, `"space_delimited"`).
    pub fn rule_match(
        mut self,
        name: &str,
        claim: &str,
        value: &str,
        account: &str,
        mode: &str,
    ) -> Self {
        self = self.rule(name, claim, value, account);
        if let Some(rule) = self.rules.last_mut() {
            rule.match_mode = Some(mode.into());
        }
        self
    }

    /// Declares a service account whose key is a fresh sentinel in a 0600 file.
    pub fn account(mut self, name: &str, header: &str, scheme: Option<&str>) -> Self {
        self.accounts.push(Account {
            name: name.into(),
            header: header.into(),
            scheme: scheme.map(str::to_owned),
        });
        self
    }

    /// Raw TOML appended at the end of the file.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// An environment variable for the gateway process (the environment is otherwise empty
    /// except for PATH).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The extra environment variables for the gateway process.
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// Writes key files and `scimgate.toml` into `dir`; returns the config path and the
    /// sentinel of each account.
    pub fn write_to(&self, dir: &TempDir) -> (PathBuf, BTreeMap<String, String>) {
        let mut sentinels = BTreeMap::new();
        let mut text = String::new();
        for (section, keys) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                text.push_str(&format!("{k} = {v}\n"));
            }
            text.push('\n');
        }
        for rule in &self.rules {
            text.push_str(&format!(
                "[[rules]]\nname = {}\nclaim = {}\nvalue = {}\nservice_account = {}\n",
                toml_str(&rule.name),
                toml_str(&rule.claim),
                toml_str(&rule.value),
                toml_str(&rule.account)
            ));
            if let Some(mode) = &rule.match_mode {
                text.push_str(&format!("match = {}\n", toml_str(mode)));
            }
            text.push('\n');
        }
        for account in &self.accounts {
            let sentinel = new_sentinel();
            // A trailing newline, as editors write it: the contract trims exactly one.
            let key_path = dir.write(
                &format!("{}.key", account.name),
                format!("{sentinel}\n").as_bytes(),
                0o600,
            );
            text.push_str(&format!(
                "[service_accounts.{}]\nheader = {}\n",
                account.name,
                toml_str(&account.header)
            ));
            if let Some(scheme) = &account.scheme {
                text.push_str(&format!("scheme = {}\n", toml_str(scheme)));
            }
            text.push_str(&format!(
                "api_key_file = {}\n\n",
                toml_str(&key_path.to_string_lossy())
            ));
            sentinels.insert(account.name.clone(), sentinel);
        }
        text.push_str(&self.extra);
        let path = dir.write("scimgate.toml", text.as_bytes(), 0o644);
        (path, sentinels)
    }
}
