//! Who may call what. A caller presents the admin token (the bootstrap `admin` key) or a
//! named API key ([`crate::keys`]), whose scope says what it may do; every read needs one
//! unless the server opens reads on purpose (`serve --open-reads`); where the sidecar listens
//! grants nothing. The filters' snapshot carries the override tokens that reads redact, so it needs
//! the poll token (or the admin token) whenever any token is configured, open reads or not.
//! Tokens are compared in constant time.

use crate::keys::{Found, Keyring, Limit};
use hyper::header::{HeaderMap, AUTHORIZATION};
pub use linnet_core::decide::constant_time_eq;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Required for mutating calls, and for reads unless `open_reads`. With no token at
    /// all, only `/healthz` and `/readyz` answer.
    pub admin: Option<String>,
    /// The filters' token for snapshot polls (the admin token is accepted too).
    pub poll: Option<String>,
    /// Reads need no token (`serve --open-reads`). Never the snapshot.
    pub open_reads: bool,
    /// The named keys; the API is built with the controller's, which the store fills.
    pub keys: Keyring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
    Poll,
}

pub const API_KEY_HEADER: &str = "x-api-key";
/// Who reads without a token under `--open-reads`.
pub const ANONYMOUS: &str = "anonymous";

/// What a key may do; each scope includes the ones before it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Rollouts, history, audit, events, reports, metrics.
    Read,
    /// Also pause, resume, promote, abort, weight, complete, retry.
    Operate,
    /// Also create, the kill switches, receivers and keys.
    Admin,
}

/// Who is calling, as the audit names them, and what they may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The key's name (`admin` for the token `serve` was given or made; `anonymous` for a
    /// read without a token under `--open-reads`).
    pub key: String,
    pub scope: Scope,
    /// Its request rate; `None` for the admin token and anonymous reads, which are not limited.
    pub limit: Option<Limit>,
}

// === impl Scope ===

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        [Scope::Read, Scope::Operate, Scope::Admin]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Auth ===

