//! The rollout spec users write (YAML or JSON), and its validation into a [`Plan`].
//!
//! Every error names its field as a path (`steps[2].pause`). The routing rules are checked by
//! compiling each step's [`RolloutConfig`] through linnet-core, so there is one set of rules.

use crate::alerts::AlertSelector;
use crate::analysis::{Analysis, AnalysisSpec};
use crate::gate::{Gate, GateSpec};
use linnet_core::config::{
    validate_name, AnonymousConfig, CohortsConfig, MatchConfig, MirrorConfig, OverrideConfig,
    RolloutConfig, SourceConfig,
};
use linnet_core::{Bp, ConfigError, PluginConfig};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A rollout as the user wrote it. Stored verbatim, so a restart rebuilds the same plan.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub name: String,
    #[serde(default, rename = "match")]
    #[schema(value_type = Object)]
    pub matcher: MatchConfig,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub stickiness: Vec<Sticky>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub anonymous: AnonymousConfig,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub cohorts: CohortsConfig,
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub override_: Option<OverrideConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The shadow cluster that receives mirrored copies; needed when any step mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_cluster: Option<String>,
    /// The Envoy clusters that serve each variant: analysis then judges each variant's
    /// requests, 5xx and latency from Envoy's own stats of its cluster. Absent: from the
    /// filter's per-variant response metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Clusters>,
    pub steps: Vec<StepSpec>,
    /// How long the whole rollout may take; past it the rollout times out to weight 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// After promotion, hand over by itself after this hold (stable is taken to run the
    /// promoted version by then); absent: wait for `complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_after: Option<String>,
    /// Guardrails judged every interval; a step advances only on passing checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Webhooks that must answer 2xx, or load bursts the canary must pass, before the
    /// rollout starts, steps or is promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateSpec>,
    /// Failed gate answers in a row that roll the rollout back (default 10; 0: hold forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_failures: Option<u32>,
    /// The Alertmanager alerts that judge this rollout (`POST /v1/alertmanager`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertSelector>,
    /// Who hears about this rollout, beside the global receivers (`/v1/receivers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::notify::ReceiverSpec>,
}

/// The cluster of each variant, as the route config names them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Clusters {
    pub stable: String,
    pub canary: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Canary share in percent. Absent: the previous step's weight (0 for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Share of stable traffic copied to the shadow cluster, in percent. Absent: no mirroring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<f64>,
    /// `30s`, `5m`, `1h`, `500ms`, or `until promoted`. Absent: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<String>,
}

/// A sticky key source, `{header: x-user-id}` or `{cookie: uid}`: linnet-core's
/// [`SourceConfig`], read as a one-key map by hand so that a map with both keys, or neither,
/// is named as such.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Sticky(pub SourceConfig);

/// The validated schedule of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub deadline: Option<Duration>,
    pub complete_after: Option<Duration>,
    pub analysis: Option<Analysis>,
    pub gates: Vec<Gate>,
    /// Failed gate answers in a row that roll back; 0 never does.
    pub gate_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub weight: f64,
    /// Mirror percent, when this step mirrors.
    pub mirror: Option<f64>,
    pub pause: Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    For(Duration),
    /// A manual gate: the step lasts until someone promotes.
    UntilPromoted,
}

/// The format of a spec body or file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

pub const UNTIL_PROMOTED: &str = "until promoted";

/// What reads show in place of a secret. The field stays, so a reader knows one is set.
pub const REDACTED: &str = "<redacted>";

// === impl Format ===

