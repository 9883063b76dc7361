//! The registry owns one supervised delivery actor per webhook, spread over
//! a pool of arbiters (threads). It starts them at boot (resuming every
//! stored queue, after dropping what is queued for deleted webhooks), and
//! starts, updates and stops them as webhooks are created, changed and
//! deleted. It publishes who serves which webhook in a `Directory`, which
//! the ingest path uses to hand new deliveries straight to their actors.
//! Once per connection lifetime it has the delivery threads retire their
//! expired HTTP clients (see `net::client`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use actix_web::web::Bytes;
use uuid::Uuid;

use super::delivery::{self, DeliveryActor};
use super::held_budget::HeldBudget;
use super::log_writer::LogWriter;
use super::DeliveryContext;
use crate::domain::delivery::QueuedDelivery;
use crate::net::client;
use crate::storage::Store;

pub struct Registry {
    shared: Arc<DeliveryContext>,
    /// The delivery threads; they stop when the registry stops.
    arbiters: Vec<Arbiter>,
    /// Written only by the registry.
    actors: Directory,
    next_arbiter: usize,
    /// Webhooks deleted while they had no actor: see `WebhookCreated`.
    deleted_unstarted: Tombstones,
}

/// Ids remembered for one to two `TOMBSTONE_AGE`s, so that deletes that
/// never meet a creation (two deletes of one webhook at once, say) are
/// not kept for ever. A creation is told within one flush of its insert.
#[derive(Default)]
struct Tombstones {
    recent: HashSet<Uuid>,
    older: HashSet<Uuid>,
}

const TOMBSTONE_AGE: Duration = Duration::from_secs(60);

impl Tombstones {
    fn insert(&mut self, id: Uuid) {
        self.recent.insert(id);
    }

    /// True if `id` was remembered (and forgets it).
    fn take(&mut self, id: &Uuid) -> bool {
        self.recent.remove(id) || self.older.remove(id)
    }

    /// Forgets what was remembered before the last call.
    fn age(&mut self) {
        self.older = std::mem::take(&mut self.recent);
    }
}

/// The running actors by webhook id, readable from any thread.
///
/// NB: ingest sends new deliveries through this, not through the
/// registry's mailbox: that would cost every event a hop through one more
/// thread. A delivery whose actor is not listed yet is not lost: it is
/// put in the queue tree while the read lock is held, and an actor loads
/// its stored queue when it starts (see `insert_with`).
#[derive(Clone)]
pub struct Directory {
    actors: Arc<RwLock<HashMap<Uuid, Addr<DeliveryActor>>>>,
    store: Store,
    /// Counts what is handed to the actors' mailboxes.
    held_budget: Arc<HeldBudget>,
}

impl Directory {
    pub fn new(store: Store, held_budget: Arc<HeldBudget>) -> Self {
        Directory {
            actors: Arc::default(),
            store,
            held_budget,
        }
    }

    /// What the actors hold and were handed: ingest waits on it before
    /// it hands them more (see `HeldBudget::room_to_hand`).
    pub fn held_budget(&self) -> &HeldBudget {
        &self.held_budget
    }

    /// Hands durable deliveries of one event to their webhooks' actors.
    pub fn deliver(&self, deliveries: Vec<QueuedDelivery>, body: Bytes) {
        let actors = self.read();
        for d in deliveries {
            match actors.get(&d.webhook_id) {
                Some(addr) => {
                    let handed = self.held_budget.hand();
                    addr.do_send(delivery::Enqueue::new(d, body.clone(), &self.store, handed))
                }
                None => self.store_for_later(d),
            }
        }
    }

    /// A delivery with no actor listed (yet) goes to the queue tree, where
    /// the actor's start-up load finds it: it starts under the write lock,
    /// so after this call's read lock is released.
    fn store_for_later(&self, d: QueuedDelivery) {
        if !d.only_in_event {
            return; // already in the queue tree
        }
        if let Err(e) = self.store.queue_first_attempt(&d) {
            log::error!("cannot queue delivery {}: {e}", d.id);
        }
    }

    fn get(&self, id: &Uuid) -> Option<Addr<DeliveryActor>> {
        self.read().get(id).cloned()
    }

    fn len(&self) -> usize {
        self.read().len()
    }

    fn all(&self) -> Vec<Addr<DeliveryActor>> {
        self.read().values().cloned().collect()
    }

    /// Lists the actor `start` starts.
    ///
    /// NB: `start` runs under the write lock. The actor may load its stored
    /// queue before it is listed; holding the lock makes any lookup in that
    /// window wait for the listing instead of missing, so no delivery
    /// stored after the load can go unsent.
    fn insert_with(&self, id: Uuid, start: impl FnOnce() -> Addr<DeliveryActor>) {
        let mut actors = self.write();
        actors.insert(id, start());
    }

    fn remove(&self, id: &Uuid) -> Option<Addr<DeliveryActor>> {
        self.write().remove(id)
    }

