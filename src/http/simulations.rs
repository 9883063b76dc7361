//! `/v1/webhooks/{id}/simulations` (SPEC §7): preview the payload of a
//! test event, and send one signed test event now through the same
//! signing and SSRF-guarded client as live deliveries. Simulations are
//! logged with `simulation: true`, never retried, never counted towards
//! failure_count, and work on inactive webhooks.

use std::collections::HashMap;
use std::sync::Mutex;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::body::{parse_json, read_json_body};
use super::deliveries::headers_object;
use super::webhooks::visible_webhook;
use super::AppState;
use crate::canonical::canonicalize_value;
use crate::clock::now_ms;
use crate::domain::delivery::{LogEntry, Outcome};
use crate::domain::organisation::Caller;
use crate::domain::webhook::Webhook;
use crate::error::{ApiError, ErrorBody};
use crate::net::client;
use crate::simulation;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/{id}/simulations/preview").get(preview))
        .service(web::resource("/webhooks/{id}/simulations").post(send));
}

/// Simulations in flight per webhook, bounded by `delivery.max_in_flight`
/// so a user cannot flood an endpoint through the test button.
#[derive(Default)]
pub struct SimulationSlots(Mutex<HashMap<Uuid, usize>>);

/// One taken slot; gives it back when dropped.
struct Slot<'a> {
    slots: &'a SimulationSlots,
    webhook: Uuid,
}

impl SimulationSlots {
    fn take(&self, webhook: Uuid, limit: usize) -> Option<Slot<'_>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(webhook).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self,
            webhook,
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.webhook) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.webhook);
            }
        }
    }
}

fn not_registered() -> ApiError {
    ApiError::bad_request("event_not_registered", "Event type not registered").with_field("event")
}

/// The webhook subscribes to `event` ("*" takes every catalog event).
fn check_subscribed(state: &AppState, w: &Webhook, event: &str) -> Result<(), ApiError> {
    let known = state.catalog.contains(event) || w.events.iter().any(|e| e == event);
    if known && w.subscribes_to(event) {
        Ok(())
    } else {
        Err(not_registered())
    }
}

/// The caller's own organisation, or the webhook owner's for the admin.
fn sample_for(caller: &Caller, w: &Webhook, event: &str) -> Value {
    let org = caller.org_id().unwrap_or(w.organisation_id);
    simulation::sample(event, org, now_ms())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// The event type to preview.
    event: String,
}

/// What a simulation came to (SPEC §7).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SimulationOut {
    /// `delivered` or `failed`.
    result: &'static str,
    /// Null when no answer came (network error).
    http_status: Option<u16>,
    latency_ms: u64,
    #[schema(value_type = Object)]
    request_headers: serde_json::Map<String, Value>,
    /// The exact body sent.
    #[schema(value_type = Object)]
    payload: Value,
    response_body: String,
    truncated: bool,
    error: Option<crate::domain::delivery::AttemptError>,
    delivery_id: Uuid,
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/simulations/preview", tag = "simulations", params(("id" = Uuid, Path), PreviewQuery),
    responses((status = 200, description = "The exact JSON a simulation would send", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PreviewQuery>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    check_subscribed(&state, &w, &query.event)?;
    Ok(HttpResponse::Ok().json(sample_for(&caller, &w, &query.event)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationIn {
    event: String,
    /// An edited preview; must carry `"simulation": true`.
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

/// A caller's edited payload, normalised like an ingested event.
fn edited_payload(event: &str, payload: Value) -> Result<Value, ApiError> {
    let invalid = |m: &str| ApiError::validation("payload", m.to_string());
    let obj = payload
        .as_object()
        .ok_or_else(|| invalid("payload must be a JSON object"))?;
    if obj.get("simulation") != Some(&Value::Bool(true)) {
        return Err(invalid("payload must carry \"simulation\": true"));
    }
    if obj
        .get("event")
        .and_then(Value::as_str)
        .is_some_and(|e| e != event)
    {
        return Err(invalid("payload.event must match the simulated event"));
    }
    // An already parsed value only fails on what JavaScript cannot carry.
    canonicalize_value(payload)
        .map(|c| c.value)
        .map_err(|e| ApiError::from(e).with_field("payload"))
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/simulations", tag = "simulations", params(("id" = Uuid, Path)),
    request_body = SimulationIn,
    responses((status = 200, body = SimulationOut, description = "A request was attempted"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
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
    let input: SimulationIn = parse_json(&raw)?;
    let w = visible_webhook(&state, &caller, &path)?;
    check_subscribed(&state, &w, &input.event)?;
    let body_value = match input.payload {
        Some(p) => edited_payload(&input.event, p)?,
        None => {
            canonicalize_value(sample_for(&caller, &w, &input.event))
                .map_err(ApiError::internal)?
                .value
        }
    };
    let busy = || ApiError::unavailable("service_unavailable", "Service unavailable");
    let _slot = state
        .simulations
        .take(w.id, state.config.delivery.max_in_flight)
        .ok_or_else(busy)?;
    // A test event is answered now, never queued behind a backlog.
    let _connection = state.connections.try_slot().ok_or_else(busy)?;
    let body = Bytes::from(serde_json::to_vec(&body_value).map_err(ApiError::internal)?);
    let delivery_id = Uuid::now_v7();
    let endpoint = client::Endpoint::single_use(state.client, &w.url);
    let result = client::deliver(&endpoint, &w, delivery_id, &input.event, body).await;
    let ok = result.succeeded();
    let outcome = if ok {
        Outcome::Delivered
    } else {
        Outcome::Failed
    };
    let mut entry = LogEntry::of_attempt(
        (delivery_id, delivery_id, &input.event.as_str().into()),
        1,
        outcome,
        result.clone(),
        None,
    );
    entry.simulation = true;
    // The webhook may have been deleted while the request was out.
    if state.store.webhook(w.id)?.is_some() {
        state
            .store
            .append_log(w.id, std::slice::from_mut(&mut entry))?;
    }
    Ok(HttpResponse::Ok().json(SimulationOut {
        result: if ok { "delivered" } else { "failed" },
        http_status: result.status_code,
        latency_ms: result.latency_ms,
        request_headers: headers_object(&result.request_headers),
        payload: body_value,
        response_body: result.response_body,
        truncated: result.truncated,
        error: result.error,
        delivery_id,
    }))
}
