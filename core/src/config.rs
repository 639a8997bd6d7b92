//! The plugin configuration as users write it (JSON), and its validation into a [`Snapshot`].
//!
//! Parsing never panics; every error names the field it is about, as a path such as
//! `rollouts[0].weight`.

use crate::snapshot::{Anonymous, Cohorts, Matcher, Mirror, Override, Rollout, Snapshot, Source};
use crate::stamp::{Epoch, Stamp};
use crate::weight::Bp;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const DEFAULT_ROUTING_HEADER: &str = "x-linnet-variant";
pub const DEFAULT_MIRROR_HEADER: &str = "x-linnet-mirror";
pub const DEFAULT_OVERRIDE_HEADER: &str = "x-linnet-override";
pub const DEFAULT_OVERRIDE_TOKEN_HEADER: &str = "x-linnet-override-token";
pub const DEFAULT_ANONYMOUS_COOKIE: &str = "linnet_uid";
pub const DEFAULT_ANONYMOUS_MAX_AGE_S: u64 = 60 * 60 * 24 * 365;

/// The whole plugin configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_header: Option<String>,
    /// Also write the routing header (`stable`) on requests decided stable, and so have Envoy
    /// match their route again. Off: a stable request that arrived without Linnet's headers
    /// goes on untouched, on the route Envoy already matched (the route config sends everything
    /// but `canary` to stable), which saves a second route match per stable request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mark_stable: bool,
    /// Sends every rollout's traffic to stable and stops mirroring.
    #[serde(default)]
    pub kill_switch: bool,
    #[serde(default)]
    pub rollouts: Vec<RolloutConfig>,
    /// Where to long-poll live snapshots from. Absent: the rollouts above are all there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarConfig>,
}

/// How the filter reaches the sidecar (through an Envoy cluster) for live snapshots.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The Envoy cluster that points at the sidecar's admin API.
    pub cluster: String,
    #[serde(default = "default_sidecar_authority")]
    pub authority: String,
    #[serde(default = "default_snapshot_path")]
    pub path: String,
    /// Sent as `Authorization: Bearer <token>`; the sidecar's poll token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// How long the sidecar may hold a poll open when nothing changed.
    #[serde(default = "default_poll_timeout_ms")]
    pub poll_timeout_ms: u64,
    /// A snapshot older than this (no successful poll) is stale.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u64,
    /// What a stale snapshot means for routing: keep it (fail static), or send all to stable.
    #[serde(default)]
    pub on_stale: OnStale,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    #[default]
    Keep,
    Stable,
}

/// What the sidecar serves at its snapshot endpoint: the live part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDoc {
    /// Increases with every change; a poller sends the version it has.
    pub version: u64,
    /// The sidecar run that counts `version` (see [`crate::stamp`]). Absent from sidecars
    /// that predate epochs: their versions are compared as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    #[serde(default)]
    pub kill_switch: bool,
    #[serde(default)]
    pub rollouts: Vec<RolloutConfig>,
}

fn default_sidecar_authority() -> String {
    "linnet-sidecar".into()
}

fn default_snapshot_path() -> String {
    crate::poll::DEFAULT_PATH.into()
}

fn default_poll_timeout_ms() -> u64 {
    crate::poll::DEFAULT_TIMEOUT_MS
}

fn default_stale_after_s() -> u64 {
    60
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// Share of users on the canary, in percent (0..=100, at most two decimals).
    #[serde(default)]
    pub weight: f64,
    /// Mixed into the hash so that rollouts pick independent user sets. Default: the name.
    #[serde(default)]
    pub salt: Option<String>,
    #[serde(default)]
    pub stickiness: Vec<SourceConfig>,
    #[serde(default)]
    pub anonymous: AnonymousConfig,
    #[serde(default)]
    pub cohorts: CohortsConfig,
    #[serde(default, rename = "override")]
    pub override_: Option<OverrideConfig>,
    #[serde(default)]
    pub kill_switch: bool,
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Host to match, without port; `*.example.com` matches any subdomain. Absent: any host.
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// Where a user's sticky key is read from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SourceConfig {
    Header(String),
    Cookie(String),
}

