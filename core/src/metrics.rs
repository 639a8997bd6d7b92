//! Names of the filter's metrics, in one place for the filter, the sidecar and the docs.
//!
//! Proxy-wasm metrics have no labels, so labels travel inside the name as `.label.value`
//! pairs and Envoy's `stats_config.stats_tags` (see [`STATS_TAGS`]) turns them back into
//! Prometheus labels. Envoy puts wasm metrics under the `wasmcustom.` namespace and drops
//! that prefix on `/stats/prometheus`, so `linnet_requests_total{rollout,variant,reason}`
//! is what a scraper sees.

use crate::decide::{Reason, Variant};

pub const REQUESTS: &str = "linnet_requests_total";
pub const RESPONSES: &str = "linnet_responses_total";
pub const RESPONSE_TIME: &str = "linnet_response_time_ms";
pub const MIRRORED: &str = "linnet_mirrored_total";
pub const OVERRIDE_REJECTED: &str = "linnet_override_rejected_total";
pub const STRIPPED_HEADERS: &str = "linnet_stripped_headers_total";
/// The filter's series that a client moves on its own, with how: a guardrail on one of them
/// would let any client roll a release back.
pub const CLIENT_MOVED: [(&str, &str); 3] = [
    (
        OVERRIDE_REJECTED,
        "any client moves by sending a wrong override token",
    ),
    (
        STRIPPED_HEADERS,
        "any client moves by sending Linnet's own headers",
    ),
    (REQUESTS, "any client moves by sending requests"),
];
/// Version of the snapshot a VM routes by (0: the plugin configuration's own rollouts).
pub const SNAPSHOT_VERSION: &str = "linnet_snapshot_version";
/// Seconds since the process last heard from the sidecar.
pub const SNAPSHOT_AGE: &str = "linnet_snapshot_age_seconds";
/// Polls that failed (sidecar down, slow, or an error status).
pub const SNAPSHOT_ERRORS: &str = "linnet_snapshot_poll_errors_total";
/// Snapshots refused as invalid; the last good one stayed.
pub const SNAPSHOT_REJECTED: &str = "linnet_snapshot_rejected_total";

/// Response classes counted per variant.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `(tag_name, regex)` pairs for Envoy's `stats_config.stats_tags`. The first capture group
/// is cut from the stat name, the second is the label value.
pub const STATS_TAGS: [(&str, &str); 4] = [
    ("rollout", r"^wasmcustom\.linnet_\w+(\.rollout\.([^.]+))"),
    (
        "variant",
        r"^wasmcustom\.linnet_\w+\.rollout\.[^.]+(\.variant\.([^.]+))",
    ),
    (
        "reason",
        r"^wasmcustom\.linnet_\w+\.rollout\.[^.]+\.variant\.[^.]+(\.reason\.([^.]+))",
    ),
    (
        "class",
        r"^wasmcustom\.linnet_\w+\.rollout\.[^.]+\.variant\.[^.]+(\.class\.([^.]+))",
    ),
];

pub fn requests(rollout: &str, variant: Variant, reason: Reason) -> String {
    format!(
        "{REQUESTS}.rollout.{rollout}.variant.{}.reason.{}",
        variant.as_str(),
        reason.as_str()
    )
}

pub fn responses(rollout: &str, variant: Variant, class: &str) -> String {
    format!(
        "{RESPONSES}.rollout.{rollout}.variant.{}.class.{class}",
        variant.as_str()
    )
}

pub fn response_time(rollout: &str, variant: Variant) -> String {
    format!(
        "{RESPONSE_TIME}.rollout.{rollout}.variant.{}",
        variant.as_str()
    )
}

pub fn mirrored(rollout: &str) -> String {
    format!("{MIRRORED}.rollout.{rollout}")
}

pub fn override_rejected(rollout: &str) -> String {
    format!("{OVERRIDE_REJECTED}.rollout.{rollout}")
}

/// Index into [`CLASSES`] for an HTTP status, `None` outside 100..=599.
pub fn class_index(status: u32) -> Option<usize> {
    match status {
        100..=599 => Some((status / 100 - 1) as usize),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_labels_as_pairs() {
        assert_eq!(
            requests("checkout", Variant::Canary, Reason::Bucket),
            "linnet_requests_total.rollout.checkout.variant.canary.reason.bucket"
        );
        assert_eq!(
            responses("a", Variant::Stable, "5xx"),
            "linnet_responses_total.rollout.a.variant.stable.class.5xx"
        );
        assert_eq!(class_index(204), Some(1));
        assert_eq!(class_index(599), Some(4));
        assert_eq!(class_index(600), None);
        assert_eq!(class_index(0), None);
    }
}
