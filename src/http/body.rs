//! Reading request bodies: a size limit enforced while streaming, the JSON
//! content type, and typed JSON whose errors name the field at fault.

use std::io::Read;

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::body_budget::{BodyBudget, BodyHold};
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

/// Reads the whole body, refusing it with 413 once it passes `limit`,
/// and decodes it if it came gzip- or deflate-compressed (as a producer
/// may send screenshots): `limit` bounds the decoded body too. The body
/// takes room in `hold` as it is read (see `body_budget`).
async fn read_body(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
    hold: &mut BodyHold,
) -> Result<BytesMut, ApiError> {
    let coding = content_coding(req)?;
    let raw = read_raw(req, payload, limit, hold).await?;
    let decoded = match coding {
        None => return Ok(raw),
        Some(coding) if raw.len() < DECODE_INLINE => decode(coding, &raw, limit)?,
        // A large body takes tens of milliseconds to inflate: off the
        // HTTP worker, which serves other requests meanwhile.
        Some(coding) => web::block(move || decode(coding, &raw, limit))
            .await
            .map_err(|_| {
                ApiError::unavailable("service_unavailable", "cannot decode the body now")
            })??,
    };
    hold.grow_to(decoded.len()).await?;
    Ok(decoded)
}

/// Compressed bodies up to this size are decoded on the HTTP worker.
const DECODE_INLINE: usize = 64 * 1024;

#[derive(Clone, Copy)]
enum Coding {
    Gzip,
    Deflate,
}

/// The body's `Content-Encoding`: `None` for none (or identity), 415 for
/// one hookrelay does not decode.
fn content_coding(req: &HttpRequest) -> Result<Option<Coding>, ApiError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("?").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
        "deflate" => Ok(Some(Coding::Deflate)),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
            format!("content-encoding {other:?} is not supported: send the body as gzip or deflate, or uncompressed"),
        )),
    }
}

/// Inflates `raw`, reading at most one byte past `limit`, so a small
/// body that inflates hugely (a zip bomb) costs no more than `limit`.
fn decode(coding: Coding, raw: &[u8], limit: usize) -> Result<BytesMut, ApiError> {
    let bounded = (limit as u64).saturating_add(1);
    let mut out = Vec::with_capacity((raw.len() * 4).min(limit));
    let read = match coding {
        Coding::Gzip => flate2::read::MultiGzDecoder::new(raw)
            .take(bounded)
            .read_to_end(&mut out),
        Coding::Deflate => flate2::read::ZlibDecoder::new(raw)
            .take(bounded)
            .read_to_end(&mut out),
    };
    read.map_err(|e| {
        ApiError::bad_request(
            "body_unreadable",
            format!("cannot decode the compressed body: {e}"),
        )
    })?;
    if out.len() > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(BytesMut::from(web::Bytes::from(out)))
}

/// The body as sent, refused with 413 once it passes `limit` and 408 if
/// it stops arriving.
async fn read_raw(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
    hold: &mut BodyHold,
) -> Result<BytesMut, ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    // What is declared is not yet sent: allocate as it arrives, beyond this.
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(1024).min(PREALLOCATE));
    loop {
        let next = tokio::time::timeout(BODY_STALL, payload.next()).await;
        let chunk = match next {
            Err(_) => return Err(stalled()),
            Ok(None) => return Ok(buf),
            Ok(Some(chunk)) => chunk.map_err(|e| {
                ApiError::bad_request("body_unreadable", format!("cannot read the body: {e}"))
            })?,
        };
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        hold.grow_to(buf.len() + chunk.len()).await?;
        buf.extend_from_slice(&chunk);
    }
}

/// A body buffer starts at most this large, whatever length is declared.
const PREALLOCATE: usize = 1024 * 1024;

/// A body that sends nothing for this long is given up (its room in the
/// body budget with it).
const BODY_STALL: std::time::Duration = std::time::Duration::from_secs(15);

fn stalled() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!("no part of the body arrived for {} s", BODY_STALL.as_secs()),
    )
}

/// A large JSON body (an event, a simulation) of at most `limit` bytes:
/// 415 for another content type, 413 past the limit, 503 while `budget`
/// has no room for it. Keep the hold for as long as the body's copies live.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: Payload,
    limit: usize,
    budget: &BodyBudget,
) -> Result<(BytesMut, BodyHold), ApiError> {
    require_json(req)?;
    let mut hold = budget.hold();
    let body = read_body(req, payload, limit, &mut hold).await?;
    Ok((body, hold))
}

/// Parses a JSON object into `T`; the error names the path of the bad
/// field.
///
/// NB: serde's derived structs also accept an array of the fields in
/// order, so without the check `["x"]` as a PATCH would rename a webhook.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b" \t\n\r".contains(b));
    let other_json = || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
    if first != Some(&b'{') && other_json() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the request body must be a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if let err @ (CanonicalError::UnpairedSurrogate(_) | CanonicalError::TooDeep(_)) =
            canonical::syntax_error(bytes, &inner)
        {
            return err.into();
        }
        let code = if inner.is_data() {
            "invalid_field"
        } else {
            "invalid_json"
        };
        let err = ApiError::bad_request(code, format!("invalid request body: {inner}"));
        match error_field(&path, &inner) {
            Some(field) if inner.is_data() => err.with_field(field),
            _ => err,
        }
    })
}

/// The field a data error is about: its path, and for a missing field
/// (which serde reports at the object that lacks it) the field's name
/// after that, so `{"name":"x"}` without `kind` names `kind`.
fn error_field(path: &str, inner: &serde_json::Error) -> Option<String> {
    let message = inner.to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    match (path, missing) {
        (".", None) => None,
        (".", Some(name)) => Some(name.to_string()),
        (path, None) => Some(path.to_string()),
        (path, Some(name)) => Some(format!("{path}.{name}")),
    }
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
            require_json(&req)?;
            // Small enough to need no room in the budget, which the
            // dashboard's edits must not queue behind screenshots for.
            let mut unbudgeted = BodyHold::unbudgeted();
            let bytes = read_body(&req, payload, MANAGEMENT_BODY_LIMIT, &mut unbudgeted).await?;
            parse_json(&bytes).map(ApiJson)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        kind: String,
    }

    fn field_of(body: &str) -> Option<String> {
        parse_json::<Outer>(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(field_of(r#"{"inner":null}"#).as_deref(), Some("name"));
        assert_eq!(
            field_of(r#"{"name":"x","inner":{}}"#).as_deref(),
            Some("inner.kind")
        );
    }

    #[test]
    fn a_wrong_field_is_named_and_bad_syntax_names_none() {
        assert_eq!(field_of(r#"{"name":1}"#).as_deref(), Some("name"));
        assert_eq!(field_of(r#"{"name":"#), None);
    }

    #[test]
    fn only_an_object_is_a_body() {
        for body in ["[]", r#"["x", null]"#, "null", " 1", "\"x\""] {
            let refused = parse_json::<Outer>(body.as_bytes()).unwrap_err();
            assert_eq!(refused.code, "invalid_body", "{body:?}");
        }
        assert!(parse_json::<Outer>(b" \n{\"name\":\"x\"}").is_ok());
        for not_json in ["", "[", "nul"] {
            let refused = parse_json::<Outer>(not_json.as_bytes()).unwrap_err();
            assert_eq!(refused.code, "invalid_json", "{not_json:?}");
        }
    }
}
