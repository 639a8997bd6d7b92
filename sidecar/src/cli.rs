//! The `linnet` command line: every flag and environment variable is read here, in one place,
//! and each invalid value is reported by its name.

use crate::analysis::policy::SourceKind;
use crate::api::{self, ApiConfig};
use crate::api::{Created, Explanation, HistoryPage, KillSwitch, RolloutList};
use crate::api::{KeyCreated, KeyList, NotificationsPage, ReceiverPut, Receivers};
use crate::auth::Auth;
use crate::client::Client;
use crate::clock::{Millis, SystemClock};
use crate::controller::{HistoryEntry, Status};
use crate::keys::KeyInfo;
use crate::load;
use crate::notify::{Delivery, DeliveryState};
use crate::retention::{self, Retention};
use crate::server::{Server, ServerOptions};
use crate::spec::{self, Format, RolloutSpec};
use crate::token;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::Method;
use linnet_core::snapshot::Source;
use linnet_core::{PluginConfig, SnapshotDoc, Variant};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "linnet",
    version,
    about = "Canary rollouts at the proxy: the Linnet sidecar and its CLI"
)]
pub struct Cli {
    /// The sidecar's admin API, for client commands.
    #[arg(
        long,
        global = true,
        env = "LINNET_SERVER",
        default_value = "http://127.0.0.1:9911"
    )]
    pub server: String,
    /// Admin token. `serve` requires it for every change, and for every read unless
    /// --open-reads; client commands send it. Absent: the token file.
    #[arg(long, global = true, env = "LINNET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The admin token file (default: `admin.token` beside --db). `serve` without --token
    /// creates it with a random token, readable by its owner only, or reuses it; client
    /// commands without --token read it (the default file only for a server on loopback).
    #[arg(long, global = true, env = "LINNET_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The database `serve` keeps; client commands look for the default token file beside it.
    #[arg(long, global = true, env = "LINNET_DB", default_value = "linnet.db")]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: admin API, rollout controller and snapshot long-poll.
    Serve(ServeArgs),
    /// Create, inspect and control rollouts.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Show a rollout (or all), optionally redrawn live until it ends.
    Status(StatusArgs),
    /// Send all traffic (or one rollout's) to stable, or release it again.
    KillSwitch {
        state: OnOff,
        #[arg(long)]
        rollout: Option<String>,
    },
    /// Check a rollout spec offline; no server needed.
    Validate { spec_file: PathBuf },
    /// Print the admin API's OpenAPI 3.1 document (as shipped in sidecar/openapi.json).
    Openapi,
    /// An MCP server on stdio for a local AI agent: each JSON-RPC line goes to the sidecar's
    /// `/mcp` with this CLI's --server and --token, so the key's scope decides the tools.
    Mcp,
    /// Which variant a user key gets, and why, from the live snapshot.
    Whereis { rollout: String, key: String },
    /// A rollout's decisions in plain words: steps, analysis checks, rollbacks, and why.
    Explain {
        /// A name (its unfinished rollout, else its latest) or a release id from `history`.
        rollout: String,
        /// How many of the latest events to read.
        #[arg(long, default_value_t = 200)]
        limit: u32,
    },
    /// Notifications to chat and pipelines: delivered, waiting, and failed ones with why.
    Notifications {
        /// Only this rollout's.
        #[arg(long)]
        rollout: Option<String>,
        /// Only those in this state.
        #[arg(long)]
        state: Option<NotifyState>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Send this failed delivery (an ID from the list) again, under its idempotency key.
        #[arg(long, conflicts_with_all = ["rollout", "state"])]
        resend: Option<i64>,
    },
    /// The receivers every rollout notifies (a rollout's own are in its spec's `notify`).
    #[command(subcommand)]
    Receiver(ReceiverCmd),
    /// Named API keys with a scope (read, operate, admin) and a rate limit.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Send a bounded burst of GETs from a few users (a load gate by hand) and print its
    /// success rate and latency; exits non-zero when it misses a threshold given.
    Load(LoadArgs),
    /// A release's evidence report: one self-contained HTML file (or its JSON), from the audit.
    Report {
        /// A name (its unfinished rollout, else its latest) or a release id from `history`.
        rollout: String,
        /// The report's JSON instead of HTML.
        #[arg(long)]
        json: bool,
        /// Write it to this file (and print its path) instead of to stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[arg(long, env = "LINNET_LISTEN", default_value = "127.0.0.1:9911")]
    pub listen: SocketAddr,
    /// The filters' token for snapshot polls; unset: polls need the admin token.
    #[arg(long, env = "LINNET_POLL_TOKEN", hide_env_values = true)]
    pub poll_token: Option<String>,
    /// Let reads (rollouts, history, audit, events, metrics) through without a token; their
    /// override tokens stay redacted. Never the snapshot, which carries them.
    #[arg(long, env = "LINNET_OPEN_READS", value_parser = clap::builder::BoolishValueParser::new())]
    pub open_reads: bool,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, env = "LINNET_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Interval of heartbeat comments on event streams.
    #[arg(long, env = "LINNET_SSE_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub sse_heartbeat: Duration,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "LINNET_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// A request body not fully sent within this is answered 408.
    #[arg(long, env = "LINNET_BODY_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub body_timeout: Duration,
    /// Days an archived rollout's audit (events, checks, transitions) is kept after it
    /// finished, and a global event after it was written.
    #[arg(long, env = "LINNET_RETAIN_DAYS", default_value_t = retention::DEFAULT_DAYS,
        value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retain_days: u64,
    /// Most audit events (and transitions) kept; the oldest archived ones go first. An
    /// unfinished rollout's are never pruned.
    #[arg(long, env = "LINNET_RETAIN_EVENTS", default_value_t = retention::DEFAULT_MAX_EVENTS,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub retain_events: u64,
    /// Event streams open at once; one more is answered 503 with Retry-After.
    #[arg(long, env = "LINNET_MAX_SSE", default_value_t = api::DEFAULT_MAX_SSE as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_sse: u64,
    /// Snapshot polls held at once (one per Envoy); one more is answered 503 with Retry-After.
    #[arg(long, env = "LINNET_MAX_POLLS", default_value_t = api::DEFAULT_MAX_POLLS as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_polls: u64,
    /// Snapshot polls per second, sustained, from all filters together; over it, 429 with
    /// Retry-After. Polls have their own bucket: no key's calls draw from it.
    #[arg(long, env = "LINNET_POLL_RATE", default_value_t = api::DEFAULT_POLL_RATE,
        value_parser = positive_rate)]
    pub poll_rate: f64,
    /// Snapshot polls at once above the rate (every filter polls again after a change).
    #[arg(long, env = "LINNET_POLL_BURST", default_value_t = api::DEFAULT_POLL_BURST,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_burst: u32,
    /// Write each release's evidence report (`<name>-<id>.html` and `.json`) here when it ends.
    #[arg(long, env = "LINNET_REPORTS")]
    pub reports: Option<PathBuf>,
    /// Gates and notifications may call this host only (127.0.0.0/8, ::1, localhost): for
    /// test rigs and fuzzers that make up URLs.
    #[arg(long, env = "LINNET_OUTBOUND_LOOPBACK_ONLY",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub outbound_loopback_only: bool,
}

