//! Webhooks: the stored record, its secret, its signature scheme, and the
//! parse-don't-validate `WebhookUrl` (SPEC §3).

use std::net::IpAddr;

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::net::ssrf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    Trackpilots,
    Trackelio,
    StandardWebhooks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Enabled,
    Disabled,
}

/// A webhook as stored. `secret` is the whole signing secret; only the
/// reveal and rotate calls and the create response show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub ordered: bool,
    pub status: WebhookStatus,
    pub disabled_reason: Option<String>,
    pub signature_scheme: SignatureScheme,
    pub secret: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub failure_count: u64,
    pub last_delivery_at: Option<u64>,
    /// When the current run of failed attempts began; cleared by a success.
    pub failing_since: Option<u64>,
}

impl Webhook {
    pub fn subscribes_to(&self, event: &str) -> bool {
        takes(&self.events, event)
    }

    /// Both the user's toggle and the system status must be on.
    pub fn is_deliverable(&self) -> bool {
        self.active && self.status == WebhookStatus::Enabled
    }
}

/// Whether a webhook with the `events` filter takes `event`.
pub fn takes(events: &[String], event: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event)
}

/// The first 8 characters followed by 24 `•`.
pub fn mask_secret(secret: &str) -> String {
    let head: String = secret.chars().take(8).collect();
    format!("{head}{}", "•".repeat(24))
}

/// 32 bytes from the OS RNG: hex for the seed schemes (the receivers key
/// HMAC with the string's bytes), `whsec_` + base64 for Standard Webhooks.
pub fn new_secret(scheme: SignatureScheme) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    match scheme {
        SignatureScheme::StandardWebhooks => format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        _ => hex::encode(bytes),
    }
}

/// An absolute URL a webhook may target. Holding one means it passed §3.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookUrl(url::Url);

impl WebhookUrl {
    pub fn parse(raw: &str, allow_private: bool) -> Result<WebhookUrl, String> {
        if raw.len() > 2048 {
            return Err("must be at most 2048 characters".into());
        }
        let schemes = if allow_private {
            "http:// or https://"
        } else {
            "https://"
        };
        let url = url::Url::parse(raw.trim())
            .map_err(|e| format!("must be an absolute {schemes} URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_private => {}
            _ => return Err(format!("must be an {schemes} URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain a user name or password".into());
        }
        if !allow_private {
            match url.host() {
                None => return Err("must have a host".into()),
                Some(url::Host::Domain(d)) if ssrf::is_localhost_name(d) => {
                    return Err("must not point at localhost".into())
                }
                Some(url::Host::Ipv4(ip)) if ssrf::is_blocked_ip(IpAddr::V4(ip)) => {
                    return Err(format!(
                        "must not point at a private or reserved address ({ip})"
                    ))
                }
                Some(url::Host::Ipv6(ip)) if ssrf::is_blocked_ip(IpAddr::V6(ip)) => {
                    return Err(format!(
                        "must not point at a private or reserved address ({ip})"
                    ))
                }
                Some(_) => {}
            }
        } else if url.host().is_none() {
            return Err("must have a host".into());
        }
        Ok(WebhookUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// 1–100 characters, not only white space.
pub fn validate_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    // A name is shown on dashboard cards and in logs: a NUL, a newline or
    // an escape sequence there is a mistake or an attack, never a name.
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    match trimmed.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > 100 => Err("must be at most 100 characters".into()),
        _ => Ok(trimmed.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the secret, the mask is its first 8 characters (or
        /// fewer) and 24 bullets, and no longer run of it survives.
        #[test]
        fn mask_reveals_at_most_eight_characters(secret in "\\PC{0,80}") {
            let masked = mask_secret(&secret);
            let head: String = secret.chars().take(8).collect();
            proptest::prop_assert_eq!(&masked, &format!("{head}{}", "•".repeat(24)));
            let chars: Vec<char> = secret.chars().collect();
            if chars.len() > 8 && !secret.contains('•') {
                for window in chars.windows(9) {
                    let run: String = window.iter().collect();
                    proptest::prop_assert!(!masked.contains(&run));
                }
            }
        }
    }

    #[test]
    fn the_scheme_error_names_the_schemes_allowed() {
        let refused = |allow_private| WebhookUrl::parse("ftp://x.example/", allow_private);
        assert_eq!(refused(false).unwrap_err(), "must be an https:// URL");
        assert_eq!(
            refused(true).unwrap_err(),
            "must be an http:// or https:// URL"
        );
        let unparsable = |allow_private| WebhookUrl::parse("http://x:99999/", allow_private);
        assert_eq!(
            unparsable(true).unwrap_err(),
            "must be an absolute http:// or https:// URL (invalid port number)"
        );
        assert_eq!(
            unparsable(false).unwrap_err(),
            "must be an absolute https:// URL (invalid port number)"
        );
        assert!(WebhookUrl::parse("http://x.example/", false).is_err());
        assert!(WebhookUrl::parse("http://x.example/", true).is_ok());
    }

    #[test]
    fn mask_shows_eight_characters() {
        let s = new_secret(SignatureScheme::Trackpilots);
        assert_eq!(s.len(), 64);
        let m = mask_secret(&s);
        assert!(m.starts_with(&s[..8]) && m.ends_with(&"•".repeat(24)));
        assert!(!m.contains(&s[..9]));
        assert!(new_secret(SignatureScheme::StandardWebhooks).starts_with("whsec_"));
    }
}
