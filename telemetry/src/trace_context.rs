//! The W3C trace context (`traceparent`, `tracestate`) of the current span, taken out to
//! travel with a request or a signed command, and put back as a span's parent on the other
//! side. Without OTLP export there is no context to take, and an empty one is no parent.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header names the W3C trace context propagator reads and writes.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Longest value accepted for either header: a version-00 `traceparent` is 55 characters
/// and W3C asks vendors to pass on `tracestate` up to 512; anything longer is ignored
/// rather than parsed.
const MAX_HEADER: usize = 512;

/// A trace context as two strings; both empty when there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: String,
}

impl TraceContext {
    /// The context of the current span (empty outside one, or without OTLP export).
    pub fn current() -> Self {
        let context = tracing::Span::current().context();
        let mut headers = Headers::default();
        TraceContextPropagator::new().inject_context(&context, &mut headers);
        Self {
            traceparent: headers.0.remove(TRACEPARENT).unwrap_or_default(),
            tracestate: headers.0.remove(TRACESTATE).unwrap_or_default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty()
    }

    /// Makes this context the parent of `span` (which must not have been entered yet).
    /// An empty, malformed or oversized context leaves `span` a root.
    pub fn set_as_parent_of(&self, span: &tracing::Span) {
        if let Some(parent) = self.parent() {
            // Only fails when no OpenTelemetry layer is installed: then there is no trace.
            let _ = span.set_parent(parent);
        }
    }

    /// The remote span this context names, if it names one validly.
    fn parent(&self) -> Option<Context> {
        if self.is_empty()
            || self.traceparent.len() > MAX_HEADER
            || self.tracestate.len() > MAX_HEADER
        {
            return None;
        }
        let mut headers = Headers::default();
        headers.set(TRACEPARENT, self.traceparent.clone());
        if !self.tracestate.is_empty() {
            headers.set(TRACESTATE, self.tracestate.clone());
        }
        let parent = TraceContextPropagator::new().extract(&headers);
        parent.span().span_context().is_valid().then_some(parent)
    }
}

#[derive(Default)]
struct Headers(HashMap<String, String>);

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn of(traceparent: &str, tracestate: &str) -> TraceContext {
        TraceContext {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.to_string(),
        }
    }

    #[test]
    fn a_valid_traceparent_names_its_span() {
        let parent = of(PARENT, "vendor=1").parent().expect("a parent");
        let span = parent.span();
        let context = span.span_context();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_remote());
    }

    #[test]
    fn empty_garbage_and_oversized_contexts_are_no_parent() {
        assert!(of("", "").parent().is_none());
        assert!(of("not a traceparent", "").parent().is_none());
        // All-zero ids are invalid by the W3C rules.
        assert!(
            of(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ""
            )
            .parent()
            .is_none()
        );
        assert!(of(&"0".repeat(4096), "").parent().is_none());
        assert!(of(PARENT, &"a=b,".repeat(200)).parent().is_none());
    }

    #[test]
    fn outside_any_span_there_is_no_context() {
        assert!(TraceContext::current().is_empty());
    }
}
