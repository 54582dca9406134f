//! Small text encodings shared across the crate: lowercase hex, an error with its sources on
//! one line, and caller-supplied text made fit for a log line.

/// At most this many characters of a caller-supplied identifier reach the log.
const MAX_LOGGED: usize = 128;

/// `text` with everything outside printable ASCII replaced, cut at [`MAX_LOGGED`] characters,
/// so a caller cannot forge log lines or flood them.
pub(crate) fn loggable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_LOGGED)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if text.chars().count() > MAX_LOGGED {
        out.push('…');
    }
    out
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    // Hex digits are ASCII, so this cannot fail; stay total anyway.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes the lowercase hex of `bytes` into `out`, which holds twice as many bytes (no
/// allocation: request ids are written this way on every request).
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// An error and its sources on one line, `outer: inner: root`, for logs (never for callers).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn error_chain_names_every_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("root"));
        assert_eq!(error_chain(&e), "outer: root");
    }
}
