//! The SSRF-guarded awc client and one delivery attempt: send the signed
//! request, read a bounded response, classify what happened.
//!
//! Names are checked in the client's resolver, so a name that resolves to
//! a private address (DNS rebinding included) is refused at connect time;
//! IP-literal hosts skip the resolver and are checked before sending.
//!
//! Each thread's client is retired once it is older than the connection
//! lifetime. NB: awc closes an idle pooled connection only when its host is
//! asked for again, so the connections of an endpoint that is never sent
//! to again (a deleted webhook, a changed URL) stay open, and hold a file,
//! until their pool is dropped. Retiring the pool drops them.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use actix_tls::connect::{Resolve, Resolver};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::web::Bytes;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;

use super::ssrf;
use crate::clock;
use crate::domain::delivery::{
    parse_retry_after, truncate_body, AttemptError, AttemptResult, ErrorKind, Header,
};
use crate::domain::webhook::Webhook;
use crate::signing::{delivery_headers, SignInput};

/// How outbound requests behave; from the `delivery` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    pub timeout: Duration,
    pub allow_private: bool,
    pub body_limit: usize,
    /// How long a connection, and each thread's client, is used.
    pub connection_lifetime: Duration,
}

/// A resolved address that the SSRF rules refuse.
#[derive(Debug, thiserror::Error)]
#[error("{0} is a private or reserved address")]
pub struct BlockedAddress(IpAddr);

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            if self.allow_private {
                return Ok(found);
            }
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !ssrf::is_blocked_ip(a.ip()))
                .collect();
            match (allowed.is_empty(), found.first()) {
                (true, Some(first)) => {
                    Err(Box::new(BlockedAddress(first.ip())) as Box<dyn StdError>)
                }
                _ => Ok(allowed),
            }
        })
    }
}

/// A thread's client for one set of settings, and which of them it is.
struct PooledClient {
    client: awc::Client,
    generation: u64,
    born: Instant,
}

impl PooledClient {
    fn expired(&self, settings: ClientSettings) -> bool {
        self.born.elapsed() >= settings.connection_lifetime
    }
}

thread_local! {
    /// One client per thread and settings, so connections are reused.
    static CLIENTS: RefCell<HashMap<ClientSettings, PooledClient>> = RefCell::new(HashMap::new());
}

/// This thread's current client for `settings` and its generation; a new
/// one once the last has expired.
fn client(settings: ClientSettings) -> (awc::Client, u64) {
    CLIENTS.with(|c| {
        let mut clients = c.borrow_mut();
        let current = clients.entry(settings).or_insert_with(|| PooledClient {
            client: build_client(settings),
            generation: 0,
            born: Instant::now(),
        });
        if current.expired(settings) {
            *current = PooledClient {
                client: build_client(settings),
                generation: current.generation + 1,
                born: Instant::now(),
            };
        }
        (current.client.clone(), current.generation)
    })
}

/// Drops this thread's expired clients; each pool closes its idle
/// connections once no endpoint holds it either.
pub fn retire_expired() {
    CLIENTS.with(|c| c.borrow_mut().retain(|settings, p| !p.expired(*settings)));
}

/// Whether `generation` is this thread's current, unexpired client.
fn is_current(settings: ClientSettings, generation: u64) -> bool {
    CLIENTS.with(|c| {
        c.borrow()
            .get(&settings)
            .is_some_and(|p| p.generation == generation && !p.expired(settings))
    })
}

fn build_client(settings: ClientSettings) -> awc::Client {
    let resolver = Resolver::custom(GuardedResolver {
        allow_private: settings.allow_private,
    });
    let connector = awc::Connector::new()
        .connector(actix_tls::connect::Connector::new(resolver).service())
        .timeout(settings.timeout)
        .conn_lifetime(settings.connection_lifetime)
        // No limit of awc's own (0): the connection budget bounds
        // attempts, and a wait inside awc would count against the timeout.
        .limit(0);
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        // `send` bounds the whole exchange, response body included.
        .disable_timeout()
        .finish()
}

