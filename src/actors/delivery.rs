//! One actor per webhook. It mirrors the webhook's sled queue in memory,
//! sends due deliveries (up to `max_in_flight` at once, or one at a time in
//! event order when the webhook is `ordered`), records every attempt,
//! schedules retries, and disables the webhook after sustained failure.
//!
//! A first attempt arrives from ingest durable only through its event's
//! record (`only_in_event`); the actor settles it once it is judged, and
//! moves it to the sled queue if it must wait: for a retry, while the
//! webhook cannot be delivered to, for longer than `SPILL_AFTER_MS`, at
//! shutdown or before a restart. A delivery leaves the sled queue only
//! once it is delivered or has used every attempt, and its last entry is
//! written (by the log writer, see `log_buffer.rs`). So a crash or a
//! restart of this actor re-sends whatever was in flight: at least once.
//!
//! A backlog stays in sled, not in memory (about 400 bytes a delivery):
//! - the actor holds at most its window of deliveries, the oldest, and
//!   reads more, in event order, as those drain (see `held_budget.rs`);
//! - a stored retry not due for a while (`PARK_AFTER_MS`) is parked:
//!   indexed by its due time in sled (see `storage/queue.rs`), not held,
//!   and taken back when due. An endpoint failing for days collects a
//!   retry for every event: millions;
//! - a webhook that cannot be delivered to (paused or disabled, perhaps
//!   for weeks) holds none.
//!
//! The queue is read and counted a chunk per turn (`LOAD_CHUNK`), so that
//! millions of stored deliveries do not stop the other actors on the
//! thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::web::Bytes;
use rand::Rng;
use uuid::Uuid;

use super::body_cache::BodyCache;
use super::held_budget::{Handed, HeldPart};
pub use super::held_budget::{MIN_WINDOW, WINDOW};
use super::log_buffer::LogBuffer;
use super::log_writer::WriteLog;
use super::DeliveryContext;
use crate::clock::now_ms;
use crate::domain::delivery::{AttemptResult, LogEntry, Outcome, QueuedDelivery};
use crate::domain::webhook::{Webhook, WebhookStatus};
use crate::metrics::DepthSlot;
use crate::net::client;
use crate::net::connections::Slot;
use crate::storage::Store;

/// How long a first attempt may wait in memory only; after that it goes to
/// the sled queue, so the settled watermark (and with it the search at
/// start-up after a crash) is never far behind.
const SPILL_AFTER_MS: u64 = 10_000;

/// A stored retry due later than this from now is parked: indexed by its
/// due time in sled, not held. (Not for ordered webhooks, whose next
/// delivery is the oldest, however due.)
const PARK_AFTER_MS: u64 = 60_000;

/// Queued deliveries read (or counted) from sled per turn. The thread is
/// given back between chunks, so a long queue (an endpoint failing for
/// days collects millions of retries, read at about 3 µs each) does not
/// hold up the other webhooks on it: a chunk takes about 3 ms, and a
/// delivery of another webhook waits for one at each of its few steps.
const LOAD_CHUNK: usize = 1024;

/// How far a read of the stored queue has got. While it is not `Done`
/// the actor handles no message and sends nothing (see `read_on`).
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// Reading into memory, while there is room; the next chunk starts
    /// after this id, or at the first.
    Reading(Option<Uuid>),
    /// Counting what stays in sled alone, after a (re)start; the next
    /// chunk starts after this id, or at the first.
    Counting(Option<Uuid>),
    Done,
}

/// Which of the stored queue the actor holds in memory.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Reach {
    /// All of it (parked retries as their due time).
    All,
    /// The deliveries up to this id (none if `None`), but for those in
    /// flight. Those after it are in sled alone (`beyond` of them) and
    /// have not been in memory since it was last read from its start.
    UpTo(Option<Uuid>),
}

/// How long a judged attempt may wait for more to share its log write.
const LOG_DELAY: Duration = Duration::from_millis(2);

