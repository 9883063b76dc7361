//! The ingest envelope of the seeds: `{event, version, agent, timestamp,
//! data}` where `data` is an array of items or, for activity tracking, one
//! object, and every item names `organisation.organisationId`.

use serde::Deserialize;
use serde_json::value::RawValue;
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
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError {
        field: field.into(),
        message: message.into(),
    }
}

/// The top level of an event; other fields are skipped unread.
#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    simulation: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    organisation: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    team: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ids<'a> {
    #[serde(borrow)]
    organisation_id: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    team_id: Option<&'a RawValue>,
}

/// `raw` read as `T` if it is an object. The check comes first because a
/// derived struct would also accept an array, field by field.
fn object<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Option<T> {
    raw.get()
        .starts_with('{')
        .then(|| serde_json::from_str(raw.get()).ok())?
}

fn string(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(raw?.get()).ok()
}

/// `item.<parent>.<id>` as a string, where `pick` chooses the id.
fn id_in<'a>(
    parent: Option<&'a RawValue>,
    pick: fn(Ids<'a>) -> Option<&'a RawValue>,
) -> Option<String> {
    string(object(parent?).and_then(pick))
}

/// Reads the envelope from a canonical body (see `canonical.rs`), which
/// has no repeated keys. Fields are read as `Value::as_str` would: a field
/// of another type counts as missing.
pub fn parse_envelope(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let not_object = || err("body", "the event must be a JSON object");
    let top: Top = match body.first() {
        Some(b'{') => serde_json::from_slice(body).map_err(|_| not_object())?,
        _ => return Err(not_object()),
    };
    let event = string(top.event)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("event", "must be the event type name, a string"))?;
    let (items, data_is_array): (Vec<&RawValue>, bool) =
        match top.data.map(|d| (d.get().as_bytes()[0], d)) {
            Some((b'[', d)) => (serde_json::from_str(d.get()).unwrap_or_default(), true),
            Some((b'{', d)) => (vec![d], false),
            _ => (Vec::new(), false),
        };
    if items.is_empty() {
        return Err(err(
            "data",
            "must be a non-empty array of items or one object",
        ));
    }
    let items: Vec<Option<Item>> = items.into_iter().map(object).collect();
    // An array's items are named by index, so a producer can find the bad one.
    let field = |i: usize| {
        if data_is_array {
            format!("data[{i}].organisation.organisationId")
        } else {
            "data.organisation.organisationId".to_string()
        }
    };
    let mut organisation_id = None;
    for (i, item) in items.iter().enumerate() {
        let raw = item
            .as_ref()
            .and_then(|i| id_in(i.organisation, |ids| ids.organisation_id))
            .ok_or_else(|| err(field(i), "every item must name its organisation"))?;
        let id =
            Uuid::parse_str(&raw).map_err(|_| err(field(i), format!("{raw:?} is not a UUID")))?;
        if organisation_id.is_some_and(|first| first != id) {
            return Err(err(
                field(i),
                "all items of one event must belong to one organisation",
            ));
        }
        organisation_id = Some(id);
    }
    let first = items[0]
        .as_ref()
        .expect("every item named its organisation");
    Ok(Envelope {
        event,
        organisation_id: organisation_id.expect("items is non-empty"),
        user_id: id_in(first.user, |ids| ids.user_id),
        team_id: id_in(first.team, |ids| ids.team_id),
        simulation: top
            .simulation
            .and_then(|s| serde_json::from_str(s.get()).ok())
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse_envelope(body: &Value) -> Result<Envelope, EnvelopeError> {
        super::parse_envelope(&serde_json::to_vec(body).unwrap())
    }

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
            "data[0].organisation.organisationId"
        );
        let second = json!({"event": "e", "data": [item(Uuid::new_v4()), 5]});
        assert_eq!(
            parse_envelope(&second).unwrap_err().field,
            "data[1].organisation.organisationId"
        );
        let one = json!({"event": "e", "data": {"organisation": {"organisationId": "x"}}});
        assert_eq!(
            parse_envelope(&one).unwrap_err().field,
            "data.organisation.organisationId"
        );
        assert_eq!(
            parse_envelope(&json!({"data": []})).unwrap_err().field,
            "event"
        );
        assert_eq!(parse_envelope(&json!([1])).unwrap_err().field, "body");
    }

    #[test]
    fn fields_of_another_type_count_as_missing() {
        let org = Uuid::new_v4().to_string();
        let org_field = "data[0].organisation.organisationId";
        // Arrays are not read field by field as a derived struct would.
        let cases = [
            (
                json!({"event": "e", "data": [[{"organisationId": org}]]}),
                org_field,
            ),
            (
                json!({"event": "e", "data": [{"organisation": [org]}]}),
                org_field,
            ),
            (
                json!({"event": "e", "data": [{"organisation": {"organisationId": 1}}]}),
                org_field,
            ),
            (json!({"event": "e", "data": "x"}), "data"),
            (json!({"event": 1, "data": {}}), "event"),
            (
                json!(["e", [{"organisation": {"organisationId": org}}]]),
                "body",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse_envelope(&body).unwrap_err().field, field, "{body}");
        }
        let body = json!({"event": "e\"1", "simulation": true, "data": [{
            "organisation": {"organisationId": org}, "user": {"userId": 7}, "team": {"teamId": "t\n"}}]});
        let env = parse_envelope(&body).unwrap();
        assert_eq!(env.event, "e\"1");
        assert_eq!((env.user_id, env.team_id.as_deref()), (None, Some("t\n")));
        assert!(env.simulation);
    }
}