/// What happens to a request that carries no sticky key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, tag = "policy", rename_all = "snake_case")]
pub enum AnonymousConfig {
    /// Anonymous requests go to stable.
    #[default]
    Stable,
    /// A random key is minted, bucketed like any other, and set as a cookie on the response.
    Random {
        #[serde(default)]
        cookie: Option<String>,
        #[serde(default)]
        max_age_s: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CohortsConfig {
    #[serde(default)]
    pub canary: Vec<String>,
    #[serde(default)]
    pub stable: Vec<String>,
}

/// An override header that picks the variant, honoured only when configured.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub token_header: Option<String>,
    /// When set, the override is honoured only if `token_header` carries exactly this value.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The Envoy cluster that receives the copies (the canary's shadow cluster).
    pub cluster: String,
    /// Share of stable-bound requests copied, in percent.
    #[serde(default = "hundred")]
    pub percent: f64,
}

fn hundred() -> f64 {
    100.0
}

/// A configuration error, with the path of the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The error about `field` (a path such as `rollouts[0].weight`; empty: the whole input).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

// === impl PluginConfig ===

impl PluginConfig {
    /// Parses JSON, naming the field of the first error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse_json(bytes)
    }

    /// The configuration with a live snapshot's rollouts and kill switch in place of its own.
    pub fn with_snapshot(&self, doc: &SnapshotDoc) -> PluginConfig {
        PluginConfig {
            kill_switch: doc.kill_switch,
            rollouts: doc.rollouts.clone(),
            ..self.clone()
        }
    }

    /// Validates every field and builds the immutable snapshot the request path reads.
    pub fn compile(&self, version: u64) -> Result<Snapshot, ConfigError> {
        if let Some(sc) = &self.sidecar {
            sc.validate()?;
        }
        let routing_header = header_name(
            "routing_header",
            self.routing_header.as_deref(),
            DEFAULT_ROUTING_HEADER,
        )?;
        let mirror_header = header_name(
            "mirror_header",
            self.mirror_header.as_deref(),
            DEFAULT_MIRROR_HEADER,
        )?;
        if routing_header == mirror_header {
            return Err(ConfigError::new(
                "mirror_header",
                "must differ from routing_header",
            ));
        }
        let mut rollouts = Vec::with_capacity(self.rollouts.len());
        for (i, r) in self.rollouts.iter().enumerate() {
            let rollout = r.compile(&format!("rollouts[{i}]"))?;
            if rollouts.iter().any(|o: &Rollout| o.name == rollout.name) {
                return Err(ConfigError::new(
                    format!("rollouts[{i}].name"),
                    format!("duplicate rollout name {:?}", rollout.name),
                ));
            }
            rollouts.push(rollout);
        }
        let mut snapshot = Snapshot {
            version,
            kill_switch: self.kill_switch,
            routing_header,
            mirror_header,
            mark_stable: self.mark_stable,
            rollouts,
        };
        for (i, rollout) in snapshot.rollouts.iter().enumerate() {
            if let Some(own) = snapshot
                .linnet_headers()
                .into_iter()
                .find(|h| rollout.reads_header(h))
            {
                return Err(ConfigError::new(
                    format!("rollouts[{i}]"),
                    format!(
                        "{own:?} is Linnet's own header and cannot be a key or override source"
                    ),
                ));
            }
        }
        // Precedence by specificity, never by name; equal ones keep the order they came in.
        snapshot
            .rollouts
            .sort_by_key(|r| std::cmp::Reverse(r.matcher.specificity()));
        Ok(snapshot)
    }
}

// === impl SidecarConfig ===