impl Format {
    /// From a Content-Type; `None` for a type that is neither JSON nor YAML.
    pub fn from_content_type(ct: Option<&str>) -> Option<Format> {
        let Some(ct) = ct else {
            return Some(Format::Json);
        };
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
                Some(Format::Yaml)
            }
            _ => None,
        }
    }

    /// From a file name: `.json` is JSON, anything else YAML (YAML reads most JSON too).
    pub fn from_path(path: &str) -> Format {
        if path.to_ascii_lowercase().ends_with(".json") {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

// === impl Sticky ===

impl<'de> Deserialize<'de> for Sticky {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct OneOf {
            #[serde(default)]
            header: Option<String>,
            #[serde(default)]
            cookie: Option<String>,
        }
        match OneOf::deserialize(d)? {
            OneOf {
                header: Some(h),
                cookie: None,
            } => Ok(Sticky(SourceConfig::Header(h))),
            OneOf {
                header: None,
                cookie: Some(c),
            } => Ok(Sticky(SourceConfig::Cookie(c))),
            _ => Err(serde::de::Error::custom(
                "give exactly one of `header` or `cookie`",
            )),
        }
    }
}

// === impl Plan ===

impl Plan {
    /// The gates asked before `on`, in the spec's order.
    pub fn gates_on(&self, on: crate::gate::GateOn) -> impl Iterator<Item = &Gate> {
        self.gates.iter().filter(move |g| g.on == on)
    }

    /// Said at create and by `linnet validate`; the spec is valid all the same.
    pub fn warnings(&self) -> Vec<String> {
        self.analysis
            .as_ref()
            .map_or_else(Vec::new, Analysis::warnings)
    }
}

// === impl Clusters ===

impl Clusters {
    fn validate(&self, mirror_cluster: Option<&str>) -> Result<(), ConfigError> {
        for (field, name) in [
            ("clusters.stable", &self.stable),
            ("clusters.canary", &self.canary),
        ] {
            if name.trim().is_empty() {
                return Err(ConfigError::new(field, "must name a cluster"));
            }
            if mirror_cluster == Some(name.as_str()) {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is the mirror_cluster too: the shadow's copies would be counted as this variant's traffic"),
                ));
            }
        }
        if self.stable == self.canary {
            return Err(ConfigError::new(
                "clusters.canary",
                format!("{:?} is the stable cluster too: one cluster's stats cannot tell the variants apart", self.canary),
            ));
        }
        Ok(())
    }
}

// === impl RolloutSpec ===

impl RolloutSpec {
    /// Parses and validates, naming the field of the first error.
    pub fn parse(bytes: &[u8], format: Format) -> Result<(RolloutSpec, Plan), ConfigError> {
        let spec: RolloutSpec = match format {
            Format::Json => linnet_core::config::parse_json(bytes)?,
            Format::Yaml => {
                // The path of the first error is kept aside: it is the field the error names.
                let mut field = String::new();
                serde_saphyr::with_deserializer_from_slice_with_options(
                    bytes,
                    serde_saphyr::options! { with_snippet: false },
                    |de| {
                        serde_path_to_error::deserialize(de).map_err(|e| {
                            field = e.path().to_string();
                            e.into_inner()
                        })
                    },
                )
                .map_err(|e| ConfigError::new(field.trim_start_matches('?'), yaml_message(&e)))?
            }
        };
        let plan = spec.validate()?;
        Ok((spec, plan))
    }

    /// The spec as every read shows it: the override token replaced by [`REDACTED`]. Only
    /// the store and the snapshot the filters poll hold the real one.
    pub fn redacted(&self) -> RolloutSpec {
        let mut spec = self.clone();
        if let Some(token) = spec.override_.as_mut().and_then(|o| o.token.as_mut()) {
            *token = REDACTED.to_owned();
        }
        spec.notify = crate::notify::redact_all(&spec.notify);
        spec
    }

    /// What a reader should know before trusting this valid spec (said at create and by
    /// `linnet validate`): the plan's warnings, and analysis that would judge responses the
    /// default filter build does not count.
    pub fn warnings(&self, plan: &Plan) -> Vec<String> {
        let mut out = plan.warnings();
        if plan.analysis.is_some() && self.clusters.is_none() {
            out.push(
                "analysis judges responses from the filter's per-variant response metrics, which only the responses build (dist/linnet-responses.wasm) records; name `clusters: {stable, canary}` to judge them from Envoy's cluster stats with dist/linnet.wasm".to_owned(),
            );
        }
        out
    }

