//! The W3C trace context across operator calls: the CLI puts its span's `traceparent` in
//! the gRPC metadata, serve makes it the parent of the call's span. (Commands to agents
//! carry theirs inside the signed `Command` instead; see `signer::new_command`.)

use tonic::Request;
use tonic::metadata::{MetadataMap, MetadataValue};
use troop_telemetry::TraceContext;
use troop_telemetry::trace_context::{TRACEPARENT, TRACESTATE};

/// `message` as a request that carries the current span's trace context.
pub fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let trace = TraceContext::current();
    for (key, value) in [
        (TRACEPARENT, trace.traceparent),
        (TRACESTATE, trace.tracestate),
    ] {
        if let Ok(value) = MetadataValue::try_from(value.as_str())
            && !value.is_empty()
        {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

/// Makes the caller's span, named in `metadata`, the parent of `span`.
pub fn continue_trace(span: &tracing::Span, metadata: &MetadataMap) {
    let header = |key| {
        metadata
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    TraceContext {
        traceparent: header(TRACEPARENT),
        tracestate: header(TRACESTATE),
    }
    .set_as_parent_of(span);
}
