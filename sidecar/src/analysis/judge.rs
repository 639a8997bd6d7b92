//! Judging: each guardrail over its window ends Pass, Fail or NoData, and the checks of one
//! run become one decision. Pure functions of (analysis, observations, memory), so the same
//! code runs in the sidecar, in its tests and in the decision-quality simulation.

use super::policy::{Analysis, BurnWindow, Counter, Guardrail, Kind, Severity};
use super::source::Observed;
use super::window::{Traffic, Window};
use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    NoData,
}

/// One guardrail's result in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub guardrail: String,
    pub kind: String,
    pub severity: Severity,
    pub verdict: Verdict,
    /// The number judged (a rate, milliseconds, a likelihood ratio, a burn rate, an increase).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// The result in plain words.
    pub text: String,
}

/// What one run decided, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ruling {
    pub action: Action,
    pub reason: String,
}

/// What a run asks of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Every guardrail passed; the step may advance once it has enough passes.
    Pass,
    /// Not a pass, not yet a reason to act (a warning under its limit, or missing data).
    Hold,
    RollBack,
    /// Too long without data: stop stepping until data is back.
    Pause,
    /// Data is back after an analysis pause.
    Resume,
}

/// What analysis remembers between runs; kept in the rollout's runtime and stored with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memory {
    /// Consecutive passing runs in the current step.
    pub passes: u32,
    /// Consecutive runs with a failed warning guardrail.
    pub failures: u32,
    /// Consecutive runs with a guardrail lacking data.
    pub nodata: u32,
    /// Paused by analysis (for lack of data); a pass resumes it.
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<Millis>,
    /// Per `compare` guardrail: the evidence gathered since the rollout started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, Evidence>,
}

/// A sequential probability ratio test's running state, and its totals for the explanation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Natural log of the likelihood ratio "canary errs `ratio`× stable's rate" to "as
    /// often as stable".
    pub llr: f64,
    pub canary_requests: f64,
    pub canary_errors: f64,
    pub stable_requests: f64,
    pub stable_errors: f64,
}

// === impl Verdict ===

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Fail, Verdict::NoData];

    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NoData => "no_data",
        }
    }
}

crate::named::serde_by_name!(Verdict);

// === impl Action ===

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Pass,
        Action::Hold,
        Action::RollBack,
        Action::Pause,
        Action::Resume,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Hold => "hold",
            Action::RollBack => "roll_back",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

crate::named::serde_by_name!(Action);

// === impl Ruling ===

impl Ruling {
    pub fn new(action: Action, reason: impl Into<String>) -> Ruling {
        Ruling {
            action,
            reason: reason.into(),
        }
    }
}

// === impl Memory ===

impl Memory {
    /// A new step: its passes start over and an analysis pause ends with the step; the
    /// failure and no-data streaks and the evidence carry on.
    pub fn entering_step(&self) -> Memory {
        Memory {
            passes: 0,
            paused: false,
            ..self.clone()
        }
    }

    /// Stepping again after a pause: the passes seen while paused still count.
    pub fn resuming(&self) -> Memory {
        Memory {
            paused: false,
            ..self.clone()
        }
    }

    /// Analysis paused the rollout for lack of data; a passing run resumes it.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Analysis does not pause a rollout an operator already holds.
    pub fn decline_pause(&mut self) {
        self.paused = false;
    }

    pub fn ran_at(&mut self, now: Millis) {
        self.last_run_ms = Some(now);
    }

    /// Whether the current step has had `needed` passing runs in a row.
    pub fn has_passed(&self, needed: u32) -> bool {
        self.passes >= needed
    }

    /// A critical guardrail failed: the passes start over.
    fn critical_failed(&mut self) {
        self.passes = 0;
    }

    /// A warning guardrail failed; returns the failing runs in a row.
    fn warning_failed(&mut self) -> u32 {
        self.passes = 0;
        self.nodata = 0;
        self.failures = self.failures.saturating_add(1);
        self.failures
    }

    /// A guardrail lacked data; returns the runs in a row without data.
    fn lacked_data(&mut self) -> u32 {
        self.passes = 0;
        self.nodata = self.nodata.saturating_add(1);
        self.nodata
    }

    /// Every guardrail passed; returns whether this ends an analysis pause.
    fn passed(&mut self) -> bool {
        self.passes = self.passes.saturating_add(1);
        self.failures = 0;
        self.nodata = 0;
        std::mem::take(&mut self.paused)
    }
}

