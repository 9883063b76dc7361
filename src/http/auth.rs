//! Bearer-key authentication as an extractor: a handler that takes a
//! `Caller` only runs for a valid admin or organisation key.

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use sha2::{Digest, Sha256};

use super::request_log::CallerTag;
use super::AppState;
use crate::domain::organisation::Caller;
use crate::error::ApiError;

/// Keys are 256-bit random strings, so a plain SHA-256 is a safe digest.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh API key: a readable prefix and 32 random bytes in hex.
pub fn new_key(prefix: &str) -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

pub fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("AppState missing"))?;
    let key = bearer(req)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <api key>"))?;
    let hash = hash_key(key);
    let caller = if hash == state.admin_key_hash {
        Caller::Admin
    } else {
        match state.store.org_by_key_hash(&hash)? {
            Some(org) => Caller::Org(org),
            None => return Err(ApiError::unauthorized("the API key is not valid")),
        }
    };
    req.extensions_mut().insert(CallerTag(caller.org_id()));
    Ok(caller)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(req))
    }
}
