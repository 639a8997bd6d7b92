//! Decision quality: seeded synthetic traffic through the real `judge`, `decide` and state
//! machine, next to a Flagger-style success-rate check on the same plan, to count false
//! rollbacks, detected bad canaries and the time they took.
//!
//! Traffic: `requests_per_s` split exactly by the current weight (the judges condition on the
//! request counts, so the split's own noise would not change a decision), and each variant's
//! errors in each interval drawn as Binomial(requests, error rate), exactly, by geometric
//! skips. An interval's draws come from a generator seeded by (rollout seed, interval,
//! variant): two policies at the same weight in the same interval of the same rollout see the
//! same errors, and where their steps part, each sees its own traffic from the same seed.

use super::judge::{self, Check, Verdict};
use super::policy::{Kind, Severity};
use super::source::Observed;
use super::step;
use super::window::{Traffic, Window};
use crate::clock::Millis;
use crate::machine::{Control, Runtime, State};
use crate::spec::{Pause, Plan};
use std::collections::BTreeMap;

/// The plan of the README's decision-quality figures, with Linnet's documented policy: 5%,
/// 10%, 25% and 50% of the traffic for five minutes each, then everyone. Reaching the last
/// step (100%) ends a simulated rollout.
pub const PLAN: &str = r#"name: checkout
steps:
  - {weight: 5, pause: 5m}
  - {weight: 10, pause: 5m}
  - {weight: 25, pause: 5m}
  - {weight: 50, pause: 5m}
  - {weight: 100}
analysis:
  interval: 1m        # as often as Flagger's `interval: 1m`
  passes: 2           # the default: a step advances after its pause and 2 passing checks in a row
  min_requests: 100   # the default
  slo: 99
  guardrails:
    # A broken canary goes at once, whatever stable does.
    - {name: errors, error_rate: {max: 5}}
    # The canary's errors against stable's, as evidence that builds up over the rollout: rolls
    # back once the odds that it errs twice as often reach 100 to 1, so a canary as good as
    # stable is rolled back with a chance of at most 1% + 20 checks x 0.01% = 1.2%.
    - {name: vs-stable, compare: {ratio: 2, alpha: 0.01}}
    # Burning the 99% SLO's error budget fast (the defaults: 14.4x over 5m and 1m, 6x over
    # 30m and 5m), three checks in a row.
    - {name: budget, burn_rate: {}, severity: warning}
"#;

/// The traffic of those figures: 200 requests/s in all, stable erring 0.5%, a healthy canary too.
pub const HEALTHY: Load = Load {
    requests_per_s: 200.0,
    stable_errors: 0.005,
    canary_errors: 0.005,
};

/// A bad canary errs twice as often as stable.
pub const BAD: Load = Load {
    canary_errors: 0.01,
    ..HEALTHY
};

/// How long a simulated rollout may take before it counts as unfinished.
pub const CAP_MS: Millis = 60 * 60_000;

/// The traffic a rollout sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Both variants together.
    pub requests_per_s: f64,
    /// Fractions of requests that fail.
    pub stable_errors: f64,
    pub canary_errors: f64,
}

/// What judges the canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// The plan's `analysis`, judged by [`judge::judge`] and [`judge::decide`], its decisions
    /// applied to a [`Runtime`] as the controller applies them.
    Linnet,
    /// Flagger's canary analysis with its built-in `request-success-rate` metric: every
    /// interval the canary's share of non-5xx responses over that interval must be at least
    /// `min_success`; a failed check holds the step, and `threshold` failed checks in the
    /// rollout (Flagger never resets them while a rollout runs) roll back. A step advances at
    /// the first passing check once its pause is over. The rollback counts at the check that
    /// reaches the threshold; Flagger itself acts on it at its next run, an interval later.
    Flagger {
        interval_ms: Millis,
        min_success: f64,
        threshold: u32,
    },
}

/// How a simulated rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Rolled back by the named guardrail (or check).
    RolledBack(String),
    /// Entered the plan's last step.
    Reached,
    /// Neither within the cap (or timed out by the plan's deadline).
    Unfinished,
}

/// One simulated rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub end: End,
    /// When it ended, since the first step began.
    pub at_ms: Millis,
    /// The step it ended in.
    pub step: usize,
}

