//! `Application`: open the store, bootstrap the admin key, start the
//! actors, bind the HTTP server; and shut it all down cleanly.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::actors::broadcaster::{Broadcaster, CloseAll, FeedEvent};
use crate::actors::held_budget::HeldBudget;
use crate::actors::log_writer::LogWriter;
use crate::actors::registry::{DrainAll, Registry, StopAll};
use crate::actors::DeliveryContext;
use crate::config::{Config, ConfigError};
use crate::domain::catalog::Catalog;
use crate::domain::delivery::RetryPolicy;
use crate::domain::organisation::Organisation;
use crate::error::ApiError;
use crate::http::{self, auth, AppState};
use crate::metrics::Metrics;
use crate::net::client::ClientSettings;
use crate::net::connections::{self, ConnectionBudget};
use crate::retention::Retention;
use crate::storage::{StorageError, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    addr: std::net::SocketAddr,
    server: Server,
    store: Store,
    registry: Addr<Registry>,
    broadcaster: Addr<Broadcaster>,
    metrics: Arc<Metrics>,
    grace: Duration,
}

impl Application {
    /// Everything up to a bound, not yet running, server. Call inside an
    /// actix system.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        // awc's rustls connector needs a process-wide provider; a second
        // install (tests start several servers) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        crate::tune_allocator();
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let flush_metric = metrics.flush_latency.clone();
        let store = Store::open_observed(
            &config.storage.path,
            Arc::new(move |d| flush_metric.observe(d.as_secs_f64())),
        )?;
        let admin_key_hash = bootstrap_admin_key(&config, &store)?;
        let client = client_settings(&config);
        let connections = connection_budget();
        let delivery = delivery_context(&config, &store, client, &connections, metrics.clone());
        let registry = Registry::new(Arc::new(delivery), config.workers());
        let directory = registry.directory();
        let registry = registry.start();
        let history = feed_history(&store)?;
        let broadcaster = Broadcaster::new(&config.feed, history, metrics.clone()).start();
        Retention::new(store.clone(), config.retention.days).start();
        let state = web::Data::new(AppState {
            store: store.clone(),
            catalog: Catalog::from_config(&config),
            config: config.clone(),
            registry: registry.clone(),
            directory,
            admin_key_hash,
            client,
            connections,
            simulations: Default::default(),
            broadcaster: broadcaster.clone(),
            tickets: http::feed::Tickets::new(
                Duration::from_secs(config.feed.ticket_ttl_s),
                config.feed.max_sessions_per_key,
            ),
            body_budget: http::body_budget::BodyBudget::new(config.server.max_body_bytes_in_flight),
            metrics: metrics.clone(),
        });
        let addr = config.bind_addr()?;
        let bind_err = |source| StartError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let grace = Duration::from_secs(config.server.shutdown_grace_s);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::bad_request("invalid_query", format!("invalid query string: {e}"))
                        .into()
                }))
                .wrap(http::json_errors())
                .wrap(http::request_log::logger())
                .configure(http::configure)
        })
        .workers(config.workers())
        // Signals are handled in `run_until_stopped`, which closes the
        // feed and drains deliveries alongside the HTTP shutdown.
        .disable_signals()
        .shutdown_timeout(grace.as_secs())
        .listen(listener)
        .map_err(bind_err)?
        .run();
        Ok(Application {
            addr: local,
            server,
            store,
            registry,
            broadcaster,
            metrics,
            grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn registry(&self) -> Addr<Registry> {
        self.registry.clone()
    }

    pub fn broadcaster(&self) -> Addr<Broadcaster> {
        self.broadcaster.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until SIGINT/SIGTERM (or `handle().stop()`), then shuts down
    /// within the grace period: feed sessions get a going-away close, HTTP
    /// requests in progress finish, delivery attempts in flight finish and
    /// nothing new starts (queued deliveries stay in sled for the next
    /// start), and the store is flushed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = actix_web::rt::spawn(self.server);
        let signal = shutdown_signal();
        futures_util::pin_mut!(signal);
        let grace = self.grace;
        let (served, deadline) = match futures_util::future::select(&mut server, signal).await {
            futures_util::future::Either::Left((served, _)) => (served, Instant::now() + grace),
            futures_util::future::Either::Right((signal, _)) => {
                let deadline = Instant::now() + grace;
                log::info!(
                    "{signal} received: shutting down within {} s",
                    grace.as_secs()
                );
                self.broadcaster.do_send(CloseAll);
                // Draining may take the grace period but for a fifth (at
                // most 2 s), left for the actors to store what they hold.
                let drain_for = grace - (grace / 5).min(Duration::from_secs(2));
                let drained = actix_web::rt::time::timeout(drain_for, self.registry.send(DrainAll));
                let (_, drained) = futures_util::join!(handle.stop(true), drained);
                if drained.is_err() {
                    log::warn!(
                        "delivery attempts still in flight after the grace period will be retried"
                    );
                }
                (server.await, deadline)
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let stopped = actix_web::rt::time::timeout(left, self.registry.send(StopAll)).await;
        if !matches!(stopped, Ok(Ok(()))) {
            log::warn!(
                "delivery actors did not all stop in time; the next start recovers what they held"
            );
        }
        if let Err(e) = self.store.flush().await {
            log::error!("final flush failed: {e}");
        }
        served.unwrap_or(Ok(()))
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// How many stored events to read back for the feed's recent snapshot.
const HISTORY_SCAN: usize = 2_000;

/// The newest stored events as feed events, newest first, to refill the
/// broadcaster's snapshot after a restart.
fn feed_history(store: &Store) -> Result<Vec<FeedEvent>, StorageError> {
    let mut orgs = std::collections::HashMap::new();
    let mut org_of = |id| -> Result<Option<Organisation>, StorageError> {
        if let std::collections::hash_map::Entry::Vacant(slot) = orgs.entry(id) {
            slot.insert(store.org(id)?);
        }
        Ok(orgs[&id].clone())
    };
    let named = |o: Organisation| (o.id, o.name);
    let mut out = Vec::new();
    // A larger body would not be kept for the snapshot anyway.
    let bodies_up_to = crate::actors::broadcaster::RECENT_PAYLOAD_LIMIT;
    for (e, body) in store.recent_events(HISTORY_SCAN, bodies_up_to)? {
        let Some(org) = org_of(e.organisation_id)? else {
            continue;
        };
        let reseller = org.reseller_id.map(&mut org_of).transpose()?.flatten();
        out.push(FeedEvent::from_stored(
            &e,
            named(org),
            reseller.map(named),
            body.map_or(web::Bytes::from_static(b"null"), web::Bytes::from),
        ));
    }
    Ok(out)
}

fn client_settings(config: &Config) -> ClientSettings {
    ClientSettings {
        timeout: Duration::from_millis(config.delivery.timeout_ms),
        allow_private: config.delivery.allow_private_targets,
        body_limit: config.delivery.response_body_limit,
        connection_lifetime: Duration::from_secs(config.delivery.connection_lifetime_s),
    }
}

/// Raises the open-file limit and sizes the connection budget from it.
fn connection_budget() -> ConnectionBudget {
    let open_files = connections::raise_open_file_limit();
    let budget = ConnectionBudget::for_open_files(open_files);
    log::info!(
        "open-file limit {open_files}: up to {} delivery attempts at once",
        budget.size()
    );
    budget
}

fn delivery_context(
    config: &Config,
    store: &Store,
    client: ClientSettings,
    connections: &ConnectionBudget,
    metrics: Arc<Metrics>,
) -> DeliveryContext {
    DeliveryContext {
        store: store.clone(),
        log_writer: LogWriter::start(store.clone()),
        policy: RetryPolicy {
            schedule_ms: config.delivery.retry_schedule_ms.clone(),
            jitter: config.delivery.jitter,
        },
        client,
        connections: connections.clone(),
        max_in_flight: config.delivery.max_in_flight,
        disable_after: Duration::from_secs_f64(config.delivery.disable_after_hours * 3600.0),
        metrics,
        held_budget: HeldBudget::new(config.delivery.max_held_deliveries),
    }
}

/// The configured admin key, or the stored hash of the generated one, or
/// a new key: printed once, and only its hash kept.
fn bootstrap_admin_key(config: &Config, store: &Store) -> Result<[u8; 32], StorageError> {
    if let Some(key) = &config.auth.admin_key {
        return Ok(auth::hash_key(key));
    }
    if let Some(hash) = store.admin_key_hash()? {
        return Ok(hash);
    }
    let key = auth::new_key("hr_admin_");
    let hash = auth::hash_key(&key);
    store.set_admin_key_hash(hash)?;
    store.flush_blocking()?;
    // The one time a key is ever written to the log, as SPEC §1 asks.
    log::warn!("generated the admin API key (shown once, store it now): {key}");
    Ok(hash)
}
