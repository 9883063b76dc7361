//! Deliveries and their attempts: the queued record, the log entry of one
//! attempt (SPEC §6), and the retry schedule as pure functions.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event owed to one webhook, kept in the webhook's queue until it is
/// delivered or has used every attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    /// The event type, shared by all the deliveries of the event.
    pub event: Arc<str>,
    /// Attempts already made.
    pub attempts: u32,
    pub next_attempt_at: u64,
    pub created_at: u64,
    /// Not in the queue tree: a first attempt, durable only through its
    /// event's record and counted as unsettled until it is judged or
    /// stored (see `storage/unsettled.rs`). Never stored itself.
    #[serde(skip)]
    pub only_in_event: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Delivered,
    Failed,
    /// This attempt failed and another is scheduled.
    Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Timeout,
    Connect,
    Dns,
    Tls,
    BlockedAddress,
    Http,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptError {
    pub kind: ErrorKind,
    pub message: String,
}

/// One request header as sent (name, value). Names and fixed values are
/// static, so sending and recording them allocates nothing per attempt;
/// read back from the store, both are owned.
pub type Header = (Cow<'static, str>, Cow<'static, str>);

/// The log entry of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub event_id: Uuid,
    pub event: Arc<str>,
    pub attempt: u32,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub response_body: String,
    pub truncated: bool,
    pub error: Option<AttemptError>,
    pub request_headers: Vec<Header>,
    pub attempted_at: u64,
    pub next_attempt_at: Option<u64>,
    pub simulation: bool,
}

impl LogEntry {
    /// The entry for one attempt of (delivery id, event id, event type).
    /// Its id is nil until `Store::append_log` gives it one.
    pub fn of_attempt(
        (delivery_id, event_id, event): (Uuid, Uuid, &Arc<str>),
        attempt: u32,
        outcome: Outcome,
        r: AttemptResult,
        next_attempt_at: Option<u64>,
    ) -> LogEntry {
        LogEntry {
            id: Uuid::nil(),
            delivery_id,
            event_id,
            event: event.clone(),
            attempt,
            outcome,
            status_code: r.status_code,
            latency_ms: r.latency_ms,
            response_body: r.response_body,
            truncated: r.truncated,
            error: r.error,
            request_headers: r.request_headers,
            attempted_at: r.attempted_at,
            next_attempt_at,
            simulation: false,
        }
    }
}

/// What one HTTP attempt came to, before it is judged.
#[derive(Debug, Clone, Default)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub response_body: String,
    pub truncated: bool,
    pub error: Option<AttemptError>,
    pub request_headers: Vec<Header>,
    pub attempted_at: u64,
    /// A `Retry-After` on 429/503, in ms.
    pub retry_after_ms: Option<u64>,
}

impl AttemptResult {
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The configured retry delays with jitter.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub schedule_ms: Vec<u64>,
    pub jitter: f64,
}

impl RetryPolicy {
    /// Delay before the next attempt once `attempts_made` have failed, or
    /// `None` when none is left. `unit` is a uniform sample in [0, 1) that
    /// picks the jitter; a `Retry-After` lengthens the wait, capped at the
    /// longest delay of the schedule.
    pub fn next_delay(
        &self,
        attempts_made: u32,
        unit: f64,
        retry_after_ms: Option<u64>,
    ) -> Option<u64> {
        let base = *self
            .schedule_ms
            .get(attempts_made.checked_sub(1)? as usize)?;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let jittered = (base as f64 * factor).round() as u64;
        let cap = self.schedule_ms.iter().copied().max().unwrap_or(0);
        Some(match retry_after_ms {
            Some(asked) => jittered.max(asked.min(cap)),
            None => jittered,
        })
    }
}

/// Reads `Retry-After` as seconds or an HTTP date, in ms from `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = httpdate_parse(value)?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(value).ok().or_else(|| {
        // IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT".
        let parts: Vec<&str> = value.split_whitespace().collect();
        if parts.len() != 6 || parts[5] != "GMT" {
            return None;
        }
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == parts[2])?
            + 1;
        let iso = format!("{}-{:02}-{:0>2}T{}Z", parts[3], month, parts[1], parts[4]);
        humantime::parse_rfc3339(&iso).ok()
    })
}

/// Keeps at most `limit` bytes of a response body, cut on a character
/// boundary; says whether anything was cut.
pub fn truncate_body(bytes: &[u8], limit: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= limit && bytes.len() <= limit {
        return (text.into_owned(), false);
    }
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule_ms: vec![5_000, 300_000, 1_800_000],
            jitter: 0.2,
        }
    }

    #[test]
    fn schedule_with_jitter_bounds() {
        let p = policy();
        assert_eq!(p.next_delay(1, 0.5, None), Some(5_000));
        assert_eq!(p.next_delay(1, 0.0, None), Some(4_000));
        assert!(p.next_delay(2, 0.999_999, None).unwrap() <= 360_000);
        assert_eq!(p.next_delay(3, 0.5, None), Some(1_800_000));
        assert_eq!(
            p.next_delay(4, 0.5, None),
            None,
            "four attempts is the last"
        );
        assert_eq!(p.next_delay(0, 0.5, None), None);
    }

    #[test]
    fn retry_after_lengthens_within_the_cap() {
        let p = policy();
        assert_eq!(p.next_delay(1, 0.5, Some(60_000)), Some(60_000));
        assert_eq!(p.next_delay(1, 0.5, Some(1_000)), Some(5_000));
        assert_eq!(p.next_delay(1, 0.5, Some(99_000_000)), Some(1_800_000));
    }

    #[test]
    fn retry_after_forms() {
        let now = humantime::parse_rfc3339("2015-10-21T07:27:00Z").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(60_000)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_body(b"hello", 10), ("hello".into(), false));
        assert_eq!(truncate_body("héllo".as_bytes(), 2), ("h".into(), true));
        assert_eq!(truncate_body(b"hello", 3), ("hel".into(), true));
    }
}