    fn drain(&self) -> Vec<Addr<DeliveryActor>> {
        self.write().drain().map(|(_, a)| a).collect()
    }

    /// A panic while the lock is held cannot leave the map half-changed
    /// (each change is one map call), so a poisoned lock is still usable.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Uuid, Addr<DeliveryActor>>> {
        self.actors.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Addr<DeliveryActor>>> {
        self.actors.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A webhook was created: start its actor, which reads the stored record.
///
/// NB: the webhook is listed from its insert on, so a delete can come in
/// before this and find no actor. The delete then stops nothing and removes
/// the record, but an actor started afterwards would take deliveries
/// ingested in the meantime and send them after the delete's 204. So the
/// delete is remembered, and this message is dropped when it arrives.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookCreated {
    /// The new webhook's id.
    pub id: Uuid,
}

/// A webhook was changed. The reply comes once its actor has the new
/// record (or has it queued: see `HANDLED_WITHIN`), so that an event
/// ingested after the caller's response goes to the new URL, signed with
/// the new secret: ingest reaches the actor directly, not through the
/// registry, and could overtake it.
///
/// NB: only a delete removes an actor, so a change for a webhook without
/// one raced a delete, and is dropped. Starting an actor for it would
/// bring the webhook back from the dead and send its queue.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookUpdated {
    /// The changed webhook's id; its actor reads the stored record.
    pub id: Uuid,
}

/// A webhook was deleted: drop its actor and anything it had in flight.
/// The reply comes once the actor has stopped (or has the stop queued:
/// see `HANDLED_WITHIN`), so that no attempt starts after the caller has
/// been told the webhook is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookDeleted {
    /// The deleted webhook's id.
    pub id: Uuid,
}

/// Makes one webhook's actor panic (tests of supervision).
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashActor {
    /// Whose actor.
    pub webhook_id: Uuid,
}

/// One webhook's actor address, held as a lookup under way elsewhere would
/// hold it (tests of retirement).
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "Option<Addr<DeliveryActor>>")]
pub struct ActorOf {
    /// Whose actor.
    pub webhook_id: Uuid,
}

/// Shutdown: every actor finishes its in-flight attempts and starts no
/// new ones; answers when all are idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainAll;

/// Shutdown's last step, once no request can send a delivery any more:
/// every actor stores what it still holds in sled and stops, then the
/// registry and the delivery threads stop. Answers once those writes are
/// done, so the final flush covers them.
///
/// NB: a delivery acknowledged during the grace period reaches an actor
/// already drained, which keeps it in memory only; without this wait it
/// could miss the final flush and be found again only by the search that
/// follows a crash.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

/// How many webhook actors are running.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ActorCount;

/// How many deliveries one webhook's actor holds.
#[derive(Message)]
#[rtype(result = "Option<delivery::Holding>")]
pub struct QueueDepth {
    /// Whose actor.
    pub webhook_id: Uuid,
}

impl Registry {
    pub fn new(shared: Arc<DeliveryContext>, threads: usize) -> Self {
        Registry {
            actors: Directory::new(shared.store.clone(), shared.held_budget.clone()),
            shared,
            arbiters: (0..threads.max(1)).map(|_| Arbiter::new()).collect(),
            next_arbiter: 0,
            deleted_unstarted: Tombstones::default(),
        }
    }

    /// Where ingest finds the actors; stays current while the registry runs.
    pub fn directory(&self) -> Directory {
        self.actors.clone()
    }

    /// Has every delivery thread drop its expired client and every actor
    /// its endpoint made by one: see `net::client` for why.
    fn retire_stale_clients(&self) {
        for arbiter in &self.arbiters {
            arbiter.spawn_fn(client::retire_expired);
        }
        for addr in self.actors.all() {
            addr.do_send(delivery::ReleaseStaleEndpoint);
        }
    }

