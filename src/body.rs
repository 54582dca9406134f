//! The bodies on each side of the proxy, as two types so the compiler keeps them apart: a
//! caller's body can only go upstream ([`RequestBody`]) and an upstream's body can only go back
//! to the caller ([`ResponseBody`]).
//!
//! Enums rather than boxed trait objects: every request has a body each way, and boxing them
//! cost two allocations and a dynamic call per frame on the hot path.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::screen::ScreenedBody;
use crate::upstream::UpstreamBody;

/// Errors inside bodies (hyper, length limits), boxed only when one happens.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What scimgate sends upstream: the caller's body as it streams in, or one it read to judge.
pub enum RequestBody {
    /// The caller's request body, cut off at `server.max_body_bytes`.
    Streamed(Limited<Incoming>),
    /// A body read whole to be checked (`/Bulk`), forwarded byte-exact.
    Read(Full<Bytes>),
}

/// What scimgate answers the caller with: the upstream's response, or a body it built itself.
pub enum ResponseBody {
    /// The upstream's 2xx response body, screened for the key as it streams; reading it to the
    /// end returns its connection to the pool.
    Upstream(ScreenedBody<UpstreamBody>),
    /// A body held in memory: error documents, a rewritten or screened response.
    Built(Full<Bytes>),
}

impl RequestBody {
    /// A body of these bytes.
    pub(crate) fn read(bytes: Bytes) -> Self {
        Self::Read(Full::new(bytes))
    }
}

impl ResponseBody {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Built(Full::new(bytes.into()))
    }
}

/// `Body` for a two-variant enum whose first variant streams and whose second is a `Full`.
/// Every variant is `Unpin`, so no projection is needed.
macro_rules! either_body {
    ($name:ident, $streamed:ident, $full:ident) => {
        impl Body for $name {
            type Data = Bytes;
            type Error = BoxError;

            fn poll_frame(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                match self.get_mut() {
                    Self::$streamed(body) => Pin::new(body).poll_frame(cx),
                    Self::$full(body) => Pin::new(body)
                        .poll_frame(cx)
                        .map_err(|never: Infallible| match never {}),
                }
            }

            fn is_end_stream(&self) -> bool {
                match self {
                    Self::$streamed(body) => body.is_end_stream(),
                    Self::$full(body) => body.is_end_stream(),
                }
            }

            fn size_hint(&self) -> SizeHint {
                match self {
                    Self::$streamed(body) => body.size_hint(),
                    Self::$full(body) => body.size_hint(),
                }
            }
        }
    };
}

either_body!(RequestBody, Streamed, Read);
either_body!(ResponseBody, Upstream, Built);

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_bodies_read_back_and_report_their_size() {
        let body = ResponseBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
        assert!(ResponseBody::full(Bytes::new()).is_end_stream());
        let body = RequestBody::read(Bytes::from_static(b"{}"));
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
    }
}
