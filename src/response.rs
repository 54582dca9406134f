//! What scimgate answers the caller with: the upstream's body through the key screen, or a
//! body scimgate built (the other side of `body::RequestBody`).

use bytes::Bytes;
use http_body_util::Full;

use crate::body::either_body;
use crate::screen::ScreenedBody;
use crate::upstream::UpstreamBody;

/// What scimgate answers the caller with: the upstream's response, or a body it built itself.
pub(crate) enum ResponseBody {
    /// The upstream's 2xx response body, screened for the key as it streams; reading it to the
    /// end returns its connection to the pool.
    Upstream(ScreenedBody<UpstreamBody>),
    /// A body held in memory: error documents, a rewritten or screened response.
    Built(Full<Bytes>),
}

impl ResponseBody {
    /// A body of these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Built(Full::new(bytes.into()))
    }
}

either_body!(ResponseBody, Upstream, Built);

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body;

    #[tokio::test]
    async fn a_built_body_reads_back_and_reports_its_size() {
        use http_body_util::BodyExt;
        let body = ResponseBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(ResponseBody::full(Bytes::new()).is_end_stream());
    }
}
