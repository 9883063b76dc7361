//! The event-type catalog (SPEC §2): data from config, with the Trackelio
//! group switched by `catalog.trackelio`.

use crate::config::{Config, EventTypeConfig};

const TRACKELIO_GROUP: &str = "trackelio";

#[derive(Debug, Clone)]
pub struct Catalog {
    types: Vec<EventTypeConfig>,
}

impl Catalog {
    pub fn from_config(config: &Config) -> Catalog {
        let types = config
            .event_types()
            .into_iter()
            .filter(|t| t.group != TRACKELIO_GROUP || config.catalog.trackelio)
            .collect();
        Catalog { types }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.types.iter().any(|t| t.name == name)
    }

    pub fn types(&self) -> &[EventTypeConfig] {
        &self.types
    }

    /// Checks a subscription list: non-empty, each name known or `"*"`.
    /// Returns it without duplicates, in the order given.
    pub fn validate_subscription(&self, events: &[String]) -> Result<Vec<String>, String> {
        if events.is_empty() {
            return Err("must list at least one event type, or \"*\" for all".into());
        }
        let mut out: Vec<String> = Vec::new();
        for e in events {
            if e != "*" && !self.contains(e) {
                return Err(format!("{e:?} is not in the event-type catalog"));
            }
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        Ok(out)
    }
}