impl SidecarConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster.is_empty() {
            return Err(ConfigError::new(
                "sidecar.cluster",
                "must name the Envoy cluster of the sidecar",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::new(
                "sidecar.path",
                format!("{:?} must start with '/'", self.path),
            ));
        }
        let (lo, hi) = crate::poll::TIMEOUT_RANGE_MS;
        if !(lo..=hi).contains(&self.poll_timeout_ms) {
            return Err(ConfigError::new(
                "sidecar.poll_timeout_ms",
                format!("must be between {lo} and {hi}"),
            ));
        }
        if self.stale_after_s == 0 {
            return Err(ConfigError::new(
                "sidecar.stale_after_s",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

// === impl SnapshotDoc ===

impl SnapshotDoc {
    /// Parses a snapshot body, naming the field of the first error.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        parse_json(bytes)
    }

    pub fn stamp(&self) -> Stamp {
        Stamp {
            epoch: self.epoch.clone(),
            version: self.version,
        }
    }
}

// === impl RolloutConfig ===

impl RolloutConfig {
    fn compile(&self, at: &str) -> Result<Rollout, ConfigError> {
        validate_name(&format!("{at}.name"), &self.name)?;
        let weight = Bp::from_percent(self.weight)
            .map_err(|m| ConfigError::new(format!("{at}.weight"), m))?;
        let salt = self.salt.clone().unwrap_or_else(|| self.name.clone());

        let mut stickiness = Vec::with_capacity(self.stickiness.len() + 1);
        for (j, s) in self.stickiness.iter().enumerate() {
            let field = format!("{at}.stickiness[{j}]");
            stickiness.push(match s {
                SourceConfig::Header(h) => Source::Header(header_name(&field, Some(h), "")?),
                SourceConfig::Cookie(c) => Source::Cookie(cookie_name(&field, c)?),
            });
        }

        let anonymous = match &self.anonymous {
            AnonymousConfig::Stable => Anonymous::Stable,
            AnonymousConfig::Random { cookie, max_age_s } => {
                let cookie = cookie_name(
                    &format!("{at}.anonymous.cookie"),
                    cookie.as_deref().unwrap_or(DEFAULT_ANONYMOUS_COOKIE),
                )?;
                // The minted cookie is the last key source, so the next request is sticky.
                if !stickiness
                    .iter()
                    .any(|s| matches!(s, Source::Cookie(c) if *c == cookie))
                {
                    stickiness.push(Source::Cookie(cookie.clone()));
                }
                Anonymous::Random {
                    cookie,
                    max_age_s: max_age_s.unwrap_or(DEFAULT_ANONYMOUS_MAX_AGE_S),
                }
            }
        };

        let cohorts = Cohorts::new(&self.cohorts.canary, &self.cohorts.stable).map_err(|key| {
            ConfigError::new(
                format!("{at}.cohorts"),
                format!("key {key:?} is in both the canary and the stable list"),
            )
        })?;

        let override_ = match &self.override_ {
            None => None,
            Some(o) => {
                let header = header_name(
                    &format!("{at}.override.header"),
                    o.header.as_deref(),
                    DEFAULT_OVERRIDE_HEADER,
                )?;
                let token_header = header_name(
                    &format!("{at}.override.token_header"),
                    o.token_header.as_deref(),
                    DEFAULT_OVERRIDE_TOKEN_HEADER,
                )?;
                if header == token_header {
                    return Err(ConfigError::new(
                        format!("{at}.override.token_header"),
                        "must differ from override.header",
                    ));
                }
                if let Some(t) = &o.token {
                    if t.is_empty() {
                        return Err(ConfigError::new(
                            format!("{at}.override.token"),
                            "must not be empty; omit it to accept the override without a token",
                        ));
                    }
                }
                Some(Override {
                    header,
                    token_header,
                    token: o.token.clone().map(String::into_bytes),
                })
            }
        };

        let mirror = match &self.mirror {
            None => None,
            Some(m) => {
                if m.cluster.is_empty() || !m.cluster.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::new(
                        format!("{at}.mirror.cluster"),
                        "must be a non-empty cluster name of visible ASCII characters",
                    ));
                }
                let bp = Bp::from_percent(m.percent)
                    .map_err(|e| ConfigError::new(format!("{at}.mirror.percent"), e))?;
                Some(Mirror {
                    cluster: m.cluster.clone(),
                    bp,
                    sample_prefix: crate::decide::sample_prefix(salt.as_bytes()),
                })
            }
        };

        let matcher = Matcher::new(
            self.matcher.authority.as_deref(),
            self.matcher.path_prefix.as_deref(),
        )
        .map_err(|(f, m)| ConfigError::new(format!("{at}.match.{f}"), m))?;

        Ok(Rollout {
            name: self.name.clone(),
            matcher,
            weight,
            bucket_prefix: crate::decide::bucket_prefix(salt.as_bytes()),
            salt: salt.into_bytes().into_boxed_slice(),
            stickiness,
            anonymous,
            cohorts,
            override_,
            kill_switch: self.kill_switch,
            mirror,
        })
    }
}

/// Parses JSON into `T`, naming the field of the first error. serde_json's message ends with
/// " at line L column C", which is kept: it helps in a big file.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de)
        .map_err(|e| ConfigError::new(e.path().to_string(), e.into_inner().to_string()))
}

/// Rollout names become metric name segments and URL path segments: keep them plain.
pub fn validate_name(field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid name: use 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit"),
        ))
    }
}

fn header_name(field: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    let name = value.unwrap_or(default);
    // RFC 9110 token characters; Envoy keeps header names lower-case.
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn cookie_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid cookie name"),
        ));
    }
    Ok(name.to_owned())
}