pub struct DeliveryActor {
    webhook_id: Uuid,
    shared: Arc<DeliveryContext>,
    /// Shared with the attempts in flight: cloned per send, so not a copy.
    webhook: Option<Rc<Webhook>>,
    /// Outstanding deliveries held and not in flight, by id (event order).
    queue: BTreeMap<Uuid, QueuedDelivery>,
    /// The same, by due time.
    by_due: BTreeSet<(u64, Uuid)>,
    /// Those of them that are `only_in_event`, by creation time.
    unstored: BTreeSet<(u64, Uuid)>,
    in_flight: HashMap<Uuid, QueuedDelivery>,
    bodies: BodyCache,
    /// The pending wake-up for the next due delivery.
    timer: Option<(u64, SpawnHandle)>,
    load: Load,
    reach: Reach,
    /// How many stored deliveries are beyond the reach, in sled alone
    /// (for the reported depth only: what is read never depends on it).
    beyond: usize,
    /// Whether `beyond` has been counted since the actor (re)started.
    counted: bool,
    /// The latest delivery held or parked since the actor (re)started.
    max_held: Option<Uuid>,
    /// How many stored retries are parked (indexed by due time in sled,
    /// not in memory), and when the first of them is due.
    parked: usize,
    next_parked: Option<u64>,
    /// When (Unix ms) the stored queue was last read or counted to its
    /// end: a stored delivery made before then was seen.
    loaded_until: u64,
    /// Set at shutdown: send nothing new, answer these once idle.
    draining: Option<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Attempts judged but not yet written to the log.
    log: LogBuffer,
    /// Where this actor's queue depth is reported for `/metrics`.
    depth: DepthSlot,
    /// This actor's part of the deliveries held over all actors.
    held: HeldPart,
    /// The webhook's URL prepared for sending; remade when it changes.
    endpoint: Option<Rc<client::Endpoint>>,
    /// Set by `Stop`: done for good. Its supervisor restarts a stopped
    /// actor while any address of it is still held (a lookup under way
    /// elsewhere, say), so a retired actor, restarted, neither stores nor
    /// loads nor sends anything: it idles until the last address is
    /// dropped, and then actix stops it.
    retired: bool,
}

/// A new delivery for this webhook, already durable in sled.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    /// The queued record; taken by the handler.
    delivery: Option<QueuedDelivery>,
    /// The event body, shared with the event's other deliveries.
    body: Bytes,
    store: Store,
    /// Counts it among the deliveries in the actors' mailboxes.
    _handed: Handed,
}

impl Enqueue {
    pub fn new(delivery: QueuedDelivery, body: Bytes, store: &Store, handed: Handed) -> Self {
        Enqueue {
            delivery: Some(delivery),
            body,
            store: store.clone(),
            _handed: handed,
        }
    }
}

/// NB: an actor that stops (deleted, or at shutdown) drops the messages
/// left in its mailbox. A first attempt held only by this message would
/// then stay unsettled, holding the watermark back until the next start;
/// so it goes to the queue tree instead, unless its webhook is gone.
impl Drop for Enqueue {
    fn drop(&mut self) {
        let Some(d) = self.delivery.take().filter(|d| d.only_in_event) else {
            return;
        };
        if let Err(e) = self.store.queue_first_attempt(&d) {
            log::error!("cannot queue delivery {}: {e}", d.id);
        }
    }
}

/// The webhook was changed (PATCH, toggle, re-enable, new secret): read
/// it again.
///
/// NB: the record is read from the store, not carried here, because
/// concurrent changes may be told in another order than they were stored,
/// and the last told must not win over the last stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookChanged;

/// Let go of the prepared endpoint if its client has been retired, so
/// the retired pool, and the idle connections it keeps, can be dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseStaleEndpoint;

/// Stop for good (the webhook was deleted or the server is stopping).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop {
    /// Deleted: drop what is queued; otherwise keep it in sled.
    pub deleted: bool,
}

/// Panics inside the actor's guarded code, to exercise supervision.
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// How many deliveries the actor holds.
#[derive(Message)]
#[rtype(result = "Holding")]
pub struct Depth;

#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct Holding {
    /// Queued and in flight.
    pub outstanding: usize,
    /// Of those, how many are in memory (queued or in flight).
    pub held: usize,
    /// And how many are parked: retries not due for a while, in sled
    /// alone. The rest are in sled alone, not yet read.
    pub parked: usize,
}

impl DeliveryActor {
    pub fn new(webhook_id: Uuid, shared: Arc<DeliveryContext>) -> Self {
        let depth = shared.metrics.queue_depth_slot(webhook_id);
        let held = HeldPart::new(shared.held_budget.clone());
        DeliveryActor {
            webhook_id,
            shared,
            webhook: None,
            queue: BTreeMap::new(),
            by_due: BTreeSet::new(),
            unstored: BTreeSet::new(),
            in_flight: HashMap::new(),
            bodies: BodyCache::default(),
            timer: None,
            load: Load::Reading(None),
            reach: Reach::UpTo(None),
            beyond: 0,
            counted: false,
            max_held: None,
            parked: 0,
            next_parked: None,
            loaded_until: 0,
            draining: None,
            log: LogBuffer::default(),
            depth,
            held,
            endpoint: None,
            retired: false,
        }
    }