/// A population of rollouts under one policy and one load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub rollouts: u32,
    /// When each rolled-back rollout was rolled back, ascending.
    pub rollback_ms: Vec<Millis>,
    /// When each rollout that got through entered the last step, ascending.
    pub reached_ms: Vec<Millis>,
    pub unfinished: u32,
    /// Rollbacks by the guardrail that caused them.
    pub by: BTreeMap<String, u32>,
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and good enough for a simulation; also
/// how seeds are derived from seeds.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

// === impl SplitMix64 ===

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for `part` of whatever `seed` stands for.
pub fn derive(seed: u64, part: u64) -> u64 {
    SplitMix64::new(seed ^ SplitMix64::new(part).next_u64()).next_u64()
}

/// Binomial(n, p), exactly: counts the successes among n trials by drawing the geometric gaps
/// between them, so it costs one draw per success (n·min(p, 1-p) on average).
pub fn binomial(rng: &mut SplitMix64, n: u64, p: f64) -> u64 {
    if n == 0 || p.is_nan() || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let ln_q = (-p).ln_1p();
    let (mut successes, mut used) = (0, 0_u64);
    loop {
        // Failures before the next success: P(gap >= k) = (1-p)^k.
        let gap = (rng.open01().ln() / ln_q).floor();
        if gap >= (n - used) as f64 {
            return successes;
        }
        used += gap as u64 + 1;
        successes += 1;
    }
}

/// One interval's traffic at `weight` percent: (canary, stable).
pub fn interval_traffic(
    load: &Load,
    weight: f64,
    interval_ms: Millis,
    seed: u64,
    interval: u64,
) -> (Traffic, Traffic) {
    let total = (load.requests_per_s * interval_ms as f64 / 1000.0)
        .round()
        .max(0.0) as u64;
    let canary = ((total as f64 * weight / 100.0).round() as u64).min(total);
    let seed = derive(seed, interval);
    let draw = |variant: u64, n: u64, p: f64| {
        let errors = binomial(&mut SplitMix64::new(derive(seed, variant)), n, p);
        Traffic {
            requests: n as f64,
            errors: errors as f64,
            ..Traffic::default()
        }
    };
    (
        draw(0, canary, load.canary_errors),
        draw(1, total - canary, load.stable_errors),
    )
}

/// `count` rollouts, the i-th seeded by `derive(seed, i)`.
pub fn population(
    plan: &Plan,
    policy: &Policy,
    load: &Load,
    seed: u64,
    count: u32,
    cap_ms: Millis,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    for i in 0..count {
        let r = rollout(plan, policy, load, derive(seed, u64::from(i)), cap_ms)?;
        tally.rollouts += 1;
        match r.end {
            End::RolledBack(by) => {
                tally.rollback_ms.push(r.at_ms);
                *tally.by.entry(by).or_default() += 1;
            }
            End::Reached => tally.reached_ms.push(r.at_ms),
            End::Unfinished => tally.unfinished += 1,
        }
    }
    tally.rollback_ms.sort_unstable();
    tally.reached_ms.sort_unstable();
    Ok(tally)
}

/// One rollout under `policy`, from the start of its first step until it is rolled back,
/// enters the last step, or `cap_ms` has passed.
pub fn rollout(
    plan: &Plan,
    policy: &Policy,
    load: &Load,
    seed: u64,
    cap_ms: Millis,
) -> Result<Rollout, String> {
    match policy {
        Policy::Linnet => linnet(plan, load, seed, cap_ms, None),
        Policy::Flagger {
            interval_ms,
            min_success,
            threshold,
        } => flagger(
            plan,
            *interval_ms,
            *min_success,
            *threshold,
            load,
            seed,
            cap_ms,
        ),
    }
}

/// One analysis run of a simulated Linnet rollout: what the product's step was given, and
/// where it left the rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRun {
    pub at_ms: Millis,
    pub observed: Observed,
    pub decision: judge::Ruling,
    pub state: State,
    pub step: usize,
    pub weight: f64,
}

/// Every run of one simulated Linnet rollout, to hold the product's runner to.
pub fn linnet_runs(
    plan: &Plan,
    load: &Load,
    seed: u64,
    cap_ms: Millis,
) -> Result<Vec<SimRun>, String> {
    let mut runs = Vec::new();
    linnet(plan, load, seed, cap_ms, Some(&mut runs))?;
    Ok(runs)
}

