//! The store contract's finalization cases: exactly-once claims, delivery until acknowledged,
//! bounded redelivery with backoff into the dead letters and back, and a sweeper that comes late.
//! Time passes by the test's clock ([`TestTime`]): the backoff, which Redis judges by a pending
//! entry's idle time, included.

use std::time::Duration;

use broker::finalize::{Delivery, Redelivery};
use broker::ids::PrincipalId;
use broker::session::Links;
use broker::store::{AdminAction, Store};

use crate::common::{GRACE, IDLE, idle_tenths, principal, query, work};
use crate::support::time::TestTime;

/// A policy that never redelivers within a test (for plain draining).
const NO_REDELIVERY: Redelivery = Redelivery {
    after: Duration::from_secs(600),
    attempts: 8,
};

/// Every event `consumer` gets until none is left, under `policy`.
async fn drain(store: &dyn Store, consumer: &str, policy: &Redelivery) -> Vec<Delivery> {
    let mut events = Vec::new();
    loop {
        let batch = store
            .next_finalized(consumer, 10, policy)
            .await
            .expect("events");
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

fn of(events: &[Delivery], p: &PrincipalId) -> Vec<Delivery> {
    events
        .iter()
        .filter(|d| &d.event.principal == p)
        .cloned()
        .collect()
}

pub async fn idle_sessions_are_finalized_once_and_delivered_until_acknowledged(
    store: &dyn Store,
    time: &TestTime,
) {
    let p = principal(9);
    let idle = work(&p, "claude-ai", "handover-me", 1);
    let busy = work(&p, "claude-code", "still-busy", 1);
    store.bind(&idle, &Links::default()).await.expect("bind");
    store.bind(&busy, &Links::default()).await.expect("bind");
    time.pass(idle_tenths(6)).await;
    assert!(
        store
            .touch(&busy, &Links::default(), 2)
            .await
            .expect("touch")
    );
    time.pass(idle_tenths(7)).await;
    // `idle` is past its deadline; `busy` was called 0.7 idle TTL ago: activity postponed its deadline.
    let mut claimed = 0;
    for _ in 0..3 {
        claimed += store.claim_expired(100).await.expect("claim").finalized;
    }
    let events = drain(store, "a", &NO_REDELIVERY).await;
    let mine = of(&events, &p);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].event.project.as_str(), "handover-me");
    assert_eq!(mine[0].event.calls, 1);
    assert!(claimed >= 1);

    // Finalized: not live, not touchable, never revived by a bind, never claimed again.
    assert!(
        !store
            .touch(&idle, &Links::default(), 3)
            .await
            .expect("touch")
    );
    assert!(store.bind(&idle, &Links::default()).await.is_err());
    let live = store
        .lookup(&query(&p, "claude-ai"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    assert!(live.is_empty());
    assert_eq!(store.claim_expired(100).await.expect("claim").finalized, 0);

    // Not acknowledged: another consumer gets it once its backoff passed; acknowledged: nobody does.
    let quick = Redelivery {
        after: Duration::from_millis(1),
        attempts: 8,
    };
    time.pass(Duration::from_millis(5)).await;
    let retaken = store.next_finalized("b", 10, &quick).await.expect("events");
    let again = of(&retaken, &p);
    assert_eq!(
        again.len(),
        1,
        "an unacknowledged event is handed out again"
    );
    assert!(again[0].redeliveries >= 1);
    for delivery in events.iter().chain(retaken.iter()) {
        store.ack_finalized(&delivery.id).await.expect("ack");
    }
    time.pass(Duration::from_millis(5)).await;
    let after = store.next_finalized("c", 10, &quick).await.expect("events");
    assert!(after.is_empty(), "{after:?}");

    // `busy` is finalized once it idles too.
    time.pass(idle_tenths(11)).await;
    assert!(store.claim_expired(100).await.expect("claim").finalized >= 1);
    for delivery in drain(store, "a", &NO_REDELIVERY).await {
        store.ack_finalized(&delivery.id).await.expect("ack");
    }
}

/// Ends a fresh work session of `p` now and returns its event, taken by `consumer` under `policy`.
async fn one_event(
    store: &dyn Store,
    p: &PrincipalId,
    project: &str,
    policy: &Redelivery,
) -> Delivery {
    let session = work(p, "claude-ai", project, 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    assert!(
        store
            .admin(p, &session.id, &AdminAction::End)
            .await
            .expect("end")
    );
    assert!(store.claim_expired(100).await.expect("claim").finalized >= 1);
    let events = of(&drain(store, "first", policy).await, p);
    assert_eq!(events.len(), 1, "{events:?}");
    events[0].clone()
}

pub async fn failing_events_back_off_then_go_to_the_dead_letters_and_replay(
    store: &dyn Store,
    time: &TestTime,
) {
    // A backoff of 10 s, then 20 s: far more than the real time a case takes, which Redis counts
    // in a pending entry's idle time too.
    let policy = Redelivery {
        after: Duration::from_secs(10),
        attempts: 2,
    };
    let p = principal(40);
    let first = one_event(store, &p, "poisoned", &policy).await;
    assert_eq!(first.redeliveries, 0);
    // Its action failed: not handed out again before the backoff...
    assert!(
        of(
            &store.next_finalized("x", 10, &policy).await.expect("read"),
            &p
        )
        .is_empty()
    );
    // ...then once more, for the second and last attempt.
    time.pass(Duration::from_millis(11_500)).await;
    let second = of(
        &store.next_finalized("y", 10, &policy).await.expect("read"),
        &p,
    );
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0].redeliveries, 1);
    // The deliverer gives up after the last attempt: dead letter, never delivered again.
    store
        .dead_letter(&second[0], "webhook: HTTP 500")
        .await
        .expect("bury");
    time.pass(Duration::from_millis(21_500)).await;
    assert!(
        of(
            &store.next_finalized("z", 10, &policy).await.expect("read"),
            &p
        )
        .is_empty()
    );
    let dead: Vec<_> = store
        .dead_letters(100)
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.event.principal == p)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "webhook: HTTP 500");
    assert_eq!(dead[0].deliveries, 2);
    assert_eq!(dead[0].event.work_session, first.event.work_session);

    // An operator replays it: a new event, from its first attempt; the dead letter is gone.
    assert!(store.replay_dead_letter(&dead[0].id).await.expect("replay"));
    assert!(!store.replay_dead_letter(&dead[0].id).await.expect("again"));
    let replayed = of(
        &store.next_finalized("w", 10, &policy).await.expect("read"),
        &p,
    );
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0].redeliveries, 0);
    assert_eq!(replayed[0].event, first.event);
    store.ack_finalized(&replayed[0].id).await.expect("ack");
    let dead = store.dead_letters(100).await.expect("list");
    assert!(dead.iter().all(|d| d.event.principal != p), "{dead:?}");

    // An event its takers never acknowledge (they died each time) is buried after its attempts.
    let q = principal(41);
    let abandoned = one_event(store, &q, "abandoned", &policy).await;
    time.pass(Duration::from_millis(11_500)).await;
    assert_eq!(
        of(
            &store.next_finalized("v", 10, &policy).await.expect("read"),
            &q
        )
        .len(),
        1
    );
    time.pass(Duration::from_millis(21_500)).await;
    assert!(
        of(
            &store.next_finalized("u", 10, &policy).await.expect("read"),
            &q
        )
        .is_empty()
    );
    let dead: Vec<_> = store
        .dead_letters(100)
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.event.principal == q)
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.work_session, abandoned.event.work_session);
    assert!(dead[0].reason.contains("not acknowledged"), "{dead:?}");
}

