//! `GET /metrics`: Prometheus text format; the admin key is required
//! unless `server.metrics_public = true`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::authenticate;
use super::AppState;
use crate::error::{ApiError, ErrorBody};

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !state.config.server.metrics_public && !authenticate(&req)?.is_admin() {
        return Err(ApiError::not_found("not_found", "no such route"));
    }
    let storage = state.store.health()?;
    let m = &state.metrics;
    m.connections_in_use.set(state.connections.in_use() as i64);
    m.connection_slots.set(state.connections.size() as i64);
    let held = state.directory.held_budget();
    m.deliveries_held.set(held.held() as i64);
    m.deliveries_handed.set(held.handed() as i64);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(m.render(storage)))
}