    /// Checks every field and builds the schedule.
    pub fn validate(&self) -> Result<Plan, ConfigError> {
        validate_name("name", &self.name)?;
        if self.override_.as_ref().and_then(|o| o.token.as_deref()) == Some(REDACTED) {
            // A spec copied from a read and sent back would otherwise make the marker, which
            // every reader knows, the token.
            return Err(ConfigError::new(
                "override.token",
                format!(
                    "{REDACTED:?} is what reads show in place of the token; give the real token"
                ),
            ));
        }
        if self.name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::new(
                "name",
                format!(
                    "{:?} is all digits, which reads as a release id; add a letter",
                    self.name
                ),
            ));
        }
        if self.steps.is_empty() {
            return Err(ConfigError::new("steps", "needs at least one step"));
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        let mut previous = 0.0_f64;
        for (i, s) in self.steps.iter().enumerate() {
            let at = format!("steps[{i}]");
            if s.weight.is_none() && s.mirror.is_none() {
                return Err(ConfigError::new(
                    &at,
                    "needs a weight, a mirror percent, or both",
                ));
            }
            let weight = match s.weight {
                None => previous,
                Some(w) => {
                    percent(&format!("{at}.weight"), w)?;
                    if w < previous {
                        return Err(ConfigError::new(
                            format!("{at}.weight"),
                            format!("{w} is lower than the previous step's {previous}: weights must not decrease, because raising the weight only adds users and lowering it would move canary users back to stable"),
                        ));
                    }
                    w
                }
            };
            if let Some(m) = s.mirror {
                percent(&format!("{at}.mirror"), m)?;
                if self.mirror_cluster.is_none() {
                    return Err(ConfigError::new(
                        "mirror_cluster",
                        format!("is needed because {at} mirrors"),
                    ));
                }
            }
            let pause = parse_pause(&format!("{at}.pause"), s.pause.as_deref())?;
            let step = Step {
                weight,
                mirror: s.mirror,
                pause,
            };
            self.check_with_core(&step)?;
            steps.push(step);
            previous = weight;
        }
        if let Some(c) = &self.clusters {
            c.validate(self.mirror_cluster.as_deref())?;
        }
        let deadline = positive_duration("deadline", self.deadline.as_deref())?;
        let complete_after = positive_duration("complete_after", self.complete_after.as_deref())?;
        let analysis = self
            .analysis
            .as_ref()
            .map(AnalysisSpec::validate)
            .transpose()?;
        let gates = crate::gate::validate_all(&self.gates, self)?;
        crate::alerts::validate(&self.alerts)?;
        crate::notify::validate_all("notify", &self.notify)?;
        Ok(Plan {
            steps,
            deadline,
            complete_after,
            analysis,
            gates,
            gate_failures: self.gate_failures.unwrap_or(crate::gate::DEFAULT_FAILURES),
        })
    }

    /// What the filter gets for this rollout at a weight, mirror share and kill switch.
    pub fn rollout_config(
        &self,
        weight: f64,
        mirror: Option<f64>,
        kill_switch: bool,
    ) -> RolloutConfig {
        RolloutConfig {
            name: self.name.clone(),
            matcher: self.matcher.clone(),
            weight,
            salt: self.salt.clone(),
            stickiness: self.stickiness.iter().map(|s| s.0.clone()).collect(),
            anonymous: self.anonymous.clone(),
            cohorts: self.cohorts.clone(),
            override_: self.override_.clone(),
            kill_switch,
            mirror: match (mirror, &self.mirror_cluster) {
                (Some(percent), Some(cluster)) if percent > 0.0 => Some(MirrorConfig {
                    cluster: cluster.clone(),
                    percent,
                }),
                _ => None,
            },
        }
    }

    /// Compiles the step's rollout through linnet-core and maps its field paths onto the spec's.
    fn check_with_core(&self, step: &Step) -> Result<(), ConfigError> {
        let rc = self.rollout_config(step.weight, step.mirror, false);
        let config = PluginConfig {
            rollouts: vec![rc],
            ..PluginConfig::default()
        };
        config.compile(0).map(drop).map_err(|e| {
            let field = e.field.strip_prefix("rollouts[0]").unwrap_or(&e.field);
            let field = field.strip_prefix('.').unwrap_or(field);
            let field = match field {
                "mirror.cluster" => "mirror_cluster",
                "" => "spec",
                f => f,
            };
            ConfigError::new(field, e.message)
        })
    }
}

/// `Err` names the field.
pub fn percent(field: &str, value: f64) -> Result<Bp, ConfigError> {
    Bp::from_percent(value).map_err(|m| ConfigError::new(field, m))
}

fn parse_pause(field: &str, pause: Option<&str>) -> Result<Pause, ConfigError> {
    match pause.map(str::trim) {
        None => Ok(Pause::For(Duration::ZERO)),
        Some(p) if p.eq_ignore_ascii_case(UNTIL_PROMOTED) => Ok(Pause::UntilPromoted),
        Some(p) => parse_duration(p)
            .map(Pause::For)
            .map_err(|m| ConfigError::new(field, m)),
    }
}

