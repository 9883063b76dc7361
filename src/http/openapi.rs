//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every route,
//! derived by utoipa from the handlers' own annotations and types, so the
//! document changes with the code.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{deliveries, events, feed, health, metrics, organisations, simulations, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "hookrelay", description = "Durable, signed webhook delivery with simulations and a live feed."),
    paths(
        organisations::me, organisations::create, organisations::list, organisations::get,
        webhooks::create, webhooks::list, webhooks::get, webhooks::patch, webhooks::delete,
        webhooks::reveal, webhooks::rotate, webhooks::event_types,
        deliveries::list, deliveries::redeliver,
        simulations::preview, simulations::send,
        events::ingest,
        feed::issue, feed::upgrade,
        health::healthz, metrics::metrics, openapi_json,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "organisations"), (name = "webhooks"), (name = "deliveries"), (name = "simulations"),
        (name = "events"), (name = "feed"), (name = "operations"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
