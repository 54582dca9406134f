//! Differential tests: the same byte stream served by hyper alone and by hyper behind the front.
//! Behind the front, hyper must see the same requests (method, target, body) as alone, up to the
//! point where the front refuses, never others; and every error response must be the front's
//! SCIM error, never hyper's bare one. The streams are pipelines of valid requests (every
//! framing, chunk extensions, trailers, leading empty lines), then the same with random bytes
//! replaced, inserted or deleted, written in random pieces.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::Metrics;
use crate::response::ResponseBody;

/// One request as the service saw it; `body` is `None` when reading it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Option<Vec<u8>>,
}

/// Serves `input` (written in pieces of `piece` bytes) on one connection; returns the requests
/// the service saw and every byte the client received.
async fn serve(input: Vec<u8>, piece: usize, front: bool) -> (Vec<Seen>, Vec<u8>) {
    let (client, server) = tokio::io::duplex(4096);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
            record.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                target: parts.uri.to_string(),
                body,
            });
            Ok::<_, Infallible>(Response::new(ResponseBody::full("")))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // A client that has written everything shuts its side down: that must not cancel the
    // requests still being answered (hyper's default would, at a moment that depends on timing).
    builder.half_close(true);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        let _ = from_server.read_to_end(&mut received).await;
        received
    });
    let writer = tokio::spawn(async move {
        for p in input.chunks(piece.max(1)) {
            if to_server.write_all(p).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        let _ = to_server.shutdown().await;
    });
    let served = if front {
        let metrics = Arc::new(Metrics::new().unwrap());
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let (io, service) = super::wrap(
            server,
            service,
            &metrics,
            peer,
            Duration::from_secs(30),
            false,
        );
        tokio::time::timeout(
            Duration::from_secs(10),
            builder.serve_connection(TokioIo::new(io), service),
        )
        .await
        .map(|_| ())
    } else {
        tokio::time::timeout(
            Duration::from_secs(10),
            builder.serve_connection(TokioIo::new(server), service),
        )
        .await
        .map(|_| ())
    };
    assert!(
        served.is_ok(),
        "the connection did not end (front: {front})"
    );
    writer.abort();
    let received = reader.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (seen, received)
}

/// Every response that is not the test service's 200 carries the SCIM media type: no bare
/// status from hyper.
fn assert_only_scim_errors(received: &[u8]) {
    let text = String::from_utf8_lossy(received);
    for response in text.split("HTTP/1.1 ").skip(1) {
        if response.starts_with("200 ") {
            continue;
        }
        let head = response.split("\r\n\r\n").next().unwrap_or("");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/scim+json"),
            "a response without a SCIM body: {head:?}"
        );
    }
}

fn run(input: &[u8], piece: usize, front: bool) -> (Vec<Seen>, Vec<u8>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(serve(input.to_vec(), piece, front))
}

