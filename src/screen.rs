//! The service account's key never leaves in a response: header names and values, trailers,
//! and bodies of every status are screened for it.
//!
//! Bodies that are not 2xx (redirects, errors: where backends echo a request back) are read,
//! bounded, decoded from any content-coding the backend applied anyway (scimgate asks for
//! `identity`), and withheld when they hold the key. 2xx bodies stream through a screen that
//! holds back the last few bytes of each chunk, so a key split across chunks is still seen
//! before any of it is sent; one whose coding is not identity is read and decoded like an error
//! body. Trailers are dropped: SCIM uses none, and a screen that read them would be one more
//! place to get wrong.

use std::io::Read as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http::{HeaderMap, HeaderName};
use hyper::body::{Body, Frame, SizeHint};
use memchr::memmem::Finder;

use crate::body::BoxError;

/// The key in the forms a backend might echo it in: as sent, percent-encoded (either hex case,
/// with or without the unreserved punctuation), JSON-escaped (`\/`), and every run of at least
/// [`MIN_RUN`] letters and digits in it, which any encoding that keeps alphanumerics as they are
/// (form, HTML or JSON escapes, an echo cut short after the run) carries through. Built once per service account.
pub struct KeyScreen {
    needles: Vec<Finder<'static>>,
    /// Longest needle: a streaming screen holds back one byte less than this.
    longest: usize,
}

impl std::fmt::Debug for KeyScreen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyScreen")
            .field("forms", &self.needles.len())
            .finish_non_exhaustive()
    }
}

impl KeyScreen {
    pub fn new(key: &[u8]) -> Self {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        if !key.is_empty() {
            forms.push(key.to_vec());
            forms.push(percent_encoded(key, b"0123456789ABCDEF"));
            forms.push(percent_encoded(key, b"0123456789abcdef"));
            forms.push(json_escaped(key));
            forms.push(percent_encoded_all(key, b"0123456789ABCDEF"));
            forms.push(percent_encoded_all(key, b"0123456789abcdef"));
            forms.extend(
                key.split(|b| !b.is_ascii_alphanumeric())
                    .filter(|run| run.len() >= MIN_RUN)
                    .take(8)
                    .map(<[u8]>::to_vec),
            );
        }
        forms.sort();
        forms.dedup();
        let longest = forms.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            needles: forms
                .into_iter()
                .map(|f| Finder::new(&f).into_owned())
                .collect(),
            longest,
        }
    }

    /// Whether `bytes` hold the key in any screened form.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        bytes.len() >= self.shortest() && self.needles.iter().any(|n| n.find(bytes).is_some())
    }

    fn shortest(&self) -> usize {
        self.needles
            .iter()
            .map(|n| n.needle().len())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Removes every response header whose name or value holds the key (an upstream that
    /// echoes request headers, e.g. in a debug header, must not hand the key to the caller).
    pub fn strip_headers(&self, headers: &mut HeaderMap) {
        let doomed: Vec<HeaderName> = headers
            .iter()
            .filter(|(name, value)| {
                self.found_in(value.as_bytes()) || self.found_in(name.as_str().as_bytes())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

/// Runs of letters and digits shorter than this are not screened alone: a short run could
/// occur in any response by chance; 16 random alphanumerics cannot.
const MIN_RUN: usize = 16;

/// RFC 3986 §2.1: every byte outside the unreserved set as `%XY`.
fn percent_encoded(key: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    escaped(key, digits, |b| {
        b.is_ascii_alphanumeric() || b"-._~".contains(&b)
    })
}

/// Encoders that escape everything but letters and digits.
fn percent_encoded_all(key: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    escaped(key, digits, |b| b.is_ascii_alphanumeric())
}

fn escaped(key: &[u8], digits: &[u8; 16], plain: impl Fn(u8) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() * 3);
    for &b in key {
        if plain(b) {
            out.push(b);
        } else {
            out.extend([
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 0xf)],
            ]);
        }
    }
    out
}

/// The key inside a JSON string by an encoder that escapes `/` (many do) as well as `"` and `\`.
fn json_escaped(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 8);
    for &b in key {
        if matches!(b, b'/' | b'"' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Why a response was not relayed.
#[derive(Debug, thiserror::Error)]
pub enum Withheld {
    #[error("the response held the service account key")]
    Key,
    #[error("response body over {0} bytes where it must be read")]
    TooLarge(usize),
    #[error("response content-coding {0:?} cannot be decoded for screening")]
    Coding(String),
    #[error("response body: {0}")]
    Read(String),
}

/// How a response body was encoded, as far as the screen is concerned.
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// The coding named by `Content-Encoding` (one coding; stacked codings are refused).
fn coding(headers: &HeaderMap) -> Result<Coding, Withheld> {
    let mut values = headers.get_all(CONTENT_ENCODING).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(CONTENT_ENCODING) {
            Err(Withheld::Coding("several".into()))
        } else {
            Ok(Coding::Identity)
        };
    };
    let text = value.to_str().unwrap_or("").trim();
    match text.to_ascii_lowercase().as_str() {
        "identity" | "" => Ok(Coding::Identity),
        "gzip" | "x-gzip" => Ok(Coding::Gzip),
        "deflate" => Ok(Coding::Deflate),
        _ => Err(Withheld::Coding(text.chars().take(32).collect())),
    }
}

/// Whether a body with these headers must be read whole (not 2xx, or 2xx in a coding the
/// streaming screen cannot see through).
pub fn must_read(status: http::StatusCode, headers: &HeaderMap) -> bool {
    !status.is_success() || !matches!(coding(headers), Ok(Coding::Identity))
}

/// Screens a whole body: decodes it (at most `limit` bytes decoded), refuses it if it holds the
/// key, and fixes the headers for the decoded form.
pub fn screen_whole(
    headers: &mut HeaderMap,
    bytes: Bytes,
    limit: usize,
    screen: &KeyScreen,
) -> Result<Bytes, Withheld> {
    let decoded = match coding(headers)? {
        Coding::Identity => bytes,
        Coding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&bytes[..]), limit)?,
        Coding::Deflate => inflate(flate2::read::ZlibDecoder::new(&bytes[..]), limit)?,
    };
    if screen.found_in(&decoded) {
        return Err(Withheld::Key);
    }
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(decoded)
}

/// Reads a decoder to its end, refusing more than `limit` bytes (a small body can inflate to
/// gigabytes).
fn inflate(decoder: impl std::io::Read, limit: usize) -> Result<Bytes, Withheld> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Withheld::Read(format!("decoding: {e}")))?;
    if out.len() > limit {
        return Err(Withheld::TooLarge(limit));
    }
    Ok(Bytes::from(out))
}

