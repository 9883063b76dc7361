//! `POST /v1/events`: validate, normalise (SPEC §5 body fidelity), route to
//! every subscribed webhook (SPEC §1), make the event and its deliveries
//! durable, then acknowledge with 202 and hand them to the actors. With an
//! `Idempotency-Key`, a repeat within 24 hours gets the first answer (see
//! `storage/idempotency.rs`).

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::body::read_json_body;
use super::AppState;
use crate::actors::broadcaster::{FeedEvent, Publish};
use crate::canonical::canonicalize;
use crate::clock::now_ms;
use crate::domain::delivery::QueuedDelivery;
use crate::domain::event::{parse_envelope, Envelope};
use crate::domain::organisation::{Caller, Organisation};
use crate::error::{ApiError, ErrorBody};
use crate::storage::idempotency::{body_hash, Remembered};
use crate::storage::StoredEvent;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/events").post(ingest));
}

/// A validated event, ready to store.
pub struct Accepted {
    pub envelope: Envelope,
    pub organisation: Organisation,
    pub body: Bytes,
}

/// Everything short of storing: body fidelity, envelope, catalog, scope.
pub fn accept(state: &AppState, caller: &Caller, raw: &[u8]) -> Result<Accepted, ApiError> {
    let canonical = canonicalize(raw)?;
    let envelope =
        parse_envelope(&canonical).map_err(|e| ApiError::validation(&e.field, e.message))?;
    if !state.catalog.contains(&envelope.event) {
        return Err(ApiError::unprocessable(
            "unknown_event_type",
            format!("{:?} is not in the event-type catalog", envelope.event),
        )
        .with_field("event"));
    }
    let organisation = match state.store.org(envelope.organisation_id)? {
        Some(org) if caller.can_see_org(&org) => org,
        _ => {
            return Err(ApiError::not_found(
                "organisation_not_found",
                "the event's organisation does not exist or is not yours",
            ))
        }
    };
    Ok(Accepted {
        envelope,
        organisation,
        body: Bytes::from(canonical),
    })
}

/// The ids of the organisation's own webhooks and its reseller's that
/// take `event`.
fn subscribers(state: &AppState, org: &Organisation, event: &str) -> Result<Vec<Uuid>, ApiError> {
    let mut out = state.store.routes(org.id, event)?;
    if let Some(reseller) = org.reseller_id {
        out.extend(state.store.routes(reseller, event)?);
    }
    Ok(out)
}

/// Hands the durable event to the live feed.
fn publish(state: &AppState, event: &StoredEvent, accepted: &Accepted) -> Result<(), ApiError> {
    let org = &accepted.organisation;
    let reseller = match org.reseller_id {
        Some(id) => state.store.org(id)?.map(|r| (r.id, r.name)),
        None => None,
    };
    let feed_event = FeedEvent::from_stored(
        event,
        (org.id, org.name.clone()),
        reseller,
        accepted.body.clone(),
    );
    state.broadcaster.do_send(Publish { event: feed_event });
    Ok(())
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if any: 1–255 visible ASCII
/// characters, or 400.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("");
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LEN || !visible {
        return Err(ApiError::validation(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_string()))
}

/// The answer a key's first request got, once what it stored is on disk
/// (that request may still be waiting for its flush); 422 if the key comes
/// back with another event.
async fn replay(
    state: &AppState,
    prior: Remembered,
    hash: &[u8; 32],
) -> Result<HttpResponse, ApiError> {
    if prior.body_hash != *hash {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different event in the last 24 hours",
        )
        .with_field("Idempotency-Key"));
    }
    state.store.flush().await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("idempotent-replayed", "true"))
        .json(IngestOut {
            id: prior.event_id,
            deliveries: prior.deliveries,
        }))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IngestOut {
    /// The stored event's id.
    id: Uuid,
    /// How many webhook deliveries were queued.
    deliveries: usize,
}

#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(content = Object, content_type = "application/json",
        description = "The seed envelope: {event, version, agent, timestamp, data}"),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1–255 visible ASCII characters; a repeat within 24 hours gets the first answer (with `idempotent-replayed: true`), another event under it 422")),
    responses((status = 202, body = IngestOut, description = "Stored durably with its deliveries"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "server_busy: too many large bodies at once, or too many deliveries not yet taken by their webhooks (for 10 s); nothing was stored, retry")),
    security(("bearer" = [])))]
pub async fn ingest(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (raw, _body_held) = read_json_body(
        &req,
        payload.into_inner(),
        state.config.server.max_body_bytes,
        &state.body_budget,
    )
    .await?;
    let accepted = accept(&state, &caller, &raw)?;
    drop(raw); // a screenshot's copy as sent need not wait for the flush
    let env = &accepted.envelope;
    let org_id = accepted.organisation.id;
    let now = now_ms();
    let idempotency = idempotency_key(&req)?.map(|key| (key, body_hash(&accepted.body)));
    if let Some((key, hash)) = &idempotency {
        if let Some(prior) = state.store.remembered(org_id, key, now)? {
            return replay(&state, prior, hash).await;
        }
    }
    let subscribers = subscribers(&state, &accepted.organisation, &env.event)?;
    if !subscribers.is_empty() && !state.directory.held_budget().room_to_hand().await {
        return Err(ApiError::unavailable(
            "server_busy",
            "deliveries are waiting for their webhooks to take them; retry shortly",
        ));
    }
    let event = StoredEvent {
        id: state.store.open_event(subscribers.len()),
        event: env.event.clone(),
        organisation_id: accepted.organisation.id,
        user_id: env.user_id.clone(),
        team_id: env.team_id.clone(),
        received_at: now,
    };
    let event_type: std::sync::Arc<str> = event.event.as_str().into();
    let deliveries: Vec<QueuedDelivery> = subscribers
        .iter()
        .map(|&webhook_id| QueuedDelivery {
            id: Uuid::now_v7(),
            webhook_id,
            event_id: event.id,
            event: event_type.clone(),
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
            only_in_event: true,
        })
        .collect();
    state
        .store
        .insert_event(&event, &accepted.body, &deliveries)?;
    let count = deliveries.len();
    if let Some((key, hash)) = &idempotency {
        let ours = Remembered {
            event_id: event.id,
            deliveries: count,
            body_hash: *hash,
            at_ms: now,
        };
        // If a concurrent request with the same key claimed it first (or
        // the claim cannot be written), take this event back: nothing has
        // seen it yet.
        let claimed = state.store.remember(org_id, key, &ours, now);
        if !matches!(claimed, Ok(None)) {
            state.store.discard_event(&event, &deliveries)?;
        }
        if let Some(prior) = claimed? {
            return replay(&state, prior, hash).await;
        }
    }
    state.store.flush().await?;
    if count > 0 {
        state.directory.deliver(deliveries, accepted.body.clone());
    }
    state
        .metrics
        .events_ingested
        .with_label_values(&[&event.event])
        .inc();
    publish(&state, &event, &accepted)?;
    Ok(HttpResponse::Accepted().json(IngestOut {
        id: event.id,
        deliveries: count,
    }))
}
