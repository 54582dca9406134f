//! The audit line of every token request (target `scimgate::token`): who asked, how, and
//! what came of it. Never a secret, an assertion or a token.

use std::net::IpAddr;

use super::answer::{Refusal, TokenOutcome};
use super::token::Minted;

/// The authentication method a request used (RFC 8414 / RFC 7591 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// What the audit line says about one request. Never a secret, an assertion or a token: the
/// fields are identifiers, each made printable and cut short, since most come from the caller.
#[derive(Debug, Default)]
pub(super) struct Audit {
    pub client: Option<String>,
    /// The configured client the request named (the limiter's per-client key).
    pub known_client: Option<String>,
    pub method: Option<AuthMethod>,
    pub grant: Option<String>,
    pub assertion_iss: Option<String>,
    pub assertion_sub: Option<String>,
}

impl Audit {
    /// Writes the line (target `scimgate::token`).
    pub(super) fn emit(&self, peer: IpAddr, outcome: Result<&Minted, &Refusal>) {
        let client = self.client.as_deref().unwrap_or("-");
        let method = self.method.map_or("-", AuthMethod::as_str);
        let grant = self.grant.as_deref().unwrap_or("-");
        let iss = self.assertion_iss.as_deref().unwrap_or("-");
        let sub = self.assertion_sub.as_deref().unwrap_or("-");
        match outcome {
            Ok(minted) => tracing::info!(
                target: "scimgate::token",
                outcome = TokenOutcome::Issued.as_str(),
                %client, %method, %grant, %peer, assertion_iss = %iss, assertion_sub = %sub,
                jti = %minted.jti, scope = %minted.scope, exp = minted.exp,
                "token issued"
            ),
            Err(refusal) => tracing::warn!(
                target: "scimgate::token",
                outcome = refusal.outcome().as_str(),
                reason = refusal.reason(),
                detail = refusal.assertion_detail().unwrap_or("-"),
                %client, %method, %grant, %peer, assertion_iss = %iss, assertion_sub = %sub,
                "token request refused"
            ),
        }
    }
}
