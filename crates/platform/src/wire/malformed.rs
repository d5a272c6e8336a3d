//! Request bodies that are not the message they claim to be answer INVALID_ARGUMENT.
//!
//! tonic follows gRPC's status-code table, which files "error parsing the request" under
//! INTERNAL. To a caller INTERNAL says "the server failed, retry or page someone", while
//! random bytes or a wrong wire type are the caller's own mistake, and nothing on the
//! server is wrong. This layer relabels that one status, recognised by tonic's message,
//! on its way out; the message (prost's description of what failed) is kept.

use std::task::{Context, Poll};

use futures::TryFutureExt as _;
use futures::future::MapOk;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// How tonic (tonic-prost) begins the message of a request that failed to decode,
/// percent-encoded as it travels in `grpc-message`.
const DECODE_FAILURE: &str = "failed%20to%20decode%20Protobuf%20message";

/// Wraps a server's routes in [`Malformed`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MalformedLayer;

impl<S> Layer<S> for MalformedLayer {
    type Service = Malformed<S>;

    fn layer(&self, inner: S) -> Malformed<S> {
        Malformed { inner }
    }
}

/// A service whose undecodable requests are answered INVALID_ARGUMENT.
#[derive(Clone, Debug)]
pub struct Malformed<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for Malformed<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<RB>) -> Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.inner.call(request).map_ok(relabel::<RB>)
    }
}

/// A trailers-only answer (the status travels in the headers, as for any call refused
/// before its handler) that says the request failed to decode becomes INVALID_ARGUMENT.
fn relabel<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    let undecodable = headers.get("grpc-status").is_some_and(|code| code == "13")
        && headers
            .get("grpc-message")
            .and_then(|message| message.to_str().ok())
            .is_some_and(|message| message.starts_with(DECODE_FAILURE));
    if undecodable {
        headers.insert("grpc-status", HeaderValue::from_static("3"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &'static str, message: &'static str) -> Response<()> {
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert("grpc-status", HeaderValue::from_static(code));
        response
            .headers_mut()
            .insert("grpc-message", HeaderValue::from_static(message));
        response
    }

    #[test]
    fn only_decode_failures_are_relabelled() {
        let relabelled = relabel(answer(
            "13",
            "failed%20to%20decode%20Protobuf%20message%3A%20invalid%20wire%20type",
        ));
        assert_eq!(relabelled.headers()["grpc-status"], "3");
        let internal = relabel(answer(
            "13",
            "internal%20error%3B%20see%20the%20server%20log",
        ));
        assert_eq!(internal.headers()["grpc-status"], "13");
        let other = relabel(answer("5", "failed%20to%20decode%20Protobuf%20message"));
        assert_eq!(other.headers()["grpc-status"], "5");
    }
}