/// Every window length a run needs for `analysis`, besides the increment.
pub fn spans(analysis: &Analysis) -> Vec<Millis> {
    let mut out = Vec::new();
    for g in &analysis.guardrails {
        match &g.kind {
            Kind::ErrorRate { .. } | Kind::Latency { .. } => out.push(g.window_ms),
            Kind::BurnRate { windows, .. } => {
                for w in windows {
                    out.push(w.long_ms);
                    out.push(w.short_ms);
                }
            }
            Kind::Compare { .. } | Kind::ZeroTolerance(_) => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Judges every guardrail. `subject` names what stands for the canary (`canary`, or
/// `shadow` during a mirror step). `observed` is `Err` with the reason when the source
/// failed: every check is then NoData and the evidence is left as it was.
pub fn judge(
    analysis: &Analysis,
    observed: Result<&Observed, &str>,
    subject: &str,
    memory: &mut Memory,
) -> Vec<Check> {
    analysis
        .guardrails
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut judged = match observed {
                Err(why) => Judged::no_data(why.to_owned()),
                Ok(obs) => {
                    let inputs = Inputs {
                        obs,
                        subject,
                        min_requests: analysis.min_requests,
                    };
                    one(analysis, g, i, &inputs, memory)
                }
            };
            if let Some(missing) = observed.ok().and_then(|o| o.missing.as_deref()) {
                let _ = write!(judged.text, " ({missing})");
            }
            Check {
                guardrail: g.name.clone(),
                kind: g.kind.as_str().to_owned(),
                severity: g.severity,
                verdict: judged.verdict,
                observed: judged.observed.filter(|v| v.is_finite()),
                limit: judged.limit,
                text: judged.text,
            }
        })
        .collect()
}

/// One guardrail's judgement, before the check names the guardrail.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    verdict: Verdict,
    /// The number judged, as [`Check::observed`].
    observed: Option<f64>,
    limit: Option<f64>,
    text: String,
}

/// What every guardrail of one run is judged from.
struct Inputs<'a> {
    obs: &'a Observed,
    /// What stands for the canary: `canary`, or `shadow` during a mirror step.
    subject: &'a str,
    min_requests: f64,
}

// === impl Judged ===

impl Judged {
    fn no_data(why: String) -> Judged {
        Judged {
            verdict: Verdict::NoData,
            observed: None,
            limit: None,
            text: why,
        }
    }

    /// Fail when `fail`, else pass.
    fn against(fail: bool, observed: f64, limit: f64, text: String) -> Judged {
        Judged {
            verdict: if fail { Verdict::Fail } else { Verdict::Pass },
            observed: Some(observed),
            limit: Some(limit),
            text,
        }
    }
}

// === impl Inputs ===

impl Inputs<'_> {
    fn window(&self, span: Millis) -> Result<&Window, Judged> {
        self.obs
            .window(span)
            .ok_or_else(|| Judged::no_data(format!("the source returned no {} window", dur(span))))
    }
}

/// Judges guardrail `index` (`g`) by its kind.
fn one(
    analysis: &Analysis,
    g: &Guardrail,
    index: usize,
    inputs: &Inputs<'_>,
    memory: &mut Memory,
) -> Judged {
    match &g.kind {
        Kind::ErrorRate { max } => error_rate(inputs, g.window_ms, *max),
        Kind::Latency { q, max_ms } => latency(inputs, g.window_ms, *q, *max_ms),
        Kind::Compare { ratio, alpha } => {
            let evidence = memory.evidence.entry(g.name.clone()).or_default();
            compare(inputs, evidence, *ratio, *alpha)
        }
        Kind::BurnRate { budget, windows } => burn_rate(inputs, *budget, windows),
        Kind::ZeroTolerance(counter) => {
            // The counter's position among the zero-tolerance guardrails.
            let slot = analysis.guardrails[..index]
                .iter()
                .filter(|g| matches!(g.kind, Kind::ZeroTolerance(_)))
                .count();
            zero_tolerance(inputs, counter, slot)
        }
    }
}

