//! The signature schemes of SPEC §5 and the headers every delivery carries.
//! Pure functions: the same code signs live deliveries, retries and
//! simulations.

use std::borrow::Cow;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::delivery::Header;
use crate::domain::webhook::SignatureScheme;

type HmacSha256 = Hmac<Sha256>;

pub const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Lower-case hex. NB: `hex::encode` collects one char at a time, which
/// showed in the delivery profile; encoding into a buffer does not.
fn hex_lower(digest: [u8; 32]) -> String {
    let mut out = vec![0u8; 64];
    hex::encode_to_slice(digest, &mut out).expect("64 bytes hold 32 in hex");
    String::from_utf8(out).expect("hex is ASCII")
}

/// `hex(HMAC_SHA256(timestamp + "." + body, secret))`, keyed by the secret
/// string's UTF-8 bytes as the seed receivers do.
pub fn trackpilots_signature(secret: &str, timestamp_ms: u64, body: &[u8]) -> String {
    signed_with_timestamp(secret, &timestamp_ms.to_string(), body)
}

/// The same, with the timestamp already written out (as it is sent).
fn signed_with_timestamp(secret: &str, timestamp_ms: &str, body: &[u8]) -> String {
    hex_lower(hmac(
        secret.as_bytes(),
        &[timestamp_ms.as_bytes(), b".", body],
    ))
}

/// `hex(HMAC_SHA256(body, secret))` for `X-Trackelio-Signature`.
pub fn trackelio_signature(secret: &str, body: &[u8]) -> String {
    hex_lower(hmac(secret.as_bytes(), &[body]))
}

/// `v1,base64(HMAC_SHA256(id.timestamp.body))` keyed by the base64 bytes
/// after `whsec_`, as the Standard Webhooks libraries verify it.
pub fn standard_webhooks_signature(
    secret: &str,
    msg_id: &str,
    timestamp_s: u64,
    body: &[u8],
) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| b64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let ts = timestamp_s.to_string();
    let sig = hmac(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", b64.encode(sig))
}

/// Everything to sign one attempt.
pub struct SignInput<'a> {
    pub scheme: SignatureScheme,
    pub secret: &'a str,
    pub delivery_id: &'a str,
    pub event: &'a str,
    pub timestamp_ms: u64,
    pub body: &'a [u8],
}

/// The delivery headers, lower-case names, in the order they are sent.
/// Names and fixed values are static: an attempt allocates only the four
/// values that are its own.
pub fn delivery_headers(input: &SignInput<'_>) -> Vec<Header> {
    let ts = input.timestamp_ms.to_string();
    let signature = signed_with_timestamp(input.secret, &ts, input.body);
    // Six for every scheme, three more for Standard Webhooks.
    let mut headers: Vec<Header> = Vec::with_capacity(9);
    headers.extend([
        fixed("content-type", "application/json"),
        fixed("user-agent", USER_AGENT),
        own("x-webhook-id", input.delivery_id.to_string()),
        own("x-webhook-event", input.event.to_string()),
        own("x-webhook-timestamp", ts),
        own("x-webhook-signature", signature),
    ]);
    match input.scheme {
        SignatureScheme::Trackpilots => {}
        SignatureScheme::Trackelio => headers.push(own(
            "x-trackelio-signature",
            trackelio_signature(input.secret, input.body),
        )),
        SignatureScheme::StandardWebhooks => {
            let secs = input.timestamp_ms / 1000;
            headers.extend([
                own("webhook-id", input.delivery_id.to_string()),
                own("webhook-timestamp", secs.to_string()),
                own(
                    "webhook-signature",
                    standard_webhooks_signature(input.secret, input.delivery_id, secs, input.body),
                ),
            ]);
        }
    }
    headers
}

fn fixed(name: &'static str, value: &'static str) -> Header {
    (Cow::Borrowed(name), Cow::Borrowed(value))
}

fn own(name: &'static str, value: String) -> Header {
    (Cow::Borrowed(name), Cow::Owned(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python's hmac module:
    // hmac.new(key, msg, hashlib.sha256).hexdigest() / base64.
    #[test]
    fn trackpilots_vector() {
        assert_eq!(
            trackpilots_signature("test_secret", 1716000000000, br#"{"event":"x"}"#),
            "40891c6cf90a256ab6935ebcf4ee86a8056b8de1397e7d787d6992fec546a19c"
        );
    }

    #[test]
    fn trackelio_vector() {
        assert_eq!(
            trackelio_signature("test_secret", br#"{"event":"x"}"#),
            "2ded4e8677c493b19ad586ed83f0bc3dff2493d11d25656aa67bc3664ab269e7"
        );
    }

    #[test]
    fn standard_webhooks_vector() {
        // The example from the Standard Webhooks specification.
        assert_eq!(
            standard_webhooks_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// Sending builds each static name and value with `from_static`, which
    /// panics on anything but a valid (for names, lower-case) one.
    #[test]
    fn every_scheme_names_its_headers_validly_in_lower_case() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        for scheme in [
            SignatureScheme::Trackpilots,
            SignatureScheme::Trackelio,
            SignatureScheme::StandardWebhooks,
        ] {
            let headers = delivery_headers(&SignInput {
                scheme,
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                delivery_id: "d",
                event: "e",
                timestamp_ms: 1716000000000,
                body: b"{}",
            });
            for (name, value) in headers {
                assert!(matches!(name, Cow::Borrowed(_)), "{name} is static");
                let parsed = HeaderName::try_from(name.as_ref());
                assert_eq!(parsed.map(|n| n.to_string()).ok(), Some(name.to_string()));
                assert!(HeaderValue::from_str(&value).is_ok(), "{name}: {value}");
            }
        }
    }
}
