//! The broadcaster feeds the live WebSocket sessions (SPEC §8). Each event
//! is serialised once; sessions get it through their bounded mailboxes
//! with `try_send`, so a stalled session never slows the broadcaster or
//! anyone else. Fan-out spends from a frame budget (`feed_budget`): an
//! event that does not fit is shed, counted per organisation, and the
//! organisation's newest shed event follows as soon as the budget allows,
//! preceded by `lagged` to each session that missed some. It also keeps the
//! recent events for the `hello` snapshot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;
use uuid::Uuid;

use super::feed_budget::FrameBudget;
use crate::domain::organisation::Caller;
use crate::metrics::Metrics;

/// A session that stays full this long is evicted.
const EVICT_AFTER: Duration = Duration::from_secs(5);
/// Payloads larger than this are not kept for the `hello` snapshot (they
/// are still sent live): the recent store holds `null` in their place, so a
/// few screenshots cannot pin megabytes per organisation.
pub const RECENT_PAYLOAD_LIMIT: usize = 256 * 1024;
/// How soon shed events are looked at again.
const TRAILING_TICK: Duration = Duration::from_millis(10);

/// An ingested event as the feed shows it.
#[derive(Clone, Debug)]
pub struct FeedEvent {
    pub id: Uuid,
    pub event: String,
    pub received_at: u64,
    pub organisation: (Uuid, String),
    pub reseller: Option<(Uuid, String)>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// The canonical body, embedded as is.
    pub payload: actix_web::web::Bytes,
}

impl FeedEvent {
    pub fn from_stored(
        e: &crate::storage::StoredEvent,
        organisation: (Uuid, String),
        reseller: Option<(Uuid, String)>,
        payload: actix_web::web::Bytes,
    ) -> FeedEvent {
        FeedEvent {
            id: e.id,
            event: e.event.clone(),
            received_at: e.received_at,
            organisation,
            reseller,
            user_id: e.user_id.clone(),
            team_id: e.team_id.clone(),
            payload,
        }
    }

    /// The `{"type":"event",...}` frame; the payload is spliced in without
    /// re-encoding it.
    pub fn frame(&self) -> String {
        let named = |(id, name): &(Uuid, String)| json!({"id": id, "name": name});
        let head = json!({
            "type": "event",
            "id": self.id,
            "event": self.event,
            "received_at": crate::clock::iso(self.received_at),
            "organisation": named(&self.organisation),
            "reseller": self.reseller.as_ref().map(named),
            "user_id": self.user_id,
            "team_id": self.team_id,
        })
        .to_string();
        let payload = String::from_utf8_lossy(&self.payload);
        format!("{},\"payload\":{payload}}}", &head[..head.len() - 1])
    }

    fn visible_to(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Admin => true,
            Caller::Org(me) => {
                self.organisation.0 == me.id || self.reseller.as_ref().is_some_and(|r| r.0 == me.id)
            }
        }
    }
}

/// A text frame for one session.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Frame {
    /// The JSON text, shared by every session it goes to.
    pub text: Arc<str>,
}

/// A new session; answers with its id and the `hello` frame.
#[derive(Message)]
#[rtype(result = "(usize, String)")]
pub struct Connect {
    /// Where frames go; its mailbox capacity is the session's buffer.
    pub recipient: Recipient<Frame>,
    /// Who is watching.
    pub caller: Caller,
    /// The event types the caller's webhooks subscribe to.
    pub event_types: Vec<String>,
    /// Set by the broadcaster when it gives up on the session.
    pub evicted: Arc<AtomicBool>,
    /// Closes the session at shutdown.
    pub closer: Recipient<GoingAway>,
}

/// The server is stopping: close with a going-away frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GoingAway;

/// Closes every session (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The id `Connect` returned.
    pub id: usize,
}

/// Narrow a session to these event types.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// The session.
    pub id: usize,
    /// Event type names to receive.
    pub events: Vec<String>,
}

/// Fan an ingested (durable) event out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    /// The event.
    pub event: FeedEvent,
}

/// Sessions connected and events dropped for lag, for tests and metrics.
#[derive(Message)]
#[rtype(result = "FeedStats")]
pub struct Stats;

#[derive(Debug, Clone, Copy, Default, MessageResponse)]
pub struct FeedStats {
    pub sessions: usize,
    pub dropped: u64,
    pub evicted: u64,
}