/// The canary's share of errors over the guardrail's window, against `max`.
fn error_rate(inputs: &Inputs<'_>, window_ms: Millis, max: f64) -> Judged {
    let subject = inputs.subject;
    let w = match inputs.window(window_ms) {
        Ok(w) => w,
        Err(no_data) => return no_data,
    };
    let t = &w.canary;
    if let Some(short) = too_few(t, inputs.min_requests, subject, w) {
        return Judged::no_data(short);
    }
    let Some(rate) = t.error_rate() else {
        return Judged::no_data(format!("{subject} numbers are not finite"));
    };
    let fail = rate > max;
    let text = format!(
        "{subject} error rate {} ({} of {} in {}) {} {}",
        pct(rate),
        count(t.errors),
        count(t.requests),
        dur(w.covered_ms),
        if fail { "is above" } else { "is within" },
        pct(max)
    );
    Judged::against(fail, rate, max, text)
}

/// The canary's latency quantile `q` over the guardrail's window, against `max_ms`.
fn latency(inputs: &Inputs<'_>, window_ms: Millis, q: f64, max_ms: f64) -> Judged {
    let (subject, min) = (inputs.subject, inputs.min_requests);
    let w = match inputs.window(window_ms) {
        Ok(w) => w,
        Err(no_data) => return no_data,
    };
    let h = &w.canary.latency;
    let n = h.count();
    if n.is_nan() || n < min {
        return Judged::no_data(format!(
            "{subject} has {} timed responses in {}; {} needed",
            count(n),
            dur(w.covered_ms),
            count(min)
        ));
    }
    let Some(v) = h.quantile(q) else {
        return Judged::no_data(format!("{subject} latency histogram is empty"));
    };
    let fail = v > max_ms;
    let text = format!(
        "{subject} p{} latency {} ms over {} responses {} {} ms",
        trim(q * 100.0),
        trim(v),
        count(n),
        if fail { "is above" } else { "is within" },
        trim(max_ms)
    );
    Judged::against(fail, v, max_ms, text)
}

/// Adds this run's increment to the evidence that the canary errs `ratio` times as often as
/// stable, and judges the odds against `1/alpha`.
fn compare(inputs: &Inputs<'_>, ev: &mut Evidence, ratio: f64, alpha: f64) -> Judged {
    let (subject, min) = (inputs.subject, inputs.min_requests);
    let inc = &inputs.obs.increment;
    if !(inc.canary.is_finite() && inc.stable.is_finite()) {
        return Judged::no_data(format!(
            "{subject} or stable numbers are not finite; evidence unchanged"
        ));
    }
    // Floored at Wald's acceptance boundary ln(alpha): a long healthy start must not bury a
    // canary that turns bad later.
    let floor = alpha.ln();
    ev.llr = (ev.llr + llr_increment(&inc.canary, &inc.stable, ratio)).max(floor);
    ev.canary_requests += inc.canary.requests.max(0.0);
    ev.canary_errors += inc.canary.errors.max(0.0);
    ev.stable_requests += inc.stable.requests.max(0.0);
    ev.stable_errors += inc.stable.errors.max(0.0);
    let ev = *ev;
    let bound = 1.0 / alpha;
    let lr = ev.llr.exp();
    let totals = format!(
        "{subject} {} of {} failed, stable {} of {}",
        count(ev.canary_errors),
        count(ev.canary_requests),
        count(ev.stable_errors),
        count(ev.stable_requests)
    );
    if ev.canary_requests < min || ev.stable_requests < min {
        return Judged {
            verdict: Verdict::NoData,
            observed: Some(lr),
            limit: Some(bound),
            text: format!(
                "too few requests to compare yet ({totals}; {} each needed)",
                count(min)
            ),
        };
    }
    let fail = ev.llr >= bound.ln();
    let text = format!(
        "odds that {subject} errs {}× as often as stable: {} to 1, {} {} to 1 ({totals}; {} {}, stable {})",
        trim(ratio),
        odds(lr),
        if fail { "past" } else { "below" },
        odds(bound),
        subject,
        rate_of(ev.canary_errors, ev.canary_requests),
        rate_of(ev.stable_errors, ev.stable_requests),
    );
    Judged::against(fail, lr, bound, text)
}

