//! The W3C trace context (`traceparent`) work is done in, kept with what it writes: an
//! event stores the one of the request that wrote it, so whoever handles the event later
//! (the coordinator, another service) can link its own span to that request's, and "why
//! did this item go DONE" can be followed from the status change back to the estimate.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of the current span (`00-<trace id>-<span id>-<flags>`), or empty
/// when there is no trace.
pub fn current() -> String {
    of(&tracing::Span::current()
        .context()
        .span()
        .span_context()
        .clone())
}

/// The `traceparent` naming `span`, or empty for an invalid one.
pub fn of(span: &SpanContext) -> String {
    if !span.is_valid() {
        return String::new();
    }
    let context = opentelemetry::Context::new().with_remote_span_context(span.clone());
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// The span a stored `traceparent` names; `None` for an empty or malformed one (a
/// stored value is never trusted to be well formed).
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    if traceparent.is_empty() {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips_and_garbage_is_none() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = span_context(stored).unwrap();
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(of(&span), stored);
        for garbage in [
            "",
            "00-xyz",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert!(span_context(garbage).is_none(), "{garbage}");
        }
        assert_eq!(of(&SpanContext::empty_context()), "");
    }

    #[test]
    fn the_current_span_is_named() {
        crate::wire::telemetry::init_for_tests();
        let span = tracing::info_span!("work");
        let _entered = span.enter();
        let current = current();
        assert!(current.starts_with("00-"), "{current}");
        assert_eq!(
            span_context(&current).unwrap().span_id(),
            span.context().span().span_context().span_id()
        );
    }
}
