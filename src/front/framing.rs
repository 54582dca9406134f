//! Where each request starts and ends on an HTTP/1 connection (RFC 9112 §6–7), decided as hyper
//! decides it: heads through `head::read`, bodies by their Content-Length or by hyper's own
//! chunked grammar, byte for byte. Where this reads the stream differently from hyper, it
//! refuses first, so hyper never parses a head this module has not seen as one.

use super::head::{self, Framing};
use crate::error::HeadError;

/// The HTTP/2 connection preface (RFC 9113 §3.4): prior knowledge on a plaintext connection.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Limits on chunk extensions and the trailer section: hyper's (16 KiB, 100 fields).
const MAX_EXTENSION_BYTES: u64 = 16 * 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const MAX_TRAILERS: usize = 100;

/// What the bytes at the start of the scanned input are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// This many bytes (at least one) pass as they are.
    Pass(usize),
    /// An incomplete head (or HTTP/2 preface): nothing passes until more bytes arrive.
    Partial,
    /// A complete head of `len` bytes that passes as `head` instead.
    Rewrite { len: usize, head: Vec<u8> },
    /// A head refused for this reason; nothing after it may pass.
    Refuse(HeadError),
    /// The chunked body is malformed here; nothing from here on may pass.
    Broken,
}

/// The reader's position in the request stream of one connection.
#[derive(Debug)]
pub(super) struct Framer {
    state: State,
    /// Heads passed so far: the index the next one will have.
    heads: u64,
}

#[derive(Debug)]
enum State {
    /// Before the first byte: an HTTP/2 preface or a request head.
    Start,
    Head,
    /// Body bytes left of a Content-Length body (never 0).
    Length(u64),
    Chunked(Chunked),
    /// HTTP/2: every byte passes.
    Tunnel,
}

impl Framer {
    /// `http2`: the protocol is already known to be HTTP/2 (TLS ALPN).
    pub(super) fn new(http2: bool) -> Self {
        Self {
            state: if http2 { State::Tunnel } else { State::Start },
            heads: 0,
        }
    }

    /// Heads passed so far.
    pub(super) fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether every byte passes from here on (HTTP/2).
    pub(super) fn is_tunnel(&self) -> bool {
        matches!(self.state, State::Tunnel)
    }

    /// Whether the reader waits for a request head (so an incomplete input can only complete
    /// with an empty line).
    pub(super) fn at_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Reads from the start of `input` (not empty). After `Pass(n)`, call again with the bytes
    /// after those `n`; after `Partial`, with the same bytes and more.
    pub(super) fn scan(&mut self, input: &[u8]) -> Scan {
        match &mut self.state {
            State::Tunnel => Scan::Pass(input.len()),
            State::Start => {
                let n = input.len().min(PREFACE.len());
                if input[..n] != PREFACE[..n] {
                    self.state = State::Head;
                    self.head(input)
                } else if n < PREFACE.len() {
                    Scan::Partial
                } else {
                    self.state = State::Tunnel;
                    Scan::Pass(input.len())
                }
            }
            State::Head => self.head(input),
            State::Length(rest) => {
                let n = usize::try_from(*rest).map_or(input.len(), |r| r.min(input.len()));
                *rest -= n as u64;
                if *rest == 0 {
                    self.state = State::Head;
                }
                Scan::Pass(n)
            }
            State::Chunked(chunked) => match chunked.advance(input) {
                (0, Step::Invalid) => Scan::Broken,
                (n, Step::More | Step::Invalid) => Scan::Pass(n),
                (n, Step::End) => {
                    self.state = State::Head;
                    Scan::Pass(n)
                }
            },
        }
    }

    fn head(&mut self, input: &[u8]) -> Scan {
        let head = match head::read(input) {
            Ok(Some(head)) => head,
            Ok(None) => return Scan::Partial,
            Err(e) => return Scan::Refuse(e),
        };
        self.heads += 1;
        self.state = match head.framing {
            Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::default()),
        };
        match head.rewritten {
            Some(rewritten) => Scan::Rewrite {
                len: head.len,
                head: rewritten,
            },
            None => Scan::Pass(head.len),
        }
    }
}

