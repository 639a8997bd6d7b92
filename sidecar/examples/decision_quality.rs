//! Decision quality: how often Linnet's analysis rolls back a healthy canary, and how often and
//! how fast it rolls back a bad one before it reaches everyone, next to a Flagger-style
//! success-rate check on the same plan and the same seeded traffic.
//!
//! `cargo run --release -p linnet-sidecar --example decision_quality [ROLLOUTS] [SEED]`
//!
//! ROLLOUTS healthy and ROLLOUTS bad rollouts per policy (default 2000), seeded by SEED
//! (default 1); the same seed gives the same numbers. The plan and Linnet's policy are
//! `linnet_sidecar::analysis::sim::PLAN`, printed below; the rollouts run through the
//! sidecar's own `judge`, `decide` and state machine (see `analysis::sim`).

use linnet_sidecar::analysis::judge::dur;
use linnet_sidecar::analysis::sim::{self, Load, Policy, Tally, BAD, HEALTHY};
use linnet_sidecar::clock::Millis;
use linnet_sidecar::spec::{Format, Pause, Plan, RolloutSpec};
use std::process::ExitCode;
use std::time::Instant;

const MAX_FALSE_ROLLBACKS: f64 = 0.01;
const MIN_DETECTION: f64 = 0.95;
const DEFAULT_ROLLOUTS: u32 = 2000;
const DEFAULT_SEED: u64 = 1;

/// Flagger's `analysis: {interval: 1m, threshold: 5}` with the built-in
/// `request-success-rate` at `thresholdRange: {min: 99}`.
const FLAGGER_INTERVAL_MS: Millis = 60_000;
const FLAGGER_MIN_SUCCESS: f64 = 0.99;
const FLAGGER_THRESHOLD: u32 = 5;
const FLAGGER: Policy = Policy::Flagger {
    interval_ms: FLAGGER_INTERVAL_MS,
    min_success: FLAGGER_MIN_SUCCESS,
    threshold: FLAGGER_THRESHOLD,
};

struct Row {
    name: String,
    healthy: Tally,
    bad: Tally,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decision_quality: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let (rollouts, seed) = args()?;
    let started = Instant::now();
    let (mut faster, plan) = RolloutSpec::parse(sim::PLAN.as_bytes(), Format::Yaml)
        .map_err(|e| format!("sim::PLAN: {e}"))?;
    // The same policy judged twice as often (the sidecar's default interval).
    if let Some(a) = faster.analysis.as_mut() {
        a.interval = Some("30s".into());
    }
    let faster = faster
        .validate()
        .map_err(|e| format!("sim::PLAN at 30s: {e}"))?;
    let interval = plan.analysis.as_ref().map_or(0, |a| a.interval_ms);
    let runs: [(String, &Plan, Policy); 3] = [
        (format!("Linnet, {}", dur(interval)), &plan, Policy::Linnet),
        ("Linnet, 30s".into(), &faster, Policy::Linnet),
        (
            format!("Flagger-style, {}", dur(FLAGGER_INTERVAL_MS)),
            &plan,
            FLAGGER,
        ),
    ];
    let mut rows = Vec::with_capacity(runs.len());
    for (name, plan, policy) in runs {
        // Every policy gets the same seeds, so at the same weight it sees the same errors.
        let population = |load: &Load, part: u64| {
            sim::population(
                plan,
                &policy,
                load,
                sim::derive(seed, part),
                rollouts,
                sim::CAP_MS,
            )
            .map_err(|e| format!("{name}: {e}"))
        };
        rows.push(Row {
            healthy: population(&HEALTHY, 0)?,
            bad: population(&BAD, 1)?,
            name,
        });
    }
    let wall = started.elapsed();
    print_report(&plan, rollouts, seed, &rows);
    println!("wall time: {:.2} s", wall.as_secs_f64());
    Ok(())
}

fn args() -> Result<(u32, u64), String> {
    let mut args = std::env::args().skip(1);
    let rollouts = match args.next() {
        None => DEFAULT_ROLLOUTS,
        Some(a) => match a.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("ROLLOUTS: {a:?} is not a positive whole number")),
        },
    };
    let seed = match args.next() {
        None => DEFAULT_SEED,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| format!("SEED: {a:?} is not a whole number"))?,
    };
    if let Some(extra) = args.next() {
        return Err(format!(
            "unexpected argument {extra:?}; usage: decision_quality [ROLLOUTS] [SEED]"
        ));
    }
    Ok((rollouts, seed))
}

