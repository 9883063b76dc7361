//! `GET /healthz`: liveness plus a storage read.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.health() {
        Ok(bytes) => HttpResponse::Ok()
            .json(json!({"status": "ok", "storage": "ok", "storage_bytes": bytes})),
        Err(e) => {
            log::error!("health check failed: {e}");
            HttpResponse::ServiceUnavailable().json(json!({
                "error": {"code": "storage_unavailable", "message": "the store cannot be read"}
            }))
        }
    }
}