struct Session {
    recipient: Recipient<Frame>,
    caller: Caller,
    only: Option<HashSet<String>>,
    dropped: u64,
    full_since: Option<Instant>,
    evicted: Arc<AtomicBool>,
    closer: Recipient<GoingAway>,
}

impl Session {
    fn wants(&self, event_type: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(event_type))
    }
}

/// One organisation's events that were not sent live.
struct Shed {
    /// How many, by event type (sessions may filter by type).
    by_type: HashMap<String, u64>,
    /// The newest, sent when the budget allows.
    latest: Arc<FeedEvent>,
    /// When the first was shed: the longest-waiting organisation is served
    /// first.
    since: Instant,
}

pub struct Broadcaster {
    sessions: HashMap<usize, Session>,
    next_id: usize,
    /// Sessions per watching organisation, and admin sessions: how many may
    /// see an event, without walking every session.
    watchers: HashMap<Uuid, usize>,
    admins: usize,
    budget: FrameBudget,
    shed: HashMap<Uuid, Shed>,
    trailing_scheduled: bool,
    /// Per organisation, per event type, the newest events first.
    recent: HashMap<Uuid, HashMap<String, VecDeque<Arc<FeedEvent>>>>,
    recent_per_type: usize,
    pool_size: usize,
    stats: FeedStats,
    metrics: Arc<Metrics>,
}

impl Broadcaster {
    pub fn new(
        config: &crate::config::FeedConfig,
        history: Vec<FeedEvent>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (recent_per_type, pool_size) = (config.recent_per_type, config.pool_size);
        let mut b = Broadcaster {
            sessions: HashMap::new(),
            next_id: 0,
            watchers: HashMap::new(),
            admins: 0,
            budget: FrameBudget::new(config.max_frames_per_s, Instant::now()),
            shed: HashMap::new(),
            trailing_scheduled: false,
            recent: HashMap::new(),
            recent_per_type,
            pool_size,
            stats: FeedStats::default(),
            metrics,
        };
        // History comes newest first; remember it oldest first.
        for e in history.into_iter().rev() {
            b.remember(Arc::new(e));
        }
        b
    }

    fn remember(&mut self, mut e: Arc<FeedEvent>) {
        if e.payload.len() > RECENT_PAYLOAD_LIMIT {
            let mut slim = (*e).clone();
            slim.payload = actix_web::web::Bytes::from_static(b"null");
            e = Arc::new(slim);
        }
        let list = self
            .recent
            .entry(e.organisation.0)
            .or_default()
            .entry(e.event.clone())
            .or_default();
        list.push_front(e);
        list.truncate(self.recent_per_type);
    }

    /// The newest visible events: at most `recent_per_type` per type and
    /// `pool_size` in all, newest first.
    fn snapshot(&self, caller: &Caller) -> Vec<Arc<FeedEvent>> {
        let mut all: Vec<Arc<FeedEvent>> = self
            .recent
            .values()
            .flat_map(|types| types.values().flatten())
            .filter(|e| e.visible_to(caller))
            .cloned()
            .collect();
        all.sort_by(|a, b| b.received_at.cmp(&a.received_at).then(b.id.cmp(&a.id)));
        let mut per_type: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for e in &all {
            let n = per_type.entry(e.event.as_str()).or_default();
            if *n < self.recent_per_type && out.len() < self.pool_size {
                *n += 1;
                out.push(e.clone());
            }
        }
        out
    }

    fn hello(&self, caller: &Caller, event_types: &[String]) -> String {
        let recent: Vec<String> = self.snapshot(caller).iter().map(|e| e.frame()).collect();
        format!(
            "{{\"type\":\"hello\",\"event_types\":{},\"recent\":[{}]}}",
            serde_json::to_string(event_types).unwrap_or_else(|_| "[]".into()),
            recent.join(",")
        )
    }