/// A work session left without any sweeper for longer than its idle TTL and the grace together is
/// still finalized, once, with its data, when one finally runs (its data, a Redis hash, lives the
/// safety TTL past the deadline; the test's time ages that TTL as real time would).
pub async fn a_late_sweeper_still_finalizes_exactly_once(store: &dyn Store, time: &TestTime) {
    let p = principal(50);
    let session = work(&p, "claude-ai", "late", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    time.pass(IDLE + GRACE + IDLE / 2).await;
    let mut finalized = 0;
    for _ in 0..3 {
        finalized += store.claim_expired(100).await.expect("claim").finalized;
    }
    assert!(finalized >= 1);
    let events = of(&drain(store, "late", &NO_REDELIVERY).await, &p);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.work_session, session.id);
    assert_eq!(events[0].event.project.as_str(), "late");
    store.ack_finalized(&events[0].id).await.expect("ack");
}

/// With `Lifetimes::refresh` (the proxy's refresh interval), a work session's deadline is pushed
/// that far past its idle TTL: it stops being live at its idle TTL after its last activity (which a
/// touch never moves back), and is finalized, once, only after the refresh interval more. (A call a
/// replica counted but never sent came within the interval after the last touch: covered.) The
/// store runs with `refresh` = 0.2 idle TTL.
pub async fn a_refresh_covers_the_interval_after_it(store: &dyn Store, time: &TestTime) {
    let p = principal(41);
    let session = work(&p, "cursor", "ahead", 1);
    store.bind(&session, &Links::default()).await.expect("bind");
    time.pass(idle_tenths(5)).await;
    let now = time.clock().now_ms();
    assert!(
        store
            .touch(&session, &Links::default(), now)
            .await
            .expect("touch")
    );
    // 1.1 idle TTL after the touch: idle, but within its deadline: not finalized yet.
    time.pass(idle_tenths(11)).await;
    let live = store
        .lookup(&query(&p, "cursor"))
        .await
        .expect("lookup")
        .found
        .surface_live;
    assert!(
        live.is_empty(),
        "idle an idle TTL after its last activity: {live:?}"
    );
    assert_eq!(
        store.claim_expired(100).await.expect("claim").finalized,
        0,
        "not due yet"
    );
    // 1.3 idle TTL after it: past the deadline, finalized once.
    time.pass(idle_tenths(2)).await;
    let mut finalized = 0;
    for _ in 0..3 {
        finalized += store.claim_expired(100).await.expect("claim").finalized;
    }
    assert!(finalized >= 1);
    let events = drain(store, "ahead", &NO_REDELIVERY).await;
    let mine = of(&events, &p);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].event.calls, 2, "the bind and the touch");
    for delivery in &events {
        store.ack_finalized(&delivery.id).await.expect("ack");
    }
}
