//! The sampling decision: parent-based, then a ratio of trace ids — OpenTelemetry's
//! `ParentBased(TraceIdRatioBased(ratio))`, decided here on the shard without building the
//! SDK's `Context` for every request (the tests check both give the same answer).

use crate::telemetry::trace_context::TraceContext;

/// Whether a request's spans are recorded: a client's `traceparent` decides by its sampled
/// flag; a trace that starts here is recorded for a `ratio` share of trace ids.
pub fn sampled(ratio: f64, trace: &TraceContext) -> bool {
    if trace.parent_span_id.is_some() {
        return trace.flags & 1 == 1;
    }
    ratio_sampled(ratio, &trace.trace_id)
}

/// The SDK's rule: the trace id's lower 64 bits, shifted right once, below `ratio × 2^63`.
fn ratio_sampled(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

    fn sdk(ratio: f64, t: &TraceContext) -> bool {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
        let parent = t.parent_span_id.map(|span| {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(t.trace_id),
                SpanId::from_bytes(span),
                TraceFlags::new(t.flags),
                true,
                TraceState::default(),
            ))
        });
        let r = sampler.should_sample(
            parent.as_ref(),
            TraceId::from_bytes(t.trace_id),
            "chat",
            &SpanKind::Server,
            &[],
            &[],
        );
        r.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn decides_as_the_sdk_does() {
        let mut agreed = 0;
        for ratio in [0.0, 0.01, 0.25, 0.5, 0.999, 1.0] {
            for i in 0..2000u64 {
                let mut t = TraceContext::new_root();
                if i % 3 == 0 {
                    t.parent_span_id = Some(i.to_be_bytes());
                    t.flags = (i % 2) as u8;
                }
                assert_eq!(sampled(ratio, &t), sdk(ratio, &t), "ratio {ratio}, {t:?}");
                agreed += 1;
            }
        }
        assert_eq!(agreed, 12_000);
    }

    #[test]
    fn a_ratio_keeps_about_its_share() {
        let kept = (0..20_000)
            .filter(|_| sampled(0.25, &TraceContext::new_root()))
            .count();
        // 5,000 expected; 6 standard deviations (about 370) either side.
        assert!((4_600..5_400).contains(&kept), "{kept}");
    }
}