/// An optional duration longer than 0; `Err` names the field.
fn positive_duration(field: &str, value: Option<&str>) -> Result<Option<Duration>, ConfigError> {
    match value.map(parse_duration) {
        None => Ok(None),
        Some(Ok(d)) if !d.is_zero() => Ok(Some(d)),
        Some(Ok(_)) => Err(ConfigError::new(field, "must be longer than 0")),
        Some(Err(e)) => Err(ConfigError::new(field, e)),
    }
}

/// `500ms`, `30s`, `5m`, `1h`, `1h 30m`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| {
        format!(
            "{s:?} is not a duration ({e}); use e.g. 500ms, 30s, 5m, 1h or \"{UNTIL_PROMOTED}\""
        )
    })
}

/// A validation error naming its field.
/// The YAML reader's error in this spec's words: its hints name the library's own functions.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let at = |l: &serde_saphyr::Location| format!("at line {}, column {}", l.line(), l.column());
    match e {
        serde_saphyr::Error::DuplicateMappingKey { key, location } => format!(
            "the key {} is given twice {}",
            key.as_deref().unwrap_or("?"),
            at(location)
        ),
        serde_saphyr::Error::MultipleDocuments { location, .. } => format!(
            "a spec is one YAML document; a second one starts {}",
            at(location)
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
name: checkout
match: {authority: shop.example, path_prefix: /api}
stickiness: [{header: x-user-id}, {cookie: uid}]
mirror_cluster: checkout-shadow
steps:
  - {weight: 5, pause: 30s}
  - {mirror: 100, pause: 1m}
  - {weight: 50, pause: until promoted}
  - {weight: 100}
deadline: 1h
"#;

    fn yaml_err(s: &str) -> ConfigError {
        RolloutSpec::parse(s.as_bytes(), Format::Yaml).unwrap_err()
    }

    #[test]
    fn parses_the_example() {
        let (spec, plan) = RolloutSpec::parse(YAML.as_bytes(), Format::Yaml).unwrap();
        assert_eq!(spec.name, "checkout");
        assert_eq!(plan.steps.len(), 4);
        assert_eq!(plan.steps[1].weight, 5.0);
        assert_eq!(plan.steps[1].mirror, Some(100.0));
        assert_eq!(plan.steps[0].pause, Pause::For(Duration::from_secs(30)));
        assert_eq!(plan.steps[2].pause, Pause::UntilPromoted);
        assert_eq!(plan.steps[3].pause, Pause::For(Duration::ZERO));
        assert_eq!(plan.deadline, Some(Duration::from_secs(3600)));
        // JSON round trip gives the same plan.
        let json = serde_json::to_vec(&spec).unwrap();
        let (spec2, plan2) = RolloutSpec::parse(&json, Format::Json).unwrap();
        assert_eq!(spec, spec2);
        assert_eq!(plan, plan2);
    }

    #[test]
    fn analysis_without_clusters_warns_that_the_default_filter_counts_no_responses() {
        let analysed = "name: a\nsteps: [{weight: 5}]\nanalysis:\n  source: {envoy: {admin: [\"127.0.0.1:9901\"]}}\n  guardrails: [{name: errors, error_rate: {max: 1}}]\n";
        let warned = |yaml: &str| {
            let (spec, plan) = RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap();
            spec.warnings(&plan)
                .iter()
                .any(|w| w.contains("dist/linnet-responses.wasm") && w.contains("clusters"))
        };
        assert!(warned(analysed));
        let with_clusters = format!("{analysed}clusters: {{stable: s, canary: c}}\n");
        assert!(!warned(&with_clusters));
        // No analysis, nothing judged: nothing to warn about.
        assert!(!warned("name: a\nsteps: [{weight: 5}]\n"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = yaml_err("name: a\nsteps: [{weight: 5, colour: red}]");
        assert!(e.field.starts_with("steps[0]"), "{e}");
        assert!(e.to_string().contains("colour"), "{e}");
        let e = yaml_err("name: a\nsteps: [{weight: .nan}]");
        assert_eq!(e.field, "steps[0].weight");
        assert!(e.message.contains("not a number"));
        let e = yaml_err("name: a\nsteps: [{weight: 101}]");
        assert_eq!(e.field, "steps[0].weight");
        let e = yaml_err("name: a\nsteps: [{weight: 50}, {weight: 20}]");
        assert_eq!(e.field, "steps[1].weight");
        assert!(e.message.contains("must not decrease"));
        let e = yaml_err("name: a\nsteps: [{weight: 5, pause: soon}]");
        assert_eq!(e.field, "steps[0].pause");
        let e = yaml_err("name: a\nsteps: []");
        assert_eq!(e.field, "steps");
        let e = yaml_err("name: Bad Name\nsteps: [{weight: 1}]");
        assert_eq!(e.field, "name");
        let e = yaml_err("name: a\nsteps: [{mirror: 10}]");
        assert_eq!(e.field, "mirror_cluster");
        let e = yaml_err("name: a\nmatch: {path_prefix: api}\nsteps: [{weight: 1}]");
        assert_eq!(e.field, "match.path_prefix");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\ndeadline: forever");
        assert_eq!(e.field, "deadline");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\ncomplete_after: 0s");
        assert_eq!(e.field, "complete_after");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\ncomplete_after: later");
        assert_eq!(e.field, "complete_after");
        let e = yaml_err("name: '2024'\nsteps: [{weight: 1}]");
        assert_eq!(e.field, "name");
        assert!(e.message.contains("release id"), "{e}");
        let e = yaml_err("name: a\nsteps: [{pause: 1s}]");
        assert_eq!(e.field, "steps[0]");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\nclusters: {stable: s, canary: s}");
        assert_eq!(e.field, "clusters.canary");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\nclusters: {stable: ' ', canary: c}");
        assert_eq!(e.field, "clusters.stable");
        let e = yaml_err(
            "name: a\nsteps: [{weight: 1}]\nmirror_cluster: c\nclusters: {stable: s, canary: c}",
        );
        assert_eq!(e.field, "clusters.canary");
        assert!(e.message.contains("mirror_cluster"), "{e}");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\nclusters: {stable: s}");
        assert!(e.to_string().contains("canary"), "{e}");
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\ncohorts: {canary: [u], stable: [u]}");
        assert_eq!(e.field, "cohorts");
        let e = RolloutSpec::parse(
            br#"{"name": "a", "steps": [{"weight": 1}], "x": 1}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn yaml_with_a_repeated_key_or_a_second_document_is_refused() {
        let e = yaml_err("name: a\nname: b\nsteps: [{weight: 1}]");
        assert_eq!(
            e.to_string(),
            "the key name is given twice at line 2, column 1"
        );
        let e = yaml_err("name: a\nsteps: [{weight: 1}]\n---\nname: b\n");
        assert!(e.message.starts_with("a spec is one YAML document"), "{e}");
        let e = yaml_err("name: [a\nsteps: []");
        assert_eq!(e.field, "name");
    }

    #[test]
    fn rollout_config_carries_mirror_only_when_mirroring() {
        let (spec, _) = RolloutSpec::parse(YAML.as_bytes(), Format::Yaml).unwrap();
        let rc = spec.rollout_config(5.0, Some(100.0), true);
        assert_eq!(rc.mirror.unwrap().cluster, "checkout-shadow");
        assert!(rc.kill_switch);
        assert!(spec.rollout_config(5.0, None, false).mirror.is_none());
    }

    #[test]
    fn redaction_hides_only_the_override_token() {
        let yaml = "name: a\noverride: {header: x-o, token_header: x-t, token: hunter2}\nsteps: [{weight: 1}]";
        let (spec, _) = RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap();
        let shown = spec.redacted();
        let o = shown.override_.clone().unwrap();
        assert_eq!(o.token.as_deref(), Some(REDACTED));
        assert_eq!(
            (o.header.as_deref(), o.token_header.as_deref()),
            (Some("x-o"), Some("x-t"))
        );
        assert_eq!(spec.override_.unwrap().token.as_deref(), Some("hunter2"));
        assert!(!serde_json::to_string(&shown).unwrap().contains("hunter2"));
        // Without a token there is nothing to hide, and nothing is added.
        let (plain, _) = RolloutSpec::parse(
            b"name: a\noverride: {header: x-o}\nsteps: [{weight: 1}]",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(plain.redacted(), plain);
        // A read sent back as a spec is refused, not taken to set the marker as the token.
        let json = serde_json::to_vec(&shown).unwrap();
        let e = RolloutSpec::parse(&json, Format::Json).unwrap_err();
        assert_eq!(e.field, "override.token", "{e}");
    }

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None), Some(Format::Json));
        assert_eq!(
            Format::from_content_type(Some("application/yaml; charset=utf-8")),
            Some(Format::Yaml)
        );
        assert_eq!(Format::from_content_type(Some("text/plain")), None);
        assert_eq!(Format::from_path("x.JSON"), Format::Json);
        assert_eq!(Format::from_path("x.yml"), Format::Yaml);
    }
}