    /// Runs `f`; a panic stops the actor so its supervisor restarts it from
    /// what sled holds, leaving every other webhook untouched.
    fn guarded(&mut self, ctx: &mut Context<Self>, f: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if catch_unwind(AssertUnwindSafe(|| f(self, ctx))).is_err() {
            log::error!(
                "delivery actor for webhook {} panicked; restarting it",
                self.webhook_id
            );
            ctx.stop();
        }
    }

    /// Reads the webhook and then its stored queue: into memory while
    /// there is room (if the webhook can be delivered to), then counts
    /// the rest; sends once that is done.
    fn load(&mut self, ctx: &mut Context<Self>) {
        self.webhook = match self.shared.store.webhook(self.webhook_id) {
            Ok(w) => w.map(Rc::new),
            Err(e) => {
                log::error!("webhook {}: cannot load: {e}", self.webhook_id);
                None
            }
        };
        (self.reach, self.beyond, self.counted) = (Reach::UpTo(None), 0, false);
        (self.max_held, self.parked) = (None, 0);
        self.next_parked = self.first_parked_due();
        self.load = match self.deliverable() {
            true => Load::Reading(None),
            false => Load::Counting(None),
        };
        self.read_on(ctx);
    }

    /// Reads or counts one chunk, then goes on at the next turn, with
    /// `ctx.wait`: no message is handled and no attempt judged until the
    /// read is done, so nothing held or sent changes under it. Pumps once
    /// it is done.
    fn read_on(&mut self, ctx: &mut Context<Self>) {
        let more = match self.load {
            Load::Reading(after) => self.read_chunk(after),
            Load::Counting(after) => self.count_chunk(after),
            Load::Done => false,
        };
        if !more {
            return self.pump(ctx);
        }
        self.report_depth();
        let next_turn = tokio::task::yield_now().into_actor(self);
        ctx.wait(next_turn.map(|(), act, ctx| act.guarded(ctx, Self::read_on)));
    }

    /// Holds stored deliveries after `after` while there is room; true if
    /// there is more to read or count.
    fn read_chunk(&mut self, after: Option<Uuid>) -> bool {
        let store = self.shared.store.clone();
        let chunk = store
            .queued_after(self.webhook_id, after, LOAD_CHUNK)
            .unwrap_or_else(|e| {
                log::error!("webhook {}: cannot load its queue: {e}", self.webhook_id);
                Vec::new()
            });
        let to_the_end = chunk.len() < LOAD_CHUNK;
        for (id, d) in chunk {
            if self.queue.len() >= self.window() {
                return self.stop_reading();
            }
            self.reach = Reach::UpTo(Some(id));
            if self.in_memory(id) {
                continue;
            }
            self.beyond = self.beyond.saturating_sub(1);
            match d {
                Ok(d) => self.insert(d),
                Err(e) => log::error!(
                    "webhook {}: cannot load delivery {id}: {e}",
                    self.webhook_id
                ),
            }
        }
        if !to_the_end {
            self.load = Load::Reading(self.reach_end());
            return true;
        }
        (self.reach, self.beyond, self.counted) = (Reach::All, 0, true);
        self.loaded_until = now_ms();
        self.load = Load::Done;
        false
    }

    /// Out of room: counts what is left, if that is not known yet.
    fn stop_reading(&mut self) -> bool {
        self.load = match self.counted {
            true => Load::Done,
            false => Load::Counting(self.reach_end()),
        };
        self.load != Load::Done
    }

    fn count_chunk(&mut self, after: Option<Uuid>) -> bool {
        let counted = self
            .shared
            .store
            .count_queued_after(self.webhook_id, after, LOAD_CHUNK);
        let (n, last) = counted.unwrap_or_else(|e| {
            log::error!("webhook {}: cannot count its queue: {e}", self.webhook_id);
            (0, None)
        });
        self.beyond += n;
        if n == LOAD_CHUNK {
            self.load = Load::Counting(last);
            return true;
        }
        self.counted = true;
        self.loaded_until = now_ms();
        self.load = Load::Done;
        false
    }

    fn reach_end(&self) -> Option<Uuid> {
        match self.reach {
            Reach::All => self.max_held,
            Reach::UpTo(end) => end,
        }
    }