    /// Delivers any pending `lagged` notice and then `frame` (if any) to
    /// one session; false when the session must go.
    fn offer(session: &mut Session, frame: Option<&Arc<str>>, stats: &mut FeedStats) -> bool {
        if session.dropped > 0 {
            let lagged: Arc<str> =
                format!("{{\"type\":\"lagged\",\"dropped\":{}}}", session.dropped).into();
            match session.recipient.try_send(Frame { text: lagged }) {
                Ok(()) => {
                    session.dropped = 0;
                    session.full_since = None;
                }
                Err(SendError::Closed(_)) => return false,
                Err(SendError::Full(_)) => {}
            }
        }
        let Some(frame) = frame else {
            return true;
        };
        if session.dropped == 0 {
            match session.recipient.try_send(Frame {
                text: frame.clone(),
            }) {
                Ok(()) => return true,
                Err(SendError::Closed(_)) => return false,
                Err(SendError::Full(_)) => {}
            }
        }
        session.dropped += 1;
        stats.dropped += 1;
        let since = *session.full_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= EVICT_AFTER {
            session.evicted.store(true, Ordering::SeqCst);
            stats.evicted += 1;
            return false;
        }
        true
    }
}

/// Session bookkeeping and the budgeted fan-out.
impl Broadcaster {
    fn add_session(&mut self, id: usize, session: Session) {
        match &session.caller {
            Caller::Admin => self.admins += 1,
            Caller::Org(o) => *self.watchers.entry(o.id).or_default() += 1,
        }
        self.sessions.insert(id, session);
        self.metrics.feed_sessions.set(self.sessions.len() as i64);
    }

    fn remove_session(&mut self, id: usize) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        match &session.caller {
            Caller::Admin => self.admins -= 1,
            Caller::Org(o) => {
                if let Some(n) = self.watchers.get_mut(&o.id) {
                    *n -= 1;
                    if *n == 0 {
                        self.watchers.remove(&o.id);
                    }
                }
            }
        }
        self.metrics.feed_sessions.set(self.sessions.len() as i64);
    }

    /// Frames that sending `e` takes: one per session that may see it
    /// (before type filters), two when they are also told they lagged.
    fn cost(&self, e: &FeedEvent) -> usize {
        let of = |id: &Uuid| self.watchers.get(id).copied().unwrap_or(0);
        let viewers =
            self.admins + of(&e.organisation.0) + e.reseller.as_ref().map_or(0, |r| of(&r.0));
        let lagged = self.shed.contains_key(&e.organisation.0);
        viewers * (1 + usize::from(lagged))
    }

    /// Sends `event` live if the budget allows; otherwise sheds it.
    fn publish(&mut self, event: Arc<FeedEvent>, ctx: &mut Context<Self>) {
        let cost = self.cost(&event);
        if cost == 0 {
            return;
        }
        // While anything waits, new events queue behind it, so a busy
        // organisation cannot take every refilled frame from quieter ones.
        if self.shed.is_empty() && self.budget.try_take(cost, Instant::now()) {
            return self.fan_out(&event, HashMap::new());
        }
        let shed = self
            .shed
            .entry(event.organisation.0)
            .or_insert_with(|| Shed {
                by_type: HashMap::new(),
                latest: event.clone(),
                since: Instant::now(),
            });
        *shed.by_type.entry(event.event.clone()).or_default() += 1;
        shed.latest = event;
        self.schedule_trailing(ctx);
    }

    /// Sends each organisation's newest shed event once the budget allows,
    /// so every session catches up to the latest and learns what it missed.
    fn schedule_trailing(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.trailing_scheduled, true) {
            return;
        }
        ctx.run_later(TRAILING_TICK, |act, ctx| {
            act.trailing_scheduled = false;
            let mut waiting: Vec<(Instant, Uuid)> =
                act.shed.iter().map(|(org, s)| (s.since, *org)).collect();
            waiting.sort();
            for (_, org) in waiting {
                let latest = act.shed[&org].latest.clone();
                let cost = act.cost(&latest);
                if cost > 0 && !act.budget.try_take(cost, Instant::now()) {
                    break;
                }
                let mut missed = act.shed.remove(&org).map(|s| s.by_type);
                if let Some(n) = missed.as_mut().and_then(|m| m.get_mut(&latest.event)) {
                    *n -= 1; // sent now, not missed
                }
                act.fan_out(&latest, missed.unwrap_or_default());
            }
            if !act.shed.is_empty() {
                act.schedule_trailing(ctx);
            }
        });
    }

    /// Sends `event` to every session that may see it, each first told how
    /// many of `missed` (shed events of the organisation, by type) it
    /// would have received.
    fn fan_out(&mut self, event: &FeedEvent, missed: HashMap<String, u64>) {
        let frame: Arc<str> = event.frame().into();
        let dropped_before = self.stats.dropped;
        let mut gone = Vec::new();
        for (id, s) in self.sessions.iter_mut() {
            if !event.visible_to(&s.caller) {
                continue;
            }
            let n: u64 = missed
                .iter()
                .filter(|(t, _)| s.wants(t))
                .map(|(_, n)| n)
                .sum();
            s.dropped += n;
            self.stats.dropped += n;
            let frame = s.wants(&event.event).then_some(&frame);
            if !Self::offer(s, frame, &mut self.stats) {
                gone.push(*id);
            }
        }
        for id in gone {
            self.remove_session(id);
        }
        self.metrics
            .feed_dropped
            .inc_by(self.stats.dropped - dropped_before);
    }
}