/// The error budget's burn rate in each pair of windows: fails when both windows of a pair
/// burn faster than its factor.
fn burn_rate(inputs: &Inputs<'_>, budget: f64, windows: &[BurnWindow]) -> Judged {
    let (obs, subject, min) = (inputs.obs, inputs.subject, inputs.min_requests);
    let mut parts = Vec::with_capacity(windows.len());
    let mut worst = 0.0_f64;
    let mut failed = None;
    let mut missing = None;
    for bw in windows {
        let (Some(long), Some(short)) = (obs.window(bw.long_ms), obs.window(bw.short_ms)) else {
            return Judged::no_data("the source returned no burn-rate window".into());
        };
        let rate = |t: &Traffic| t.error_rate().map(|r| r / budget);
        if long.canary.requests < min || short.canary.requests <= 0.0 {
            missing.get_or_insert_with(|| {
                format!(
                    "{subject} served {} requests in {}; {} needed",
                    count(long.canary.requests),
                    dur(long.covered_ms),
                    count(min)
                )
            });
            continue;
        }
        let (Some(bl), Some(bs)) = (rate(&long.canary), rate(&short.canary)) else {
            missing.get_or_insert_with(|| format!("{subject} numbers are not finite"));
            continue;
        };
        let both = bl.min(bs);
        worst = worst.max(both);
        // A window the history does not cover yet is named for what it is, not as if full.
        let over = |w: &Window, declared: Millis| {
            if w.covered_ms < declared {
                format!(
                    "{} (of its {} window, so far)",
                    dur(w.covered_ms),
                    dur(declared)
                )
            } else {
                dur(declared)
            }
        };
        parts.push(format!(
            "{}× over {} and {}× over {} (limit {}×)",
            trim(bl),
            over(long, bw.long_ms),
            trim(bs),
            over(short, bw.short_ms),
            trim(bw.factor)
        ));
        if bl > bw.factor && bs > bw.factor && failed.is_none() {
            failed = Some(bw.factor);
        }
    }
    let slo = format!("{}% SLO", trim((1.0 - budget) * 100.0));
    let text = format!(
        "{subject} burns the {slo} error budget {}",
        parts.join("; ")
    );
    if let Some(factor) = failed {
        return Judged::against(true, worst, factor, text);
    }
    if let Some(why) = missing {
        return Judged::no_data(why);
    }
    Judged {
        verdict: Verdict::Pass,
        observed: Some(worst),
        limit: windows.iter().map(|w| w.factor).reduce(f64::min),
        text,
    }
}

/// The increase of the zero-tolerance counter at `slot` since the previous run: any rise
/// fails.
fn zero_tolerance(inputs: &Inputs<'_>, counter: &Counter, slot: usize) -> Judged {
    let label = counter.metric.as_ref().map_or_else(
        || counter.query.clone().unwrap_or_default(),
        |m| m.to_string(),
    );
    match inputs.obs.increment.counters.get(slot) {
        None => Judged::no_data(format!("the source did not read {label}")),
        // A series that is not there cannot say the canary is fine: a typo in the metric
        // would switch the guardrail off.
        Some(None) => Judged::no_data(format!(
            "no series matches {label}: is the name or a label misspelled, or does the canary not export it?"
        )),
        Some(Some(v)) if !v.is_finite() => Judged::no_data(format!("{label} is not a number")),
        Some(Some(v)) if *v > 0.0 => Judged::against(
            true,
            *v,
            0.0,
            format!("{label} rose by {}; it must never rise", trim(*v)),
        ),
        Some(Some(v)) => Judged::against(false, *v, 0.0, format!("{label} did not rise")),
    }
}