    /// Reads more of the stored queue once fewer than half of its window
    /// are held; first waits for the log writer to write what this actor
    /// sent it, so that no delivery already finished is read back.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        self.write_log();
        self.load = Load::Reading(self.reach_end());
        let written = self.shared.log_writer.written().into_actor(self);
        ctx.wait(written.map(|_, act, ctx| act.guarded(ctx, Self::read_on)));
    }

    /// How many deliveries this actor may hold now, in flight aside.
    fn window(&self) -> usize {
        self.held.window()
    }

    fn wants_refill(&self) -> bool {
        self.reach != Reach::All && self.queue.len() < self.window() / 2
    }

    fn deliverable(&self) -> bool {
        self.webhook.as_ref().is_some_and(|w| w.is_deliverable())
    }

    /// Whether delivery `id` is to be held in memory, rather than left to
    /// sled alone: when the webhook can be delivered to, and `id` is
    /// within the reach. With all held and the window full, the reach
    /// stops at the latest held.
    fn holds(&mut self, id: Uuid) -> bool {
        if !self.deliverable() {
            return false;
        }
        if self.reach == Reach::All && self.queue.len() >= self.window() {
            self.reach = Reach::UpTo(self.max_held);
        }
        match self.reach {
            Reach::All => true,
            Reach::UpTo(end) => Some(id) <= end,
        }
    }

    /// Holds `d`, or leaves it to sled alone.
    fn admit(&mut self, d: QueuedDelivery) {
        if self.holds(d.id) {
            return self.insert(d);
        }
        self.leave_in_sled(d);
    }

    /// Stores `d` in the queue tree if it was only in its event's record,
    /// and counts it among those beyond the reach.
    fn leave_in_sled(&mut self, mut d: QueuedDelivery) {
        Self::store_in_queue(&self.shared.store, &mut d);
        self.beyond += 1;
    }

    /// Lets go of every delivery held but those in flight, storing the
    /// ones only in memory first, so that the stored queue is read again
    /// from its start when there is room: when the webhook cannot be
    /// delivered to (it may stay so for weeks), or turns ordered (a parked
    /// retry may be the oldest).
    fn forget_held(&mut self) {
        if self.reach == Reach::UpTo(None) && self.queue.is_empty() && self.parked == 0 {
            return;
        }
        self.spill(u64::MAX);
        // Parked ones stay indexed, and are counted again when read.
        self.beyond += self.queue.len() + std::mem::take(&mut self.parked);
        self.queue.clear();
        self.held.tell(0);
        self.by_due.clear();
        self.unstored.clear();
        self.bodies.clear();
        self.reach = Reach::UpTo(None);
    }

    /// NB: after a (re)start the actor loads its queue from sled while
    /// `Enqueue` messages for the same deliveries may still be in its
    /// mailbox; one it already holds, or that has already left the sled
    /// queue (delivered meanwhile), must not be sent again. (One delivered
    /// whose batch is still with the log writer is still in the sled
    /// queue, and would be sent again: at least once, as after a crash.)
    fn is_new(&self, d: &QueuedDelivery) -> bool {
        if self.queue.contains_key(&d.id)
            || self.in_flight.contains_key(&d.id)
            || self.log.holds(d.id)
        {
            return false;
        }
        // Its `Enqueue` is its only way here: a load cannot have seen it.
        if d.only_in_event {
            return true;
        }
        // Made after the load finished, so the load cannot have seen it:
        // spares a sled read per delivery. (A clock step back only sends
        // more deliveries to the read below.)
        if d.created_at > self.loaded_until {
            return true;
        }
        // Stored as it came: not a retry since parked or being handled.
        matches!(
            self.shared.store.queued_delivery(self.webhook_id, d.id),
            Ok(Some(stored)) if stored.attempts == d.attempts
        )
    }

    /// Whether delivery `id` is held, in flight, or sent and waiting for
    /// its log entry.
    fn in_memory(&self, id: Uuid) -> bool {
        self.queue.contains_key(&id) || self.in_flight.contains_key(&id) || self.log.holds(id)
    }

    /// Holds `d`, or parks it if it is a stored retry not due for a while.
    fn insert(&mut self, d: QueuedDelivery) {
        self.max_held = self.max_held.max(Some(d.id));
        if self.parks(&d) && self.park(&d) {
            return;
        }
        self.by_due.insert((d.next_attempt_at, d.id));
        if d.only_in_event {
            self.unstored.insert((d.created_at, d.id));
        }
        self.queue.insert(d.id, d);
        self.held.tell(self.queue.len());
    }

    /// Whether `d` is to be parked: a stored retry not due for a while.
    fn parks(&self, d: &QueuedDelivery) -> bool {
        !d.only_in_event
            && self.webhook.as_ref().is_some_and(|w| !w.ordered)
            && d.next_attempt_at > now_ms() + PARK_AFTER_MS
    }

    /// Indexes `d` by its due time; false if that cannot be written (it
    /// is held in memory instead).
    fn park(&mut self, d: &QueuedDelivery) -> bool {
        let due = d.next_attempt_at;
        if let Err(e) = self.shared.store.park(self.webhook_id, due, d.id) {
            log::error!(
                "webhook {}: cannot park delivery {}: {e}",
                self.webhook_id,
                d.id
            );
            return false;
        }
        self.parked += 1;
        self.next_parked = Some(self.next_parked.map_or(due, |at| at.min(due)));
        true
    }

    fn first_parked_due(&self) -> Option<u64> {
        let first = self.shared.store.first_parked_due(self.webhook_id);
        first.unwrap_or_else(|e| {
            log::error!(
                "webhook {}: cannot read its parked retries: {e}",
                self.webhook_id
            );
            None
        })
    }

    /// Holds the parked retries now due, as many as there is room for.
    /// One beyond the reach is left to be read in its turn, in event order.
    fn unpark_due(&mut self, now: u64) {
        let room = self
            .window()
            .saturating_sub(self.queue.len())
            .min(LOAD_CHUNK);
        let due = match self
            .shared
            .store
            .take_due_parked(self.webhook_id, now, room)
        {
            Ok(due) => due,
            Err(e) => {
                log::error!("webhook {}: cannot unpark: {e}", self.webhook_id);
                self.next_parked = Some(now + 1000); // try again in a second
                return;
            }
        };
        let end = self.reach_end();
        for d in due {
            let within = self.reach == Reach::All || Some(d.id) <= end;
            if within && !self.in_memory(d.id) {
                self.parked = self.parked.saturating_sub(1);
                self.insert(d);
            }
        }
        self.next_parked = self.first_parked_due();
    }

    /// Takes a held delivery out.
    fn take(&mut self, id: Uuid) -> Option<QueuedDelivery> {
        let d = self.queue.remove(&id)?;
        self.held.tell(self.queue.len());
        self.by_due.remove(&(d.next_attempt_at, id));
        self.unstored.remove(&(d.created_at, id));
        Some(d)
    }

    /// Moves a first attempt that is only in memory to the sled queue.
    fn store_in_queue(store: &Store, d: &mut QueuedDelivery) {
        if !d.only_in_event {
            return;
        }
        match store.queue_first_attempt(d) {
            Ok(()) => d.only_in_event = false,
            Err(e) => log::error!("cannot queue delivery {}: {e}", d.id),
        }
    }

    /// Moves queued first attempts made before `cutoff` (ms) to sled.
    fn spill(&mut self, cutoff: u64) {
        while let Some(&(at, id)) = self.unstored.first() {
            if at >= cutoff {
                break;
            }
            self.unstored.pop_first();
            if let Some(d) = self.queue.get_mut(&id) {
                Self::store_in_queue(&self.shared.store, d);
            }
        }
    }

    /// Ends a delivery for good: delivered, failed, dropped or deleted.
    fn forget(&self, d: &QueuedDelivery) {
        if let Err(e) = self.shared.store.finish_delivery(d) {
            log::error!("cannot remove delivery {}: {e}", d.id);
        }
    }

    /// Sends whatever is due, within the concurrency limit, and sets a
    /// timer for the next delivery that is not due yet.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.report_depth();
        if self.load != Load::Done {
            return; // the read under way pumps when it is done
        }
        if self.draining.is_some() {
            return self.finish_drain();
        }
        let now = now_ms();
        let Some(webhook) = self.webhook.clone().filter(|w| w.is_deliverable()) else {
            self.forget_held();
            return self.report_depth();
        };
        if self.wants_refill() {
            return self.refill(ctx);
        }
        self.spill(now.saturating_sub(SPILL_AFTER_MS));
        if let Some(&(at, _)) = self.unstored.first() {
            self.wake_at(at + SPILL_AFTER_MS, ctx);
        }
        if !webhook.ordered {
            self.unpark_when_due(now, ctx);
        }
        let limit = if webhook.ordered {
            1
        } else {
            self.shared.max_in_flight
        };
        while self.in_flight.len() < limit {
            let next = if webhook.ordered {
                self.queue
                    .values()
                    .next()
                    .map(|d| (d.next_attempt_at, d.id))
            } else {
                self.by_due.first().copied()
            };
            let Some((due, id)) = next else { break };
            if due > now {
                self.wake_at(due, ctx);
                break;
            }
            if let Some(d) = self.take(id) {
                self.dispatch(&webhook, d, ctx);
            }
        }
    }

    /// Holds the parked retries due by now, if there is room, and wakes
    /// for the next (at once if more are due). None while the window is
    /// full: a delivery that ends makes room, and pumps.
    fn unpark_when_due(&mut self, now: u64, ctx: &mut Context<Self>) {
        let Some(at) = self.next_parked else { return };
        if self.queue.len() >= self.window() {
            return;
        }
        if at <= now {
            self.unpark_due(now);
        }
        if let Some(at) = self.next_parked {
            self.wake_at(at, ctx);
        }
    }

    fn wake_at(&mut self, due: u64, ctx: &mut Context<Self>) {
        if matches!(self.timer, Some((at, _)) if at <= due) {
            return;
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(due.saturating_sub(now_ms()));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.guarded(ctx, Self::pump);
        });
        self.timer = Some((due, handle));
    }

    fn dispatch(&mut self, webhook: &Rc<Webhook>, d: QueuedDelivery, ctx: &mut Context<Self>) {
        let body = match self.bodies.take(d.id) {
            Some(b) => b,
            None => match self.shared.store.event(d.event_id) {
                Ok(Some((_, body))) => Bytes::from(body),
                Ok(None) => return self.give_up(d, "the event is no longer stored"),
                Err(e) => return self.give_up(d, &e.to_string()),
            },
        };
        self.in_flight.insert(d.id, d.clone());
        if let Some(slot) = self.shared.connections.try_slot() {
            return self.send(webhook, d, body, slot, ctx);
        }
        // Every connection slot is taken: wait for one as this actor's own
        // future, so that what changes meanwhile (a pause, a new URL,
        // shutdown) is seen before anything is sent.
        let connections = self.shared.connections.clone();
        let wait = async move { connections.slot().await };
        ctx.spawn(wait.into_actor(self).map(|slot, act, ctx| {
            act.guarded(ctx, |act, ctx| act.send_when_free(d, body, slot, ctx))
        }));
    }

    /// With a connection slot at last: sends, unless the webhook cannot be
    /// sent to now or shutdown has begun; then the delivery is queued
    /// again, as if it had never left.
    fn send_when_free(
        &mut self,
        d: QueuedDelivery,
        body: Bytes,
        slot: Slot,
        ctx: &mut Context<Self>,
    ) {
        let sendable = |w: &Rc<Webhook>| w.is_deliverable() && self.draining.is_none();
        match self.webhook.clone().filter(sendable) {
            Some(webhook) => self.send(&webhook, d, body, slot, ctx),
            None => {
                let id = d.id;
                self.in_flight.remove(&id);
                self.admit(d);
                if self.queue.contains_key(&id) {
                    self.bodies.keep(id, body);
                }
                self.spill(u64::MAX); // it may wait long: paused, or a restart
                self.pump(ctx);
            }
        }
    }

    /// One attempt, holding `slot` while it is out. Its clock, timeout
    /// and signature timestamp start here, not while it waited for a slot.
    fn send(
        &mut self,
        webhook: &Rc<Webhook>,
        d: QueuedDelivery,
        body: Bytes,
        slot: Slot,
        ctx: &mut Context<Self>,
    ) {
        let endpoint = self.endpoint_for(webhook);
        let webhook = webhook.clone();
        let attempt = async move {
            let result = client::deliver(&endpoint, &webhook, d.id, &d.event, body).await;
            drop(slot);
            (d, result)
        };
        ctx.spawn(attempt.into_actor(self).map(|(d, result), act, ctx| {
            act.guarded(ctx, |act, ctx| {
                act.in_flight.remove(&d.id);
                act.record(d, result, ctx);
                act.pump(ctx);
            })
        }));
    }

    /// The prepared endpoint for the webhook's current URL.
    fn endpoint_for(&mut self, webhook: &Webhook) -> Rc<client::Endpoint> {
        let settings = self.shared.client;
        match &self.endpoint {
            Some(e) if e.is_current_for(settings, &webhook.url) => e.clone(),
            _ => self
                .endpoint
                .insert(Rc::new(client::Endpoint::new(settings, &webhook.url)))
                .clone(),
        }
    }

    fn count_attempt(&self, outcome: Outcome, result: &AttemptResult) {
        let m = &self.shared.metrics;
        m.count_attempt(outcome, result.status_code);
        m.attempt_latency.observe(result.latency_ms as f64 / 1000.0);
        if outcome == Outcome::Pending {
            m.retries_scheduled.inc();
        }
    }

    fn report_depth(&self) {
        let depth = self.queue.len() + self.in_flight.len() + self.parked + self.beyond;
        self.depth
            .store(depth, std::sync::atomic::Ordering::Relaxed);
    }

    /// Ends a delivery that can never be sent. Nothing was attempted, so
    /// the delivery log has no entry for it: the warning and a counter an
    /// operator can alert on are all there is.
    fn give_up(&mut self, d: QueuedDelivery, why: &str) {
        log::warn!(
            "delivery {} of webhook {} dropped: {why}",
            d.id,
            self.webhook_id
        );
        self.forget(&d);
        self.shared.metrics.deliveries_dropped.inc();
    }

    /// Judges one attempt: logs it, then removes, reschedules or fails the
    /// delivery and updates the webhook's failure bookkeeping.
    fn record(&mut self, mut d: QueuedDelivery, result: AttemptResult, ctx: &mut Context<Self>) {
        if self.webhook.is_none() {
            return self.forget(&d); // deleted while in flight
        }
        let attempt = d.attempts + 1;
        let now = now_ms();
        let ok = result.succeeded();
        let next_delay = if ok {
            None
        } else {
            let unit = rand::thread_rng().gen::<f64>();
            self.shared
                .policy
                .next_delay(attempt, unit, result.retry_after_ms)
        };
        let outcome = match (ok, next_delay) {
            (true, _) => Outcome::Delivered,
            (false, Some(_)) => Outcome::Pending,
            (false, None) => Outcome::Failed,
        };
        self.count_attempt(outcome, &result);
        let shared = self.shared.clone();
        let store = &shared.store;
        // Judge the webhook first: if it was deleted while this attempt was
        // out, write nothing more for it (no orphan retry in the queue).
        self.note_outcome(ok, now);
        if self.webhook.is_none() {
            return self.forget(&d);
        }
        let entry = LogEntry::of_attempt(
            (d.id, d.event_id, &d.event),
            attempt,
            outcome,
            result,
            next_delay.map(|ms| now + ms),
        );
        // NB: a retry is queued before its log entry is written: after a
        // crash, a logged first attempt counts as settled at recovery.
        let Some(delay) = next_delay else {
            return self.log_attempt(entry, Some(d), ctx);
        };
        d.attempts = attempt;
        d.next_attempt_at = now + delay;
        let queued = store.put_delivery(&d);
        if let Err(e) = &queued {
            log::error!("webhook {}: cannot update its queue: {e}", self.webhook_id);
        }
        if queued.is_ok() && std::mem::take(&mut d.only_in_event) {
            store.settle(d.event_id);
        }
        self.admit(d);
        self.log_attempt(entry, None, ctx);
    }

    /// Buffers an attempt's entry, with its delivery if that is finished,
    /// and makes sure a write follows soon.
    fn log_attempt(
        &mut self,
        entry: LogEntry,
        finished: Option<QueuedDelivery>,
        ctx: &mut Context<Self>,
    ) {
        if self.log.push(entry, finished) {
            return self.write_log();
        }
        if self.log.timer.is_none() {
            let timer = ctx.run_later(LOG_DELAY, |act, ctx| {
                act.log.timer = None;
                act.guarded(ctx, |act, _| act.write_log());
            });
            self.log.timer = Some(timer);
        }
    }

    /// Hands the buffered entries to the log writer as one batch, with
    /// the deliveries they finished.
    fn write_log(&mut self) {
        let (entries, finished) = self.log.take();
        if entries.is_empty() {
            return;
        }
        self.shared.log_writer.write(WriteLog {
            webhook_id: self.webhook_id,
            entries,
            finished,
        });
    }

    fn note_outcome(&mut self, ok: bool, now: u64) {
        // A success on a healthy webhook changes only last_delivery_at;
        // writing that at most once a second spares a record rewrite per
        // delivery on busy webhooks.
        let healthy = self.webhook.as_ref().is_some_and(|w| {
            w.failure_count == 0
                && w.last_delivery_at
                    .is_some_and(|at| now.saturating_sub(at) < 1000)
        });
        if ok && healthy {
            return;
        }
        let disable_after = self.shared.disable_after.as_millis() as u64;
        let updated = self.shared.store.update_webhook(self.webhook_id, |w| {
            w.last_delivery_at = Some(now);
            if ok {
                w.failure_count = 0;
                w.failing_since = None;
                return;
            }
            w.failure_count += 1;
            let since = *w.failing_since.get_or_insert(now);
            if now.saturating_sub(since) >= disable_after && w.status == WebhookStatus::Enabled {
                w.status = WebhookStatus::Disabled;
                w.disabled_reason = Some(format!(
                    "every delivery attempt failed for {:.3} hours ({} consecutive failures)",
                    (now - since) as f64 / 3_600_000.0,
                    w.failure_count
                ));
                w.updated_at = now;
            }
        });
        match updated {
            Ok(Some(w)) => {
                if w.status == WebhookStatus::Disabled
                    && self.webhook.as_ref().is_some_and(|o| o.status != w.status)
                {
                    log::warn!("webhook {} disabled after sustained failure", w.id);
                    self.shared.metrics.webhooks_disabled.inc();
                }
                self.webhook = Some(Rc::new(w));
            }
            Ok(None) => self.webhook = None,
            Err(e) => log::error!(
                "webhook {}: cannot update failure count: {e}",
                self.webhook_id
            ),
        }
    }
}

