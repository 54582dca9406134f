//! Secret values (service-account API keys): loaded from a file or an environment variable, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string whose `Debug` and `Display` print `<redacted>`; `expose` is the only way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Where a secret came from, for messages and summaries (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file, re-read on reload (a Kubernetes Secret mount).
    File(PathBuf),
    /// An environment variable of the scimgate process.
    Env(String),
}

/// Why a secret could not be loaded. Messages name the source, never the content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("cannot read key file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("key file {0} is empty")]
    EmptyFile(PathBuf),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("environment variable {0} is empty")]
    EmptyEnv(String),
}

// === impl Secret ===

impl Secret {
    /// Wraps a value that is already in memory (the demo's generated key, tests).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call sites are the only places a key can leak: keep them few.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Loads the secret from its source. One trailing newline (`\n` or `\r\n`) is trimmed because
    /// `echo key > file` and Kubernetes Secrets created from files commonly carry one.
    pub fn load(source: &SecretSource) -> Result<Self, SecretError> {
        match source {
            SecretSource::File(path) => Self::from_file(path),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) if value.is_empty() => Err(SecretError::EmptyEnv(name.clone())),
                Ok(value) => Ok(Self(trim_newline(value))),
                Err(_) => Err(SecretError::MissingEnv(name.clone())),
            },
        }
    }

    fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
            path: path.to_path_buf(),
            reason: io_reason(&e),
        })?;
        let value = trim_newline(text);
        if value.is_empty() {
            return Err(SecretError::EmptyFile(path.to_path_buf()));
        }
        Ok(Self(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// === impl SecretSource ===

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
        }
    }
}

fn trim_newline(mut value: String) -> String {
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    value
}

/// The error kind only: `io::Error`'s Display is fine, but keep messages short and stable.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if e.kind() == ErrorKind::NotFound {
        "no such file".to_owned()
    } else if e.kind() == ErrorKind::PermissionDenied {
        "permission denied".to_owned()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("SENTINEL-123");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(s.expose(), "SENTINEL-123");
    }

    #[test]
    fn file_trims_one_newline_and_rejects_empty() {
        let dir = std::env::temp_dir().join(format!("scimgate-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "abc\r\n").unwrap();
        let source = SecretSource::File(key.clone());
        assert_eq!(Secret::load(&source).unwrap().expose(), "abc");
        std::fs::write(&key, "\n").unwrap();
        assert_eq!(Secret::load(&source), Err(SecretError::EmptyFile(key)));
        let missing = SecretSource::File(dir.join("missing"));
        let err = Secret::load(&missing).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
