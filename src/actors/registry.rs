//! The registry owns one supervised delivery actor per webhook, spread over
//! a pool of arbiters (threads). It starts them at boot (resuming every
//! stored queue, after dropping what is queued for deleted webhooks),
//! routes new deliveries to them, and starts, updates and stops them as
//! webhooks are created, changed and deleted.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::web::Bytes;
use uuid::Uuid;

use super::delivery::{self, DeliveryActor};
use super::DeliveryContext;
use crate::domain::delivery::QueuedDelivery;
use crate::domain::webhook::Webhook;

pub struct Registry {
    shared: Arc<DeliveryContext>,
    /// The delivery threads; they stop when the registry stops.
    arbiters: Vec<Arbiter>,
    actors: HashMap<Uuid, Addr<DeliveryActor>>,
    next_arbiter: usize,
}

/// A webhook was created or changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookSaved {
    /// The stored record.
    pub webhook: Webhook,
}

/// A webhook was deleted: drop its actor and anything it had in flight.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WebhookDeleted {
    /// The deleted webhook's id.
    pub id: Uuid,
}

/// Durable deliveries of one event, to hand to their webhooks' actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// One per subscribed webhook.
    pub deliveries: Vec<QueuedDelivery>,
    /// The event's canonical body, shared by all of them.
    pub body: Bytes,
}

/// Makes one webhook's actor panic (tests of supervision).
#[doc(hidden)]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CrashActor {
    /// Whose actor.
    pub webhook_id: Uuid,
}

/// Shutdown: every actor finishes its in-flight attempts and starts no
/// new ones; answers when all are idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainAll;

/// How many webhook actors are running.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ActorCount;

/// How many deliveries one webhook's actor holds (queued + in flight).
#[derive(Message)]
#[rtype(result = "Option<usize>")]
pub struct QueueDepth {
    /// Whose actor.
    pub webhook_id: Uuid,
}

impl Registry {
    pub fn new(shared: Arc<DeliveryContext>, threads: usize) -> Self {
        Registry {
            shared,
            arbiters: (0..threads.max(1)).map(|_| Arbiter::new()).collect(),
            actors: HashMap::new(),
            next_arbiter: 0,
        }
    }

    fn spawn(&mut self, webhook_id: Uuid) -> Addr<DeliveryActor> {
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter += 1;
        let shared = self.shared.clone();
        Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            DeliveryActor::new(webhook_id, shared)
        })
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        match self.shared.store.purge_orphan_deliveries() {
            Ok(0) => {}
            Ok(n) => log::warn!("removed {n} queued deliveries of deleted webhooks"),
            Err(e) => log::error!("cannot look for queued deliveries of deleted webhooks: {e}"),
        }
        match self.shared.store.all_webhooks() {
            Ok(webhooks) => {
                for w in webhooks {
                    let addr = self.spawn(w.id);
                    self.actors.insert(w.id, addr);
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
        for (_, addr) in self.actors.drain() {
            addr.do_send(delivery::Stop);
        }
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Handler<WebhookSaved> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WebhookSaved, _: &mut Context<Self>) {
        match self.actors.get(&msg.webhook.id) {
            Some(addr) => addr.do_send(delivery::WebhookChanged {
                webhook: msg.webhook,
            }),
            None => {
                let addr = self.spawn(msg.webhook.id);
                self.actors.insert(msg.webhook.id, addr);
            }
        }
    }
}

impl Handler<WebhookDeleted> for Registry {
    type Result = ();

    fn handle(&mut self, msg: WebhookDeleted, _: &mut Context<Self>) {
        if let Some(addr) = self.actors.remove(&msg.id) {
            addr.do_send(delivery::Stop);
        }
    }
}

impl Handler<Deliver> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        for d in msg.deliveries {
            match self.actors.get(&d.webhook_id) {
                Some(addr) => addr.do_send(delivery::Enqueue {
                    delivery: d,
                    body: msg.body.clone(),
                }),
                None => log::warn!("delivery {} for unknown webhook {}", d.id, d.webhook_id),
            }
        }
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

impl Handler<QueueDepth> for Registry {
    type Result = ResponseFuture<Option<usize>>;

    fn handle(&mut self, msg: QueueDepth, _: &mut Context<Self>) -> Self::Result {
        let addr = self.actors.get(&msg.webhook_id).cloned();
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

impl Handler<DrainAll> for Registry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: DrainAll, _: &mut Context<Self>) -> Self::Result {
        let drains: Vec<_> = self
            .actors
            .values()
            .map(|a| a.send(delivery::Drain))
            .collect();
        Box::pin(async move {
            futures_util::future::join_all(drains).await;
        })
    }
}
