//! The one body type on both sides of the proxy: the caller's request body streaming up, the
//! upstream's response streaming down, or a body the gateway built itself.
//!
//! An enum rather than a boxed trait object: every request has a body each way, and boxing
//! them cost two allocations and a dynamic call per frame on the hot path.

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

/// A request or response body as the proxy passes it on.
pub enum ProxyBody {
    /// The caller's request body, cut off at `server.max_body_bytes`.
    Caller(Limited<Incoming>),
    /// The upstream's 2xx response body, screened for the key as it streams; reading it to the
    /// end returns its connection to the pool.
    Upstream(ScreenedBody<UpstreamBody>),
    /// A body held in memory: error documents, a rewritten or screened response, a `/Bulk`
    /// request that was read to be checked.
    Full(Full<Bytes>),
}

impl ProxyBody {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin, so no projection is needed.
        match self.get_mut() {
            Self::Caller(body) => Pin::new(body).poll_frame(cx),
            Self::Upstream(body) => Pin::new(body).poll_frame(cx),
            Self::Full(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Caller(body) => body.is_end_stream(),
            Self::Upstream(body) => body.is_end_stream(),
            Self::Full(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Caller(body) => body.size_hint(),
            Self::Upstream(body) => body.size_hint(),
            Self::Full(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_reads_back_and_reports_its_size() {
        let body = ProxyBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
        assert!(ProxyBody::full(Bytes::new()).is_end_stream());
    }
}
