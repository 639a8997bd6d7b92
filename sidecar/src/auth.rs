//! Who may call what: the admin token for changes (and for reads off loopback), the poll
//! token for the filters' snapshot polls. Tokens are compared in constant time.

use hyper::header::{HeaderMap, AUTHORIZATION};

#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Required for mutating calls; with no token set the server only listens on loopback.
    pub admin: Option<String>,
    /// Required for snapshot polls when set (the admin token is accepted too).
    pub poll: Option<String>,
    /// Reads need no token (the server listens on loopback).
    pub open_reads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
    Poll,
}

pub const API_KEY_HEADER: &str = "x-api-key";

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
            Need::Read | Need::Write => match &self.admin {
                None => return Ok(()),
                Some(t) => vec![t.as_str()],
            },
            Need::Poll => match (&self.poll, &self.admin) {
                (None, _) => return Ok(()),
                (Some(p), a) => std::iter::once(p.as_str()).chain(a.as_deref()).collect(),
            },
        };
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

/// Compares without stopping at the first difference; only the length leaks.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let open = Auth {
            open_reads: true,
            ..Auth::default()
        };
        assert!(open.check(Need::Read, &none, None).is_ok());
        assert!(open.check(Need::Poll, &none, None).is_ok());
        assert!(open.check(Need::Write, &none, None).is_ok());
    }
}
