//! One WebSocket feed session (SPEC §8), as an actix-web-actors actor. All
//! of the WebSocket specifics live here so this module alone can move to
//! actix-ws later.
//!
//! The session's mailbox capacity is `feed.session_buffer`: while the
//! client does not read, the socket stops draining, this actor is not
//! polled, its mailbox fills and the broadcaster starts dropping (and then
//! evicting) for it alone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

use super::broadcaster::{Broadcaster, Connect, Disconnect, Frame, GoingAway, Subscribe};
use crate::domain::organisation::Caller;

const HEARTBEAT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame a client may send; its only message is a subscription.
const MAX_CLIENT_FRAME: usize = 16 * 1024;

pub struct FeedSession {
    id: Option<usize>,
    caller: Caller,
    event_types: Vec<String>,
    broadcaster: Addr<Broadcaster>,
    buffer: usize,
    evicted: Arc<AtomicBool>,
    last_heard: Instant,
}

/// Upgrades `req` to a feed session.
pub fn start(
    req: &HttpRequest,
    stream: actix_web::web::Payload,
    caller: Caller,
    event_types: Vec<String>,
    broadcaster: Addr<Broadcaster>,
    buffer: usize,
) -> Result<HttpResponse, actix_web::Error> {
    let session = FeedSession {
        id: None,
        caller,
        event_types,
        broadcaster,
        buffer,
        evicted: Arc::new(AtomicBool::new(false)),
        last_heard: Instant::now(),
    };
    ws::WsResponseBuilder::new(session, req, stream)
        .frame_size(MAX_CLIENT_FRAME)
        .start()
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe { events: Vec<String> },
}

impl FeedSession {
    fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: ws::CloseCode, reason: &str) {
        ctx.close(Some(ws::CloseReason {
            code,
            description: Some(reason.to_string()),
        }));
        ctx.stop();
    }

    fn heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        ctx.run_interval(HEARTBEAT, |act, ctx| {
            if act.evicted.load(Ordering::SeqCst) {
                return act.close(
                    ctx,
                    ws::CloseCode::Policy,
                    "too far behind: events were dropped",
                );
            }
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                return act.close(ctx, ws::CloseCode::Away, "no answer to pings for 30 s");
            }
            ctx.ping(b"");
        });
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Subscribe { events }) => {
                if let Some(id) = self.id {
                    self.broadcaster.do_send(Subscribe { id, events });
                }
            }
            Err(e) => self.close(
                ctx,
                ws::CloseCode::Invalid,
                &format!("expected {{\"type\":\"subscribe\",\"events\":[...]}}: {e}"),
            ),
        }
    }
}

impl Actor for FeedSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.buffer);
        self.heartbeat(ctx);
        let connect = Connect {
            recipient: ctx.address().recipient(),
            caller: self.caller.clone(),
            event_types: self.event_types.clone(),
            evicted: self.evicted.clone(),
            closer: ctx.address().recipient(),
        };
        // NB: `wait` holds back the mailbox until hello is written, so no
        // event frame can precede it.
        ctx.wait(
            self.broadcaster
                .send(connect)
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok((id, hello)) => {
                        act.id = Some(id);
                        ctx.text(hello);
                    }
                    Err(_) => act.close(ctx, ws::CloseCode::Again, "the feed is restarting"),
                }),
        );
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(id) = self.id.take() {
            self.broadcaster.do_send(Disconnect { id });
        }
        Running::Stop
    }
}

impl Handler<Frame> for FeedSession {
    type Result = ();

    fn handle(&mut self, msg: Frame, ctx: &mut Self::Context) {
        if self.evicted.load(Ordering::SeqCst) {
            return self.close(
                ctx,
                ws::CloseCode::Policy,
                "too far behind: events were dropped",
            );
        }
        ctx.text(&*msg.text);
    }
}

impl Handler<GoingAway> for FeedSession {
    type Result = ();

    fn handle(&mut self, _: GoingAway, ctx: &mut Self::Context) {
        self.close(ctx, ws::CloseCode::Away, "server shutting down");
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for FeedSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Pong(_)) => {}
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Binary(_)) => self.close(
                ctx,
                ws::CloseCode::Unsupported,
                "binary frames are not accepted",
            ),
            Ok(ws::Message::Close(_)) => ctx.stop(),
            Ok(ws::Message::Continuation(_)) => self.close(
                ctx,
                ws::CloseCode::Unsupported,
                "fragmented messages are not accepted",
            ),
            Ok(ws::Message::Nop) => {}
            Err(ws::ProtocolError::Overflow) => {
                self.close(ctx, ws::CloseCode::Size, "message too big")
            }
            Err(e) => self.close(
                ctx,
                ws::CloseCode::Protocol,
                &format!("protocol error: {e}"),
            ),
        }
    }
}
