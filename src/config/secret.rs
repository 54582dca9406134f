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
    #[error("key file {0} holds only whitespace")]
    BlankFile(PathBuf),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("environment variable {0} is empty")]
    EmptyEnv(String),
    #[error("environment variable {0} holds only whitespace")]
    BlankEnv(String),
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
    /// `echo key > file` and Kubernetes Secrets created from files commonly carry one. What is
    /// left must not be empty or only whitespace: such a key would be sent as an empty
    /// credential, and the screens that look for the key in upstream responses would match
    /// everything or nothing.
    pub fn load(source: &SecretSource) -> Result<Self, SecretError> {
        match source {
            SecretSource::File(path) => Self::from_file(path),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) => usable(value).map_err(|blank| match blank {
                    Blank::Empty => SecretError::EmptyEnv(name.clone()),
                    Blank::Whitespace => SecretError::BlankEnv(name.clone()),
                }),
                Err(_) => Err(SecretError::MissingEnv(name.clone())),
            },
        }
    }

    fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable {
            path: path.to_path_buf(),
            reason: io_reason(&e),
        })?;
        usable(text).map_err(|blank| match blank {
            Blank::Empty => SecretError::EmptyFile(path.to_path_buf()),
            Blank::Whitespace => SecretError::BlankFile(path.to_path_buf()),
        })
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

/// Why a loaded value is no key.
#[derive(Debug, PartialEq, Eq)]
enum Blank {
    Empty,
    Whitespace,
}

/// The key with one trailing newline trimmed; an error when nothing, or only whitespace, is left.
fn usable(value: String) -> Result<Secret, Blank> {
    let value = trim_newline(value);
    if value.is_empty() {
        Err(Blank::Empty)
    } else if value.trim().is_empty() {
        Err(Blank::Whitespace)
    } else {
        Ok(Secret(value))
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
        for blank in ["\n", "\r\n", ""] {
            std::fs::write(&key, blank).unwrap();
            assert_eq!(
                Secret::load(&source),
                Err(SecretError::EmptyFile(key.clone())),
                "{blank:?}"
            );
        }
        for blank in [" \n", "\t", "\n\n"] {
            std::fs::write(&key, blank).unwrap();
            assert_eq!(
                Secret::load(&source),
                Err(SecretError::BlankFile(key.clone())),
                "{blank:?}"
            );
        }
        let missing = SecretSource::File(dir.join("missing"));
        let err = Secret::load(&missing).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What both sources share: the empty check runs after the newline is trimmed, so a
    /// variable or file holding only a newline (or only whitespace) is no key.
    #[test]
    fn blank_values_are_no_key() {
        for empty in ["", "\n", "\r\n"] {
            assert_eq!(
                usable(empty.to_owned()).err(),
                Some(Blank::Empty),
                "{empty:?}"
            );
        }
        for blank in [" ", "\t\n", "\n\n", " \r\n"] {
            assert_eq!(
                usable(blank.to_owned()).err(),
                Some(Blank::Whitespace),
                "{blank:?}"
            );
        }
        assert_eq!(
            usable("key\n".to_owned()).map(|s| s.0),
            Ok("key".to_owned())
        );
        assert_eq!(
            usable("k e y".to_owned()).map(|s| s.0),
            Ok("k e y".to_owned())
        );
    }
}