impl Actor for DeliveryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if !self.retired {
            self.guarded(ctx, Self::load);
        }
    }
}

impl Supervised for DeliveryActor {
    /// Moves first attempts that are only in memory (queued or in flight,
    /// whose futures are dropped now) to sled, then forgets everything;
    /// `started` reloads it from sled.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        if self.retired {
            return; // `Stop` forgot everything already
        }
        self.store_everything();
        self.write_log();
        self.forget_everything();
    }
}

impl DeliveryActor {
    /// Done for good (see `retired`): holds, counts and reads nothing more.
    fn retire(&mut self) {
        self.forget_everything();
        (self.load, self.parked, self.next_parked, self.beyond) = (Load::Done, 0, None, 0);
        self.retired = true;
        self.report_depth();
    }

    /// Drops all that is held in memory; what matters is in sled.
    fn forget_everything(&mut self) {
        self.log.timer = None;
        self.webhook = None;
        self.queue.clear();
        self.held.tell(0);
        self.by_due.clear();
        self.unstored.clear();
        self.in_flight.clear();
        self.bodies.clear();
        self.timer = None;
    }
}

impl Handler<Enqueue> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, mut msg: Enqueue, ctx: &mut Context<Self>) {
        if self.retired {
            return; // dropping the message stores it (see its `Drop`)
        }
        let Some(d) = msg.delivery.take() else { return };
        self.guarded(ctx, |act, ctx| {
            if !act.holds(d.id) {
                // A stored one made before the queue was last read to its
                // end was counted then.
                if d.only_in_event || d.created_at > act.loaded_until {
                    act.leave_in_sled(d);
                }
                return act.report_depth();
            }
            if !act.is_new(&d) {
                return;
            }
            act.bodies.keep(d.id, std::mem::take(&mut msg.body));
            act.insert(d);
            act.pump(ctx);
        });
    }
}