fn linnet(
    plan: &Plan,
    load: &Load,
    seed: u64,
    cap_ms: Millis,
    mut trace: Option<&mut Vec<SimRun>>,
) -> Result<Rollout, String> {
    let a = plan
        .analysis
        .as_ref()
        .ok_or("the plan has no `analysis` for Linnet to judge by")?;
    if let Some(g) = a
        .guardrails
        .iter()
        .find(|g| matches!(g.kind, Kind::Latency { .. }))
    {
        return Err(format!(
            "guardrail {:?} judges latency, which this simulation does not model",
            g.name
        ));
    }
    let interval = a.interval_ms;
    let pauses = pauses(plan, interval)?;
    let last = pauses.len();
    let spans = judge::spans(a);
    // The sim's service never raises a watched counter.
    let counters = a
        .guardrails
        .iter()
        .filter(|g| matches!(g.kind, Kind::ZeroTolerance(_)))
        .count();
    let tick = |rt: Runtime, control: &Control, now: Millis| -> Result<Runtime, String> {
        Ok(rt
            .apply(plan, control, now)
            .map_err(|e| e.0)?
            .map_or(rt, |(next, _)| next))
    };
    let mut rt = tick(Runtime::new(plan, 0), &Control::Tick, 0)?;
    let mut history = Vec::new();
    // As in the product, the first run is when the rollout starts, with no traffic seen yet.
    for k in 0_u64.. {
        let now = k as Millis * interval;
        if now > cap_ms {
            break;
        }
        // Transitions happen only at runs, so the weight held for the whole interval.
        if k > 0 {
            history.push(interval_traffic(load, rt.weight, interval, seed, k));
        }
        let observed = Observed {
            increment: window(&history, interval, interval, counters),
            windows: spans
                .iter()
                .map(|s| window(&history, *s, interval, counters))
                .collect(),
            missing: None,
        };
        // The product's own analysis step: judge, decide, act, settle.
        let (step, transitions) = step::run(plan, a, &rt, Ok(&observed), "canary", now);
        let mut transitions = transitions.map_err(|e| e.0)?;
        let checks = step.checks;
        rt = transitions.pop().map_or(step.judged, |(last, _)| last);
        if let Some(t) = trace.as_deref_mut() {
            t.push(SimRun {
                at_ms: now,
                observed,
                decision: step.decision,
                state: rt.state,
                step: rt.step,
                weight: rt.weight,
            });
        }
        let end = match rt.state {
            State::RolledBack => Some(End::RolledBack(culprit(&checks))),
            State::Promoted => Some(End::Reached),
            State::Aborted | State::TimedOut => Some(End::Unfinished),
            _ if rt.step >= last => Some(End::Reached),
            _ => None,
        };
        if let Some(end) = end {
            return Ok(Rollout {
                end,
                at_ms: now,
                step: rt.step,
            });
        }
    }
    Ok(Rollout {
        end: End::Unfinished,
        at_ms: cap_ms,
        step: rt.step,
    })
}

fn flagger(
    plan: &Plan,
    interval: Millis,
    min_success: f64,
    threshold: u32,
    load: &Load,
    seed: u64,
    cap_ms: Millis,
) -> Result<Rollout, String> {
    if interval <= 0 {
        return Err("the Flagger-style interval must be longer than 0".into());
    }
    let pauses = pauses(plan, interval)?;
    let (mut step, mut started, mut failed) = (0, 0, 0);
    for k in 1_u64.. {
        let now = k as Millis * interval;
        if now > cap_ms {
            break;
        }
        let weight = plan.steps.get(step).map_or(100.0, |s| s.weight);
        let (canary, _) = interval_traffic(load, weight, interval, seed, k);
        // Flagger fails a check whose query has no value, as with no canary requests.
        let passed = canary.error_rate().is_some_and(|e| 1.0 - e >= min_success);
        if !passed {
            failed += 1;
            if failed >= threshold {
                return Ok(Rollout {
                    end: End::RolledBack("success-rate".into()),
                    at_ms: now,
                    step,
                });
            }
            continue;
        }
        if pauses.get(step).is_some_and(|p| now - started >= *p) {
            step += 1;
            started = now;
            if step >= pauses.len() {
                return Ok(Rollout {
                    end: End::Reached,
                    at_ms: now,
                    step,
                });
            }
        }
    }
    Ok(Rollout {
        end: End::Unfinished,
        at_ms: cap_ms,
        step,
    })
}

