//! Alertmanager as a guardrail: its webhook payload, and the selectors by which a rollout
//! claims the alerts that judge it.
//!
//! A firing alert whose labels carry every label of a rollout's selector rolls the rollout
//! back (a `critical` selector) or holds its stepping while it fires (`warning`); its name and
//! annotations become the reason. A resolved alert is recorded and lifts its hold.

use crate::analysis::policy::Severity;
use crate::gate::clip;
use linnet_core::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many selectors per rollout, and labels per selector.
const MAX_SELECTORS: usize = 32;
const MAX_LABELS: usize = 16;
/// How much of an annotation a reason keeps.
const ANNOTATION_BYTES: usize = 300;

/// Which alerts judge a rollout: those carrying every label given here.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSelector {
    /// Label name → the value it must have, e.g. `{alertname: CanaryErrors, service: checkout}`.
    #[serde(rename = "match")]
    pub labels: BTreeMap<String, String>,
    /// `critical` (default) rolls back; `warning` holds stepping while the alert fires.
    #[serde(default = "critical")]
    #[schema(value_type = String)]
    pub severity: Severity,
}

/// Alertmanager's webhook body (version 4); fields Linnet does not read are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default, rename = "groupKey")]
    pub group_key: Option<String>,
    #[serde(default)]
    pub receiver: Option<String>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, rename = "startsAt")]
    pub starts_at: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

fn critical() -> Severity {
    Severity::Critical
}

// === impl AlertSelector ===

impl AlertSelector {
    pub fn matches(&self, alert: &Alert) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

/// Validates a rollout's selectors; `Err` names the field.
pub fn validate(selectors: &[AlertSelector]) -> Result<(), ConfigError> {
    if selectors.len() > MAX_SELECTORS {
        return Err(ConfigError::new(
            "alerts",
            format!("{} selectors; at most {MAX_SELECTORS}", selectors.len()),
        ));
    }
    for (i, s) in selectors.iter().enumerate() {
        let at = format!("alerts[{i}].match");
        if s.labels.is_empty() {
            return Err(ConfigError::new(
                at,
                "needs at least one label, or every alert would judge this rollout",
            ));
        }
        if s.labels.len() > MAX_LABELS {
            return Err(ConfigError::new(
                at,
                format!("{} labels; at most {MAX_LABELS}", s.labels.len()),
            ));
        }
        if let Some(k) = s.labels.keys().find(|k| !is_label_name(k)) {
            return Err(ConfigError::new(
                at,
                format!("{k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
        }
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

// === impl Alert ===

impl Alert {
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map_or("(no alertname)", String::as_str)
    }

    /// Alertmanager's fingerprint, else one made of the sorted labels: what keys a hold.
    pub fn key(&self) -> String {
        match &self.fingerprint {
            Some(f) if !f.is_empty() => f.clone(),
            _ => self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// `alert CanaryErrors firing: canary 5xx above 5% (…description…)`.
    pub fn reason(&self) -> String {
        let status = match self.status {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        };
        let mut out = format!("alert {} {status}", self.name());
        let said: Vec<String> = ["summary", "description", "message"]
            .iter()
            .filter_map(|k| self.annotations.get(*k))
            .map(|v| clip(v.trim(), ANNOTATION_BYTES))
            .filter(|v| !v.is_empty())
            .collect();
        if !said.is_empty() {
            out.push_str(": ");
            out.push_str(&said.join(" — "));
        }
        out
    }
}

/// Reads a webhook body; `Err` names the field.
pub fn parse(body: &[u8]) -> Result<Webhook, ConfigError> {
    linnet_core::config::parse_json(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(v: serde_json::Value) -> Alert {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_selector_matches_alerts_carrying_all_its_labels() {
        let s: AlertSelector = serde_json::from_value(
            json!({"match": {"alertname": "CanaryErrors", "service": "web"}}),
        )
        .unwrap();
        assert_eq!(s.severity, Severity::Critical);
        let yes = alert(json!({"status": "firing",
            "labels": {"alertname": "CanaryErrors", "service": "web", "severity": "page"}}));
        let no = alert(
            json!({"status": "firing", "labels": {"alertname": "CanaryErrors", "service": "api"}}),
        );
        assert!(s.matches(&yes));
        assert!(!s.matches(&no));
    }

    #[test]
    fn the_reason_names_the_alert_and_its_annotations() {
        let a = alert(
            json!({"status": "firing", "labels": {"alertname": "CanaryErrors"},
            "annotations": {"summary": "canary 5xx above 5%", "description": "12% of 200", "runbook_url": "x"},
            "fingerprint": "abc"}),
        );
        assert_eq!(
            a.reason(),
            "alert CanaryErrors firing: canary 5xx above 5% — 12% of 200"
        );
        assert_eq!(a.key(), "abc");
        let b = alert(json!({"status": "resolved", "labels": {"b": "2", "a": "1"}}));
        assert_eq!(b.reason(), "alert (no alertname) resolved");
        assert_eq!(b.key(), r#"a="1",b="2""#);
    }

    #[test]
    fn a_real_alertmanager_body_reads() {
        // The shape Alertmanager 0.25 posts (fields Linnet does not read included).
        let body = json!({
            "receiver": "linnet", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://127.0.0.1:9093",
            "alerts": [{"status": "firing", "labels": {"alertname": "X"}, "annotations": {},
                        "startsAt": "2026-12-04T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://p/graph", "fingerprint": "f1"}]
        });
        let w = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(w.alerts.len(), 1);
        assert_eq!(w.alerts[0].status, AlertStatus::Firing);
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        for (body, field) in [
            (json!({}), "."),
            (
                json!({"alerts": [{"status": "burning", "labels": {}}]}),
                "alerts[0].status",
            ),
            (json!({"alerts": [{"status": "firing"}]}), "alerts[0]"),
            (
                json!({"alerts": [{"status": "firing", "labels": {"a": 1}}]}),
                "alerts[0].labels.a",
            ),
        ] {
            let e = parse(body.to_string().as_bytes()).unwrap_err();
            assert!(e.field.starts_with(field), "{body}: {e:?}");
            assert!(!e.message.is_empty(), "{body}: {e:?}");
        }
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn bad_selectors_name_the_field() {
        let empty = AlertSelector {
            labels: BTreeMap::new(),
            severity: Severity::Critical,
        };
        assert_eq!(validate(&[empty]).unwrap_err().field, "alerts[0].match");
        let bad = AlertSelector {
            labels: [("1x".to_owned(), "v".to_owned())].into(),
            severity: Severity::Warning,
        };
        assert_eq!(validate(&[bad]).unwrap_err().field, "alerts[0].match");
    }
}