/// `linnet load`: the fields of a load gate's `load`, as flags; no server needed.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// `http://host:port/path`: Envoy's listener or the canary. Loopback only, unless
    /// --allow-target names it.
    #[arg(long)]
    pub target: String,
    /// The Host to send (default: the target's).
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long, default_value_t = load::DEFAULT_REQUESTS)]
    pub requests: u32,
    /// Users take turns, each sending its key (`user-1`…) in --user-header or --user-cookie.
    #[arg(long, default_value_t = load::DEFAULT_USERS)]
    pub users: u32,
    /// Requests per second.
    #[arg(long, default_value_t = load::DEFAULT_RATE)]
    pub rate: u32,
    /// How long each request may take.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// A header for every request, `name:value` (repeatable), e.g. the rollout's override
    /// `x-linnet-override:canary` and its token header.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// The header each user's key goes in (the rollout's stickiness header).
    #[arg(long, conflicts_with = "user_cookie")]
    pub user_header: Option<String>,
    /// The cookie each user's key goes in.
    #[arg(long)]
    pub user_cookie: Option<String>,
    /// Fail unless at least this percent of requests answer 2xx or 3xx.
    #[arg(long)]
    pub min_success: Option<f64>,
    /// Fail when the answers' median latency is above this many milliseconds.
    #[arg(long)]
    pub max_p50_ms: Option<f64>,
    /// Fail when the answers' p90 latency is above this many milliseconds.
    #[arg(long)]
    pub max_p90_ms: Option<f64>,
    /// Fail when the answers' p99 latency is above this many milliseconds.
    #[arg(long)]
    pub max_p99_ms: Option<f64>,
    /// A target besides loopback the burst may go to (repeatable).
    #[arg(long = "allow-target", value_name = "HOST:PORT")]
    pub allow_targets: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Create a rollout from a spec file (YAML, or JSON by the .json extension).
    Create {
        spec_file: PathBuf,
    },
    List,
    Status(StatusArgs),
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Advance to the next step, or with --full straight to 100%.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
    },
    Abort {
        name: String,
    },
    /// Start a rolled back, aborted or timed out rollout again from step 0.
    Retry {
        name: String,
    },
    /// Hand a promoted rollout over: stable now runs the promoted version, so the rollout
    /// leaves the snapshot and the route's stable cluster takes all traffic again.
    Complete {
        name: String,
    },
    /// Past and present releases, newest first, with their outcome and times.
    History {
        /// Only releases whose match overlaps this host (e.g. checkout.local).
        #[arg(long = "match")]
        host: Option<String>,
        /// Only releases of this name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Set the weight by hand (pauses automatic stepping).
    Weight {
        name: String,
        percent: f64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReceiverCmd {
    /// Add a receiver, or replace the one of its name; it hears events from now on.
    Add {
        #[arg(long)]
        name: String,
        /// `http://host:port/path` (loopback, or a relay that speaks TLS onward).
        #[arg(long)]
        url: String,
        #[arg(long, value_enum, default_value = "json")]
        format: ReceiverFormat,
        /// A file on the sidecar's host holding the signing secret (HMAC-SHA256).
        #[arg(long)]
        secret_file: Option<String>,
        /// The signing secret itself (prefer --secret-file or the environment variable).
        #[arg(long, env = "LINNET_RECEIVER_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Topics it hears, comma-separated (default: all): started, step, paused, resumed,
        /// promoted, completed, rolled_back, aborted, timed_out, analysis_failing.
        #[arg(long, value_delimiter = ',')]
        on: Vec<String>,
    },
    List,
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Make a key and print its secret, once: only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        /// read: every read; operate: also pause, resume, promote, abort, weight, complete,
        /// retry; admin: also create, the kill switches, receivers and keys.
        #[arg(long, value_enum)]
        scope: KeyScope,
        /// Requests per second, sustained (default 20).
        #[arg(long)]
        rate: Option<f64>,
        /// Requests at once after a quiet spell (default 40).
        #[arg(long)]
        burst: Option<u32>,
    },
    /// Every key, revoked ones included; never a secret.
    List,
    /// Refuse a key from now on. Its name is not used again.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyScope {
    Read,
    Operate,
    Admin,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReceiverFormat {
    Json,
    Slack,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum NotifyState {
    Pending,
    Retrying,
    Delivered,
    Failed,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The rollout; all rollouts when absent.
    pub name: Option<String>,
    /// Redraw until the rollout ends, Ctrl-C, or --for elapses.
    #[arg(long)]
    pub watch: bool,
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    #[arg(long = "for", default_value = "1h", value_parser = duration)]
    pub watch_for: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

fn duration(s: &str) -> Result<Duration, String> {
    spec::parse_duration(s)
}

/// Requests per second: a finite number above 0.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of requests per second"
        )),
    }
}