/// One request: its bytes and what the service should see of it.
/// `true` when its query has a raw `"` (which hyper alone refuses).
fn message() -> impl Strategy<Value = (Vec<u8>, Seen, bool)> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE"]);
    let query = "[A-Za-z0-9+%=&{|}^`\\[\\]\\\\~._\"-]{0,10}";
    let body = prop::collection::vec(any::<u8>(), 0..24);
    let chunks = prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 1..12),
            prop::option::of("[a-z0-9=;\" ]{1,6}"),
        ),
        0..4,
    );
    let trailers = prop::collection::vec("[A-Za-z]{1,5}: [a-z ]{0,6}", 0..3);
    (
        method,
        query,
        0..3u8,
        body,
        chunks,
        trailers,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(method, query, framing, body, chunks, trailers, lead, upper)| {
                let mut out = Vec::new();
                if lead {
                    out.extend_from_slice(b"\r\n");
                }
                let target = format!("/Users?{query}");
                out.extend(format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n").bytes());
                let mut expected = Vec::new();
                match framing {
                    0 => out.extend_from_slice(b"\r\n"),
                    1 => {
                        out.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
                        out.extend_from_slice(&body);
                        expected = body;
                    }
                    _ => {
                        let te = if upper { "CHUNKED" } else { "chunked" };
                        out.extend(format!("Transfer-Encoding: {te}\r\n\r\n").bytes());
                        for (data, extension) in chunks {
                            out.extend(format!("{:x}", data.len()).bytes());
                            if let Some(extension) = extension {
                                out.push(b';');
                                out.extend(extension.bytes());
                            }
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                            expected.extend_from_slice(&data);
                        }
                        out.extend_from_slice(b"0\r\n");
                        for trailer in trailers {
                            out.extend(trailer.bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"\r\n");
                    }
                }
                // Behind the front, the raw `"` arrives escaped.
                let seen = Seen {
                    method: method.to_owned(),
                    target: target.replace('"', "%22"),
                    body: Some(expected),
                };
                (out, seen, query.contains('"'))
            },
        )
}

fn pipeline() -> impl Strategy<Value = (Vec<u8>, Vec<Seen>, bool)> {
    prop::collection::vec(message(), 1..5).prop_map(|messages| {
        let mut bytes = Vec::new();
        let mut seen = Vec::new();
        let mut quoted = false;
        for (b, s, q) in messages {
            bytes.extend(b);
            seen.push(s);
            quoted |= q;
        }
        (bytes, seen, quoted)
    })
}

/// Bytes a mutation may write: framing characters, digits, hex, controls, high bytes; never
/// `"` `<` `>` `#`, which the front escapes in a query where hyper alone refuses them.
const MUTATION_BYTES: &[u8] = b"\r\n\t :;,0123456789abcdefABCDEFxzGT/?=&+-%\x00\x0b\x7f\xc3\xff";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Valid pipelines reach the service exactly, through the front as without it (where hyper
    /// alone takes them: no raw `"` in a query), in any pieces.
    #[test]
    fn valid_pipelines_are_served_exactly(
        (input, expected, quoted) in pipeline(),
        piece in 1usize..48,
    ) {
        if !quoted {
            let (alone, _) = run(&input, piece, false);
            prop_assert_eq!(&alone, &expected);
        }
        let (behind, received) = run(&input, piece, true);
        prop_assert_eq!(&behind, &expected);
        assert_only_scim_errors(&received);
    }

    /// Broken pipelines: behind the front, hyper sees a prefix of what it sees alone (the front
    /// may stop earlier, never read differently), and every refusal is a SCIM error.
    #[test]
    fn mutated_pipelines_never_split_differently(
        (input, _, _) in pipeline(),
        mutations in prop::collection::vec(
            (any::<prop::sample::Index>(), 0..3u8, prop::sample::select(MUTATION_BYTES)),
            1..4,
        ),
        piece in 1usize..48,
    ) {
        // Hyper alone refuses a raw `"` that the front escapes: leave it out here.
        let mut input: Vec<u8> = input.iter().map(|&b| if b == b'"' { b'x' } else { b }).collect();
        for (at, kind, byte) in mutations {
            let i = at.index(input.len().max(1));
            match kind {
                0 if i < input.len() => input[i] = byte,
                1 => input.insert(i.min(input.len()), byte),
                _ if i < input.len() => {
                    input.remove(i);
                }
                _ => {}
            }
        }
        let (alone, _) = run(&input, piece, false);
        let (behind, received) = run(&input, piece, true);
        prop_assert!(
            behind.len() <= alone.len() && alone[..behind.len()] == behind[..],
            "behind the front {:?}\nalone {:?}\ninput {:?}",
            behind, alone, String::from_utf8_lossy(&input)
        );
        assert_only_scim_errors(&received);
    }
}

/// Hand-written desync payloads, whole and a byte at a time: behind the front, hyper sees a
/// prefix of what it sees alone, and only SCIM errors come back.
#[test]
fn smuggling_payloads_split_as_hyper_splits_them() {
    let next = "GET /next HTTP/1.1\r\nHost: gw\r\n\r\n";
    let post = "POST /Users HTTP/1.1\r\nHost: gw\r\n";
    let te = "Transfer-Encoding: chunked\r\n\r\n";
    let payloads = [
        format!("{post}{te}0\r\n\r\n{next}"),
        format!("{post}{te}0\r\n\n\r\n\r\n{next}"),
        format!("{post}{te}0\r\n\n\n{next}"),
        format!("{post}{te}0\r\nX: y\nGET /smuggled HTTP/1.1\r\n\r\n{next}"),
        format!("{post}{te}2\r\n{{}}\r\n0\r\nX: y\r\n\r\n{next}"),
        format!("{post}{te}2\n{{}}\r\n0\r\n\r\n{next}"),
        format!("{post}{te}2\r\n{{}}\n0\r\n\r\n{next}"),
        format!("{post}{te}2;a=\"b\r\nc\"\r\n{{}}\r\n0\r\n\r\n{next}"),
        format!("{post}{te}2 ;x\r\n{{}}\r\n0\r\n\r\n{next}"),
        format!("{post}{te}0000000000000000000002\r\n{{}}\r\n0\r\n\r\n{next}"),
        format!("{post}{te}10000000000000000\r\n{{}}\r\n0\r\n\r\n{next}"),
        format!("{post}Content-Length: 2\r\n{te}0\r\n\r\n{next}"),
        format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n{next}"),
        format!("{post}Transfer-Encoding: identity\r\n{te}0\r\n\r\n{next}"),
        format!("{post}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}{next}"),
        format!("{post}Content-Length: 02\r\n\r\n{{}}{next}"),
        format!("{post}Content-Length: 2\r\n\r\n{{}}\r\n\r\n{next}"),
        format!("{post}Content-Length: 2\n\n{{}}{next}"),
        format!("POST /Users HTTP/1.0\r\n{te}0\r\n\r\n{next}"),
        format!(
            "GET /Users HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{next}{next}",
            next.len()
        ),
        format!("\r\n\r\n{next}\n{next}"),
        format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{next}"),
    ];
    for payload in &payloads {
        for piece in [payload.len(), 1, 5] {
            let (alone, _) = run(payload.as_bytes(), piece, false);
            let (behind, received) = run(payload.as_bytes(), piece, true);
            assert!(
                behind.len() <= alone.len() && alone[..behind.len()] == behind[..],
                "{payload:?} in pieces of {piece}:\nbehind the front {behind:?}\nalone {alone:?}"
            );
            assert_only_scim_errors(&received);
        }
    }
}
