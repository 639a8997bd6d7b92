//! The snapshot long-poll between the filter and the sidecar, in one place for both sides:
//! `GET {path}?version=V&epoch=E&timeout_ms=T`, answered 200 with a snapshot document or 304
//! after `T` ms with none.

/// The version of the snapshot in an answer (on every answer, errors too).
pub const VERSION_HEADER: &str = "x-linnet-version";
/// The epoch of the sidecar that answered.
pub const EPOCH_HEADER: &str = "x-linnet-epoch";
/// Which filter VM polls, so the sidecar counts connected filters.
pub const POLLER_HEADER: &str = "x-linnet-poller";
/// Where the sidecar serves snapshots.
pub const DEFAULT_PATH: &str = "/v1/snapshot";
/// How long a poll is held when it names no timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The timeouts a poll may ask for, inclusive.
pub const TIMEOUT_RANGE_MS: (u64, u64) = (100, 300_000);