fn print_report(plan: &Plan, rollouts: u32, seed: u64, rows: &[Row]) {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .map(|s| match s.pause {
            Pause::For(d) if !d.is_zero() => format!("{}% for {}", s.weight, humantime(d)),
            Pause::For(_) => format!("{}%", s.weight),
            Pause::UntilPromoted => format!("{}% until promoted", s.weight),
        })
        .collect();
    println!(
        "Decision quality: {rollouts} healthy and {rollouts} bad rollouts per policy, seed {seed}"
    );
    println!(
        "traffic: {} requests/s; stable {} errors; healthy canary {}, bad canary {} (2x stable)",
        HEALTHY.requests_per_s,
        pct(HEALTHY.stable_errors),
        pct(HEALTHY.canary_errors),
        pct(BAD.canary_errors)
    );
    println!(
        "plan: {}; a rollout ends when it reaches the last step or is rolled back (cap {})",
        steps.join(" -> "),
        dur(sim::CAP_MS)
    );
    println!(
        "goal: false rollbacks <= {}, bad canaries rolled back before 100% >= {}",
        pct(MAX_FALSE_ROLLBACKS),
        pct(MIN_DETECTION)
    );
    println!();
    println!("Linnet's policy (sim::PLAN; \"Linnet, 30s\" is the same with `interval: 30s`):");
    for line in sim::PLAN.lines() {
        println!("  {line}");
    }
    println!();
    println!(
        "Flagger-style baseline: every {every} the canary's success rate over {every} must be >= {};",
        pct(FLAGGER_MIN_SUCCESS),
        every = dur(FLAGGER_INTERVAL_MS)
    );
    println!(
        "{FLAGGER_THRESHOLD} failed checks in the rollout (cumulative, as Flagger counts them) roll back;"
    );
    println!("a failed check holds the step; a step advances at the first passing check after its pause.");
    println!();

    let header = [
        "policy",
        "false rollbacks (95% CI)",
        "detected before 100% (95% CI)",
        "bad rolled back at p50",
        "p90",
        "healthy at 100% p50 / p90",
        "unfinished",
        "goal",
    ];
    let mut table = vec![header.map(String::from).to_vec()];
    for r in rows {
        let false_rate = r.healthy.rollback_rate();
        let detected = r.bad.rollback_rate();
        let met = false_rate <= MAX_FALSE_ROLLBACKS && detected >= MIN_DETECTION;
        table.push(vec![
            r.name.clone(),
            share(r.healthy.rolled_back(), r.healthy.rollouts),
            share(r.bad.rolled_back(), r.bad.rollouts),
            minutes(r.bad.rollback_quantile_ms(0.5)),
            minutes(r.bad.rollback_quantile_ms(0.9)),
            format!(
                "{} / {}",
                minutes(r.healthy.reached_quantile_ms(0.5)),
                minutes(r.healthy.reached_quantile_ms(0.9))
            ),
            (r.healthy.unfinished + r.bad.unfinished).to_string(),
            if met { "met" } else { "missed" }.into(),
        ]);
    }
    print_table(&table);
    println!();
    for r in rows {
        let by = |t: &Tally| {
            let parts: Vec<String> = t.by.iter().map(|(g, n)| format!("{g} {n}")).collect();
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        };
        println!(
            "{}: rolled back by: bad [{}], healthy [{}]",
            r.name,
            by(&r.bad),
            by(&r.healthy)
        );
    }
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// `0.45% (9/2000; 0.24-0.85%)`.
fn share(k: u32, n: u32) -> String {
    let (lo, hi) = sim::wilson(k, n);
    format!(
        "{} ({k}/{n}; {}-{})",
        pct(f64::from(k) / f64::from(n.max(1))),
        pct_bare(lo),
        pct(hi)
    )
}

fn pct(fraction: f64) -> String {
    format!("{}%", pct_bare(fraction))
}

fn pct_bare(fraction: f64) -> String {
    let s = format!("{:.2}", fraction * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn minutes(ms: Option<Millis>) -> String {
    ms.map_or_else(
        || "-".into(),
        |ms| format!("{:.1} min", ms as f64 / 60_000.0),
    )
}

fn humantime(d: std::time::Duration) -> String {
    dur(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}
