//! The ingest envelope of the seeds: `{event, version, agent, timestamp,
//! data}` where `data` is an array of items or, for activity tracking, one
//! object, and every item names `organisation.organisationId`.

use serde_json::Value;
use uuid::Uuid;

/// What hookrelay needs to know about an event besides its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event: String,
    pub organisation_id: Uuid,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub simulation: bool,
}

/// Why an envelope was refused, with the field at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError {
        field,
        message: message.into(),
    }
}

pub fn parse_envelope(body: &Value) -> Result<Envelope, EnvelopeError> {
    let obj = body
        .as_object()
        .ok_or_else(|| err("body", "the event must be a JSON object"))?;
    let event = obj
        .get("event")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("event", "must be the event type name, a string"))?;
    let items: Vec<&Value> = match obj.get("data") {
        Some(Value::Array(items)) if !items.is_empty() => items.iter().collect(),
        Some(item @ Value::Object(_)) => vec![item],
        _ => {
            return Err(err(
                "data",
                "must be a non-empty array of items or one object",
            ))
        }
    };
    let mut organisation_id = None;
    for item in &items {
        let raw = item
            .pointer("/organisation/organisationId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                err(
                    "data.organisation.organisationId",
                    "every item must name its organisation",
                )
            })?;
        let id = Uuid::parse_str(raw).map_err(|_| {
            err(
                "data.organisation.organisationId",
                format!("{raw:?} is not a UUID"),
            )
        })?;
        if organisation_id.is_some_and(|first| first != id) {
            return Err(err(
                "data.organisation.organisationId",
                "all items of one event must belong to one organisation",
            ));
        }
        organisation_id = Some(id);
    }
    let first = items[0];
    let text = |ptr: &str| {
        first
            .pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(Envelope {
        event: event.to_string(),
        organisation_id: organisation_id.expect("items is non-empty"),
        user_id: text("/user/userId"),
        team_id: text("/team/teamId"),
        simulation: obj
            .get("simulation")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_array_and_object_data() {
        let org = Uuid::new_v4();
        let body = json!({"event": "e", "data": [{"organisation": {"organisationId": org.to_string()},
            "user": {"userId": "u1"}, "team": {"teamId": "t1"}}]});
        let env = parse_envelope(&body).unwrap();
        assert_eq!(
            (env.organisation_id, env.user_id.as_deref()),
            (org, Some("u1"))
        );
        let body =
            json!({"event": "e", "data": {"organisation": {"organisationId": org.to_string()}}});
        assert_eq!(parse_envelope(&body).unwrap().organisation_id, org);
    }

    #[test]
    fn refuses_mixed_and_missing_organisations() {
        let item = |id: Uuid| json!({"organisation": {"organisationId": id.to_string()}});
        let mixed = json!({"event": "e", "data": [item(Uuid::new_v4()), item(Uuid::new_v4())]});
        assert!(parse_envelope(&mixed)
            .unwrap_err()
            .message
            .contains("one organisation"));
        let missing = json!({"event": "e", "data": [{"user": {}}]});
        assert_eq!(
            parse_envelope(&missing).unwrap_err().field,
            "data.organisation.organisationId"
        );
        assert_eq!(
            parse_envelope(&json!({"data": []})).unwrap_err().field,
            "event"
        );
        assert_eq!(parse_envelope(&json!([1])).unwrap_err().field, "body");
    }
}