impl Auth {
    /// `Err` is the message for a 401. `query_token` is `?token=` where a route allows it
    /// (browsers' EventSource cannot send headers).
    pub fn check(
        &self,
        need: Need,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<(), String> {
        let expected: Vec<&str> = match need {
            Need::Read if self.open_reads => return Ok(()),
            Need::Read | Need::Write => self.admin.iter().map(String::as_str).collect(),
            Need::Poll => self
                .poll
                .iter()
                .chain(&self.admin)
                .map(String::as_str)
                .collect(),
        };
        if expected.is_empty() {
            // Fail closed: a server built without tokens serves health checks only.
            return Err(
                "this server has no admin token, so it allows nothing that needs one".into(),
            );
        }
        let Some(sent) = presented(headers).or(query_token) else {
            return Err(format!(
                "missing token: send `Authorization: Bearer <token>` or `{API_KEY_HEADER}: <token>`"
            ));
        };
        // Check every candidate so the time taken does not say which one was close.
        let ok = expected.iter().fold(false, |acc, t| {
            acc | constant_time_eq(sent.as_bytes(), t.as_bytes())
        });
        if ok {
            Ok(())
        } else {
            Err("wrong token".into())
        }
    }
}

impl Auth {
    /// The caller behind a request's token (or `?token=` where allowed): the admin token is
    /// the `admin` key; a named key is itself, with its scope; with `--open-reads`, no token
    /// is an `anonymous` reader. `Err` is the message for a 401 (a revoked key says so).
    pub fn caller(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Caller, String> {
        let sent = presented(headers).or(query_token);
        if sent.is_none() && self.open_reads {
            return Ok(Caller {
                key: ANONYMOUS.into(),
                scope: Scope::Read,
                limit: None,
            });
        }
        if let Some(found) = sent.and_then(|t| self.keys.find(t)) {
            return match found {
                Found::Key { name, scope, limit } => Ok(Caller {
                    key: name,
                    scope,
                    limit: Some(limit),
                }),
                Found::Revoked { name } => Err(format!("key {name:?} is revoked")),
            };
        }
        self.check(Need::Write, headers, query_token)?;
        Ok(Caller {
            key: "admin".into(),
            scope: Scope::Admin,
            limit: None,
        })
    }
}

fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim());
        }
    }
    headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(name: &'static str, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn tokens() {
        let auth = Auth {
            admin: Some("adm".into()),
            poll: Some("pol".into()),
            open_reads: false,
            ..Auth::default()
        };
        let none = HeaderMap::new();
        assert!(auth
            .check(Need::Write, &none, None)
            .unwrap_err()
            .contains("missing"));
        assert!(auth
            .check(Need::Write, &headers("authorization", "Bearer adm"), None)
            .is_ok());
        assert!(auth
            .check(Need::Write, &headers("x-api-key", "adm"), None)
            .is_ok());
        assert_eq!(
            auth.check(Need::Write, &headers("x-api-key", "pol"), None)
                .unwrap_err(),
            "wrong token"
        );
        assert!(auth.check(Need::Read, &none, Some("adm")).is_ok());
        assert!(auth
            .check(Need::Poll, &headers("authorization", "Bearer pol"), None)
            .is_ok());
        assert!(auth
            .check(Need::Poll, &headers("authorization", "Bearer adm"), None)
            .is_ok());
        assert!(auth
            .check(Need::Poll, &headers("authorization", "Bearer x"), None)
            .is_err());
        // The poll token is for the snapshot only.
        let poll = headers("authorization", "Bearer pol");
        assert_eq!(
            auth.check(Need::Read, &poll, None).unwrap_err(),
            "wrong token"
        );
        // Open reads open reads, and nothing else.
        let open = Auth {
            open_reads: true,
            ..auth.clone()
        };
        assert!(open.check(Need::Read, &none, None).is_ok());
        assert!(open.check(Need::Write, &none, None).is_err());
        assert!(open.check(Need::Poll, &none, None).is_err());
        // No poll token: the snapshot needs the admin token.
        let admin_only = Auth {
            poll: None,
            open_reads: true,
            ..auth.clone()
        };
        assert!(admin_only.check(Need::Poll, &none, None).is_err());
        assert!(admin_only
            .check(Need::Poll, &headers("x-api-key", "adm"), None)
            .is_ok());
        // No token at all: nothing but health checks.
        let none_set = Auth::default();
        assert!(none_set
            .check(Need::Write, &none, None)
            .unwrap_err()
            .contains("no admin token"));
        assert!(none_set.check(Need::Read, &none, None).is_err());
        assert!(none_set.check(Need::Poll, &none, None).is_err());
        let poll_only = Auth {
            poll: Some("pol".into()),
            ..Auth::default()
        };
        assert!(poll_only.check(Need::Poll, &none, None).is_err());
        assert!(poll_only.check(Need::Poll, &poll, None).is_ok());
        assert!(poll_only.check(Need::Write, &poll, None).is_err());
    }

    #[test]
    fn callers() {
        let auth = Auth {
            admin: Some("adm".into()),
            poll: Some("pol".into()),
            open_reads: true,
            ..Auth::default()
        };
        let admin = auth.caller(&headers("x-api-key", "adm"), None).unwrap();
        assert_eq!((admin.key.as_str(), admin.scope), ("admin", Scope::Admin));
        let reader = auth.caller(&HeaderMap::new(), None).unwrap();
        assert_eq!(
            (reader.key.as_str(), reader.scope),
            ("anonymous", Scope::Read)
        );
        assert_eq!(
            auth.caller(&headers("x-api-key", "pol"), None).unwrap_err(),
            "wrong token"
        );
        let closed = Auth {
            open_reads: false,
            ..auth
        };
        assert!(closed
            .caller(&HeaderMap::new(), None)
            .unwrap_err()
            .contains("missing"));
        assert!(Scope::Read < Scope::Operate && Scope::Operate < Scope::Admin);
    }
}
