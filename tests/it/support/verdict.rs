//! Table-driven verdicts for the security suite: each row states the status and challenge it
//! expects; every mismatch is collected so one run reports all failing rows at once.

use super::client::Response;

/// `WWW-Authenticate` when no credential was presented (RFC 6750 §3.1).
pub const NO_TOKEN: &str = r#"Bearer realm="scimgate""#;
/// `WWW-Authenticate` for a presented but rejected token.
pub const INVALID_TOKEN: &str = r#"Bearer realm="scimgate", error="invalid_token""#;
/// `WWW-Authenticate` for a valid token that no rule grants.
pub const INSUFFICIENT_SCOPE: &str = r#"Bearer realm="scimgate", error="insufficient_scope""#;

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded: 200 from the recording upstream.
    Ok,
    /// 401 with `error="invalid_token"`.
    Invalid,
    /// 401 without an error attribute (no bearer credential at all).
    NoToken,
    /// 403 with `error="insufficient_scope"`.
    Forbidden,
    /// This status as a SCIM error from the gateway, and no `WWW-Authenticate`.
    Status(u16),
    /// This status from the HTTP layer (hyper), which writes no SCIM body.
    Framing(u16),
}

impl Expect {
    pub fn status(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Invalid | Self::NoToken => 401,
            Self::Forbidden => 403,
            Self::Status(s) | Self::Framing(s) => s,
        }
    }

    /// Whether the upstream may see this request.
    pub fn forwards(self) -> bool {
        self == Self::Ok
    }

    fn challenge(self) -> Option<&'static str> {
        match self {
            Self::Invalid => Some(INVALID_TOKEN),
            Self::NoToken => Some(NO_TOKEN),
            Self::Forbidden => Some(INSUFFICIENT_SCOPE),
            Self::Ok | Self::Status(_) | Self::Framing(_) => None,
        }
    }
}

/// Collects row failures.
#[derive(Default)]
pub struct Table {
    failures: Vec<String>,
    rows: usize,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one response against `expect`: status, and for 401/403 the exact challenge and a
    /// SCIM error body whose detail does not echo `token`.
    pub fn check(&mut self, row: &str, response: &Response, expect: Expect, token: &str) {
        self.rows += 1;
        if response.status != expect.status() {
            self.failures.push(format!(
                "{row}: expected {}, got {} {}",
                expect.status(),
                response.status,
                response.text()
            ));
            return;
        }
        let challenges = response.header_all("www-authenticate");
        match expect.challenge() {
            Some(want) if challenges != [want] => self.failures.push(format!(
                "{row}: WWW-Authenticate {challenges:?}, want {want:?}"
            )),
            None if expect != Expect::Ok && !challenges.is_empty() => self
                .failures
                .push(format!("{row}: unexpected WWW-Authenticate {challenges:?}")),
            _ => {}
        }
        if expect != Expect::Ok && !matches!(expect, Expect::Framing(_)) {
            let ct = response.header("content-type").unwrap_or("");
            if !ct.starts_with("application/scim+json") {
                self.failures
                    .push(format!("{row}: error content-type {ct:?}"));
            }
            let sig = token.rsplit('.').next().unwrap_or("");
            let text = response.text();
            if sig.len() > 8 && text.contains(sig) {
                self.failures
                    .push(format!("{row}: the error body echoes the token"));
            }
        }
    }

    /// Like `check`, for rows where more than one verdict is correct (e.g. a request refused as
    /// malformed before authentication, or refused by authentication).
    pub fn check_any(&mut self, row: &str, response: &Response, expects: &[Expect], token: &str) {
        let Some(expect) = expects
            .iter()
            .copied()
            .find(|e| e.status() == response.status)
        else {
            self.rows += 1;
            let want: Vec<u16> = expects.iter().map(|e| e.status()).collect();
            self.failures.push(format!(
                "{row}: expected one of {want:?}, got {} {}",
                response.status,
                response.text()
            ));
            return;
        };
        self.check(row, response, expect, token);
    }

    /// A failure found by other means.
    pub fn fail(&mut self, row: &str, why: impl std::fmt::Display) {
        self.failures.push(format!("{row}: {why}"));
    }

    /// Panics with every failing row.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} rows failed:\n{}",
            self.failures.len(),
            self.rows,
            self.failures.join("\n")
        );
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
