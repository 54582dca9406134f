//! What the streaming key screen costs a 2xx response body: CPU per MiB through `ScreenedBody`
//! against the same chunks passed through untouched (`cargo run --release --example screen_cost`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use scimgate::screen::{KeyScreen, ScreenedBody};

/// `left` copies of one chunk, as a backend's body arrives.
struct Chunks {
    chunk: Bytes,
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// A SCIM ListResponse page, repeated to fill one chunk.
fn chunk(len: usize) -> Bytes {
    let user = br#"{"id":"2819c223-7f76-453a-919d-413861904646","userName":"bjensen@example.com","name":{"familyName":"Jensen","givenName":"Barbara"},"emails":[{"value":"bjensen@example.com","type":"work","primary":true}],"active":true},"#;
    Bytes::from(user.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            n += data.len();
        }
    }
    n
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key = b"sa-key-9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let screen = std::sync::Arc::new(KeyScreen::new(key));
    let total = 256 << 20;
    for size in [8 << 10, 16 << 10, 64 << 10] {
        let count = total / size;
        let plain = rt.block_on(async {
            let start = Instant::now();
            let n = drain(Chunks {
                chunk: chunk(size),
                left: count,
            })
            .await;
            (start.elapsed(), n)
        });
        let screened = rt.block_on(async {
            let start = Instant::now();
            let body = ScreenedBody::new(
                Chunks {
                    chunk: chunk(size),
                    left: count,
                },
                screen.clone(),
            );
            let n = drain(body).await;
            (start.elapsed(), n)
        });
        assert_eq!(plain.1, screened.1);
        let mib = (total >> 20) as f64;
        println!(
            "chunks of {:>2} KiB: untouched {:>7.1} µs/MiB, screened {:>7.1} µs/MiB ({:.1} GiB/s)",
            size >> 10,
            plain.0.as_secs_f64() * 1e6 / mib,
            screened.0.as_secs_f64() * 1e6 / mib,
            mib / 1024.0 / screened.0.as_secs_f64(),
        );
    }
}
