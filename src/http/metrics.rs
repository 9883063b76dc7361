//! `GET /metrics`: Prometheus text format; the admin key is required
//! unless `server.metrics_public = true`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::authenticate;
use super::AppState;
use crate::error::ApiError;

pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !state.config.server.metrics_public && !authenticate(&req)?.is_admin() {
        return Err(ApiError::not_found("not_found", "no such route"));
    }
    let storage = state.store.health()?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(storage)))
}
