//! `/v1/webhooks/{id}/deliveries`: the delivery log with cursor paging and
//! an outcome filter, and redelivery of a logged event.

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::webhooks::visible_webhook;
use super::{check_limit, empty_is_absent, parse_id, AppState};
use crate::clock::{self, now_ms};
use crate::domain::delivery::{AttemptError, Header, LogEntry, Outcome, QueuedDelivery};
use crate::domain::organisation::Caller;
use crate::error::{ApiError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/{id}/deliveries").get(list))
        .service(
            web::resource("/webhooks/{id}/deliveries/{delivery_id}/redeliver").post(redeliver),
        );
}

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 250;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Entries per page, 1–250 (default 50).
    limit: Option<usize>,
    /// The `next_before` of the previous page.
    #[serde(default, deserialize_with = "empty_is_absent")]
    before: Option<Uuid>,
    /// Only entries with this outcome; empty or absent, all.
    #[serde(default, deserialize_with = "empty_is_absent")]
    outcome: Option<Outcome>,
}

/// A log entry as the API shows it: times in ISO 8601, headers as an object.
#[derive(Serialize, utoipa::ToSchema)]
pub struct LogEntryOut {
    id: Uuid,
    delivery_id: Uuid,
    event_id: Uuid,
    event: String,
    attempt: u32,
    outcome: Outcome,
    status_code: Option<u16>,
    latency_ms: u64,
    response_body: String,
    truncated: bool,
    error: Option<AttemptError>,
    #[schema(value_type = Object)]
    request_headers: serde_json::Map<String, serde_json::Value>,
    attempted_at: String,
    next_attempt_at: Option<String>,
    simulation: bool,
}

/// One page of the delivery log, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    data: Vec<LogEntryOut>,
    /// Pass as `before` for the next page; null on the last.
    next_before: Option<Uuid>,
    /// The webhook's consecutive failed attempts.
    failure_count: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RedeliverOut {
    delivery_id: Uuid,
    event_id: Uuid,
}

pub fn headers_object(headers: &[Header]) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

impl From<LogEntry> for LogEntryOut {
    fn from(e: LogEntry) -> Self {
        LogEntryOut {
            request_headers: headers_object(&e.request_headers),
            attempted_at: clock::iso(e.attempted_at),
            next_attempt_at: e.next_attempt_at.map(clock::iso),
            id: e.id,
            delivery_id: e.delivery_id,
            event_id: e.event_id,
            event: e.event.to_string(),
            attempt: e.attempt,
            outcome: e.outcome,
            status_code: e.status_code,
            latency_ms: e.latency_ms,
            response_body: e.response_body,
            truncated: e.truncated,
            error: e.error,
            simulation: e.simulation,
        }
    }
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "deliveries", params(("id" = Uuid, Path), ListQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    let limit = check_limit(query.limit.unwrap_or(DEFAULT_LIMIT), MAX_LIMIT)?;
    let page = state
        .store
        .log_page(w.id, limit, query.before, query.outcome)?;
    let data: Vec<LogEntryOut> = page.entries.into_iter().map(LogEntryOut::from).collect();
    Ok(HttpResponse::Ok().json(DeliveryPage {
        data,
        next_before: page.next_before,
        failure_count: w.failure_count,
    }))
}

fn delivery_not_found() -> ApiError {
    ApiError::not_found("delivery_not_found", "Delivery not found")
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", tag = "deliveries",
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path, description = "A log entry's delivery_id (or id)")),
    responses((status = 202, body = RedeliverOut), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "simulation_not_redelivered: the entry is a simulation's")),
    security(("bearer" = [])))]
pub async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (webhook_id, delivery_id) = path.into_inner();
    let w = visible_webhook(&state, &caller, &webhook_id)?;
    let id = parse_id(&delivery_id, delivery_not_found)?;
    let entry = state
        .store
        .find_log(w.id, id)?
        .ok_or_else(delivery_not_found)?;
    if entry.simulation {
        // Its body was made up for the test and never stored as an event.
        return Err(ApiError::unprocessable(
            "simulation_not_redelivered",
            "a simulation is never sent again; send a new one with POST /v1/webhooks/{id}/simulations",
        ));
    }
    let now = now_ms();
    let delivery = QueuedDelivery {
        id: Uuid::now_v7(),
        webhook_id: w.id,
        event_id: entry.event_id,
        event: entry.event,
        attempts: 0,
        next_attempt_at: now,
        created_at: now,
        only_in_event: false,
    };
    let body = state.store.queue_redelivery(&delivery)?.ok_or_else(|| {
        ApiError::not_found("event_not_found", "the event has been purged by retention")
    })?;
    state.store.flush().await?;
    let delivery_id = delivery.id;
    state.directory.deliver(vec![delivery], Bytes::from(body));
    Ok(HttpResponse::Accepted().json(RedeliverOut {
        delivery_id,
        event_id: entry.event_id,
    }))
}
