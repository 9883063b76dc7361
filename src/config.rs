//! Typed settings: `config.toml`, `HOOKRELAY_<SECTION>__<KEY>` environment
//! overrides, and the validation that stops start-up on a bad value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::webhook::SignatureScheme;

/// Everything hookrelay can be told; every field has the default that
/// `config.toml` documents.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub auth: AuthConfig,
    pub delivery: DeliveryConfig,
    pub feed: FeedConfig,
    pub retention: RetentionConfig,
    pub limits: LimitsConfig,
    pub catalog: CatalogConfig,
    pub event_types: Vec<EventTypeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub bind: String,
    /// 0 means one worker per core.
    pub workers: usize,
    pub max_body_bytes: usize,
    /// Bytes of event and simulation bodies held at once, over all requests.
    pub max_body_bytes_in_flight: usize,
    /// Serve /metrics without the admin key.
    pub metrics_public: bool,
    /// Seconds a SIGINT/SIGTERM shutdown waits for in-flight work.
    pub shutdown_grace_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            workers: 0,
            max_body_bytes: 52_428_800,
            max_body_bytes_in_flight: 268_435_456,
            metrics_public: false,
            shutdown_grace_s: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub timeout_ms: u64,
    pub retry_schedule_ms: Vec<u64>,
    pub jitter: f64,
    pub max_in_flight: usize,
    pub response_body_limit: usize,
    pub disable_after_hours: f64,
    pub allow_private_targets: bool,
    pub default_signature_scheme: SignatureScheme,
    pub connection_lifetime_s: u64,
    /// Deliveries held in memory over all webhooks, and handed to their
    /// actors (see `actors::held_budget`).
    pub max_held_deliveries: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout_ms: 15_000,
            retry_schedule_ms: vec![
                5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
            ],
            jitter: 0.2,
            max_in_flight: 8,
            response_body_limit: 4096,
            disable_after_hours: 120.0,
            allow_private_targets: false,
            default_signature_scheme: SignatureScheme::Trackpilots,
            // awc's own default connection lifetime.
            connection_lifetime_s: 75,
            max_held_deliveries: 262_144,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    pub recent_per_type: usize,
    pub pool_size: usize,
    pub session_buffer: usize,
    pub ticket_ttl_s: u64,
    pub max_frames_per_s: u64,
    /// Sessions open plus tickets unused, per API key.
    pub max_sessions_per_key: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            recent_per_type: 10,
            pool_size: 30,
            session_buffer: 256,
            ticket_ttl_s: 60,
            max_frames_per_s: 10_000,
            max_sessions_per_key: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Fractions are allowed (0.5 is twelve hours).
    pub days: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 30.0 }
    }
}

/// Per-tenant quotas, so that one tenant cannot use up what all share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// 0: no limit. Each webhook costs a delivery actor (a few KB) and a
    /// queued delivery per event it subscribes to.
    pub webhooks_per_organisation: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            webhooks_per_organisation: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Switches on the event types whose group is `trackelio`.
    pub trackelio: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    pub name: String,
    pub group: String,
    #[serde(default)]
    pub description: String,
}

/// Why the configuration was refused; always names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

const ENV_PREFIX: &str = "HOOKRELAY_";