/// A chunked body (RFC 9112 §7.1) read with the states, and the tolerances, of hyper 1's
/// decoder (`proto/h1/decode.rs`): hex size with overflow check, optional spaces or tabs after
/// it, extensions up to a CR (a bare LF in one is an error), CRLF after each chunk, the last
/// chunk `0`, then trailer lines up to an empty line. A bare LF ends no line here, as in hyper.
#[derive(Debug, Default)]
struct Chunked {
    at: At,
    size: u64,
    extension_bytes: u64,
    trailer_bytes: usize,
    trailers: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum At {
    #[default]
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

enum Step {
    /// Every byte given belongs to the body; the body goes on.
    More,
    /// The body ended after the bytes counted.
    End,
    /// The byte after the ones counted is not valid here.
    Invalid,
}

impl Chunked {
    /// Consumes body bytes from the start of `input`: how many, and why it stopped.
    fn advance(&mut self, input: &[u8]) -> (usize, Step) {
        let mut i = 0;
        while i < input.len() {
            if self.at == At::Data {
                let n =
                    usize::try_from(self.size).map_or(input.len() - i, |s| s.min(input.len() - i));
                self.size -= n as u64;
                i += n;
                if self.size == 0 {
                    self.at = At::DataCr;
                }
                continue;
            }
            let Some(next) = self.next(input[i]) else {
                return (i, Step::Invalid);
            };
            i += 1;
            if next == At::Start && self.at == At::EndLf {
                return (i, Step::End);
            }
            self.at = next;
        }
        (i, Step::More)
    }

    /// The state after byte `b`, or `None` where hyper's decoder fails. The end of the body
    /// is `EndLf` followed by `Start`.
    fn next(&mut self, b: u8) -> Option<At> {
        let hex = || char::from(b).to_digit(16).map(u64::from);
        Some(match (self.at, b) {
            (At::Start | At::Size, _) if hex().is_some() => {
                let digit = hex()?;
                self.size = self.size.checked_mul(16)?.checked_add(digit)?;
                At::Size
            }
            (At::Size | At::SizeLws, b' ' | b'\t') => At::SizeLws,
            (At::Size | At::SizeLws, b';') => At::Extension,
            (At::Size | At::SizeLws | At::Extension, b'\r') => At::SizeLf,
            (At::Extension, b'\n') => return None,
            (At::Extension, _) => {
                self.extension_bytes += 1;
                if self.extension_bytes >= MAX_EXTENSION_BYTES {
                    return None;
                }
                At::Extension
            }
            (At::SizeLf, b'\n') if self.size == 0 => At::EndCr,
            (At::SizeLf, b'\n') => At::Data,
            (At::DataCr, b'\r') => At::DataLf,
            (At::DataLf, b'\n') => At::Start,
            (At::EndCr, b'\r') => At::EndLf,
            (At::EndCr | At::Trailer, _) => {
                self.trailer_bytes += 1;
                if self.trailer_bytes >= MAX_TRAILER_BYTES {
                    return None;
                }
                if b == b'\r' {
                    At::TrailerLf
                } else {
                    At::Trailer
                }
            }
            (At::TrailerLf, b'\n') => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return None;
                }
                At::EndCr
            }
            (At::EndLf, b'\n') => At::Start,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` fed in pieces of `step` bytes, as a reader would: returns the bytes passed
    /// (rewritten heads as passed) and how it stopped (`None`: all input consumed).
    pub(crate) fn run(input: &[u8], step: usize) -> (Vec<u8>, Option<Scan>, u64) {
        let mut framer = Framer::new(false);
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        while fed < input.len() || !pending.is_empty() {
            let take = step.min(input.len() - fed);
            pending.extend_from_slice(&input[fed..fed + take]);
            fed += take;
            loop {
                if pending.is_empty() {
                    break;
                }
                match framer.scan(&pending) {
                    Scan::Pass(n) => {
                        assert!(n > 0);
                        out.extend_from_slice(&pending[..n]);
                        pending.drain(..n);
                    }
                    Scan::Rewrite { len, head } => {
                        out.extend_from_slice(&head);
                        pending.drain(..len);
                    }
                    Scan::Partial if fed < input.len() => break,
                    other @ (Scan::Partial | Scan::Refuse(_) | Scan::Broken) => {
                        return (out, Some(other), framer.heads());
                    }
                }
            }
        }
        (out, None, framer.heads())
    }

    /// The same result whether the input comes at once or a byte (or a few) at a time.
    fn same_in_any_pieces(input: &[u8]) -> (Vec<u8>, Option<Scan>, u64) {
        let whole = run(input, input.len().max(1));
        for step in [1, 2, 3, 7, 16] {
            assert_eq!(run(input, step), whole, "step {step}");
        }
        whole
    }

    const POST: &str = "POST /Users HTTP/1.1\r\nHost: gw\r\n";

    #[test]
    fn pipelined_messages_split_where_hyper_splits_them() {
        let input = format!(
            "{POST}Content-Length: 2\r\n\r\n{{}}\
             {POST}Transfer-Encoding: chunked\r\n\r\n2;ext=\"x\"\r\n{{}}\r\n0\r\nX-T: 1\r\n\r\n\
             GET /Users?filter=userName+eq+\"a\" HTTP/1.1\r\n\r\n\
             {POST}Transfer-Encoding: chunked\r\n\r\n1 \t\r\na\r\n00\r\n\r\n\
             \r\nGET / HTTP/1.1\r\n\r\n"
        );
        let (out, stop, heads) = same_in_any_pieces(input.as_bytes());
        assert_eq!(stop, None);
        assert_eq!(heads, 5);
        let expected = input.replace("+\"a\"", "+%22a%22");
        assert_ne!(expected, input);
        assert_eq!(out, expected.into_bytes());
    }

    #[test]
    fn chunked_bodies_end_exactly_where_they_end() {
        for body in [
            "0\r\n\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
            "A\r\n0123456789\r\n0\r\n\r\n",
            "a;x=1;y\r\n0123456789\r\n0;last\r\n\r\n",
            "0002\r\n{}\r\n0000\r\n\r\n",
            "2\r\n{}\r\n0\r\nA: 1\r\nB: 2\r\n\r\n",
            "2\r\n\r\n\r\n0\r\n\r\n",
            // A bare LF where the final CRLF is due starts a trailer line, as in hyper.
            "0\r\n\n\r\n\r\n",
            // A bare LF does not end a trailer line (hyper's decoder): it all is one trailer.
            "0\r\nX: y\nGET /smuggled HTTP/1.1\r\n\r\n",
        ] {
            let input =
                format!("{POST}Transfer-Encoding: chunked\r\n\r\n{body}GET /next HTTP/1.1\r\n\r\n");
            let (out, stop, heads) = same_in_any_pieces(input.as_bytes());
            assert_eq!((stop, heads), (None, 2), "{body:?}");
            assert_eq!(out, input.as_bytes());
        }
    }

    #[test]
    fn malformed_chunked_bodies_break_the_stream_where_hyper_fails() {
        for (body, valid) in [
            ("x\r\n", ""),
            ("-2\r\n{}\r\n", ""),
            ("+2\r\n{}\r\n", ""),
            ("2\n{}\r\n0\r\n\r\n", "2"),
            ("2 3\r\n", "2 "),
            ("2;a\nb\r\n", "2;a"),
            ("2\r\n{}x\r\n", "2\r\n{}"),
            ("2\r\n{}\rx", "2\r\n{}\r"),
            ("0\r\n\rx", "0\r\n\r"),
            ("0\r\nX: 1\rx", "0\r\nX: 1\r"),
            ("FFFFFFFFFFFFFFFFF\r\n", "FFFFFFFFFFFFFFFF"),
            (" 2\r\n{}\r\n", ""),
            ("0x2\r\n{}\r\n", "0"),
        ] {
            let input = format!("{POST}Transfer-Encoding: chunked\r\n\r\n{body}");
            let (out, stop, _) = same_in_any_pieces(input.as_bytes());
            assert_eq!(stop, Some(Scan::Broken), "{body:?}");
            let head = input.len() - body.len();
            assert_eq!(&out[head..], valid.as_bytes(), "{body:?}");
        }
        let long_extension = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(20_000));
        let input = format!("{POST}Transfer-Encoding: chunked\r\n\r\n{long_extension}");
        assert_eq!(run(input.as_bytes(), 4096).1, Some(Scan::Broken));
        let many_trailers = format!("0\r\n{}\r\n", "X: y\r\n".repeat(101));
        let input = format!("{POST}Transfer-Encoding: chunked\r\n\r\n{many_trailers}");
        assert_eq!(run(input.as_bytes(), 4096).1, Some(Scan::Broken));
    }

    #[test]
    fn content_length_bodies_are_never_read_as_heads() {
        let smuggled = "GET /smuggled HTTP/1.1\r\n\r\n";
        let input = format!(
            "{POST}Content-Length: {}\r\n\r\n{smuggled}GET /next HTTP/1.1\r\n\r\n",
            smuggled.len()
        );
        let (out, stop, heads) = same_in_any_pieces(input.as_bytes());
        assert_eq!((stop, heads), (None, 2));
        assert_eq!(out, input.as_bytes());
    }

    #[test]
    fn a_refused_head_stops_the_stream_after_the_messages_before_it() {
        let first = format!("{POST}Content-Length: 2\r\n\r\n{{}}");
        let input = format!(
            "{first}{POST}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        );
        let (out, stop, heads) = same_in_any_pieces(input.as_bytes());
        assert_eq!(stop, Some(Scan::Refuse(HeadError::Framing)));
        assert_eq!(heads, 1);
        assert_eq!(out, first.as_bytes());
    }

    #[test]
    fn the_http2_preface_passes_everything_after_it() {
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00GET / HTTP/1.1\r\n\r\n");
        let (out, stop, heads) = same_in_any_pieces(&input);
        assert_eq!((out, stop, heads), (input.clone(), None, 0));
        // Only at the start of a connection, and only the whole preface.
        let late = format!("GET / HTTP/1.1\r\n\r\n{}", String::from_utf8_lossy(PREFACE));
        assert_eq!(
            run(late.as_bytes(), 64).1,
            Some(Scan::Refuse(HeadError::Malformed))
        );
        assert_eq!(
            run(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", 64).1,
            Some(Scan::Refuse(HeadError::Malformed))
        );
        let mut alpn = Framer::new(true);
        assert_eq!(alpn.scan(b"anything"), Scan::Pass(8));
    }
}
