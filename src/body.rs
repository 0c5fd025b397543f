//! [`SseBody`]: the response body of an event stream.
//!
//! It polls the stream's [`Subscription`] and a keep-alive timer, and yields:
//!
//! - the encoded events, several together when several were waiting (up to 64 KiB), so the
//!   server writes once per batch instead of once per event;
//! - a `:` comment line when nothing was sent for the keep-alive interval, so proxies and
//!   browsers keep the connection open;
//! - a `: lagged by N events` comment when the subscriber fell behind (see
//!   [`LagPolicy`](crate::LagPolicy));
//!
//! and ends when the broker closes (after the events already published), at the stream's turn
//! in a [drain](crate::Broker::drain) (after the events published until then and a `retry:`
//! field), when a lagging subscriber is disconnected, or at the request's [`Deadline`] (see
//! there). Dropping the body (the client went away) drops the subscription, which unsubscribes
//! at once.
//!
//! One timer serves the keep-alive, the drain and the deadline: it is armed for whichever
//! comes first.
//!
//! The same type also carries the short plain-text bodies of error responses, so that every
//! response of [`SseService`](crate::SseService) has one body type.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::{
    broker::{Delivery, Subscription},
    error::SubscribeError,
    random::between,
    response::plain,
};

/// When a stream ends: put in a request's extensions, the stream that
/// [`SseService`](crate::SseService) answers it with ends cleanly then (a token's expiry, say).
///
/// An [`AccessPolicy`](crate::access::AccessPolicy) sets it with
/// [`Grant::until`](crate::access::Grant::until); any layer of your own can insert one too
/// (with several, [`Access`](crate::access::Access) keeps the earliest).
///
/// At the deadline the body ends as at a [close](crate::Broker::close): the normal end of the
/// response, after the events already sent, and no event is sent from then on, even one
/// published before it and not yet sent. An `EventSource` then reconnects after its
/// reconnection time (a few seconds by default; the last `retry:` it got) with its
/// `Last-Event-ID`, so the events it missed are replayed (within the
/// [history](crate::BrokerBuilder::history)), and the new request is checked again: with a
/// fresh token, or refused. A deadline already past ends the stream at once, with no event:
/// refuse such a request instead.
///
/// The deadline is a [`tokio::time::Instant`]: it follows tokio's clock, paused in tests. A
/// token's expiry in seconds since the Unix epoch is `Instant::now()` plus how far it is from
/// [`SystemTime::now`](std::time::SystemTime::now).
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_sse::body::Deadline;
///
/// let mut req = http::Request::get("/events").body(()).unwrap();
/// req.extensions_mut().insert(Deadline(Instant::now() + Duration::from_secs(3600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

/// The most bytes of waiting events sent in one frame.
const MAX_FRAME: usize = 64 * 1024;

/// The whole seconds a client refused with a `503` (too many subscribers, backend down,
/// closed) is told to wait, drawn per response: 5.5 on average.
const RETRY_AFTER: (u64, u64) = (1, 10);

