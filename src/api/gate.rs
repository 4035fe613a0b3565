//! The gate every request passes before the routes: the configured message-size limit on
//! the request body, and a debug line naming the method and the caller.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::codegen::http::Request;
use tonic::codegen::Bytes;
use tonic::Status;
use tower::{Layer, Service};

/// gRPC's frame header: a compression flag and a 4-byte length.
const FRAME_HEADER: usize = 5;

/// Wraps the routes in a [`Gate`].
#[derive(Debug, Clone, Copy)]
pub struct GateLayer {
    max_message_bytes: usize,
}

impl GateLayer {
    pub fn new(max_message_bytes: usize) -> Self {
        GateLayer { max_message_bytes }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            max_message_bytes: self.max_message_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    max_message_bytes: usize,
}

impl<S> Service<Request<Body>> for Gate<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if tracing::enabled!(tracing::Level::DEBUG) {
            match super::identity::principal_of_http(&req) {
                Ok(p) => tracing::debug!(method = req.uri().path(), principal = %p, "rpc"),
                Err(_) => tracing::debug!(method = req.uri().path(), "rpc without identity"),
            }
        }
        let limit = self.max_message_bytes;
        let req = req.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                remaining: limit.saturating_add(FRAME_HEADER),
                limit,
            })
        });
        self.inner.call(req)
    }
}

/// A request body that fails with RESOURCE_EXHAUSTED once it exceeds one message of
/// `limit` bytes (every keyorch RPC is unary: one message per request).
struct LimitedBody {
    inner: Body,
    remaining: usize,
    limit: usize,
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                if data.len() > this.remaining {
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "request message larger than limits.max_message_bytes ({} bytes)",
                        this.limit
                    )))));
                }
                this.remaining -= data.len();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