impl Actor for Broadcaster {
    type Context = Context<Self>;
}

impl Handler<Connect> for Broadcaster {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> Self::Result {
        let id = self.next_id;
        self.next_id += 1;
        let hello = self.hello(&msg.caller, &msg.event_types);
        self.add_session(
            id,
            Session {
                recipient: msg.recipient,
                caller: msg.caller,
                only: None,
                dropped: 0,
                full_since: None,
                evicted: msg.evicted,
                closer: msg.closer,
            },
        );
        MessageResult((id, hello))
    }
}

impl Handler<Disconnect> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.remove_session(msg.id);
    }
}

impl Handler<Subscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if let Some(s) = self.sessions.get_mut(&msg.id) {
            s.only = Some(msg.events.into_iter().collect());
        }
    }
}

impl Handler<Publish> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        let event = Arc::new(msg.event);
        self.remember(event.clone());
        self.publish(event, ctx);
    }
}

impl Handler<CloseAll> for Broadcaster {
    type Result = ();

    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) {
        for (_, s) in self.sessions.drain() {
            s.closer.do_send(GoingAway);
        }
        self.watchers.clear();
        self.admins = 0;
        self.metrics.feed_sessions.set(0);
    }
}

impl Handler<Stats> for Broadcaster {
    type Result = FeedStats;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> FeedStats {
        FeedStats {
            sessions: self.sessions.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(org: Uuid, kind: &str, at: u64) -> FeedEvent {
        FeedEvent {
            id: Uuid::now_v7(),
            event: kind.into(),
            received_at: at,
            organisation: (org, "Acme \"Ltd\"".into()),
            reseller: None,
            user_id: Some("u".into()),
            team_id: None,
            payload: actix_web::web::Bytes::from_static(br#"{"a":[1,2]}"#),
        }
    }

    #[test]
    fn frame_is_json_with_the_payload_spliced_in() {
        let e = event(Uuid::new_v4(), "x", 0);
        let v: serde_json::Value = serde_json::from_str(&e.frame()).unwrap();
        assert_eq!(v["payload"]["a"][1], 2);
        assert_eq!(v["organisation"]["name"], "Acme \"Ltd\"");
        assert_eq!(v["reseller"], serde_json::Value::Null);
    }

    #[test]
    fn large_payloads_are_not_kept_for_the_snapshot() {
        let mut big = event(Uuid::new_v4(), "x", 1);
        big.payload =
            actix_web::web::Bytes::from(format!("\"{}\"", "a".repeat(RECENT_PAYLOAD_LIMIT)));
        let b = Broadcaster::new(&Default::default(), vec![big], Arc::new(Metrics::new()));
        let snap = b.snapshot(&Caller::Admin);
        let v: serde_json::Value = serde_json::from_str(&snap[0].frame()).unwrap();
        assert!(v["payload"].is_null());
    }

    #[test]
    fn snapshot_caps_per_type_and_in_all() {
        let org = Uuid::new_v4();
        let mut history = Vec::new();
        for i in 0..15u64 {
            for kind in ["a", "b", "c", "d"] {
                history.push(event(org, kind, i));
            }
        }
        history.reverse(); // newest first, as the store gives it
        let b = Broadcaster::new(&Default::default(), history, Arc::new(Metrics::new()));
        let snap = b.snapshot(&Caller::Admin);
        assert_eq!(snap.len(), 30);
        assert!(snap
            .windows(2)
            .all(|w| w[0].received_at >= w[1].received_at));
        let other = Caller::Org(crate::domain::organisation::Organisation {
            id: Uuid::new_v4(),
            name: "o".into(),
            kind: crate::domain::organisation::OrgKind::Organisation,
            reseller_id: None,
            created_at: 0,
        });
        assert!(b.snapshot(&other).is_empty());
    }
}