/// The log-likelihood-ratio increment of one interval's errors. Given the errors of both
/// variants together, each is the canary's with probability p: p0 = n_c/(n_c+n_s) when both
/// err alike, p1 = r·n_c/(r·n_c+n_s) when the canary errs r times as often. Conditioning on
/// the errors makes the test independent of the (unknown) base error rate, and summing per
/// interval keeps it exact while the weight changes between steps.
pub fn llr_increment(canary: &Traffic, stable: &Traffic, ratio: f64) -> f64 {
    let (nc, ns) = (canary.requests, stable.requests);
    let (ec, es) = (canary.errors.max(0.0), stable.errors.max(0.0));
    if !(nc > 0.0 && ns > 0.0) || ec + es <= 0.0 {
        return 0.0;
    }
    let p0 = nc / (nc + ns);
    let p1 = ratio * nc / (ratio * nc + ns);
    let v = ec * (p1 / p0).ln() + es * ((1.0 - p1) / (1.0 - p0)).ln();
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Turns one run's checks into a decision, updating the counters in `memory`.
pub fn decide(analysis: &Analysis, checks: &[Check], memory: &mut Memory) -> Ruling {
    let failed = |sev: Severity| {
        checks
            .iter()
            .filter(move |c| c.severity == sev && c.verdict == Verdict::Fail)
    };
    if let Some(c) = failed(Severity::Critical).next() {
        memory.critical_failed();
        return Ruling::new(
            Action::RollBack,
            format!("critical guardrail {} failed: {}", c.guardrail, c.text),
        );
    }
    let warnings: Vec<&Check> = failed(Severity::Warning).collect();
    if let Some(first) = warnings.first() {
        let failures = memory.warning_failed();
        let why = format!(
            "warning guardrail {} failed: {}",
            first.guardrail, first.text
        );
        if failures >= analysis.failure_limit {
            return Ruling::new(
                Action::RollBack,
                format!(
                    "{why} ({failures} failing checks in a row, limit {})",
                    analysis.failure_limit
                ),
            );
        }
        return Ruling::new(
            Action::Hold,
            format!(
                "{why} ({failures} of {} failing checks in a row before rollback)",
                analysis.failure_limit
            ),
        );
    }
    let missing: Vec<&Check> = checks
        .iter()
        .filter(|c| c.verdict == Verdict::NoData)
        .collect();
    if let Some(first) = missing.first() {
        let nodata = memory.lacked_data();
        // One cause for every guardrail (the source is down): say it once, blaming none.
        let one_cause =
            missing.len() == checks.len() && missing.iter().all(|c| c.text == first.text);
        let mut why = if one_cause {
            format!("no data: {}", first.text)
        } else {
            format!("no data for {}: {}", first.guardrail, first.text)
        };
        if missing.len() > 1 && !one_cause {
            let _ = write!(why, " (and {} more guardrails)", missing.len() - 1);
        }
        if memory.paused {
            return Ruling::new(
                Action::Hold,
                format!("{why} (still paused: {nodata} checks in a row without data)"),
            );
        }
        if nodata >= analysis.nodata_limit {
            memory.pause();
            return Ruling::new(Action::Pause, format!(
                "{why}; {nodata} checks in a row without data, so the rollout is paused until data is back"
            ));
        }
        return Ruling::new(
            Action::Hold,
            format!(
                "{why} ({nodata} of {} checks without data before pausing)",
                analysis.nodata_limit
            ),
        );
    }
    let resumed = memory.passed();
    let summary = format!(
        "all {} guardrails passed ({} of {} passes needed to advance)",
        checks.len(),
        memory.passes.min(analysis.passes),
        analysis.passes
    );
    if resumed {
        return Ruling::new(Action::Resume, format!("data is back and {summary}"));
    }
    Ruling::new(Action::Pass, summary)
}

fn too_few(t: &Traffic, min: f64, subject: &str, w: &Window) -> Option<String> {
    if t.requests >= min {
        return None;
    }
    Some(if t.requests.is_nan() {
        format!("{subject} request count is not a number")
    } else {
        format!(
            "{subject} served {} requests in {}; {} needed",
            count(t.requests),
            dur(w.covered_ms),
            count(min)
        )
    })
}

fn pct(fraction: f64) -> String {
    format!("{}%", trim(fraction * 100.0))
}

fn rate_of(errors: f64, requests: f64) -> String {
    if requests > 0.0 {
        pct(errors / requests)
    } else {
        "n/a".into()
    }
}

/// A count as a whole number (sources that extrapolate give fractions).
fn count(v: f64) -> String {
    if v.is_finite() {
        format!("{}", v.round())
    } else {
        "NaN".into()
    }
}

fn odds(v: f64) -> String {
    if v >= 1000.0 || !v.is_finite() {
        format!("{:.0}", v.min(1e12))
    } else {
        trim(v)
    }
}

/// At most 3 significant decimals, without trailing zeros.
pub fn trim(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else if v.abs() >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `30s`, `5m`, `1m30s`, `250ms`.
pub fn dur(ms: Millis) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::AnalysisSpec;
    use crate::analysis::window::Histogram;

    fn analysis(yaml: &str) -> Analysis {
        let spec: AnalysisSpec = serde_saphyr::from_str(yaml).unwrap();
        spec.validate().unwrap()
    }

    fn traffic(requests: f64, errors: f64) -> Traffic {
        Traffic {
            requests,
            errors,
            latency: Histogram::default(),
        }
    }

    fn window(span_ms: Millis, canary: Traffic, stable: Traffic) -> Window {
        Window {
            span_ms,
            covered_ms: span_ms,
            canary,
            stable,
            counters: vec![],
        }
    }

    #[test]
    fn evidence_grows_only_when_the_canary_errs_more() {
        let r = 2.0;
        let worse = llr_increment(&traffic(1000.0, 10.0), &traffic(9000.0, 45.0), r);
        let alike = llr_increment(&traffic(1000.0, 5.0), &traffic(9000.0, 45.0), r);
        assert!(worse > 0.0, "{worse}");
        assert!(alike < 0.0, "{alike}");
        assert_eq!(
            llr_increment(&traffic(1000.0, 0.0), &traffic(9000.0, 0.0), r),
            0.0
        );
        assert_eq!(
            llr_increment(&traffic(0.0, 0.0), &traffic(9000.0, 9.0), r),
            0.0
        );
        // The base rate cancels out: ten times the traffic and errors is ten times the evidence.
        let big = llr_increment(&traffic(10_000.0, 100.0), &traffic(90_000.0, 450.0), r);
        assert!((big - 10.0 * worse).abs() < 1e-9);
    }

    #[test]
    fn a_canary_that_turns_bad_late_is_caught_quickly() {
        let a = analysis("{min_requests: 100, guardrails: [{compare: {ratio: 2, alpha: 0.01}}]}");
        let run = |m: &mut Memory, canary_pct: f64| {
            // One minute at 50% of 200 req/s; expected errors, stable at 0.5%.
            let obs = Observed {
                increment: window(
                    60_000,
                    traffic(6000.0, 6000.0 * canary_pct / 100.0),
                    traffic(6000.0, 30.0),
                ),
                windows: vec![],
                missing: None,
            };
            judge(&a, Ok(&obs), "canary", m)[0].verdict
        };
        let mut m = Memory::default();
        for _ in 0..60 {
            assert_eq!(run(&mut m, 0.5), Verdict::Pass);
        }
        assert!((m.evidence["vs-stable"].llr - 0.01_f64.ln()).abs() < 1e-9);
        let mut minutes = 1;
        while run(&mut m, 1.0) != Verdict::Fail {
            minutes += 1;
            assert!(minutes < 10, "a late 2x canary was not caught");
        }
        assert!(minutes <= 3, "{minutes}");
    }

    #[test]
    fn burn_rate_fails_only_when_both_windows_burn() {
        let a = analysis(
            "{slo: 99, min_requests: 10, guardrails: [{burn_rate: {windows: [{long: 60s, short: 10s, factor: 10}]}}]}",
        );
        let judge_with = |long_err: f64, short_err: f64| {
            let obs = Observed {
                increment: Window::default(),
                windows: vec![
                    window(10_000, traffic(100.0, short_err), traffic(100.0, 0.0)),
                    window(60_000, traffic(600.0, long_err), traffic(600.0, 0.0)),
                ],
                missing: None,
            };
            judge(&a, Ok(&obs), "canary", &mut Memory::default())[0].clone()
        };
        // 1% budget: 15% errors burn 15×.
        assert_eq!(judge_with(90.0, 15.0).verdict, Verdict::Fail);
        // A short spike alone, or a long burn that has stopped, is not enough.
        assert_eq!(judge_with(6.0, 15.0).verdict, Verdict::Pass);
        assert_eq!(judge_with(90.0, 0.0).verdict, Verdict::Pass);
        let c = judge_with(90.0, 15.0);
        assert!(c.text.contains("99% SLO"), "{}", c.text);
        assert!(!c.text.contains("so far"), "{}", c.text);
        // Early in a rollout the long window is not covered yet: said, not passed off as full.
        let mut long = window(60_000, traffic(200.0, 30.0), traffic(200.0, 0.0));
        long.covered_ms = 20_000;
        let obs = Observed {
            increment: Window::default(),
            windows: vec![
                window(10_000, traffic(100.0, 15.0), traffic(100.0, 0.0)),
                long,
            ],
            missing: None,
        };
        let c = judge(&a, Ok(&obs), "canary", &mut Memory::default())[0].clone();
        assert!(
            c.text.contains("over 20s (of its 1m window, so far)"),
            "{}",
            c.text
        );
    }

    #[test]
    fn a_failed_source_is_no_data_and_leaves_the_evidence() {
        let a = analysis("{guardrails: [{compare: {}}, {error_rate: {max: 1}}]}");
        let mut m = Memory::default();
        m.evidence.insert(
            "vs-stable".into(),
            Evidence {
                llr: 1.5,
                ..Evidence::default()
            },
        );
        let checks = judge(&a, Err("connection refused"), "canary", &mut m);
        assert!(checks.iter().all(|c| c.verdict == Verdict::NoData));
        assert!(checks[0].text.contains("connection refused"));
        assert_eq!(m.evidence["vs-stable"].llr, 1.5);
    }

    #[test]
    fn decisions_put_critical_before_warnings_before_missing_data() {
        let a =
            analysis("{nodata_limit: 2, failure_limit: 2, guardrails: [{error_rate: {max: 1}}]}");
        let check = |severity, verdict| Check {
            guardrail: "g".into(),
            kind: "error_rate".into(),
            severity,
            verdict,
            observed: None,
            limit: None,
            text: "t".into(),
        };
        let (crit, warn) = (Severity::Critical, Severity::Warning);
        let mut m = Memory::default();
        let d = decide(
            &a,
            &[check(warn, Verdict::NoData), check(crit, Verdict::Fail)],
            &mut m,
        );
        assert!(
            matches!(
                d,
                Ruling {
                    action: Action::RollBack,
                    ..
                }
            ),
            "{d:?}"
        );
        let mut m = Memory::default();
        assert!(matches!(
            decide(&a, &[check(warn, Verdict::Fail)], &mut m),
            Ruling {
                action: Action::Hold,
                ..
            }
        ));
        assert!(matches!(
            decide(&a, &[check(warn, Verdict::Fail)], &mut m),
            Ruling {
                action: Action::RollBack,
                ..
            }
        ));
        let mut m = Memory::default();
        assert!(matches!(
            decide(&a, &[check(crit, Verdict::NoData)], &mut m),
            Ruling {
                action: Action::Hold,
                ..
            }
        ));
        assert!(matches!(
            decide(&a, &[check(crit, Verdict::NoData)], &mut m),
            Ruling {
                action: Action::Pause,
                ..
            }
        ));
        // Paused once; more missing data holds, data back resumes.
        assert!(matches!(
            decide(&a, &[check(crit, Verdict::NoData)], &mut m),
            Ruling {
                action: Action::Hold,
                ..
            }
        ));
        assert!(matches!(
            decide(&a, &[check(crit, Verdict::Pass)], &mut m),
            Ruling {
                action: Action::Resume,
                ..
            }
        ));
        assert!(matches!(
            decide(&a, &[check(crit, Verdict::Pass)], &mut m),
            Ruling {
                action: Action::Pass,
                ..
            }
        ));
        assert_eq!((m.passes, m.nodata, m.paused), (2, 0, false));
    }

    #[test]
    fn nan_and_too_few_requests_are_no_data() {
        let a = analysis("{min_requests: 50, guardrails: [{error_rate: {max: 1}}, {latency: {quantile: p99, max_ms: 10}}]}");
        let obs = |canary: Traffic| Observed {
            increment: Window::default(),
            windows: vec![window(30_000, canary, traffic(1000.0, 0.0))],
            missing: None,
        };
        let few = judge(
            &a,
            Ok(&obs(traffic(49.0, 0.0))),
            "canary",
            &mut Memory::default(),
        );
        assert!(few.iter().all(|c| c.verdict == Verdict::NoData), "{few:?}");
        assert!(few[0].text.contains("49 requests"), "{}", few[0].text);
        let nan = judge(
            &a,
            Ok(&obs(traffic(f64::NAN, 1.0))),
            "canary",
            &mut Memory::default(),
        );
        assert!(nan.iter().all(|c| c.verdict == Verdict::NoData), "{nan:?}");
        let errs = judge(
            &a,
            Ok(&obs(traffic(100.0, f64::NAN))),
            "shadow",
            &mut Memory::default(),
        );
        assert_eq!(errs[0].verdict, Verdict::NoData);
        assert!(errs[0].text.starts_with("shadow"), "{}", errs[0].text);
    }
}
