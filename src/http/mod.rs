//! The HTTP API (SPEC §4): one file per resource, the auth and body
//! extractors, and `configure`, the one place that wires routes. Handlers
//! call into storage and the actors; they never touch sled.

pub mod auth;
pub mod body;
pub mod body_budget;
mod deliveries;
mod events;
pub mod feed;
mod health;
mod metrics;
pub mod openapi;
mod organisations;
pub mod request_log;
pub mod simulations;
mod webhooks;

use std::sync::Arc;

use actix::Addr;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpResponse};
use uuid::Uuid;

use crate::actors::broadcaster::Broadcaster;
use crate::actors::registry::{Directory, Registry};
use crate::config::Config;
use crate::domain::catalog::Catalog;
use crate::error::ApiError;
use crate::net::client::ClientSettings;
use crate::net::connections::ConnectionBudget;
use crate::storage::Store;

/// Management endpoints accept JSON bodies up to 64 KiB (SPEC §4).
pub const MANAGEMENT_BODY_LIMIT: usize = 64 * 1024;

/// Everything a handler may use, shared by all workers.
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub catalog: Catalog,
    pub registry: Addr<Registry>,
    /// The delivery actors, for handing them new deliveries directly.
    pub directory: Directory,
    pub admin_key_hash: [u8; 32],
    pub client: ClientSettings,
    pub connections: ConnectionBudget,
    pub simulations: simulations::SimulationSlots,
    pub broadcaster: Addr<Broadcaster>,
    pub tickets: feed::Tickets,
    pub body_budget: body_budget::BodyBudget,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // HEAD too: load balancers and `curl -I` probe with it.
    cfg.service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .route(web::head().to(health::healthz)),
    )
    .route("/metrics", web::get().to(metrics::metrics))
    .configure(crate::dashboard::routes)
    .service(
        // Ingest first: the router tries resources in order, and the
        // others' path patterns cost a regex match each.
        web::scope("/v1")
            .configure(events::routes)
            .configure(organisations::routes)
            .configure(webhooks::routes)
            .configure(deliveries::routes)
            .configure(simulations::routes)
            .configure(feed::routes)
            .route("/event-types", web::get().to(webhooks::event_types))
            .route("/openapi.json", web::get().to(openapi::openapi_json)),
    )
    .default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::not_found("not_found", "no such route"))
    }));
}

/// Turns actix's own error responses (405 from a resource, a body that
/// could not be read, ...) into the JSON error shape.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == HeaderValue::from_static("application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let error = generic_error(status);
        let (req, _) = res.into_parts();
        let response: HttpResponse<BoxBody> = HttpResponse::build(status)
            .content_type("application/json")
            .body(error.body_json());
        let res: ServiceResponse<EitherBody<B>> =
            ServiceResponse::new(req, response).map_into_right_body();
        Ok(ErrorHandlerResponse::Response(res))
    })
}

fn generic_error(status: StatusCode) -> ApiError {
    let (code, message) = match status.as_u16() {
        400 => ("bad_request", "the request could not be understood"),
        401 => ("unauthorized", "a valid API key is required"),
        404 => ("not_found", "no such route"),
        405 => (
            "method_not_allowed",
            "this method is not allowed on this path",
        ),
        413 => ("payload_too_large", "the request body is too large"),
        415 => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        s if s >= 500 => ("internal_error", "an unexpected error occurred"),
        _ => ("request_failed", "the request failed"),
    };
    ApiError::new(status, code, message)
}

/// The largest page of a list that `PageQuery` pages.
const MAX_PAGE: usize = 1000;

/// `?limit=&before=` of a list that pages newest first, by id.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1–1000; without it, the whole list.
    limit: Option<usize>,
    /// The `next_before` of the previous page.
    #[serde(default, deserialize_with = "empty_is_absent")]
    pub before: Option<Uuid>,
}

/// An empty query value (`?outcome=`, as a form's "any" choice sends it,
/// or `?before=` on the first page) means the parameter was not given.
pub fn empty_is_absent<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::IntoDeserializer;
    match <Option<String> as serde::Deserialize>::deserialize(d)? {
        Some(v) if !v.is_empty() => T::deserialize(v.into_deserializer()).map(Some),
        _ => Ok(None),
    }
}

impl PageQuery {
    /// How many items to read: one more than the page, to know whether
    /// another follows; all without `limit`. A 400 if `limit` is out of
    /// range.
    pub fn to_read(&self) -> Result<usize, ApiError> {
        let limit = self.limit.map(|l| check_limit(l, MAX_PAGE)).transpose()?;
        Ok(limit.map_or(usize::MAX, |l| l + 1))
    }

    /// Cuts what `to_read` read to the page; returns the next page's
    /// `before`, or `None` on the last.
    pub fn cut<T>(&self, items: &mut Vec<T>, id: impl Fn(&T) -> Uuid) -> Option<Uuid> {
        match self.limit {
            Some(limit) if items.len() > limit => {
                items.truncate(limit);
                items.last().map(id)
            }
            _ => None,
        }
    }
}

/// A page size within 1..=max, or a 400 naming `limit`.
pub fn check_limit(limit: usize, max: usize) -> Result<usize, ApiError> {
    if limit == 0 || limit > max {
        return Err(ApiError::validation(
            "limit",
            format!("limit must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// Parses an id from the path; anything malformed cannot exist, so it
/// gets the same 404 as an id that is unknown.
pub fn parse_id(raw: &str, not_found: fn() -> ApiError) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found())
}
