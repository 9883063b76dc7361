//! `/v1/webhooks` (SPEC §3–§4): create, list, get, patch, delete, reveal
//! and rotate the secret; and `/v1/event-types`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::{not_null, ApiJson};
use super::{parse_id, AppState, PageQuery};
use crate::actors::registry::{WebhookCreated, WebhookDeleted, WebhookUpdated};
use crate::clock::{self, now_ms};
use crate::config::EventTypeConfig;
use crate::domain::organisation::Caller;
use crate::domain::webhook::{
    mask_secret, new_secret, validate_name, SignatureScheme, Webhook, WebhookStatus, WebhookUrl,
};
use crate::error::{ApiError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks").get(list).post(create))
        .service(
            web::resource("/webhooks/{id}")
                .get(get)
                .patch(patch)
                .delete(delete),
        )
        .service(web::resource("/webhooks/{id}/secret").get(reveal))
        .service(web::resource("/webhooks/{id}/secret/rotate").post(rotate));
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookIn {
    name: String,
    url: String,
    events: Vec<String>,
    active: Option<bool>,
    ordered: Option<bool>,
    signature_scheme: Option<SignatureScheme>,
    /// The admin names the owner; organisations own what they create.
    organisation_id: Option<Uuid>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    url: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    events: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    active: Option<bool>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    ordered: Option<bool>,
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    signature_scheme: Option<SignatureScheme>,
    /// Only `"enabled"`: re-enables a webhook the system disabled.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    status: Option<WebhookStatus>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookOut {
    id: Uuid,
    organisation_id: Uuid,
    name: String,
    url: String,
    events: Vec<String>,
    active: bool,
    ordered: bool,
    status: WebhookStatus,
    disabled_reason: Option<String>,
    signature_scheme: SignatureScheme,
    secret_masked: String,
    /// The whole secret: only on create (and a PATCH that had to replace it).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: String,
    updated_at: String,
    failure_count: u64,
    last_delivery_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    data: Vec<WebhookOut>,
    /// Pass as `before` for the next page; null on the last (and without
    /// `limit`).
    next_before: Option<Uuid>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretOut {
    secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventTypeList {
    data: Vec<EventTypeConfig>,
}

impl WebhookOut {
    fn masked(w: &Webhook) -> Self {
        WebhookOut {
            id: w.id,
            organisation_id: w.organisation_id,
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            active: w.active,
            ordered: w.ordered,
            status: w.status,
            disabled_reason: w.disabled_reason.clone(),
            signature_scheme: w.signature_scheme,
            secret_masked: mask_secret(&w.secret),
            secret: None,
            created_at: clock::iso(w.created_at),
            updated_at: clock::iso(w.updated_at),
            failure_count: w.failure_count,
            last_delivery_at: w.last_delivery_at.map(clock::iso),
        }
    }

    fn with_secret(w: &Webhook) -> Self {
        WebhookOut {
            secret: Some(w.secret.clone()),
            ..Self::masked(w)
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("webhook_not_found", "Webhook not found")
}

/// The webhook named in the path, if the caller may see it; else 404.
pub fn visible_webhook(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
) -> Result<Webhook, ApiError> {
    let id = parse_id(raw_id, not_found)?;
    match state.store.webhook(id)? {
        Some(w) if caller.owns(w.organisation_id) => Ok(w),
        _ => Err(not_found()),
    }
}

fn parse_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    WebhookUrl::parse(raw, state.config.delivery.allow_private_targets)
        .map(|u| u.as_str().to_string())
        .map_err(|m| ApiError::validation("url", format!("url {m}")))
}

fn parse_events(state: &AppState, events: &[String]) -> Result<Vec<String>, ApiError> {
    state
        .catalog
        .validate_subscription(events)
        .map_err(|m| ApiError::validation("events", format!("events {m}")))
}

fn owner_for(state: &AppState, caller: &Caller, requested: Option<Uuid>) -> Result<Uuid, ApiError> {
    match (caller, requested) {
        (Caller::Org(me), None) => Ok(me.id),
        (Caller::Org(me), Some(id)) if id == me.id => Ok(id),
        (Caller::Org(_), Some(_)) => Err(ApiError::validation(
            "organisation_id",
            "only the admin key may create webhooks for another organisation",
        )),
        (Caller::Admin, None) => Err(ApiError::validation(
            "organisation_id",
            "the admin key must name the organisation that owns the webhook",
        )),
        (Caller::Admin, Some(id)) => match state.store.org(id)? {
            Some(_) => Ok(id),
            None => Err(ApiError::validation(
                "organisation_id",
                "no organisation has this id",
            )),
        },
    }
}

#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = WebhookIn,
    responses((status = 201, body = WebhookOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "webhook_limit_reached: the organisation has `limits.webhooks_per_organisation` webhooks")),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<WebhookIn>,
) -> Result<HttpResponse, ApiError> {
    let name = validate_name(&input.name)
        .map_err(|m| ApiError::validation("name", format!("name {m}")))?;
    let url = parse_url(&state, &input.url)?;
    let events = parse_events(&state, &input.events)?;
    let organisation_id = owner_for(&state, &caller, input.organisation_id)?;
    let scheme = input
        .signature_scheme
        .unwrap_or(state.config.delivery.default_signature_scheme);
    let now = now_ms();
    let webhook = Webhook {
        id: Uuid::now_v7(),
        organisation_id,
        name,
        url,
        events,
        active: input.active.unwrap_or(true),
        ordered: input.ordered.unwrap_or(false),
        status: WebhookStatus::Enabled,
        disabled_reason: None,
        signature_scheme: scheme,
        secret: new_secret(scheme),
        created_at: now,
        updated_at: now,
        failure_count: 0,
        last_delivery_at: None,
        failing_since: None,
    };
    let limit = state.config.limits.webhooks_per_organisation;
    if !state.store.insert_webhook_within(&webhook, limit)? {
        return Err(ApiError::unprocessable(
            "webhook_limit_reached",
            format!("this organisation already has {limit} webhooks, the most allowed; delete one first"),
        ));
    }
    state.store.flush().await?;
    // Waited for, so that the actor is listed by the time of the 201.
    // (A closed mailbox means the server is stopping; the webhook is stored.)
    let _ = state.registry.send(WebhookCreated { id: webhook.id }).await;
    Ok(HttpResponse::Created().json(WebhookOut::with_secret(&webhook)))
}

#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(PageQuery),
    responses((status = 200, body = WebhookList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut webhooks =
        state
            .store
            .webhooks_page(caller.org_id(), query.before, query.to_read()?)?;
    let next_before = query.cut(&mut webhooks, |w| w.id);
    let data: Vec<WebhookOut> = webhooks.iter().map(WebhookOut::masked).collect();
    Ok(HttpResponse::Ok().json(WebhookList { data, next_before }))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookOut), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    Ok(HttpResponse::Ok().json(WebhookOut::masked(&w)))
}

/// What a PATCH will do, validated before anything is written.
struct Changes {
    name: Option<String>,
    url: Option<String>,
    events: Option<Vec<String>>,
    active: Option<bool>,
    ordered: Option<bool>,
    scheme: Option<SignatureScheme>,
    reenable: bool,
}

fn validate_patch(state: &AppState, p: WebhookPatch) -> Result<Changes, ApiError> {
    if p.status == Some(WebhookStatus::Disabled) {
        return Err(ApiError::validation(
            "status",
            "status can only be set to \"enabled\"; use active to switch a webhook off",
        ));
    }
    Ok(Changes {
        name: p
            .name
            .map(|n| validate_name(&n))
            .transpose()
            .map_err(|m| ApiError::validation("name", format!("name {m}")))?,
        url: p.url.map(|u| parse_url(state, &u)).transpose()?,
        events: p.events.map(|e| parse_events(state, &e)).transpose()?,
        reenable: p.status == Some(WebhookStatus::Enabled) || p.active == Some(true),
        active: p.active,
        ordered: p.ordered,
        scheme: p.signature_scheme,
    })
}

fn apply(w: &mut Webhook, c: &Changes, now: u64) -> bool {
    let mut rotated = false;
    if let Some(n) = &c.name {
        w.name = n.clone();
    }
    if let Some(u) = &c.url {
        w.url = u.clone();
    }
    if let Some(e) = &c.events {
        w.events = e.clone();
    }
    if let Some(a) = c.active {
        w.active = a;
    }
    if let Some(o) = c.ordered {
        w.ordered = o;
    }
    if let Some(s) = c.scheme {
        // Standard Webhooks verifiers need a whsec_ secret.
        if s == SignatureScheme::StandardWebhooks && !w.secret.starts_with("whsec_") {
            w.secret = new_secret(s);
            rotated = true;
        }
        w.signature_scheme = s;
    }
    if c.reenable && w.status == WebhookStatus::Disabled {
        w.status = WebhookStatus::Enabled;
        w.disabled_reason = None;
        w.failing_since = None;
        w.failure_count = 0;
    }
    w.updated_at = now;
    rotated
}

/// Tells the registry of a stored change and waits until the webhook's
/// actor has it (or has it queued): see `WebhookUpdated`.
async fn notify_updated(state: &AppState, id: Uuid) {
    // A closed mailbox means the server is stopping; the change is stored.
    let _ = state.registry.send(WebhookUpdated { id }).await;
}

#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = WebhookPatch,
    responses((status = 200, body = WebhookOut, description = "Changed; every event published after this answer is delivered by the new settings"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    ApiJson(input): ApiJson<WebhookPatch>,
) -> Result<HttpResponse, ApiError> {
    let current = visible_webhook(&state, &caller, &path)?;
    let changes = validate_patch(&state, input)?;
    let now = now_ms();
    let mut rotated = false;
    let updated = state
        .store
        .update_webhook(current.id, |w| rotated = apply(w, &changes, now))?
        .ok_or_else(not_found)?;
    state.store.flush().await?;
    notify_updated(&state, updated.id).await;
    let out = if rotated {
        WebhookOut::with_secret(&updated)
    } else {
        WebhookOut::masked(&updated)
    };
    Ok(HttpResponse::Ok().json(out))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted; its queued deliveries are dropped"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    // Stop the actor first, and wait for it: a retry timer firing between
    // the 204 and the actor's stop would otherwise send once more. Then
    // drop the data. (A closed mailbox means the server is stopping, and
    // the actor with it.)
    let _ = state.registry.send(WebhookDeleted { id: w.id }).await;
    state.store.delete_webhook(&w)?;
    state.store.flush().await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/webhooks/{id}/secret", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = SecretOut), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn reveal(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    Ok(HttpResponse::Ok().json(SecretOut { secret: w.secret }))
}

#[utoipa::path(post, path = "/v1/webhooks/{id}/secret/rotate", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = SecretOut, description = "The new secret; every delivery attempt made after this answer is signed with it"),
        (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let w = visible_webhook(&state, &caller, &path)?;
    let now = now_ms();
    let updated = state
        .store
        .update_webhook(w.id, |w| {
            w.secret = new_secret(w.signature_scheme);
            w.updated_at = now;
        })?
        .ok_or_else(not_found)?;
    state.store.flush().await?;
    notify_updated(&state, updated.id).await;
    Ok(HttpResponse::Ok().json(SecretOut {
        secret: updated.secret,
    }))
}

#[utoipa::path(get, path = "/v1/event-types", tag = "webhooks",
    responses((status = 200, body = EventTypeList), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn event_types(state: web::Data<AppState>, _caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(EventTypeList {
        data: state.catalog.types().to_vec(),
    })
}