/// A 2xx identity body on its way to the caller, screened as it streams: each chunk is searched
/// together with the bytes held back from the one before, and the last `longest - 1` bytes are
/// held back until the next chunk or the end. On a match the stream fails (the caller sees a
/// truncated response) and nothing of the key has been sent.
pub struct ScreenedBody<B> {
    inner: B,
    screen: std::sync::Arc<KeyScreen>,
    held: BytesMut,
    done: bool,
}

impl<B> ScreenedBody<B> {
    pub fn new(inner: B, screen: std::sync::Arc<KeyScreen>) -> Self {
        Self {
            inner,
            screen,
            held: BytesMut::new(),
            done: false,
        }
    }
}

impl<B> Body for ScreenedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                None => {
                    this.done = true;
                    return Poll::Ready(
                        (!this.held.is_empty())
                            .then(|| Ok(Frame::data(std::mem::take(&mut this.held).freeze()))),
                    );
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Some(Ok(frame)) => frame,
            };
            // Trailers are dropped (see the module docs).
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let end = this.inner.is_end_stream();
            match this.pass(data, end) {
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                Ok(None) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.held.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Bytes are only held back, never added or removed: the inner hint stays true.
        let mut hint = self.inner.size_hint();
        let held = self.held.len() as u64;
        hint.set_lower(hint.lower().saturating_add(held));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

impl<B> ScreenedBody<B> {
    /// The bytes that may go now, or the refusal.
    fn pass(&mut self, data: Bytes, end: bool) -> Result<Option<Bytes>, BoxError> {
        // The usual response is one chunk that ends the body: searched in place, sent as is.
        if self.held.is_empty() && end {
            return if self.screen.found_in(&data) {
                Err(Box::new(Withheld::Key))
            } else {
                Ok(Some(data))
            };
        }
        // A match lies wholly in `data`, or starts in the held tail (shorter than the longest
        // form) and so ends within the first `longest - 1` bytes of `data`.
        let longest = self.screen.longest;
        let straddles = !self.held.is_empty() && {
            let mut window = self.held.clone();
            window.extend_from_slice(&data[..data.len().min(longest.saturating_sub(1))]);
            self.screen.found_in(&window)
        };
        if straddles || self.screen.found_in(&data) {
            tracing::warn!("upstream response body held the service account key; stream cut");
            return Err(Box::new(Withheld::Key));
        }
        let total = self.held.len() + data.len();
        let keep = if end { 0 } else { longest.saturating_sub(1) };
        if total <= keep {
            self.held.extend_from_slice(&data);
            return Ok(None);
        }
        // What goes out is not copied through a growing buffer: a caller that stops reading
        // leaves each stream's last chunk queued, so its size is what 500 such streams cost.
        if keep > data.len() {
            let out = self.held.split_to(total - keep).freeze();
            self.held.extend_from_slice(&data);
            return Ok(Some(out));
        }
        let cut = data.len() - keep;
        let out = if self.held.is_empty() {
            data.slice(..cut)
        } else {
            let mut out = BytesMut::with_capacity(self.held.len() + cut);
            out.extend_from_slice(&self.held);
            out.extend_from_slice(&data[..cut]);
            out.freeze()
        };
        self.held = BytesMut::from(&data[cut..]);
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    const KEY: &[u8] = b"sk/live+key=0123456789";

    /// A body of the given chunks, with or without an end-of-stream hint on the last one.
    struct Chunks(VecDeque<Bytes>, bool);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn is_end_stream(&self) -> bool {
            self.1 && self.0.is_empty()
        }
    }

    fn screened(parts: &[&[u8]], hints_end: bool) -> ScreenedBody<Chunks> {
        let chunks = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        ScreenedBody::new(
            Chunks(chunks, hints_end),
            std::sync::Arc::new(KeyScreen::new(KEY)),
        )
    }

    #[tokio::test]
    async fn streams_are_cut_before_any_of_the_key_leaves() {
        for hints_end in [true, false] {
            let ok = screened(&[b"{\"a\":", b"1}"], hints_end);
            assert_eq!(ok.collect().await.unwrap().to_bytes(), "{\"a\":1}");
            // Split across chunks: no prefix of the key may have been emitted before the error.
            let mut body = screened(&[b"xx sk/live+", b"key=0123", b"456789 yy"], hints_end);
            let mut sent = Vec::new();
            let mut failed = false;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => sent.extend_from_slice(&f.into_data().unwrap()),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "the key must end the stream");
            assert!(!sent.windows(3).any(|w| w == b"sk/"), "{sent:?}");
        }
    }

    #[test]
    fn finds_every_form() {
        let s = KeyScreen::new(KEY);
        assert!(s.found_in(b"x sk/live+key=0123456789 y"));
        assert!(s.found_in(b"sk%2Flive%2Bkey%3D0123456789"));
        assert!(s.found_in(b"sk%2flive%2bkey%3d0123456789"));
        assert!(s.found_in(br#"{"k":"sk\/live+key=0123456789"}"#));
        assert!(!s.found_in(b"sk/live+key=012345678"));
        let long = KeyScreen::new(b"ab-0123456789abcdefXYZ+Q");
        assert!(long.found_in(b"ab&#45;0123456789abcdefXYZ&#43;Q"));
        assert!(long.found_in(b"truncated: ab-0123456789abcdefXYZ..."));
        assert!(long.found_in(b"ab%2D0123456789abcdefXYZ%2BQ"));
        assert!(!long.found_in(b"0123456789abcde"));
        assert!(!KeyScreen::new(b"").found_in(b"anything"));
        let mut h = HeaderMap::new();
        h.insert("x-echo", "Bearer sk/live+key=0123456789".parse().unwrap());
        h.insert("x-ok", "fine".parse().unwrap());
        s.strip_headers(&mut h);
        assert!(h.get("x-echo").is_none() && h.get("x-ok").is_some());
    }

    #[test]
    fn whole_bodies_are_decoded_before_the_search() {
        use std::io::Write as _;
        let s = KeyScreen::new(KEY);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"detail\":\"bad key sk/live+key=0123456789\"}")
            .unwrap();
        let gz = Bytes::from(gz.finish().unwrap());
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        assert!(matches!(
            screen_whole(&mut h.clone(), gz.clone(), 1 << 20, &s),
            Err(Withheld::Key)
        ));
        h.insert(CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(
            screen_whole(&mut h, gz, 1 << 20, &s),
            Err(Withheld::Coding(_))
        ));
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b'a'; 4 << 20]).unwrap();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, "GZIP".parse().unwrap());
        assert!(matches!(
            screen_whole(&mut h, Bytes::from(bomb.finish().unwrap()), 1 << 20, &s),
            Err(Withheld::TooLarge(_))
        ));
    }
}
