//! The live feed's HTTP side (SPEC §8): single-use tickets, and the
//! WebSocket upgrade that checks one before handing over to a session.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use crate::actors::feed_session;
use crate::domain::organisation::Caller;
use crate::error::{ApiError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/feed/tickets").post(issue))
        .service(web::resource("/feed").get(upgrade));
}

/// Outstanding tickets (single use, valid for `feed.ticket_ttl_s`) and the
/// sessions they opened, counted per API key: a key holds at most
/// `feed.max_sessions_per_key` of the two together (0: no limit).
///
/// NB: without that bound one key could open sessions until the server ran
/// out of file descriptors for everyone, or mint tickets without end.
pub struct Tickets {
    book: Arc<Mutex<TicketBook>>,
    ttl: Duration,
    max_per_key: usize,
}

#[derive(Default)]
struct TicketBook {
    open: HashMap<String, Ticket>,
    /// The open tickets by expiry, so expired ones are found without a scan.
    by_expiry: BTreeMap<(Instant, u64), String>,
    /// Open tickets plus live sessions, by key (`None`: the admin key).
    held: HashMap<Option<Uuid>, usize>,
    issued: u64,
}

struct Ticket {
    caller: Caller,
    expiry: (Instant, u64),
}

/// A session's place in its key's count; given back when dropped.
pub struct FeedSlot {
    book: Arc<Mutex<TicketBook>>,
    key: Option<Uuid>,
}

impl Tickets {
    pub fn new(ttl: Duration, max_per_key: usize) -> Tickets {
        Tickets {
            book: Arc::default(),
            ttl,
            max_per_key,
        }
    }

    /// A new ticket, or `None` if the caller's key holds its limit.
    fn issue(&self, caller: Caller) -> Option<String> {
        let mut book = lock(&self.book);
        let now = Instant::now();
        book.expire(now);
        let key = caller.org_id();
        let held = book.held.get(&key).copied().unwrap_or(0);
        if self.max_per_key > 0 && held >= self.max_per_key {
            return None;
        }
        let ticket = super::auth::new_key("ft_");
        book.issued += 1;
        let expiry = (now + self.ttl, book.issued);
        book.by_expiry.insert(expiry, ticket.clone());
        book.open.insert(ticket.clone(), Ticket { caller, expiry });
        *book.held.entry(key).or_default() += 1;
        Some(ticket)
    }

    /// The ticket's caller and its session's slot, once; `None` if unknown,
    /// used or expired.
    fn redeem(&self, ticket: &str) -> Option<(Caller, FeedSlot)> {
        let mut book = lock(&self.book);
        book.expire(Instant::now());
        let Ticket { caller, expiry } = book.open.remove(ticket)?;
        book.by_expiry.remove(&expiry);
        let slot = FeedSlot {
            book: self.book.clone(),
            key: caller.org_id(),
        };
        Some((caller, slot))
    }
}

impl TicketBook {
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ticket = entry.remove();
            if let Some(t) = self.open.remove(&ticket) {
                self.release(t.caller.org_id());
            }
        }
    }

    fn release(&mut self, key: Option<Uuid>) {
        if let Some(n) = self.held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }
}

impl Drop for FeedSlot {
    fn drop(&mut self) {
        lock(&self.book).release(self.key);
    }
}

/// Each change to the book is complete before anything can panic, so a
/// poisoned lock still guards a consistent book.
fn lock(book: &Mutex<TicketBook>) -> std::sync::MutexGuard<'_, TicketBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TicketOut {
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

#[utoipa::path(post, path = "/v1/feed/tickets", tag = "feed",
    responses((status = 201, body = TicketOut), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "The key holds `feed.max_sessions_per_key` sessions and unused tickets")),
    security(("bearer" = [])))]
pub async fn issue(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let ticket = state.tickets.issue(caller).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_feed_sessions",
            format!(
                "this API key already holds {} feed sessions and unused tickets; close one, or let an unused ticket expire",
                state.tickets.max_per_key
            ),
        )
    })?;
    Ok(HttpResponse::Created().json(TicketOut {
        ticket,
        expires_in: state.tickets.ttl.as_secs(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// A ticket from POST /v1/feed/tickets (single use).
    ticket: Option<String>,
}

/// The event types the caller's webhooks subscribe to, in catalog order;
/// the admin sees the whole catalog.
fn subscribed_types(state: &AppState, caller: &Caller) -> Result<Vec<String>, ApiError> {
    let catalog = state.catalog.types().iter().map(|t| t.name.clone());
    let Some(org) = caller.org_id() else {
        return Ok(catalog.collect());
    };
    let webhooks = state.store.webhooks_of(org)?;
    Ok(catalog
        .filter(|name| webhooks.iter().any(|w| w.subscribes_to(name)))
        .collect())
}

#[utoipa::path(get, path = "/v1/feed", tag = "feed", params(FeedQuery),
    responses((status = 101, description = "WebSocket: hello, event and lagged messages (SPEC §8)"),
        (status = 401, body = ErrorBody)))]
pub async fn upgrade(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<FeedQuery>,
    stream: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (caller, slot) = query
        .ticket
        .as_deref()
        .and_then(|t| state.tickets.redeem(t))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "a valid, unused feed ticket is required (POST /v1/feed/tickets)",
            )
        })?;
    let event_types = subscribed_types(&state, &caller)?;
    feed_session::start(
        &req,
        stream,
        caller,
        event_types,
        state.broadcaster.clone(),
        state.config.feed.session_buffer,
        slot,
    )
}