impl Config {
    /// Reads `path` (or `./config.toml` when it exists and no path is
    /// given), then applies the `HOOKRELAY_*` variables of `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match path {
            Some(p) => (read(p)?, p.display().to_string()),
            None if Path::new("config.toml").exists() => {
                (read(Path::new("config.toml"))?, "config.toml".to_string())
            }
            None => (String::new(), "(defaults)".to_string()),
        };
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: origin.clone(),
            message: e.to_string(),
        })?;
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin,
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from a TOML string alone (tests and `--check-config`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "(inline)".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as TOML, the admin key masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.auth.admin_key.is_some() {
            shown.auth.admin_key = Some("********".into());
        }
        shown.event_types = self.event_types();
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .bind
            .parse()
            .map_err(|_| invalid("server.bind", "must be an address such as 127.0.0.1:8080"))
    }

    pub fn workers(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The configured catalog, or the built-in one when the file lists none.
    pub fn event_types(&self) -> Vec<EventTypeConfig> {
        if self.event_types.is_empty() {
            default_event_types()
        } else {
            self.event_types.clone()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        let d = &self.delivery;
        if d.timeout_ms == 0 {
            return Err(invalid("delivery.timeout_ms", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&d.jitter) {
            return Err(invalid("delivery.jitter", "must be in [0, 1)"));
        }
        if d.max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        if d.max_held_deliveries == 0 {
            return Err(invalid(
                "delivery.max_held_deliveries",
                "must be at least 1",
            ));
        }
        if d.connection_lifetime_s == 0 {
            return Err(invalid(
                "delivery.connection_lifetime_s",
                "must be at least 1",
            ));
        }
        if !(d.disable_after_hours > 0.0 && d.disable_after_hours.is_finite()) {
            return Err(invalid(
                "delivery.disable_after_hours",
                "must be a positive number",
            ));
        }
        if !(self.retention.days > 0.0 && self.retention.days.is_finite()) {
            return Err(invalid("retention.days", "must be a positive number"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.max_body_bytes_in_flight < self.server.max_body_bytes {
            return Err(invalid(
                "server.max_body_bytes_in_flight",
                "must be at least server.max_body_bytes, or no body that large could be taken",
            ));
        }
        if self.feed.session_buffer == 0 || self.feed.pool_size == 0 {
            return Err(invalid(
                "feed",
                "session_buffer and pool_size must be at least 1",
            ));
        }
        if matches!(&self.auth.admin_key, Some(k) if k.len() < 16) {
            return Err(invalid("auth.admin_key", "must be at least 16 characters"));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.event_types {
            if t.name.is_empty() || t.name == "*" || t.name.len() > 100 {
                return Err(invalid(
                    "event_types.name",
                    "must be 1-100 characters and not \"*\"",
                ));
            }
            if !seen.insert(&t.name) {
                return Err(invalid(
                    "event_types.name",
                    &format!("{} is listed twice", t.name),
                ));
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(key: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Writes every `HOOKRELAY_SECTION__KEY` variable into `table`, typed like
/// the key's default so that `"100,200"` becomes a list of integers.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialise");
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let env_err = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let (section, key) = rest
            .split_once("__")
            .map(|(s, k)| (s.to_ascii_lowercase(), k.to_ascii_lowercase()))
            .ok_or_else(|| env_err("expected HOOKRELAY_<SECTION>__<KEY>".into()))?;
        let known = (section == "auth" && key == "admin_key")
            || defaults
                .get(&section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(&key));
        if !known {
            return Err(env_err(format!(
                "unknown configuration key {section}.{key}"
            )));
        }
        let default = defaults
            .get(&section)
            .and_then(|s| s.get(&key))
            .cloned()
            .unwrap_or(toml::Value::String(String::new()));
        let value = coerce(&raw, &default).map_err(env_err)?;
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| env_err("section is not a table in the config file".into()))?
            .insert(key, value);
    }
    Ok(())
}

fn coerce(raw: &str, like: &toml::Value) -> Result<toml::Value, String> {
    use toml::Value as V;
    let raw = raw.trim();
    Ok(match like {
        V::Integer(_) => V::Integer(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not an integer"))?,
        ),
        V::Float(_) => V::Float(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        V::Boolean(_) => V::Boolean(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{raw:?} is not true or false")),
        }),
        V::Array(items) => {
            let element = items.first().cloned().unwrap_or(V::String(String::new()));
            if raw.is_empty() {
                return Ok(V::Array(Vec::new())); // an empty list
            }
            // An empty item ("1,,2", "1,2,") is a typo, not a value to skip.
            V::Array(
                raw.split(',')
                    .map(|p| match p.trim() {
                        "" => Err(format!("{raw:?} has an empty item")),
                        p => coerce(p, &element),
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => V::String(raw.to_string()),
    })
}

/// The catalog hookrelay ships: the Trackpilots desktop events, and the
/// Trackelio events (off until `catalog.trackelio = true`).
pub fn default_event_types() -> Vec<EventTypeConfig> {
    let desktop = [
        (
            "desktop.app_tracking.captured",
            "App or website usage tracked on an employee's desktop",
        ),
        (
            "desktop.screenshot_tracking.captured",
            "Screenshot captured from an employee's desktop",
        ),
        (
            "desktop.activity_tracking.captured",
            "Employee switched between Work Mode and Privacy Mode",
        ),
    ];
    let trackelio = [
        ("post.created", "A new post was submitted"),
        ("post.status_changed", "A post's status was updated"),
        ("post.assigned", "A post was assigned to a team member"),
        ("comment.created", "A comment was added to a post"),
        ("nps.submitted", "An NPS response was collected"),
        ("csat.submitted", "A CSAT response was collected"),
        (
            "conversation.completed",
            "A messenger conversation was resolved",
        ),
    ];
    let make = |group: &str, (name, description): (&str, &str)| EventTypeConfig {
        name: name.into(),
        group: group.into(),
        description: description.into(),
    };
    desktop
        .into_iter()
        .map(|t| make("desktop", t))
        .chain(trackelio.into_iter().map(|t| make("trackelio", t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_are_typed_like_the_defaults() {
        let c = Config::load(
            Some(Path::new("config.toml")),
            env(&[
                ("HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS", "100,200,400"),
                ("HOOKRELAY_DELIVERY__DISABLE_AFTER_HOURS", "0.001"),
                ("HOOKRELAY_DELIVERY__ALLOW_PRIVATE_TARGETS", "true"),
                ("HOOKRELAY_AUTH__ADMIN_KEY", "0123456789abcdef0123"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.delivery.retry_schedule_ms, vec![100, 200, 400]);
        assert_eq!(c.delivery.disable_after_hours, 0.001);
        assert!(c.delivery.allow_private_targets);
        assert_eq!(c.auth.admin_key.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn unknown_env_key_is_named() {
        let e = Config::load(None, env(&[("HOOKRELAY_DELIVERY__NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("HOOKRELAY_DELIVERY__NOPE"), "{e}");
        let e = Config::load(None, env(&[("HOOKRELAY_DELIVERY__TIMEOUT_MS", "soon")])).unwrap_err();
        assert!(e.to_string().contains("TIMEOUT_MS"), "{e}");
        for typo in ["1,,2", "1,2,", ","] {
            let e = Config::load(
                None,
                env(&[("HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS", typo)]),
            )
            .unwrap_err();
            assert!(e.to_string().contains("empty item"), "{typo}: {e}");
        }
        let none = Config::load(None, env(&[("HOOKRELAY_DELIVERY__RETRY_SCHEDULE_MS", " ")]));
        assert_eq!(none.unwrap().delivery.retry_schedule_ms, Vec::<u64>::new());
    }

    #[test]
    fn unknown_and_bad_file_keys_are_named() {
        let e = Config::from_toml("[server]\nbindd = \"x\"").unwrap_err();
        assert!(e.to_string().contains("bindd"), "{e}");
        let e = Config::from_toml("[delivery]\njitter = 3.0").unwrap_err();
        assert!(e.to_string().contains("delivery.jitter"), "{e}");
        let e = Config::from_toml("[server]\nbind = \"nowhere\"").unwrap_err();
        assert!(e.to_string().contains("server.bind"), "{e}");
        let e = Config::from_toml("[delivery]\nconnection_lifetime_s = 0").unwrap_err();
        assert!(
            e.to_string().contains("delivery.connection_lifetime_s"),
            "{e}"
        );
        let e = Config::from_toml("[delivery]\nmax_held_deliveries = 0").unwrap_err();
        assert!(
            e.to_string().contains("delivery.max_held_deliveries"),
            "{e}"
        );
        let e = Config::from_toml("[retention]\ndays = 0").unwrap_err();
        assert!(e.to_string().contains("retention.days"), "{e}");
        let half = Config::from_toml("[retention]\ndays = 0.5").unwrap();
        assert_eq!(half.retention.days, 0.5);
        // The body budget must hold at least the largest body.
        let e =
            Config::from_toml("[server]\nmax_body_bytes = 4096\nmax_body_bytes_in_flight = 2048")
                .unwrap_err();
        assert!(
            e.to_string().contains("server.max_body_bytes_in_flight"),
            "{e}"
        );
        let even = "[server]\nmax_body_bytes = 4096\nmax_body_bytes_in_flight = 4096";
        assert!(Config::from_toml(even).is_ok());
    }

    #[test]
    fn shipped_config_file_equals_the_defaults() {
        let shipped = Config::load(Some(Path::new("config.toml")), Vec::new()).unwrap();
        let defaults = Config::default();
        assert_eq!(
            toml::to_string(&Config {
                event_types: vec![],
                ..shipped.clone()
            })
            .unwrap(),
            toml::to_string(&defaults).unwrap()
        );
        assert_eq!(shipped.event_types(), default_event_types());
    }
}
