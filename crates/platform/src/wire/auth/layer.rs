//! The tower layer that authenticates every request and checks it against the role table
//! before any handler runs; handlers read the result with [`super::caller`].

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use http::{Request, Response};
use tonic::Status;
use tower::{Layer, Service};

use crate::wire::auth::access::{self, Guard};
use crate::wire::auth::authenticate::Authenticator;
use crate::wire::auth::identity::acting_as;
use tokio::task::futures::TaskLocalFuture;

/// Wraps a server's routes in [`Guarded`].
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Authenticator,
}

impl AuthLayer {
    /// A layer authenticating with `authenticator`.
    pub fn new(authenticator: Authenticator) -> AuthLayer {
        AuthLayer { authenticator }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            authenticator: self.authenticator.clone(),
        }
    }
}

/// A service whose requests are authenticated and authorized first.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    authenticator: Authenticator,
}

impl<S, B, RB> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Either<TaskLocalFuture<String, S::Future>, Ready<Result<Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match check(&self.authenticator, &mut request) {
            Ok(actor) => Either::Left(acting_as(actor, self.inner.call(request))),
            Err(status) => Either::Right(ready(Ok(status.into_http()))),
        }
    }
}

/// Authenticates and authorizes `request`, storing its caller in it; the acting subject.
fn check<B>(authenticator: &Authenticator, request: &mut Request<B>) -> Result<String, Status> {
    let path = request.uri().path();
    let rule = match access::guard(path) {
        Guard::Public => return Ok(String::new()),
        Guard::Ruled(rule) => rule,
        Guard::Unruled => {
            return Err(crate::domain::error::AppError::PermissionDenied(format!(
                "{} has no access rule",
                crate::domain::error::shown(path)
            ))
            .into());
        }
    };
    let method = path.rsplit('/').next().unwrap_or(path).to_owned();
    let caller = authenticator.authenticate(request.headers())?;
    access::authorize(&caller, &method, &rule)?;
    tracing::Span::current().record("subject", caller.actor());
    let actor = caller.actor().to_owned();
    request.extensions_mut().insert(caller);
    Ok(actor)
}