/// The keep-alive of [`SseBody::new`], as [`SseService`](crate::SseService)'s default.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pin_project! {
    /// The body of an event-stream response (or of a short error response).
    ///
    /// Built by [`SseService`](crate::SseService); see the [module docs](crate::body).
    ///
    /// ```
    /// use http_body::Body;
    /// use tower_sse::SseBody;
    ///
    /// let body = SseBody::from("not found");
    /// assert_eq!(body.size_hint().exact(), Some(9));
    /// ```
    pub struct SseBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Stream {
            // Sent before any event: the gap notice of an incomplete resume.
            first: Option<Bytes>,
            subscription: Subscription,
            keep_alive: Option<Duration>,
            // When the next keep-alive is due. Moved forward on every frame; the timer is
            // only re-armed when it fires early, so a busy stream never touches the timer.
            due: Instant,
            // When the stream ends: the request's `Deadline`.
            deadline: Option<Instant>,
            // Boxed, so the body stays `Unpin` and easy to use; made on the first idle poll.
            // Armed for the keep-alive, the stream's end in a drain or its deadline, whichever
            // is first.
            timer: Option<Pin<Box<Sleep>>>,
            ended: bool,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl SseBody {
    /// The body of a stream of `subscription`, for a handler of your own that subscribes with
    /// [`Broker::subscribe`](crate::Broker::subscribe) or [`Broker::resume`](crate::Broker::resume)
    /// itself (what [`SseService`](crate::SseService) does for you): a keep-alive comment
    /// after 15 s without events, no deadline, no gap event. Send it with
    /// [`SseBody::into_response`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower_sse::{Broker, SseBody, body::Deadline};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broker = Broker::new();
    /// let channels = broker.channel_rules().channels(["news"]).unwrap();
    /// let subscription = broker.subscribe(&channels).await.unwrap();
    /// let body = SseBody::new(subscription)
    ///     .keep_alive(Some(Duration::from_secs(30)))
    ///     .deadline(Deadline(Instant::now() + Duration::from_secs(3600)));
    /// let res = body.into_response();
    /// assert_eq!(res.headers()["content-type"], "text/event-stream");
    /// # }
    /// ```
    pub fn new(subscription: Subscription) -> SseBody {
        SseBody::stream(subscription, Some(KEEP_ALIVE), None, None)
    }

    /// The time without events after which a keep-alive comment is sent (`None`: never). No
    /// effect on a body that is not a stream.
    #[must_use]
    pub fn keep_alive(mut self, every: Option<Duration>) -> Self {
        if let Kind::Stream {
            keep_alive, due, ..
        } = &mut self.kind
        {
            *keep_alive = every;
            *due = every.map_or_else(far_future, |every| Instant::now() + every);
        }
        self
    }

    /// When the stream ends cleanly (see [`Deadline`]); the earlier one, if it had one. No
    /// effect on a body that is not a stream.
    #[must_use]
    pub fn deadline(mut self, at: Deadline) -> Self {
        if let Kind::Stream { deadline, .. } = &mut self.kind {
            *deadline = Some(deadline.map_or(at.0, |had| had.min(at.0)));
        }
        self
    }

    /// The `200 OK` response of an event stream: this body, `Content-Type: text/event-stream`,
    /// `Cache-Control: no-cache` and `X-Accel-Buffering: no` (so nginx passes events on at
    /// once). As [`SseService`](crate::SseService) answers.
    ///
    /// ```
    /// let res = tower_sse::SseBody::from("data: x\n\n").into_response();
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(res.headers()["cache-control"], "no-cache");
    /// ```
    pub fn into_response(self) -> Response<SseBody> {
        let mut res = Response::new(self);
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        res
    }

    /// The answer to a subscription that was refused: the error's
    /// [status](SubscribeError::status) and its reason as plain text, and for a `503` a
    /// `Retry-After` (the drain's own, else drawn in 1..=10 s for each response, so that
    /// refused clients don't all come back in the same second). As
    /// [`SseService`](crate::SseService) answers.
    ///
    /// ```
    /// use tower_sse::{SseBody, SubscribeError};
    ///
    /// let res = SseBody::refused(&SubscribeError::Closed);
    /// assert_eq!(res.status(), 503);
    /// assert!(res.headers().contains_key("retry-after"));
    /// ```
    pub fn refused(err: &SubscribeError) -> Response<SseBody> {
        let mut res = plain(err.status(), err.to_string());
        if err.status() == StatusCode::SERVICE_UNAVAILABLE {
            let secs = match err {
                SubscribeError::Draining { retry_after } => retry_after.as_secs(),
                _ => between(RETRY_AFTER.0, RETRY_AFTER.1),
            };
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }

    pub(crate) fn stream(
        subscription: Subscription,
        keep_alive: Option<Duration>,
        first: Option<Bytes>,
        deadline: Option<Deadline>,
    ) -> SseBody {
        let due = keep_alive.map_or_else(far_future, |every| Instant::now() + every);
        SseBody {
            kind: Kind::Stream {
                first,
                subscription,
                keep_alive,
                due,
                deadline: deadline.map(|Deadline(at)| at),
                timer: None,
                ended: false,
            },
        }
    }
}

fn far_future() -> Instant {
    // About 30 years, as tokio's own `Instant::far_future`.
    Instant::now() + Duration::from_secs(86400 * 365 * 30)
}

impl From<Bytes> for SseBody {
    fn from(data: Bytes) -> Self {
        SseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl From<&'static str> for SseBody {
    fn from(data: &'static str) -> Self {
        SseBody::from(Bytes::from_static(data.as_bytes()))
    }
}

impl From<String> for SseBody {
    fn from(data: String) -> Self {
        SseBody::from(Bytes::from(data))
    }
}

impl fmt::Debug for SseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Stream {
                subscription,
                deadline,
                ..
            } => f
                .debug_struct("SseBody")
                .field("subscription", subscription)
                .field("deadline", deadline)
                .finish(),
            Kind::Full { data } => f.debug_struct("SseBody").field("data", data).finish(),
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Stream {
                first,
                subscription,
                keep_alive,
                due,
                deadline,
                timer,
                ended,
            } => {
                if *ended {
                    return Poll::Ready(None);
                }
                // Looked at before every frame: a busy stream never waits on its timer. The
                // clock is read only for a stream that has a deadline.
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    *ended = true;
                    return Poll::Ready(None);
                }
                if let Some(first) = first.take() {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                let bytes = loop {
                    match subscription.poll_delivery(cx, MAX_FRAME) {
                        Poll::Ready(Some(Delivery::Events(bytes))) => break bytes,
                        Poll::Ready(Some(Delivery::Lagged(missed))) => {
                            break Bytes::from(format!(": lagged by {missed} events\n\n"));
                        }
                        // It drew its end: the timer below is armed for it.
                        Poll::Ready(Some(Delivery::Drain)) => continue,
                        Poll::Ready(None) => {
                            *ended = true;
                            return Poll::Ready(None);
                        }
                        Poll::Pending => {}
                    }
                    let end = subscription.drain_end();
                    let keep_alive_due = keep_alive.map(|_| *due);
                    let Some(wake) = [keep_alive_due, end, *deadline].into_iter().flatten().min()
                    else {
                        return Poll::Pending;
                    };
                    let timer =
                        timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake)));
                    if timer.deadline() > wake {
                        // A drain's end before the keep-alive it was armed for.
                        timer.as_mut().reset(wake);
                    }
                    loop {
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        let now = Instant::now();
                        if deadline.is_some_and(|deadline| now >= deadline) {
                            *ended = true;
                            return Poll::Ready(None);
                        }
                        if end.is_some_and(|end| now >= end) {
                            // Its turn: the subscription now ends the stream.
                            break;
                        }
                        if let Some(every) = *keep_alive {
                            if now >= *due {
                                *due = now + every;
                                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                                    b":\n\n",
                                )))));
                            }
                        }
                        // Fired early: frames went out since it was armed.
                        timer.as_mut().reset(wake);
                    }
                };
                if let Some(every) = keep_alive {
                    *due = Instant::now() + *every;
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Stream { ended, .. } => *ended,
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Stream { .. } => SizeHint::default(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Broker, Event};
    use http_body_util::BodyExt;

    async fn body(broker: &Broker, keep_alive: Option<Duration>) -> SseBody {
        let channels = broker.channel_rules().parse_query(None).unwrap();
        let subscription = broker.subscribe(&channels).await.unwrap();
        SseBody::stream(subscription, keep_alive, None, None)
    }

    #[test]
    fn send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SseBody>();
        fn assert_unpin<T: Unpin>() {}
        assert_unpin::<SseBody>();
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_after_idle_time_only() {
        let broker = Broker::builder().id_base(0).build();
        let mut body = body(&broker, Some(Duration::from_secs(15))).await;
        let start = Instant::now();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), ":\n\n");
        assert_eq!(start.elapsed(), Duration::from_secs(15));

        // An event resets the idle time.
        tokio::time::advance(Duration::from_secs(10)).await;
        broker
            .publish("sse", Event::default().data("x"))
            .await
            .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "data: x\nid: 1\n\n"
        );
        let sent = Instant::now();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            ":\n\n"
        );
        assert_eq!(sent.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn no_keep_alive_when_disabled() {
        let broker = Broker::builder().id_base(0).build();
        let mut body = body(&broker, None).await;
        let res = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(res.is_err());
    }

    #[tokio::test]
    async fn ends_when_broker_closes() {
        let broker = Broker::builder().id_base(0).build();
        let mut body = body(&broker, Some(Duration::from_secs(15))).await;
        broker
            .publish("sse", Event::default().data("x"))
            .await
            .unwrap();
        broker.close();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn lag_comment_then_end() {
        let broker = Broker::builder().id_base(0).buffer(1).build();
        let mut body = body(&broker, None).await;
        for _ in 0..3 {
            broker.publish("sse", Event::default()).await.unwrap();
        }
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), ": lagged by 2 events\n\n");
        assert!(body.frame().await.is_none());
    }

    fn poll(task: &mut tokio_test::task::Spawn<()>, body: &mut SseBody) -> Poll<Option<Bytes>> {
        task.enter(|cx, _| Pin::new(&mut *body).poll_frame(cx))
            .map(|frame| frame.map(|frame| frame.unwrap().into_data().unwrap()))
    }

    /// The `retry:` the body's subscription drew for its turn, in milliseconds.
    fn retry_ms(body: &SseBody) -> u64 {
        match &body.kind {
            Kind::Stream { subscription, .. } => subscription.drain_retry_ms().unwrap(),
            Kind::Full { .. } => unreachable!(),
        }
    }

    /// Reads the `retry:` field's milliseconds, checking the field's bytes exactly.
    fn parse_retry(frame: &[u8]) -> u64 {
        let text = std::str::from_utf8(frame).unwrap();
        let ms = text
            .strip_prefix("retry: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(text, format!("retry: {ms}\n\n"));
        ms
    }

    /// Whether a client that got its `retry:` of `ms` at `ended` (since the drain's start)
    /// reconnects in `[W + grace, 2W + grace]`, give or take the rounding up to 1 ms.
    fn reconnects_after_the_drain(ended: Duration, ms: u64, window: Duration) -> bool {
        let grace = crate::broker::DRAIN_GRACE;
        let reconnect = ended + Duration::from_millis(ms);
        reconnect >= window + grace && reconnect <= 2 * window + grace + Duration::from_millis(1)
    }

    #[tokio::test(start_paused = true)]
    async fn drain_wakes_an_idle_stream_delivers_then_sends_retry_and_ends() {
        use tokio_test::{assert_pending, assert_ready_eq};
        let broker = Broker::builder().id_base(0).build();
        let mut body = body(&broker, Some(Duration::from_secs(15))).await;
        let mut task = tokio_test::task::spawn(());
        assert_pending!(poll(&mut task, &mut body));

        let window = Duration::from_secs(1);
        let start = Instant::now();
        let drained = broker.drain(window);
        assert!(task.is_woken(), "the drain's start wakes a waiting stream");
        // Events published during the drain still arrive, up to the stream's turn.
        broker
            .publish("sse", Event::default().data("during"))
            .await
            .unwrap();
        assert_ready_eq!(
            poll(&mut task, &mut body),
            Some(Bytes::from("data: during\nid: 1\n\n"))
        );
        assert_pending!(poll(&mut task, &mut body));
        // Its timer is armed for its turn, not for the keep-alive 15 s away.
        tokio::time::advance(window).await;
        assert!(task.is_woken(), "its timer wakes it at its turn");
        let retry = format!("retry: {}\n\n", retry_ms(&body));
        assert_ready_eq!(poll(&mut task, &mut body), Some(Bytes::from(retry)));
        assert_ready_eq!(poll(&mut task, &mut body), None);
        assert!(body.is_end_stream());

        // The last stream is gone: the drain is over, before its grace.
        drop(body);
        drained.await;
        assert!(broker.is_closed());
        assert_eq!(start.elapsed(), window);
    }

    /// Keep-alives go on during a drain until the stream's turn, which is within the window.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_goes_on_until_the_turn() {
        let broker = Broker::builder().id_base(0).build();
        let mut body = body(&broker, Some(Duration::from_secs(15))).await;
        let window = Duration::from_secs(3600);
        let start = Instant::now();
        let _drained = broker.drain(window);
        let mut last = start;
        let retry = loop {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if frame != ":\n\n" {
                break frame;
            }
            assert_eq!(last.elapsed(), Duration::from_secs(15));
            last = Instant::now();
        };
        let ended = start.elapsed();
        assert!(ended < window, "{ended:?}");
        assert!(last.elapsed() < Duration::from_secs(15));
        let ms = parse_retry(&retry);
        assert!(
            reconnects_after_the_drain(ended, ms, window),
            "{ended:?} {ms}"
        );
        assert!(body.frame().await.is_none());
    }

    /// Without keep-alive the body still has its timer for the turn; with a window of 0 a
    /// stream ends at once, and its client waits the grace, 1 s, exactly.
    #[tokio::test(start_paused = true)]
    async fn drain_without_keep_alive_and_a_zero_window() {
        let broker = Broker::builder().id_base(0).build();
        let mut slow = body(&broker, None).await;
        let start = Instant::now();
        let window = Duration::from_millis(500);
        let _drained = broker.drain(window);
        let frame = slow.frame().await.unwrap().unwrap().into_data().unwrap();
        let ended = start.elapsed();
        assert!(ended < window);
        assert!(reconnects_after_the_drain(
            ended,
            parse_retry(&frame),
            window
        ));
        assert!(slow.frame().await.is_none());

        let broker = Broker::builder().id_base(0).build();
        let mut at_once = body(&broker, None).await;
        let start = Instant::now();
        let _drained = broker.drain(Duration::ZERO);
        assert_eq!(
            at_once.frame().await.unwrap().unwrap().into_data().unwrap(),
            "retry: 1000\n\n"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(at_once.frame().await.is_none());
    }

    async fn body_until(broker: &Broker, keep_alive: Option<Duration>, at: Instant) -> SseBody {
        let channels = broker.channel_rules().parse_query(None).unwrap();
        let subscription = broker.subscribe(&channels).await.unwrap();
        SseBody::stream(subscription, keep_alive, None, Some(Deadline(at)))
    }

    /// An idle stream ends at its deadline, woken by its timer, not a moment before.
    #[tokio::test(start_paused = true)]
    async fn ends_at_the_deadline_not_before() {
        use tokio_test::{assert_pending, assert_ready_eq};
        let broker = Broker::builder().id_base(0).build();
        let at = Instant::now() + Duration::from_secs(1);
        let mut body = body_until(&broker, Some(Duration::from_secs(15)), at).await;
        let mut task = tokio_test::task::spawn(());
        broker
            .publish("sse", Event::default().data("before"))
            .await
            .unwrap();
        assert_ready_eq!(
            poll(&mut task, &mut body),
            Some(Bytes::from("data: before\nid: 1\n\n"))
        );
        assert_pending!(poll(&mut task, &mut body));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!task.is_woken());
        assert_pending!(poll(&mut task, &mut body));
        assert!(!body.is_end_stream());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(task.is_woken(), "its timer wakes it at the deadline");
        assert_ready_eq!(poll(&mut task, &mut body), None);
        assert!(body.is_end_stream());
        assert_ready_eq!(poll(&mut task, &mut body), None);
    }

    /// Keep-alives go on until the deadline; the timer is armed for whichever is first.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_until_the_deadline() {
        let broker = Broker::builder().id_base(0).build();
        let start = Instant::now();
        let at = start + Duration::from_millis(2500);
        let mut body = body_until(&broker, Some(Duration::from_secs(1)), at).await;
        for second in 1..=2 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), ":\n\n");
            assert_eq!(start.elapsed(), Duration::from_secs(second));
        }
        assert!(body.frame().await.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(2500));

        // Without keep-alive, the deadline alone arms the timer.
        let start = Instant::now();
        let at = start + Duration::from_secs(3);
        let mut body = body_until(&broker, None, at).await;
        assert!(body.frame().await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    /// Past the deadline nothing more is sent, even events that were waiting: a busy stream
    /// ends too.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_after_the_deadline() {
        let broker = Broker::builder().id_base(0).build();
        let at = Instant::now() + Duration::from_secs(1);
        let mut body = body_until(&broker, None, at).await;
        broker
            .publish("sse", Event::default().data("in time"))
            .await
            .unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "data: in time\nid: 1\n\n");
        tokio::time::advance(Duration::from_secs(1)).await;
        broker
            .publish("sse", Event::default().data("waiting"))
            .await
            .unwrap();
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    /// A deadline already past ends the stream at once, before the gap notice.
    #[tokio::test(start_paused = true)]
    async fn a_past_deadline_ends_at_once() {
        use tokio_test::assert_ready_eq;
        let broker = Broker::builder().id_base(0).build();
        let channels = broker.channel_rules().parse_query(None).unwrap();
        let subscription = broker.subscribe(&channels).await.unwrap();
        let first = Some(Bytes::from_static(b"event: gap\ndata: gap\n\n"));
        let mut body = SseBody::stream(subscription, None, first, Some(Deadline(Instant::now())));
        let mut task = tokio_test::task::spawn(());
        assert_ready_eq!(poll(&mut task, &mut body), None);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn full_body() {
        let mut body = SseBody::from("bad channel");
        assert!(!body.is_end_stream());
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "bad channel"
        );
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
