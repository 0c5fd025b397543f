//! `SseService` in process: answers, refusals, ids, the response future.

use std::{future::Future, pin::Pin};

use super::*;
use crate::Event;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

#[test]
fn send_sync_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<SseService>();
}

#[tokio::test]
async fn headers_and_subscription() {
    let broker = Broker::builder().id_base(0).build();
    let res = SseService::new(broker.clone())
        .oneshot(get("/?channel=a&channel=b"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert_eq!(broker.subscriber_count("a"), 1);
    assert_eq!(broker.subscriber_count("b"), 1);
    broker
        .publish("b", Event::default().data("x"))
        .await
        .unwrap();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "data: x\nid: 1\n\n");
    drop(body);
    assert_eq!(broker.channel_count(), 0);
}

#[tokio::test]
async fn bad_channel_is_400_with_reason() {
    let broker = Broker::builder().id_base(0).build();
    let res = SseService::new(broker.clone())
        .oneshot(get("/?channel=%ZZ"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "invalid percent-encoding or UTF-8 in query");
    assert_eq!(broker.channel_count(), 0);
}

#[tokio::test]
async fn too_many_subscribers_is_503_with_retry_after() {
    let broker = Broker::builder()
        .id_base(0)
        .max_subscribers_per_channel(1)
        .build();
    let service = SseService::new(broker.clone());
    let open = service.clone().oneshot(get("/?channel=a")).await.unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let res = service.clone().oneshot(get("/?channel=a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "too many subscribers on channel a (limit 1)");
    drop(open);
    let res = service.oneshot(get("/?channel=a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

async fn first_frame(res: Response<SseBody>) -> String {
    let frame = res.into_body().frame().await.unwrap().unwrap();
    String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn resumes_from_header_or_query() {
    let broker = Broker::builder().id_base(0).history(10).build();
    for data in ["1", "2"] {
        broker
            .publish("sse", Event::default().data(data))
            .await
            .unwrap();
    }
    let service = SseService::new(broker);
    let req = Request::get("/")
        .header("last-event-id", "1")
        .body(())
        .unwrap();
    let res = service.clone().oneshot(req).await.unwrap();
    assert_eq!(first_frame(res).await, "data: 2\nid: 2\n\n");
    let res = service
        .clone()
        .oneshot(get("/?lastEventId=1"))
        .await
        .unwrap();
    assert_eq!(first_frame(res).await, "data: 2\nid: 2\n\n");
    // The header wins.
    let req = Request::get("/?lastEventId=0")
        .header("last-event-id", "1")
        .body(())
        .unwrap();
    let res = service.clone().oneshot(req).await.unwrap();
    assert_eq!(first_frame(res).await, "data: 2\nid: 2\n\n");
}

#[tokio::test]
async fn unknown_last_event_id_gets_the_gap_event() {
    let service = SseService::new(Broker::builder().id_base(0).build());
    let res = service
        .clone()
        .oneshot(get("/?lastEventId=nope"))
        .await
        .unwrap();
    assert_eq!(first_frame(res).await, "event: gap\ndata: unknown\n\n");
    let res = service
        .gap_event(None)
        .oneshot(get("/?lastEventId=nope"))
        .await
        .unwrap();
    assert!(res.into_body().frame().now_or_never().is_none());
}

#[tokio::test]
async fn bad_last_event_id_is_400() {
    let service = SseService::new(Broker::builder().id_base(0).build()).max_last_event_id(4);
    let req = Request::get("/")
        .header("last-event-id", "12345")
        .body(())
        .unwrap();
    let res = service.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = service
        .clone()
        .oneshot(get("/?lastEventId=%FF"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = service.oneshot(get("/?lastEventId=12345")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn closed_broker_is_503() {
    let broker = Broker::builder().id_base(0).build();
    broker.close();
    let res = SseService::new(broker).oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// In process the subscription is made in `call`, and the future is ready at its first
/// poll, for an answer of every kind.
#[test]
fn in_process_the_future_is_ready_at_once() {
    use std::task::Waker;
    let broker = Broker::builder()
        .id_base(0)
        .max_subscribers_per_channel(1)
        .build();
    let mut service = SseService::new(broker.clone());
    let mut cx = Context::from_waker(Waker::noop());
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for uri in ["/?channel=a", "/?channel=a", "/?channel=%ZZ"] {
        let mut future = tower::Service::call(&mut service, get(uri));
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "ready" }"#
        );
        let Poll::Ready(Ok(res)) = Pin::new(&mut future).poll(&mut cx) else {
            panic!("{uri}: not ready");
        };
        assert_eq!(format!("{future:?}"), r#"ResponseFuture { state: "done" }"#);
        statuses.push(res.status());
        open.push(res);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::BAD_REQUEST
        ]
    );
    assert_eq!(broker.subscriber_count("a"), 1);
    // Made before the future is polled: there is nothing left to wait for.
    let _unpolled = tower::Service::call(&mut service, get("/?channel=b"));
    assert_eq!(broker.subscriber_count("b"), 1);
}

/// A `Deadline` in the request's extensions (from the access layer, or any layer) ends the
/// stream then.
#[tokio::test(start_paused = true)]
async fn the_stream_ends_at_the_requests_deadline() {
    let broker = Broker::builder().id_base(0).build();
    let start = tokio::time::Instant::now();
    let mut req = get("/?channel=a");
    req.extensions_mut()
        .insert(Deadline(start + Duration::from_secs(20)));
    let res = SseService::new(broker.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    // Keep-alives at 15 s, then the end at 20 s.
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), ":\n\n");
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert!(body.frame().await.is_none());
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

#[tokio::test]
async fn checked_channels_in_extensions_win_over_the_query() {
    let broker = Broker::builder().id_base(0).build();
    let mut req = get("/?channel=other");
    let checked = ChannelRules::default().channels(["a"]).unwrap();
    req.extensions_mut().insert(checked);
    let _res = SseService::new(broker.clone()).oneshot(req).await.unwrap();
    assert_eq!(broker.subscriber_count("a"), 1);
    assert_eq!(broker.subscriber_count("other"), 0);
}
