//! One WebSocket feed session (SPEC §8), as an actix-web-actors actor. All
//! of the WebSocket specifics live here so this module alone can move to
//! actix-ws later.
//!
//! The session's mailbox capacity is `feed.session_buffer`: while the
//! client does not read, the socket stops draining, this actor is not
//! polled, its mailbox fills and the broadcaster starts dropping (and then
//! evicting) for it alone.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use actix_web_actors::ws;
use futures_util::Stream;
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
    /// Set by the session's `FrameGuard` when it ends the input stream.
    oversized: Arc<AtomicBool>,
    /// The session's place in its key's session limit, held for its life.
    _slot: Box<dyn Send>,
    /// Subscriptions on their way to the broadcaster (see `subscribe`).
    subscriptions: OneAtATime<Vec<String>>,
}

/// Hands on one value at a time: offered while one is on its way, a value
/// waits, replacing any older one waiting.
struct OneAtATime<T> {
    on_its_way: bool,
    waiting: Option<T>,
}

impl<T> OneAtATime<T> {
    fn new() -> Self {
        OneAtATime {
            on_its_way: false,
            waiting: None,
        }
    }

    /// `value` if it may go now (it is then on its way).
    fn offer(&mut self, value: T) -> Option<T> {
        if self.on_its_way {
            self.waiting = Some(value);
            return None;
        }
        self.on_its_way = true;
        Some(value)
    }

    /// The one on its way arrived: the value to send next, if any.
    fn arrived(&mut self) -> Option<T> {
        self.on_its_way = false;
        let next = self.waiting.take()?;
        self.offer(next)
    }
}

/// Upgrades `req` to a feed session.
pub fn start(
    req: &HttpRequest,
    stream: actix_web::web::Payload,
    caller: Caller,
    event_types: Vec<String>,
    broadcaster: Addr<Broadcaster>,
    buffer: usize,
    slot: impl Send + 'static,
) -> Result<HttpResponse, actix_web::Error> {
    let oversized = Arc::new(AtomicBool::new(false));
    let session = FeedSession {
        id: None,
        caller,
        event_types,
        broadcaster,
        buffer,
        evicted: Arc::new(AtomicBool::new(false)),
        last_heard: Instant::now(),
        oversized: oversized.clone(),
        _slot: Box::new(slot),
        subscriptions: OneAtATime::new(),
    };
    let guarded = FrameGuard {
        stream,
        header: Vec::with_capacity(14),
        payload_left: 0,
        oversized,
    };
    ws::WsResponseBuilder::new(session, req, guarded)
        .frame_size(MAX_CLIENT_FRAME)
        .start()
}

/// Ends a session's input at the header of any frame longer than
/// `MAX_CLIENT_FRAME`.
///
/// NB: actix-http's decoder refuses such a frame only once all of it has
/// arrived, and buffers it until then, so a client that announces a huge
/// frame and keeps sending could fill the server's memory.
struct FrameGuard<S> {
    stream: S,
    /// The header being read, while `payload_left` is 0.
    header: Vec<u8>,
    payload_left: u64,
    oversized: Arc<AtomicBool>,
}

impl<S> FrameGuard<S> {
    /// Follows frame boundaries through `chunk`; false at an oversized frame.
    fn admits(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(chunk.len() as u64);
                self.payload_left -= skipped;
                chunk = &chunk[skipped as usize..];
                continue;
            }
            self.header.push(chunk[0]);
            chunk = &chunk[1..];
            if let Some(length) = payload_length(&self.header) {
                if length > MAX_CLIENT_FRAME as u64 {
                    return false;
                }
                self.payload_left = length;
                self.header.clear();
            }
        }
        true
    }
}

/// A frame's payload length, once `header` holds all of its header
/// (RFC 6455 §5.2: a 7-bit length, or 126 or 127 and 2 or 8 more bytes of
/// length, then the mask if any).
fn payload_length(header: &[u8]) -> Option<u64> {
    let [_, second, rest @ ..] = header else {
        return None;
    };
    let short = (second & 0x7f) as u64;
    let extended = match short {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if rest.len() < extended + mask {
        return None;
    }
    Some(match extended {
        0 => short,
        n => rest[..n]
            .iter()
            .fold(0, |length, &b| length << 8 | b as u64),
    })
}

impl<S: Stream<Item = Result<Bytes, PayloadError>> + Unpin> Stream for FrameGuard<S> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        if self.oversized.load(Ordering::SeqCst) {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.stream).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            if !self.admits(chunk) {
                self.oversized.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
        }
        polled
    }
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

    /// Tells the broadcaster, one subscription at a time: while one is on
    /// its way, the latest that came after it waits, replacing any older.
    ///
    /// NB: forwarding each at once let a client that sent them at wire
    /// speed fill the broadcaster's mailbox (1.5 GB in 15 s in a probe).
    fn subscribe(&mut self, events: Vec<String>, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(events) = self.subscriptions.offer(events) {
            self.tell_subscription(events, ctx);
        }
    }

    fn tell_subscription(&mut self, events: Vec<String>, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(id) = self.id else { return };
        let told = self.broadcaster.send(Subscribe { id, events });
        ctx.spawn(told.into_actor(self).map(|_, act, ctx| {
            if let Some(next) = act.subscriptions.arrived() {
                act.tell_subscription(next, ctx);
            }
        }));
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Subscribe { events }) => self.subscribe(events, ctx),
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
            Err(_) if self.oversized.load(Ordering::SeqCst) => {
                self.close(ctx, ws::CloseCode::Size, "message too big")
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FrameGuard<()> {
        FrameGuard {
            stream: (),
            header: Vec::new(),
            payload_left: 0,
            oversized: Arc::default(),
        }
    }

    /// The header of a masked client text frame of `len` bytes.
    fn header(len: usize) -> Vec<u8> {
        let mut h = vec![0x81];
        match len {
            0..=125 => h.push(0x80 | len as u8),
            126..=65535 => {
                h.push(0x80 | 126);
                h.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(0x80 | 127);
                h.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        h.extend_from_slice(&[9, 9, 9, 9]);
        h
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = header(len);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn one_at_a_time_sends_the_first_and_then_only_the_latest() {
        let mut q = OneAtATime::new();
        assert_eq!(q.offer(1), Some(1));
        assert_eq!(q.offer(2), None);
        assert_eq!(q.offer(3), None);
        assert_eq!(q.arrived(), Some(3), "2 was replaced");
        assert_eq!(q.offer(4), None, "3 is on its way");
        assert_eq!(q.arrived(), Some(4));
        assert_eq!(q.arrived(), None);
        assert_eq!(q.offer(5), Some(5), "nothing on its way");
    }

    #[test]
    fn frames_up_to_the_limit_pass_however_they_are_split() {
        let stream: Vec<u8> = [0, 5, 125, 126, 300, MAX_CLIENT_FRAME]
            .into_iter()
            .flat_map(frame)
            .collect();
        for split in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut g = guard();
            assert!(stream.chunks(split).all(|c| g.admits(c)), "split {split}");
            assert_eq!((g.payload_left, g.header.len()), (0, 0), "split {split}");
        }
    }

    #[test]
    fn a_longer_frame_is_refused_at_its_header() {
        for len in [MAX_CLIENT_FRAME + 1, 1 << 40] {
            let mut g = guard();
            assert!(g.admits(&frame(3)), "a small frame first");
            let h = header(len);
            let (start, last) = h.split_at(h.len() - 1);
            assert!(g.admits(start), "nothing to judge before the header ends");
            assert!(!g.admits(last), "length {len}");
        }
    }
}