    /// Starts a webhook's actor on the next arbiter and lists it.
    fn spawn(&mut self, webhook_id: Uuid) {
        let arbiter = self.arbiters[self.next_arbiter % self.arbiters.len()].handle();
        self.next_arbiter += 1;
        let shared = self.shared.clone();
        self.actors.insert_with(webhook_id, || {
            Supervisor::start_in_arbiter(&arbiter, move |_| DeliveryActor::new(webhook_id, shared))
        });
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.shared.client.connection_lifetime, |act, _| {
            act.retire_stale_clients();
        });
        ctx.run_interval(TOMBSTONE_AGE, |act, _| act.deleted_unstarted.age());
        match self.shared.store.purge_orphan_deliveries() {
            Ok(0) => {}
            Ok(n) => log::warn!("removed {n} queued deliveries of deleted webhooks"),
            Err(e) => log::error!("cannot look for queued deliveries of deleted webhooks: {e}"),
        }
        match self.shared.store.all_webhooks() {
            Ok(webhooks) => {
                for w in webhooks {
                    self.spawn(w.id);
                }
                log::info!(
                    "delivery registry started {} webhook actors",
                    self.actors.len()
                );
            }
            Err(e) => log::error!("cannot load webhooks: {e}"),
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for addr in self.actors.drain() {
            addr.do_send(delivery::Stop { deleted: false });
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// How long a change or a delete waits for the webhook's actor to handle
/// it. What is sent is in the actor's mailbox at once (from a fresh
/// address, `send` never holds a message back), ahead of any later
/// delivery, and an actor drains its mailbox before it sends again. But
/// one reading a long stored queue (after a restart or a re-activation)
/// handles nothing until the read is done, which can take seconds; it
/// sends nothing meanwhile either, so its caller is answered after this.
const HANDLED_WITHIN: Duration = Duration::from_millis(250);

/// Replies once an actor has handled what it was sent, or after
/// `HANDLED_WITHIN`; at once if there was no actor to send it to, or it
/// was gone already.
fn once_handled<M>(sent: Option<actix::dev::Request<DeliveryActor, M>>) -> ResponseFuture<()>
where
    DeliveryActor: Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    Box::pin(async move {
        if let Some(sent) = sent {
            // Timing out drops only the wait for the reply, not the message.
            let _ = actix_web::rt::time::timeout(HANDLED_WITHIN, sent).await;
        }
    })
}

impl Handler<WebhookCreated> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WebhookCreated, _: &mut Context<Self>) {
        if self.deleted_unstarted.take(&msg.id) {
            return;
        }
        if self.actors.get(&msg.id).is_none() {
            self.spawn(msg.id);
        }
    }
}

impl Handler<WebhookUpdated> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: WebhookUpdated, _: &mut Context<Self>) -> Self::Result {
        let changed = self.actors.get(&msg.id);
        once_handled(changed.map(|addr| addr.send(delivery::WebhookChanged)))
    }
}

impl Handler<WebhookDeleted> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: WebhookDeleted, _: &mut Context<Self>) -> Self::Result {
        let stopped = self.actors.remove(&msg.id);
        if stopped.is_none() {
            self.deleted_unstarted.insert(msg.id);
        }
        once_handled(stopped.map(|addr| addr.send(delivery::Stop { deleted: true })))
    }
}

impl Handler<CrashActor> for Registry {
    type Result = bool;

    fn handle(&mut self, msg: CrashActor, _: &mut Context<Self>) -> bool {
        self.actors
            .get(&msg.webhook_id)
            .map(|a| a.do_send(delivery::Crash))
            .is_some()
    }
}

impl Handler<ActorOf> for Registry {
    type Result = Option<Addr<DeliveryActor>>;

    fn handle(&mut self, msg: ActorOf, _: &mut Context<Self>) -> Self::Result {
        self.actors.get(&msg.webhook_id)
    }
}

impl Handler<QueueDepth> for Registry {
    type Result = ResponseFuture<Option<delivery::Holding>>;

    fn handle(&mut self, msg: QueueDepth, _: &mut Context<Self>) -> Self::Result {
        let addr = self.actors.get(&msg.webhook_id);
        Box::pin(async move {
            match addr {
                Some(a) => a.send(delivery::Depth).await.ok(),
                None => None,
            }
        })
    }
}

impl Handler<ActorCount> for Registry {
    type Result = usize;

    fn handle(&mut self, _: ActorCount, _: &mut Context<Self>) -> usize {
        self.actors.len()
    }
}

impl Handler<StopAll> for Registry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopAll, _: &mut Context<Self>) -> Self::Result {
        let stops: Vec<_> = self
            .actors
            .drain()
            .iter()
            .map(|a| a.send(delivery::Stop { deleted: false }))
            .collect();
        let stopped = replies_then_log(stops, self.shared.log_writer.clone());
        Box::pin(stopped.into_actor(self).map(|_, _, ctx| ctx.stop()))
    }
}

impl Handler<DrainAll> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainAll, _: &mut Context<Self>) -> Self::Result {
        let drains: Vec<_> = self
            .actors
            .all()
            .iter()
            .map(|a| a.send(delivery::Drain))
            .collect();
        Box::pin(replies_then_log(drains, self.shared.log_writer.clone()))
    }
}

/// Waits for every actor's reply, then for the log writer to have written
/// every batch sent before: each answering actor handed its last entries
/// to the writer first.
async fn replies_then_log<F: std::future::Future>(replies: Vec<F>, log_writer: LogWriter) {
    futures_util::future::join_all(replies).await;
    log_writer.written().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tombstone_is_kept_through_one_ageing_and_forgotten_at_the_second() {
        let (kept, forgotten, taken) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut t = Tombstones::default();
        t.insert(kept);
        t.insert(forgotten);
        t.insert(taken);
        assert!(t.take(&taken));
        assert!(!t.take(&taken), "taken once only");
        t.age();
        assert!(t.take(&kept), "kept through one ageing");
        t.age();
        assert!(!t.take(&forgotten), "forgotten after two");
        assert!(t.recent.is_empty() && t.older.is_empty());
    }
}
