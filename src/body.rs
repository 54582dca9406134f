//! The bodies on each side of the proxy, as two types so the compiler keeps them apart: a
//! caller's body can only go upstream ([`RequestBody`]) and an upstream's body can only go back
//! to the caller (`response::ResponseBody`, through the key screen).
//!
//! Enums rather than boxed trait objects: every request has a body each way, and boxing them
//! cost two allocations and a dynamic call per frame on the hot path.

use bytes::Bytes;
use http_body_util::{Full, Limited};
use hyper::body::Incoming;

/// Errors inside bodies (hyper, length limits), boxed only when one happens.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What scimgate sends upstream: the caller's body as it streams in, or one it read to judge.
pub(crate) enum RequestBody {
    /// The caller's request body, cut off at `server.max_body_bytes`.
    Streamed(Limited<Incoming>),
    /// A body read whole to be checked (`/Bulk`), forwarded byte-exact.
    Read(Full<Bytes>),
}

impl RequestBody {
    /// A body of these bytes.
    pub(crate) fn read(bytes: Bytes) -> Self {
        Self::Read(Full::new(bytes))
    }
}

/// `Body` for a two-variant enum whose first variant streams and whose second is a `Full`.
/// Every variant is `Unpin`, so no projection is needed.
macro_rules! either_body {
    ($name:ident, $streamed:ident, $full:ident) => {
        impl ::hyper::body::Body for $name {
            type Data = ::bytes::Bytes;
            type Error = $crate::body::BoxError;

            fn poll_frame(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<
                Option<Result<::hyper::body::Frame<::bytes::Bytes>, $crate::body::BoxError>>,
            > {
                match self.get_mut() {
                    Self::$streamed(body) => {
                        ::hyper::body::Body::poll_frame(::std::pin::Pin::new(body), cx)
                    }
                    Self::$full(body) => {
                        ::hyper::body::Body::poll_frame(::std::pin::Pin::new(body), cx)
                            .map_err(|never: ::std::convert::Infallible| match never {})
                    }
                }
            }

            fn is_end_stream(&self) -> bool {
                match self {
                    Self::$streamed(body) => ::hyper::body::Body::is_end_stream(body),
                    Self::$full(body) => ::hyper::body::Body::is_end_stream(body),
                }
            }

            fn size_hint(&self) -> ::hyper::body::SizeHint {
                match self {
                    Self::$streamed(body) => ::hyper::body::Body::size_hint(body),
                    Self::$full(body) => ::hyper::body::Body::size_hint(body),
                }
            }
        }
    };
}

pub(crate) use either_body;

either_body!(RequestBody, Streamed, Read);

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body;

    #[tokio::test]
    async fn a_read_body_reads_back_and_reports_its_size() {
        let body = RequestBody::read(Bytes::from_static(b"{}"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
    }
}