/// The pause of every step but the last, each a whole number of intervals, so every
/// transition falls on a run.
fn pauses(plan: &Plan, interval: Millis) -> Result<Vec<Millis>, String> {
    let Some((_, before_last)) = plan.steps.split_last() else {
        return Err("the plan has no steps".into());
    };
    before_last
        .iter()
        .enumerate()
        .map(|(i, s)| match s.pause {
            Pause::UntilPromoted => Err(format!(
                "steps[{i}] waits for an operator, whom this simulation does not have"
            )),
            Pause::For(d) => {
                let ms = Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX);
                if ms % interval == 0 {
                    Ok(ms)
                } else {
                    Err(format!(
                        "steps[{i}].pause is not a whole number of {} intervals",
                        judge::dur(interval)
                    ))
                }
            }
        })
        .collect()
}

/// The traffic of the latest intervals covering `span_ms`, as the Envoy source reports it:
/// from the latest scrape at least `span_ms` old, or from the first one.
fn window(
    history: &[(Traffic, Traffic)],
    span_ms: Millis,
    interval_ms: Millis,
    counters: usize,
) -> Window {
    let wanted = usize::try_from((span_ms + interval_ms - 1) / interval_ms).unwrap_or(usize::MAX);
    let taken = &history[history.len().saturating_sub(wanted)..];
    let add = |a: &Traffic, b: &Traffic| Traffic {
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        ..Traffic::default()
    };
    let (canary, stable) = taken.iter().fold(
        (Traffic::default(), Traffic::default()),
        |(c, s), (ci, si)| (add(&c, ci), add(&s, si)),
    );
    Window {
        span_ms,
        covered_ms: taken.len() as Millis * interval_ms,
        canary,
        stable,
        counters: vec![Some(0.0); counters],
    }
}

/// The guardrail `decide` rolled back for: the first failed critical one, else the first
/// failed warning.
fn culprit(checks: &[Check]) -> String {
    let failed = |sev: Severity| {
        checks
            .iter()
            .find(|c| c.severity == sev && c.verdict == Verdict::Fail)
    };
    failed(Severity::Critical)
        .or_else(|| failed(Severity::Warning))
        .map_or_else(|| "?".into(), |c| c.guardrail.clone())
}

// === impl Tally ===

impl Tally {
    pub fn rolled_back(&self) -> u32 {
        u32::try_from(self.rollback_ms.len()).unwrap_or(u32::MAX)
    }

    /// The share of rollouts rolled back.
    pub fn rollback_rate(&self) -> f64 {
        f64::from(self.rolled_back()) / f64::from(self.rollouts.max(1))
    }

    /// The `q` quantile (0..=1, nearest rank) of the rollback times.
    pub fn rollback_quantile_ms(&self, q: f64) -> Option<Millis> {
        nearest_rank(&self.rollback_ms, q)
    }

    /// The `q` quantile of the times to reach the last step.
    pub fn reached_quantile_ms(&self, q: f64) -> Option<Millis> {
        nearest_rank(&self.reached_ms, q)
    }
}

