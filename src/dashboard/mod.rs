//! The dashboard (SPEC §9): one self-contained page embedded in the
//! binary; it talks only to the public API and the feed.

use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/",
        web::get().to(|| async { page("text/html; charset=utf-8", INDEX) }),
    )
    .route(
        "/dashboard/app.js",
        web::get().to(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
    )
    .route(
        "/dashboard/style.css",
        web::get().to(|| async { page("text/css; charset=utf-8", STYLE) }),
    );
}

fn page(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"))
        .insert_header((
            "content-security-policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'",
        ))
        .body(body)
}
