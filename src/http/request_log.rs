//! One log line per request: method, path (never the query string, which
//! may carry a feed ticket), status, latency and the caller. Keys, secrets
//! and tickets are never printed.

use actix_web::dev::ServiceResponse;
use actix_web::middleware::{Condition, Logger};
use actix_web::HttpMessage;

/// Who made a request, set by the auth extractor for the log line.
#[derive(Clone, Copy)]
pub struct CallerTag(pub Option<uuid::Uuid>);

/// actix's `Logger` renders a line's parts for every request, whether or
/// not the level lets it print (about 7 % of an HTTP worker's time in the
/// delivery benchmark's ingest), so it is left out when its target is off.
/// The level is fixed before the server starts (`env_logger` in `main`).
pub fn logger() -> Condition<Logger> {
    let enabled = log::log_enabled!(target: "actix_web::middleware::logger", log::Level::Info);
    let logger = Logger::new("%{method}xi %U %s %Dms caller=%{caller}xo")
        .custom_request_replace("method", |req| req.method().to_string())
        .custom_response_replace("caller", caller);
    Condition::new(enabled, logger)
}

fn caller(res: &ServiceResponse) -> String {
    match res.request().extensions().get::<CallerTag>() {
        Some(CallerTag(Some(org))) => org.to_string(),
        Some(CallerTag(None)) => "admin".into(),
        None => "-".into(),
    }
}
