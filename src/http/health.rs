//! `GET /healthz`: liveness, a storage read, and the delivery registry.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::actors::registry::ActorCount;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The store and the delivery registry answer", body = Object),
        (status = 503, description = "Unhealthy", body = crate::error::ErrorBody)))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let storage = state.store.health();
    let actors = state.registry.send(ActorCount).await;
    match (storage, actors) {
        (Ok(bytes), Ok(actors)) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "storage": "ok",
            "storage_bytes": bytes,
            "webhook_actors": actors,
        })),
        (storage, actors) => {
            log::error!(
                "health check failed: storage {:?}, registry {:?}",
                storage.err(),
                actors.err()
            );
            HttpResponse::ServiceUnavailable().json(json!({
                "error": {"code": "unhealthy", "message": "the store or the delivery registry is not answering"}
            }))
        }
    }
}