/// A webhook's URL made ready for many attempts: checked once against the
/// SSRF rules for IP literals, and its request head (URL parsed) built
/// once and shared by every attempt (awc's frozen request).
pub struct Endpoint {
    url: String,
    settings: ClientSettings,
    /// Of the thread's client `request` was made with; `None` for a
    /// client of its own.
    generation: Option<u64>,
    request: Result<awc::FrozenClientRequest, AttemptError>,
}

impl Endpoint {
    /// NB: the client it uses is this thread's; send from this thread.
    pub fn new(settings: ClientSettings, url: &str) -> Endpoint {
        let (client, generation) = client(settings);
        Self::with_client(settings, url, client, Some(generation))
    }

    /// For one attempt now and then (a simulation): with a client of its
    /// own, so its connection closes when it is dropped instead of idling
    /// in a pool of this thread.
    pub fn single_use(settings: ClientSettings, url: &str) -> Endpoint {
        Self::with_client(settings, url, build_client(settings), None)
    }

    fn with_client(
        settings: ClientSettings,
        url: &str,
        client: awc::Client,
        generation: Option<u64>,
    ) -> Endpoint {
        let request = match literal_ip_blocked(url, settings.allow_private) {
            Some(blocked) => Err(blocked),
            None => client.post(url).freeze().map_err(|e| classify(e.into())),
        };
        Endpoint {
            url: url.to_string(),
            settings,
            generation,
            request,
        }
    }

    /// Whether it was made for `url` with `settings`, by this thread's
    /// current client. A stale one keeps a retired pool, and its idle
    /// connections, alive: remake it, or drop it if unused.
    pub fn is_current_for(&self, settings: ClientSettings, url: &str) -> bool {
        self.settings == settings && self.url == url && self.is_current()
    }

    pub fn is_current(&self) -> bool {
        self.generation
            .is_some_and(|g| is_current(self.settings, g))
    }
}

/// Signs `body` for `webhook` as of now and sends it: the one path every
/// live delivery, retry, redelivery and simulation takes.
pub async fn deliver(
    endpoint: &Endpoint,
    webhook: &Webhook,
    delivery_id: uuid::Uuid,
    event: &str,
    body: Bytes,
) -> AttemptResult {
    let headers = delivery_headers(&SignInput {
        scheme: webhook.signature_scheme,
        secret: &webhook.secret,
        delivery_id: &delivery_id.to_string(),
        event,
        timestamp_ms: clock::now_ms(),
        body: &body,
    });
    send(endpoint, headers, body).await
}

/// Sends one POST and reports what came of it. Never fails: every problem
/// is an `AttemptResult` with an error kind.
async fn send(endpoint: &Endpoint, headers: Vec<Header>, body: Bytes) -> AttemptResult {
    let attempted_at = clock::now_ms();
    let started = Instant::now();
    let settings = endpoint.settings;
    let outcome = match &endpoint.request {
        Err(err) => Err(err.clone()),
        Ok(request) => tokio::time::timeout(
            settings.timeout,
            exchange(settings, request, &headers, body),
        )
        .await
        .unwrap_or_else(|_| {
            Err(attempt_error(
                ErrorKind::Timeout,
                "no complete answer within the timeout",
            ))
        }),
    };
    let mut result = AttemptResult {
        latency_ms: started.elapsed().as_millis() as u64,
        request_headers: headers,
        attempted_at,
        ..Default::default()
    };
    match outcome {
        Ok((status, retry_after, raw)) => {
            let (text, truncated) = truncate_body(&raw, settings.body_limit);
            result.status_code = Some(status);
            result.retry_after_ms = retry_after;
            result.response_body = text;
            result.truncated = truncated;
            if !(200..300).contains(&status) {
                result.error = Some(attempt_error(
                    ErrorKind::Http,
                    &format!("endpoint answered HTTP {status}"),
                ));
            }
        }
        Err(e) => result.error = Some(e),
    }
    result
}