impl Handler<WebhookChanged> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: WebhookChanged, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        self.guarded(ctx, |act, ctx| {
            let was_ordered = act.webhook.as_ref().is_some_and(|w| w.ordered);
            act.webhook = match act.shared.store.webhook(act.webhook_id) {
                Ok(w) => w.map(Rc::new),
                Err(e) => {
                    log::error!("webhook {}: cannot read its change: {e}", act.webhook_id);
                    return;
                }
            };
            // A parked retry may be the oldest.
            let parked = act.parked > 0 || act.next_parked.is_some();
            if act.webhook.as_ref().is_some_and(|w| w.ordered) && !was_ordered && parked {
                act.forget_held();
            }
            act.pump(ctx);
        });
    }
}

/// Shutdown: finish what is in flight, start nothing new; answers once
/// nothing is in flight. Queued deliveries stay in sled for the restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl DeliveryActor {
    /// Every first attempt held in memory, queued or in flight, to sled.
    fn store_everything(&mut self) {
        let store = &self.shared.store;
        let held = self.queue.values_mut().chain(self.in_flight.values_mut());
        held.for_each(|d| Self::store_in_queue(store, d));
        self.unstored.clear();
    }

    fn finish_drain(&mut self) {
        if self.in_flight.is_empty() {
            self.write_log();
            for waiter in self.draining.iter_mut().flat_map(std::mem::take) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Handler<ReleaseStaleEndpoint> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: ReleaseStaleEndpoint, _: &mut Context<Self>) {
        if self.endpoint.as_ref().is_some_and(|e| !e.is_current()) {
            self.endpoint = None;
        }
    }
}

impl Handler<Drain> for DeliveryActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.draining.get_or_insert_with(Vec::new).push(tx);
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        self.spill(u64::MAX); // queued deliveries wait in sled for the restart
        self.finish_drain();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Stop> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, msg: Stop, ctx: &mut Context<Self>) {
        if msg.deleted {
            // The deleting request drops its sled queue and log next.
            let (_, finished) = self.log.take();
            let held = self.queue.values().chain(self.in_flight.values());
            let store = &self.shared.store;
            held.chain(&finished)
                .filter(|d| d.only_in_event)
                .for_each(|d| store.settle(d.event_id));
        } else {
            self.store_everything();
            self.write_log();
        }
        self.retire();
        ctx.stop();
    }
}

impl Handler<Crash> for DeliveryActor {
    type Result = ();

    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |_, _| panic!("crash requested"));
    }
}

impl Handler<Depth> for DeliveryActor {
    type Result = Holding;

    fn handle(&mut self, _: Depth, _: &mut Context<Self>) -> Holding {
        let held = self.queue.len() + self.in_flight.len();
        Holding {
            outstanding: held + self.parked + self.beyond,
            held,
            parked: self.parked,
        }
    }
}