fn nearest_rank(sorted: &[Millis], q: f64) -> Option<Millis> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The Wilson score interval (95%) of a rate of `k` in `n`.
pub fn wilson(k: u32, n: u32) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (f64::from(k), f64::from(n), 1.96_f64);
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    let denom = 1.0 + z * z / n;
    (
        ((centre - spread) / denom).max(0.0),
        ((centre + spread) / denom).min(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Format, RolloutSpec};

    fn plan() -> Plan {
        RolloutSpec::parse(PLAN.as_bytes(), Format::Yaml).unwrap().1
    }

    #[test]
    fn binomial_draws_have_the_binomial_mean_and_variance() {
        let mut rng = SplitMix64::new(7);
        for (n, p) in [(12_000_u64, 0.005), (600, 0.01), (50, 0.7)] {
            let draws: Vec<f64> = (0..20_000)
                .map(|_| binomial(&mut rng, n, p) as f64)
                .collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
            let (want_mean, want_var) = (n as f64 * p, n as f64 * p * (1.0 - p));
            // Five standard errors of the mean; 5% of the variance.
            let se = (want_var / draws.len() as f64).sqrt();
            assert!((mean - want_mean).abs() < 5.0 * se, "{n} {p}: mean {mean}");
            assert!((var / want_var - 1.0).abs() < 0.05, "{n} {p}: var {var}");
        }
        assert_eq!(binomial(&mut rng, 0, 0.5), 0);
        assert_eq!(binomial(&mut rng, 10, 0.0), 0);
        assert_eq!(binomial(&mut rng, 10, 1.0), 10);
    }

    #[test]
    fn an_interval_is_the_same_traffic_for_every_policy() {
        let a = interval_traffic(&BAD, 25.0, 60_000, 42, 3);
        assert_eq!(a, interval_traffic(&BAD, 25.0, 60_000, 42, 3));
        assert_eq!((a.0.requests, a.1.requests), (3000.0, 9000.0));
        assert_ne!(a, interval_traffic(&BAD, 25.0, 60_000, 42, 4));
    }

    #[test]
    fn windows_reach_back_as_far_as_there_is_history() {
        let t = |requests| Traffic {
            requests,
            errors: 1.0,
            ..Traffic::default()
        };
        let history: Vec<_> = (1..=3).map(|i| (t(f64::from(i)), t(10.0))).collect();
        let w = window(&history, 120_000, 60_000, 1);
        assert_eq!((w.canary.requests, w.canary.errors), (5.0, 2.0));
        assert_eq!((w.covered_ms, w.counters.len()), (120_000, 1));
        let w = window(&history, 1_800_000, 60_000, 0);
        assert_eq!((w.canary.requests, w.covered_ms), (6.0, 180_000));
        // A span between two scrapes reaches back to the earlier one.
        assert_eq!(window(&history, 90_000, 60_000, 0).canary.requests, 5.0);
    }

    #[test]
    fn the_documented_policy_keeps_healthy_canaries_and_catches_bad_ones() {
        let p = plan();
        let healthy = population(&p, &Policy::Linnet, &HEALTHY, 11, 100, CAP_MS).unwrap();
        let bad = population(&p, &Policy::Linnet, &BAD, 12, 100, CAP_MS).unwrap();
        assert!(healthy.rolled_back() <= 3, "{healthy:?}");
        assert!(bad.rolled_back() >= 85, "{bad:?}");
        assert_eq!(healthy.unfinished + bad.unfinished, 0);
        // A healthy rollout goes through its four timed steps without being held back.
        assert_eq!(healthy.reached_quantile_ms(0.5), Some(20 * 60_000));
        // The same seeds give the same rollouts.
        assert_eq!(
            bad,
            population(&p, &Policy::Linnet, &BAD, 12, 100, CAP_MS).unwrap()
        );
    }

    #[test]
    fn a_broken_canary_is_rolled_back_by_the_error_rate_at_the_first_run() {
        let broken = Load {
            canary_errors: 0.5,
            ..HEALTHY
        };
        let r = rollout(&plan(), &Policy::Linnet, &broken, 1, CAP_MS).unwrap();
        assert_eq!(
            r,
            Rollout {
                end: End::RolledBack("errors".into()),
                at_ms: 60_000,
                step: 0
            }
        );
    }

    #[test]
    fn the_flagger_baseline_counts_failed_checks_over_the_whole_rollout() {
        let flagger = |threshold| Policy::Flagger {
            interval_ms: 60_000,
            min_success: 0.99,
            threshold,
        };
        // Every check fails at 2% errors: the threshold-th check rolls back.
        let failing = Load {
            canary_errors: 0.02,
            ..HEALTHY
        };
        let r = rollout(&plan(), &flagger(5), &failing, 3, CAP_MS).unwrap();
        assert_eq!((r.at_ms, r.step), (5 * 60_000, 0));
        // No check fails without errors: the plan's 20 minutes.
        let clean = Load {
            canary_errors: 0.0,
            ..HEALTHY
        };
        let r = rollout(&plan(), &flagger(5), &clean, 3, CAP_MS).unwrap();
        assert_eq!((r.end, r.at_ms), (End::Reached, 20 * 60_000));
    }

    #[test]
    fn plans_the_simulation_cannot_run_are_refused() {
        let gate = "name: a\nsteps:\n- {weight: 5, pause: until promoted}\n- {weight: 100}\nanalysis: {interval: 1m, guardrails: [{compare: {}}]}\n";
        let odd = "name: a\nsteps:\n- {weight: 5, pause: 90s}\n- {weight: 100}\nanalysis: {interval: 1m, guardrails: [{compare: {}}]}\n";
        let slow = "name: a\nsteps:\n- {weight: 5, pause: 1m}\n- {weight: 100}\nanalysis: {guardrails: [{latency: {quantile: p99, max_ms: 100}}]}\n";
        for (yaml, want) in [(gate, "operator"), (odd, "whole number"), (slow, "latency")] {
            let p = RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap().1;
            let e = rollout(&p, &Policy::Linnet, &HEALTHY, 1, CAP_MS).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
