//! One log line per request: method, path (never the query string, which
//! may carry a feed ticket), status, latency and the caller. Keys, secrets
//! and tickets are never printed.

use actix_web::dev::ServiceResponse;
use actix_web::middleware::Logger;
use actix_web::HttpMessage;

/// Who made a request, set by the auth extractor for the log line.
#[derive(Clone, Copy)]
pub struct CallerTag(pub Option<uuid::Uuid>);

pub fn logger() -> Logger {
    Logger::new("%{method}xi %U %s %Dms caller=%{caller}xo")
        .custom_request_replace("method", |req| req.method().to_string())
        .custom_response_replace("caller", caller)
}

fn caller(res: &ServiceResponse) -> String {
    match res.request().extensions().get::<CallerTag>() {
        Some(CallerTag(Some(org))) => org.to_string(),
        Some(CallerTag(None)) => "admin".into(),
        None => "-".into(),
    }
}
