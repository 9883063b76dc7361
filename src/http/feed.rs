//! The live feed's HTTP side (SPEC §8): single-use tickets, and the
//! WebSocket upgrade that checks one before handing over to a session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::actors::feed_session;
use crate::domain::organisation::Caller;
use crate::error::{ApiError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/feed/tickets").post(issue))
        .service(web::resource("/feed").get(upgrade));
}

/// Outstanding tickets: single use, valid for `feed.ticket_ttl_s`.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, (Caller, Instant)>>);

impl Tickets {
    fn issue(&self, caller: Caller, ttl: Duration) -> String {
        let ticket = super::auth::new_key("ft_");
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, expires)| *expires > now);
        map.insert(ticket.clone(), (caller, now + ttl));
        ticket
    }

    /// The ticket's caller, once; `None` if unknown, used or expired.
    fn redeem(&self, ticket: &str) -> Option<Caller> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (caller, expires) = map.remove(ticket)?;
        (expires > Instant::now()).then_some(caller)
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TicketOut {
    ticket: String,
    /// Seconds it stays valid.
    expires_in: u64,
}

#[utoipa::path(post, path = "/v1/feed/tickets", tag = "feed",
    responses((status = 201, body = TicketOut), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn issue(state: web::Data<AppState>, caller: Caller) -> HttpResponse {
    let ttl = state.config.feed.ticket_ttl_s;
    let ticket = state.tickets.issue(caller, Duration::from_secs(ttl));
    HttpResponse::Created().json(TicketOut {
        ticket,
        expires_in: ttl,
    })
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
    let caller = query
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
    )
}