type Exchange = Result<(u16, Option<u64>, Vec<u8>), AttemptError>;

async fn exchange(
    settings: ClientSettings,
    request: &awc::FrozenClientRequest,
    headers: &[Header],
    body: Bytes,
) -> Exchange {
    let mut extra = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let (name, value) =
            header(h).map_err(|e| attempt_error(ErrorKind::Http, &e.to_string()))?;
        extra.insert(name, value);
    }
    let sent = request.extra_headers(extra).send_body(body);
    let mut resp = sent.await.map_err(classify)?;
    let status = resp.status().as_u16();
    let retry_after = match status {
        429 | 503 => resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now())),
        _ => None,
    };
    let mut raw = Vec::new();
    // Read one byte past the limit so truncation is detected, then stop.
    while raw.len() <= settings.body_limit {
        match resp.next().await {
            Some(Ok(chunk)) => raw.extend_from_slice(&chunk),
            Some(Err(_)) | None => break,
        }
    }
    Ok((status, retry_after, raw))
}

/// A header for awc, without parsing or copying what is static. NB: the
/// `from_static` calls panic on an invalid static name (or one not in
/// lower case) or value; `delivery_headers`' are constants, checked by
/// its test.
fn header((name, value): &Header) -> Result<(HeaderName, HeaderValue), Box<dyn StdError>> {
    let name = match name {
        Cow::Borrowed(n) => HeaderName::from_static(n),
        Cow::Owned(n) => HeaderName::from_bytes(n.as_bytes())?,
    };
    let value = match value {
        Cow::Borrowed(v) => HeaderValue::from_static(v),
        Cow::Owned(v) => HeaderValue::from_str(v)?,
    };
    Ok((name, value))
}

fn literal_ip_blocked(url: &str, allow_private: bool) -> Option<AttemptError> {
    if allow_private {
        return None;
    }
    let ip = match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(d) if ssrf::is_localhost_name(d) => {
            return Some(attempt_error(
                ErrorKind::BlockedAddress,
                "localhost is not a permitted target",
            ))
        }
        url::Host::Domain(_) => return None,
    };
    ssrf::is_blocked_ip(ip)
        .then(|| attempt_error(ErrorKind::BlockedAddress, &BlockedAddress(ip).to_string()))
}

fn attempt_error(kind: ErrorKind, message: &str) -> AttemptError {
    AttemptError {
        kind,
        message: message.to_string(),
    }
}

/// Maps awc's error to the kinds of SPEC §6 by type, never by message.
fn classify(e: awc::error::SendRequestError) -> AttemptError {
    use awc::error::{ConnectError, SendRequestError as S};
    let message = e.to_string();
    let kind = match &e {
        S::Timeout => ErrorKind::Timeout,
        S::Connect(ConnectError::Timeout) => ErrorKind::Timeout,
        S::Connect(ConnectError::Resolver(inner))
            if inner.downcast_ref::<BlockedAddress>().is_some() =>
        {
            ErrorKind::BlockedAddress
        }
        S::Connect(
            ConnectError::Resolver(_) | ConnectError::NoRecords | ConnectError::Unresolved,
        ) => ErrorKind::Dns,
        S::Connect(ConnectError::Io(io)) if is_tls(io) => ErrorKind::Tls,
        S::Connect(ConnectError::SslIsNotSupported) => ErrorKind::Tls,
        S::Connect(_) => ErrorKind::Connect,
        S::Send(io) if is_tls(io) => ErrorKind::Tls,
        S::Send(_) => ErrorKind::Connect,
        _ => ErrorKind::Http,
    };
    attempt_error(kind, &message)
}

fn is_tls(io: &std::io::Error) -> bool {
    io.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}
