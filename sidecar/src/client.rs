//! The sidecar's HTTP client, for the CLI's calls to the admin API and the analysis sources'
//! reads (Envoy's admin, Prometheus): plain HTTP/1.1, a token if given, a timeout.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Duration,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

// === impl Client ===

impl Client {
    /// `server` is `http://host:port`; `Err` names `--server`.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, String> {
        let base = server.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| format!("--server {server:?}: not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(format!(
                "--server {server:?}: use http://host:port (TLS belongs to a proxy in front)"
            ));
        }
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ok(Client {
            base,
            token,
            headers: Vec::new(),
            timeout: REQUEST_TIMEOUT,
            http,
        })
    }

    /// Adds a header to every request (e.g. `x-linnet-poller`).
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Gives up on a request after `timeout` instead of the default 30 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends a request; returns the status and the body, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<(StatusCode, Bytes), String> {
        let (status, _, body) = self.exchange(method, path, body, &[]).await?;
        Ok((status, body))
    }

    /// Sends a request with `extra` headers; returns the status, the headers and the body,
    /// whatever the status.
    pub async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &str)>,
        extra: &[(&str, &str)],
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let url = format!("{}{path}", self.base);
        let req = self.request(method, &url, body, extra)?;
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let (head, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((head.status, head.headers, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
    }

    /// A GET whose answer stays open (an event stream): its head within the timeout, its
    /// body for the caller to read as it comes.
    pub async fn open(
        &self,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>, String> {
        let url = format!("{}{path}", self.base);
        let req = self.request(Method::GET, &url, None, extra)?;
        tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
            .map_err(|e| format!("{url}: {e}"))
    }

    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<(Bytes, &str)>,
        extra: &[(&str, &str)],
    ) -> Result<Request<Full<Bytes>>, String> {
        // Every answer the CLI and the sources read is JSON (the report route would answer
        // HTML); a load burst and an event stream say what they accept themselves.
        let mut b = Request::builder().method(method).uri(url);
        let named = |k: &str| k.eq_ignore_ascii_case("accept");
        if !self.headers.iter().any(|(k, _)| named(k)) && !extra.iter().any(|(k, _)| named(k)) {
            b = b.header(ACCEPT, "application/json");
        }
        if let Some(t) = &self.token {
            b = b.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let body = match body {
            Some((bytes, ct)) => {
                b = b.header(CONTENT_TYPE, ct);
                bytes
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body)).map_err(|e| format!("{url}: {e}"))
    }

    /// Sends and parses JSON; a 4xx or 5xx becomes `Err` with the server's message.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = body.map(|v| (Bytes::from(v.to_string()), "application/json"));
        let (status, bytes) = self.send(method, path, body).await?;
        parse_answer(status, &bytes)
    }

    /// Sends and reads the answer into the type the server serialized it from.
    pub async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, String> {
        let v = self.json(method, path, body).await?;
        serde_json::from_value(v)
            .map_err(|e| format!("{}{path}: unexpected answer: {e}", self.base))
    }
}

/// The JSON of a 2xx, or the `error` message of anything else.
pub fn parse_answer(status: StatusCode, bytes: &[u8]) -> Result<Value, String> {
    let value: Option<Value> = serde_json::from_slice(bytes).ok();
    if status.is_success() {
        return value
            .ok_or_else(|| format!("the server answered {status} with a body that is not JSON"));
    }
    let msg = value
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    Err(format!("{status}: {msg}"))
}