/// Runs a command; `Err` is the message to print.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => {
            // Every token is checked before the token file is made.
            if let Some(p) = &args.poll_token {
                token::check("--poll-token", p)?;
            }
            let admin = serve_token(&cli.db, cli.token, cli.token_file)?;
            serve(args, cli.db, admin).await
        }
        Command::Validate { spec_file } => validate(&spec_file),
        Command::Load(args) => load(args).await,
        Command::Openapi => {
            println!("{}", crate::api::openapi_json_text()?);
            Ok(())
        }
        command => {
            let token = client_token(&cli.server, &cli.db, cli.token, cli.token_file)?;
            let client = Client::new(&cli.server, token)?;
            run_client(&client, command).await
        }
    }
}

/// `serve`'s admin token: --token, else the token file's (made on the first start).
fn serve_token(db: &Path, token: Option<String>, file: Option<PathBuf>) -> Result<String, String> {
    match (token, file) {
        (Some(_), Some(_)) => Err("give --token or --token-file, not both".into()),
        (Some(t), None) => token::check("--token", &t).map(|()| t),
        (None, file) => {
            let path = file.unwrap_or_else(|| token::default_path(db));
            let (t, origin) = token::load_or_create(&path)?;
            let how = match origin {
                token::Origin::Created => "created",
                token::Origin::Reused => "reused",
            };
            // The path, never the token: logs are read by more people than the file.
            tracing::info!(path = %path.display(), "admin token file {how}; client commands on this host read it");
            Ok(t)
        }
    }
}

