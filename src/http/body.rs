//! Reading request bodies: a size limit enforced while streaming, the JSON
//! content type, and typed JSON whose errors name the field at fault.

use actix_web::dev::Payload;
use actix_web::web::BytesMut;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::MANAGEMENT_BODY_LIMIT;
use crate::canonical::{self, CanonicalError};
use crate::error::ApiError;

/// 415 unless the body is declared as JSON.
pub fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let json = match req.mime_type() {
        Ok(Some(m)) => m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"),
        _ => false,
    };
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body with Content-Type: application/json",
        ))
    }
}

/// Reads the whole body, refusing it with 413 once it passes `limit`.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("body_unreadable", format!("cannot read the body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A JSON body of at most `limit` bytes: 415 for another content type,
/// 413 past the limit.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
) -> Result<BytesMut, ApiError> {
    require_json(req)?;
    read_body(req, payload, limit).await
}

/// Parses JSON into `T`; the error names the path of the bad field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if let err @ CanonicalError::UnpairedSurrogate(_) = canonical::syntax_error(bytes, &inner) {
            return ApiError::unprocessable(err.code(), err.to_string());
        }
        let code = if inner.is_data() {
            "invalid_field"
        } else {
            "invalid_json"
        };
        let err = ApiError::bad_request(code, format!("invalid request body: {inner}"));
        if path == "." || !inner.is_data() {
            err
        } else {
            err.with_field(path)
        }
    })
}

/// For a PATCH field, with `#[serde(default, deserialize_with =
/// "not_null")]`: left out, it is `None` (unchanged); `null` is refused,
/// where plain `Option` would read it as left out and answer 200 having
/// changed nothing.
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(
            "must not be null (leave the field out to keep its value)",
        )),
    }
}

/// A JSON management body of at most 64 KiB, typed.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let bytes = read_json_body(&req, payload, MANAGEMENT_BODY_LIMIT).await?;
            parse_json(&bytes).map(ApiJson)
        })
    }
}