/// A client command's token: --token, else --token-file, else the default token file when
/// the server is on this host (it would be a leak to send the local token anywhere else).
fn client_token(
    server: &str,
    db: &Path,
    token: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<String>, String> {
    if let Some(t) = token {
        return token::check("--token", &t).map(|()| Some(t));
    }
    match file {
        Some(path) => token::read(&path)?
            .map(Some)
            .ok_or_else(|| format!("--token-file {}: no such file", path.display())),
        None if crate::outbound::is_loopback(server) => token::read(&token::default_path(db)),
        None => Ok(None),
    }
}

async fn serve(args: ServeArgs, db: PathBuf, admin: String) -> Result<(), String> {
    if args.outbound_loopback_only {
        crate::outbound::restrict_to_loopback();
    }
    let server = Server::start(ServerOptions {
        listen: args.listen,
        db,
        api: ApiConfig {
            auth: Auth {
                admin: Some(admin),
                poll: args.poll_token,
                open_reads: args.open_reads,
                ..Auth::default()
            },
            max_body_bytes: args.max_body_bytes,
            body_timeout: args.body_timeout,
            heartbeat: args.sse_heartbeat,
            max_sse: usize::try_from(args.max_sse).unwrap_or(usize::MAX),
            max_polls: usize::try_from(args.max_polls).unwrap_or(usize::MAX),
            poll_limit: crate::keys::Limit {
                rate: args.poll_rate,
                burst: args.poll_burst,
            },
        },
        retention: Retention::days(args.retain_days, args.retain_events),
        clock: Arc::new(SystemClock),
        drain_timeout: args.drain_timeout,
        reports: args.reports,
    })
    .await?;
    crate::signal::terminate().await;
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn validate(path: &Path) -> Result<(), String> {
    let (spec, plan) = read_spec(path)?;
    println!(
        "{}: rollout {:?} is valid: {} step(s), weights {}",
        path.display(),
        spec.name,
        plan.steps.len(),
        plan.steps
            .iter()
            .map(|s| format!("{}%", s.weight))
            .collect::<Vec<_>>()
            .join(" → ")
    );
    if let Some(a) = &plan.analysis {
        let source = match a.source.kind() {
            Ok(SourceKind::Envoy(e)) => format!("Envoy admin {}", e.admin.join(", ")),
            Ok(SourceKind::Prometheus(p)) => format!("Prometheus at {}", p.url),
            Err(_) => "?".into(),
        };
        println!(
            "analysis every {}, from {source}: {}",
            crate::analysis::judge::dur(a.interval_ms),
            a.guardrails
                .iter()
                .map(|g| format!("{} ({})", g.name, g.severity.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for w in spec.warnings(&plan) {
        println!("warning: {w}");
    }
    Ok(())
}

/// `linnet load`: the burst a load gate sends, from flags, printed.
async fn load(args: LoadArgs) -> Result<(), String> {
    let flag = |f: &str| format!("--{}", f.replace('_', "-"));
    // A cookie's name is an RFC 9110 token, like a header's.
    let token = |f: &str, name: &str| match hyper::header::HeaderName::from_bytes(name.as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{f}: {name:?} is not a valid name")),
    };
    let user_key = match (args.user_header, args.user_cookie) {
        (Some(h), _) => {
            token("--user-header", &h)?;
            Some(Source::Header(h.to_ascii_lowercase()))
        }
        (None, Some(c)) => {
            token("--user-cookie", &c)?;
            Some(Source::Cookie(c))
        }
        (None, None) => None,
    };
    let context = load::Context {
        headers: load::Headers::parse("--header", &args.headers).map_err(|e| e.to_string())?,
        user_key,
        allowed: args.allow_targets,
        ..load::Context::default()
    };
    let spec = load::LoadSpec {
        target: args.target,
        host: args.host,
        via: None,
        requests: Some(args.requests),
        users: Some(args.users),
        rate: Some(args.rate),
        timeout: Some(args.timeout),
        min_success: args.min_success,
        max_p50_ms: args.max_p50_ms,
        max_p90_ms: args.max_p90_ms,
        max_p99_ms: args.max_p99_ms,
    };
    let burst = spec.validate(&flag, context).map_err(|e| e.to_string())?;
    let outcome = burst.run().await?;
    if args.json {
        let text = serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        println!("{}", outcome.words(&burst.thresholds));
    }
    if outcome.passed {
        Ok(())
    } else {
        Err(format!("the burst missed {}", outcome.missed.join(", ")))
    }
}

fn read_spec(path: &Path) -> Result<(RolloutSpec, spec::Plan), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let format = Format::from_path(&path.to_string_lossy());
    RolloutSpec::parse(&bytes, format).map_err(|e| format!("{}: {e}", path.display()))
}

fn control_path(name: &str, action: &str) -> String {
    format!("/v1/rollouts/{name}/{action}")
}

async fn run_client(c: &Client, command: Command) -> Result<(), String> {
    match command {
        Command::Serve(_) | Command::Validate { .. } | Command::Openapi | Command::Load(_) => {
            Ok(())
        }
        Command::Rollout(cmd) => rollout(c, cmd).await,
        Command::Status(args) => status(c, args).await,
        Command::KillSwitch { state, rollout } => kill_switch(c, state, rollout).await,
        Command::Whereis { rollout, key } => whereis(c, &rollout, &key).await,
        Command::Mcp => crate::mcp_stdio::run(c).await,
        Command::Explain { rollout, limit } => explain(c, &rollout, limit).await,
        Command::Report { rollout, json, out } => report(c, &rollout, json, out).await,
        Command::Notifications {
            rollout,
            state,
            limit,
            resend,
        } => notifications(c, rollout, state, limit, resend).await,
        Command::Receiver(cmd) => receiver(c, cmd).await,
        Command::Key(cmd) => key(c, cmd).await,
    }
}

async fn key(c: &Client, cmd: KeyCmd) -> Result<(), String> {
    let keys = match cmd {
        KeyCmd::Create {
            name,
            scope,
            rate,
            burst,
        } => {
            let scope = match scope {
                KeyScope::Read => "read",
                KeyScope::Operate => "operate",
                KeyScope::Admin => "admin",
            };
            let mut body = json!({ "name": name, "scope": scope });
            if let Some(r) = rate {
                body["rate"] = json!(r);
            }
            if let Some(b) = burst {
                body["burst"] = json!(b);
            }
            let made: KeyCreated = c.typed(Method::POST, "/v1/keys", Some(body)).await?;
            println!("{}", made.secret);
            eprintln!(
                "key {:?} ({}): the secret above will not be shown again; store it now",
                made.key.name, made.key.scope
            );
            return Ok(());
        }
        KeyCmd::List => {
            c.typed::<KeyList>(Method::GET, "/v1/keys", None)
                .await?
                .keys
        }
        KeyCmd::Revoke { name } => {
            let path = format!("/v1/keys/{}", percent_encode(&name));
            vec![c.typed::<KeyInfo>(Method::DELETE, &path, None).await?]
        }
    };
    for k in &keys {
        println!(
            "{:<24} {:<8} {:>8}/s burst {:<6} created {}{}",
            k.name,
            k.scope,
            k.rate,
            k.burst,
            crate::explain::clock_time(k.created_at_ms),
            k.revoked_at_ms
                .map(|t| format!("  revoked {}", crate::explain::clock_time(t)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

async fn notifications(
    c: &Client,
    rollout: Option<String>,
    state: Option<NotifyState>,
    limit: u32,
    resend: Option<i64>,
) -> Result<(), String> {
    if let Some(id) = resend {
        let path = format!("/v1/notifications/{id}/resend");
        let d: Delivery = c.typed(Method::POST, &path, None).await?;
        print!("{}", render_notifications(std::slice::from_ref(&d)));
        return Ok(());
    }
    let mut path = format!("/v1/notifications?limit={limit}");
    if let Some(r) = rollout {
        path += &format!("&rollout={}", percent_encode(&r));
    }
    if let Some(s) = state {
        let s = match s {
            NotifyState::Pending => DeliveryState::Pending,
            NotifyState::Retrying => DeliveryState::Retrying,
            NotifyState::Delivered => DeliveryState::Delivered,
            NotifyState::Failed => DeliveryState::Failed,
        };
        path += &format!("&state={}", s.as_str());
    }
    let page: NotificationsPage = c.typed(Method::GET, &path, None).await?;
    print!("{}", render_notifications(&page.deliveries));
    Ok(())
}

async fn receiver(c: &Client, cmd: ReceiverCmd) -> Result<(), String> {
    let list: Receivers = match cmd {
        ReceiverCmd::Add {
            name,
            url,
            format,
            secret_file,
            secret,
            on,
        } => {
            let format = match format {
                ReceiverFormat::Json => "json",
                ReceiverFormat::Slack => "slack",
            };
            let mut body = json!({ "name": name, "url": url, "format": format });
            if let Some(f) = secret_file {
                body["secret_file"] = json!(f);
            }
            if let Some(s) = secret {
                body["secret"] = json!(s);
            }
            if !on.is_empty() {
                body["on"] = json!(on);
            }
            let put: ReceiverPut = c.typed(Method::POST, "/v1/receivers", Some(body)).await?;
            Receivers {
                receivers: vec![put.receiver],
            }
        }
        ReceiverCmd::List => c.typed(Method::GET, "/v1/receivers", None).await?,
        ReceiverCmd::Remove { name } => {
            let path = format!("/v1/receivers/{}", percent_encode(&name));
            c.typed(Method::DELETE, &path, None).await?
        }
    };
    for r in &list.receivers {
        let on: Vec<&str> = r.on.iter().map(|t| t.as_str()).collect();
        println!(
            "{:<20} {:<6} {}  on: {}{}",
            r.name,
            r.format.as_str(),
            r.url,
            if on.is_empty() {
                "all".to_owned()
            } else {
                on.join(",")
            },
            if r.secret.is_some() || r.secret_file.is_some() {
                "  (signed)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Deliveries for people: one line each, and why the last attempt failed.
pub fn render_notifications(list: &[Delivery]) -> String {
    let mut out = format!(
        "{:>6} {:<8} {:<20} {:<24} {:<17} {:<9} {:>8}  {}\n",
        "ID", "TIME", "ROLLOUT", "RECEIVER", "TOPIC", "STATE", "ATTEMPTS", "LAST ERROR"
    );
    for d in list {
        out += &format!(
            "{:>6} {:<8} {:<20} {:<24} {:<17} {:<9} {:>8}  {}\n",
            d.id,
            crate::explain::clock_time(d.created_ms),
            d.rollout.as_deref().unwrap_or("-"),
            d.receiver,
            d.topic,
            d.state.as_str(),
            format!("{}/{}", d.attempts, d.max_attempts),
            d.last_error.as_deref().unwrap_or(""),
        );
    }
    out
}

async fn report(c: &Client, rollout: &str, json: bool, out: Option<PathBuf>) -> Result<(), String> {
    let path = format!("/v1/rollouts/{}/report", percent_encode(rollout));
    let report: crate::report::Report = c.typed(Method::GET, &path, None).await?;
    let text = if json {
        serde_json::to_string_pretty(&report).map_err(|e| e.to_string())? + "\n"
    } else {
        crate::report::html(&report).map_err(|e| e.to_string())?
    };
    match out {
        None => print!("{text}"),
        Some(p) => {
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            println!("{}", p.display());
        }
    }
    Ok(())
}

async fn kill_switch(c: &Client, state: OnOff, rollout: Option<String>) -> Result<(), String> {
    let body = Some(json!({ "on": matches!(state, OnOff::On) }));
    let now = match &rollout {
        Some(name) => {
            let path = control_path(name, "kill-switch");
            c.typed::<Status>(Method::POST, &path, body)
                .await?
                .kill_switch
        }
        None => {
            c.typed::<KillSwitch>(Method::POST, "/v1/kill-switch", body)
                .await?
                .on
        }
    };
    let target = rollout.map_or("global".to_owned(), |r| format!("rollout {r}"));
    println!("kill switch ({target}): {}", if now { "on" } else { "off" });
    Ok(())
}

async fn explain(c: &Client, rollout: &str, limit: u32) -> Result<(), String> {
    let path = format!("/v1/rollouts/{rollout}/explain?limit={limit}");
    let explained: Explanation = c.typed(Method::GET, &path, None).await?;
    print!("{}", render_explain(&explained));
    Ok(())
}

async fn history(
    c: &Client,
    host: Option<String>,
    name: Option<String>,
    limit: u32,
) -> Result<(), String> {
    let mut path = format!("/v1/history?limit={limit}");
    for (k, v) in [("match", host), ("name", name)] {
        if let Some(v) = v {
            path += &format!("&{k}={}", percent_encode(&v));
        }
    }
    let history: HistoryPage = c.typed(Method::GET, &path, None).await?;
    print!("{}", render_history(&history.releases));
    Ok(())
}

async fn rollout(c: &Client, cmd: RolloutCmd) -> Result<(), String> {
    // The controls differ only by their action (and promote's body).
    let (name, action, body) = match cmd {
        RolloutCmd::Create { spec_file } => return create(c, &spec_file).await,
        RolloutCmd::List => {
            let args = StatusArgs {
                name: None,
                watch: false,
                interval: Duration::ZERO,
                watch_for: Duration::ZERO,
            };
            return status(c, args).await;
        }
        RolloutCmd::Status(args) => return status(c, args).await,
        RolloutCmd::History { host, name, limit } => return history(c, host, name, limit).await,
        RolloutCmd::Weight { name, percent } => {
            spec::percent("percent", percent).map_err(|e| e.to_string())?;
            let path = control_path(&name, "weight");
            let body = Some(json!({ "weight": percent }));
            return show(c.typed(Method::PUT, &path, body).await?);
        }
        RolloutCmd::Pause { name } => (name, "pause", None),
        RolloutCmd::Resume { name } => (name, "resume", None),
        RolloutCmd::Abort { name } => (name, "abort", None),
        RolloutCmd::Retry { name } => (name, "retry", None),
        RolloutCmd::Complete { name } => (name, "complete", None),
        RolloutCmd::Promote { name, full } => (name, "promote", Some(json!({ "full": full }))),
    };
    show(
        c.typed(Method::POST, &control_path(&name, action), body)
            .await?,
    )
}

async fn create(c: &Client, spec_file: &Path) -> Result<(), String> {
    // Validate locally first: the same rules, and an error names the file.
    read_spec(spec_file)?;
    let bytes = std::fs::read(spec_file).map_err(|e| format!("{}: {e}", spec_file.display()))?;
    let ct = match Format::from_path(&spec_file.to_string_lossy()) {
        Format::Json => "application/json",
        Format::Yaml => "application/yaml",
    };
    let (status, body) = c
        .send(Method::POST, "/v1/rollouts", Some((Bytes::from(bytes), ct)))
        .await?;
    let v = crate::client::parse_answer(status, &body)?;
    let created: Created =
        serde_json::from_value(v).map_err(|e| format!("the server's new rollout: {e}"))?;
    print!("{}", render_status(&created.status));
    for w in &created.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// The timeline as terminal lines: time, what happened, who did it, and indented what did
/// not pass.
pub fn render_explain(e: &Explanation) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{}: {} at step {}, weight {}%\n",
        e.rollout,
        e.state,
        e.step,
        number(e.weight)
    );
    for line in &e.timeline {
        let (at, until) = (line.at_ms, line.until_ms);
        let when = if until > at {
            format!(
                "{}–{}",
                crate::explain::clock_time(at),
                crate::explain::clock_time(until)
            )
        } else {
            format!("{}         ", crate::explain::clock_time(at))
        };
        // Who acted, where the API says (a server before actors does not).
        let by = if line.actor.is_empty() {
            String::new()
        } else {
            format!("  [by {}]", line.actor)
        };
        let _ = writeln!(out, "{when}  {}{by}", line.text);
        for d in &line.details {
            let _ = writeln!(out, "{:19}  - {d}", "");
        }
    }
    out
}

/// A number as the API's JSON writes it (`10.0`, `12.5`), as the CLI has always shown it.
fn number(x: f64) -> String {
    Value::from(x).to_string()
}

fn show(s: Status) -> Result<(), String> {
    print!("{}", render_status(&s));
    Ok(())
}

/// One rollout's status, or the list of all, for people; and whether each is done stepping.
async fn status_view(c: &Client, name: Option<&str>) -> Result<(String, bool), String> {
    Ok(match name {
        Some(n) => {
            let s: Status = c
                .typed(Method::GET, &format!("/v1/rollouts/{n}"), None)
                .await?;
            (render_status(&s), s.state.is_done_stepping())
        }
        None => {
            let all: RolloutList = c.typed(Method::GET, "/v1/rollouts", None).await?;
            let done = all.rollouts.iter().all(|s| s.state.is_done_stepping());
            (render_list(&all.rollouts), done)
        }
    })
}

async fn status(c: &Client, args: StatusArgs) -> Result<(), String> {
    let fetch = || status_view(c, args.name.as_deref());
    if !args.watch {
        print!("{}", fetch().await?.0);
        return Ok(());
    }
    let until = tokio::time::Instant::now() + args.watch_for;
    let interval = args.interval.max(Duration::from_millis(100));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (text, done) = fetch().await?;
        // Clear the screen and draw from the top, so the view updates in place.
        print!("\x1b[2J\x1b[H{text}");
        if done || tokio::time::Instant::now() >= until {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

/// Query values are names and host names; anything else is escaped.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The history as a table, newest first.
pub fn render_history(releases: &[HistoryEntry]) -> String {
    let time = |t: Option<Millis>| t.map_or("-".to_owned(), crate::explain::clock_time);
    let mut out = format!(
        "{:>5} {:<20} {:<24} {:<12} {:>7} {:<8} {:<8}  {}\n",
        "ID", "NAME", "MATCH", "STATE", "WEIGHT", "CREATED", "FINISHED", "REASON"
    );
    for r in releases {
        let m = &r.matcher;
        let host = m.authority.as_deref().unwrap_or("*");
        let matcher = format!("{host}{}", m.path_prefix.as_deref().unwrap_or(""));
        out += &format!(
            "{:>5} {:<20} {:<24} {:<12} {:>6}% {:<8} {:<8}  {}\n",
            r.id.to_string(),
            r.name,
            matcher,
            r.state.as_str(),
            format!("{:.1}", r.weight),
            time(Some(r.created_at_ms)),
            time(r.finished_at_ms),
            r.reason.as_deref().unwrap_or(""),
        );
    }
    out
}

fn ms(ms: Millis) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string()
}

/// A rollout status, for people.
pub fn render_status(s: &Status) -> String {
    let mut out = format!(
        "rollout {} (id {})\n  state:    {}\n  step:     {} (of steps 0..{}){}\n  weight:   {}%\n",
        s.name,
        s.id,
        s.state,
        s.step,
        s.steps.saturating_sub(1),
        if s.at_gate {
            " (waiting for promote)"
        } else {
            ""
        },
        number(s.weight),
    );
    if let Some(m) = &s.mirror {
        out += &format!("  mirror:   {}% to {}\n", number(m.percent), m.cluster);
    }
    if s.kill_switch {
        out += "  kill switch: ON (all traffic to stable)\n";
    }
    if let Some(left) = s.remaining_pause_ms {
        out += &format!("  pause left: {}\n", ms(left));
    }
    if let Some(left) = s.deadline_remaining_ms {
        out += &format!("  deadline in: {}\n", ms(left));
    }
    if !s.transitions.is_empty() {
        out += "  recent transitions:\n";
        for t in &s.transitions {
            out += &format!(
                "    {} → {} step {} weight {}%: {}\n",
                t.from,
                t.to,
                t.step,
                number(t.weight),
                t.reason,
            );
        }
    }
    out
}

/// The unfinished rollouts as a table.
pub fn render_list(rollouts: &[Status]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:>6} {:>8} {:>8}\n",
        "NAME", "STATE", "STEP", "WEIGHT", "MIRROR"
    );
    for r in rollouts {
        out += &format!(
            "{:<24} {:<12} {:>6} {:>7}% {:>8}\n",
            r.name,
            r.state.as_str(),
            format!("{}/{}", r.step, r.steps.saturating_sub(1)),
            number(r.weight),
            r.mirror
                .as_ref()
                .map_or("-".into(), |m| format!("{}%", m.percent)),
        );
    }
    out
}

async fn whereis(c: &Client, rollout: &str, key: &str) -> Result<(), String> {
    let (status, body) = c.send(Method::GET, "/v1/snapshot", None).await?;
    if !status.is_success() {
        crate::client::parse_answer(status, &body)?;
    }
    let doc = SnapshotDoc::from_json(&body).map_err(|e| format!("the server's snapshot: {e}"))?;
    print!("{}", where_key_goes(&doc, rollout, key)?);
    Ok(())
}

/// Which variant `key` gets in `rollout`, decided by linnet-core's own decision for a request
/// that carries the key (kill switch, then cohort, then bucket), exactly as the filter does.
pub fn where_key_goes(doc: &SnapshotDoc, rollout: &str, key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("the key is empty: a request without a key is anonymous".into());
    }
    let snapshot = PluginConfig::default()
        .with_snapshot(doc)
        .compile(doc.version)
        .map_err(|e| format!("the server's snapshot does not compile: {e}"))?;
    let r = snapshot.rollout(rollout).ok_or_else(|| {
        format!(
            "no rollout named {rollout:?} in snapshot version {}",
            doc.version
        )
    })?;
    let d = r.decide_key(snapshot.kill_switch, key.as_bytes());
    let (variant, reason, bucket) = (d.variant, d.reason, d.bucket);
    let mut out = format!(
        "rollout {rollout}, key {key:?}: {}\n  reason: {}\n  weight: {}% ({} of 10000 buckets)\n",
        variant.as_str(),
        reason.as_str(),
        r.weight.as_percent(),
        r.weight.get()
    );
    if let Some(b) = bucket {
        let cmp = if variant == Variant::Canary {
            "<"
        } else {
            ">="
        };
        out += &format!("  bucket: {b} {cmp} {}\n", r.weight.get());
    }
    if r.stickiness.is_empty() {
        out += "  (the rollout reads no key: every request is anonymous)\n";
    }
    out += &format!("  snapshot version: {}\n", doc.version);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn invalid_values_are_named() {
        let e = Cli::try_parse_from(["linnet", "serve", "--listen", "nowhere"]).unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
        let e = Cli::try_parse_from(["linnet", "serve", "--drain-timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("--drain-timeout"), "{e}");
        for (flag, bad) in [
            ("--retain-days", "0"),
            ("--retain-days", "36501"),
            ("--retain-days", "a month"),
            ("--retain-events", "0"),
            ("--retain-events", "-5"),
            ("--max-sse", "0"),
            ("--max-polls", "0"),
            ("--max-polls", "many"),
        ] {
            let arg = format!("{flag}={bad}");
            let e = Cli::try_parse_from(["linnet", "serve", &arg]).unwrap_err();
            assert!(e.to_string().contains(flag), "{arg}: {e}");
        }
        let Command::Serve(args) = Cli::try_parse_from(["linnet", "serve"]).unwrap().command else {
            panic!("not serve");
        };
        assert_eq!(
            (
                args.retain_days,
                args.retain_events,
                args.max_sse,
                args.max_polls
            ),
            (30, 100_000, 64, 256)
        );
        let e = Cli::try_parse_from(["linnet", "rollout", "weight", "a", "lots"]).unwrap_err();
        assert!(e.to_string().contains("PERCENT"), "{e}");
        let ok = Cli::try_parse_from([
            "linnet",
            "rollout",
            "promote",
            "a",
            "--full",
            "--server",
            "http://x:1",
        ])
        .unwrap();
        assert_eq!(ok.server, "http://x:1");
    }

    #[test]
    fn the_default_token_file_is_sent_only_to_a_server_on_this_host() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("linnet.db");
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "tok\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let token = |server: &str, t: Option<&str>, f: Option<&Path>| {
            client_token(server, &db, t.map(str::to_owned), f.map(Path::to_owned))
        };
        for local in [
            "http://127.0.0.1:9911",
            "http://localhost:1",
            "http://[::1]:1",
        ] {
            assert_eq!(token(local, None, None).unwrap().as_deref(), Some("tok"));
        }
        assert_eq!(token("http://10.1.2.3:9911", None, None).unwrap(), None);
        assert_eq!(
            token("http://sidecar.example:9911", None, None).unwrap(),
            None
        );
        // Asked for by name, it goes anywhere; --token wins over any file.
        assert_eq!(
            token("http://10.1.2.3:9911", None, Some(&file))
                .unwrap()
                .as_deref(),
            Some("tok")
        );
        assert_eq!(
            token("http://127.0.0.1:1", Some("given"), Some(&file))
                .unwrap()
                .as_deref(),
            Some("given")
        );
        let missing = dir.path().join("nope.token");
        let e = token("http://127.0.0.1:1", None, Some(&missing)).unwrap_err();
        assert!(
            e.contains("--token-file") && e.contains("nope.token"),
            "{e}"
        );
        assert!(token("http://127.0.0.1:1", Some(""), None)
            .unwrap_err()
            .contains("--token is empty"));
        // A file others can read is refused, not used.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(token("http://127.0.0.1:1", None, None)
            .unwrap_err()
            .contains("mode 0644"));
    }

    #[test]
    fn serve_flags() {
        let cli =
            Cli::try_parse_from(["linnet", "serve", "--db", "/d/l.db", "--open-reads"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert!(args.open_reads);
        assert_eq!(cli.db, Path::new("/d/l.db"));
        let cli = Cli::try_parse_from(["linnet", "serve", "--token-file", "/t"]).unwrap();
        assert_eq!(cli.token_file.as_deref(), Some(Path::new("/t")));
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        assert!(!args.open_reads);
    }

    #[test]
    fn history_is_a_table_whose_columns_line_up() {
        let v = serde_json::json!({"releases": [
            {"id": 12, "name": "checkout-v4", "match": {"authority": "checkout.local"}, "state": "promoted",
             "step": 2, "weight": 100.0, "created_at_ms": 3_600_000, "finished_at_ms": null, "reason": "full promotion by operator"},
            {"id": 3, "name": "checkout-v3", "match": {"authority": "checkout.local", "path_prefix": "/api"},
             "state": "rolled_back", "step": 0, "weight": 0.0, "created_at_ms": 0, "finished_at_ms": 60_000, "reason": "critical guardrail"},
        ]});
        let history: HistoryPage = serde_json::from_value(v).unwrap();
        let out = render_history(&history.releases);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let col = |l: &str, word: &str| l.find(word).unwrap_or_else(|| panic!("{word} in {l}"));
        for (line, name, weight) in [
            (lines[1], "checkout-v4", "100.0%"),
            (lines[2], "checkout-v3", "0.0%"),
        ] {
            assert_eq!(col(line, name), col(lines[0], "NAME"), "{out}");
            assert_eq!(
                col(line, weight) + weight.len(),
                col(lines[0], "WEIGHT") + 6,
                "{out}"
            );
        }
        assert!(
            lines[1].trim_start().starts_with("12 ") && lines[2].contains("checkout.local/api"),
            "{out}"
        );
        assert!(
            lines[2].contains("00:01:00") && lines[1].contains(" - "),
            "{out}"
        );
    }

    #[test]
    fn says_where_a_key_goes() {
        let (spec, _) = RolloutSpec::parse(
            b"name: a\nsteps: [{weight: 50}]\ncohorts: {canary: [vip]}\nstickiness: [{cookie: uid}]",
            Format::Yaml,
        )
        .unwrap();
        let mut doc = SnapshotDoc {
            version: 7,
            epoch: None,
            kill_switch: false,
            rollouts: vec![spec.rollout_config(50.0, None, false)],
        };
        let out = where_key_goes(&doc, "a", "vip").unwrap();
        assert!(
            out.contains("canary") && out.contains("reason: cohort"),
            "{out}"
        );
        let out = where_key_goes(&doc, "a", "alice").unwrap();
        assert!(
            out.contains("reason: bucket") && out.contains("bucket: "),
            "{out}"
        );
        let b = linnet_core::bucket(b"a", b"alice");
        let expect = if b < 5000 { "canary" } else { "stable" };
        assert!(out.contains(expect), "{out}");
        doc.kill_switch = true;
        assert!(where_key_goes(&doc, "a", "vip")
            .unwrap()
            .contains("reason: kill_switch"));
        doc.kill_switch = false;
        doc.rollouts[0].stickiness.clear();
        let out = where_key_goes(&doc, "a", "vip").unwrap();
        assert!(
            out.contains("reason: anonymous") && out.contains("reads no key"),
            "{out}"
        );
        assert!(where_key_goes(&doc, "b", "vip")
            .unwrap_err()
            .contains("no rollout"));
    }
}
