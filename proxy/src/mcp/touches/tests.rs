//! The bound on touches, against the memory store: while the store is busy (every turn taken), a
//! thousand calls of one work session wait as one touch and are all counted once it runs; past the
//! bound, touches are dropped, not queued; with a refresh interval, a work session is refreshed at
//! most once per interval and every call in between is still counted.

use std::sync::Arc;
use std::time::Duration;

use broker::ids::{McpSessionId, PrincipalId, Project, Surface, WorkSessionId};
use broker::session::{Links, WorkSession};
use broker::store::memory::MemoryStore;
use broker::store::{Lifetimes, Store};

use super::Touches;
use crate::metrics::Metrics;

fn work(project: &str) -> WorkSession {
    WorkSession {
        id: WorkSessionId::random(),
        principal: PrincipalId::parse("ab".repeat(16)).expect("principal"),
        surface: Surface::parse("claude-ai").expect("surface"),
        conversation: None,
        project: Project::parse(project).expect("project"),
        created_ms: 1,
        last_active_ms: 1,
        calls: 0,
        backends: Default::default(),
    }
}

/// Links of a connector's call: a fresh MCP session each time, counted without linking it.
fn counted() -> Links {
    Links {
        mcp_session: Some(McpSessionId::random()),
        conversation: None,
        count_only: true,
    }
}

async fn store_with(sessions: &[&WorkSession]) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Lifetimes::with_idle(
        Duration::from_secs(60),
    )));
    for session in sessions {
        store.bind(session, &Links::default()).await.expect("bind");
    }
    store
}

async fn calls_of(store: &Arc<dyn Store>, session: &WorkSession) -> (u64, u64) {
    let status = store
        .work_session(&session.principal, &session.id)
        .await
        .expect("status")
        .expect("exists");
    (status.session.calls, status.mcp_sessions)
}

async fn drained(touches: &Touches) {
    for _ in 0..200 {
        if touches.waiting() == 0 && touches.0.turns.available_permits() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the touches never ran");
}

#[tokio::test]
async fn calls_of_one_work_session_wait_as_one_touch_and_all_count() {
    let (one, other) = (work("atlas"), work("zephyr"));
    let store = store_with(&[&one, &other]).await;
    let metrics = Metrics::new();
    let touches = Touches::new(1, 100, Duration::ZERO);
    let busy = touches
        .0
        .turns
        .acquire()
        .await
        .expect("the store's only turn");
    for n in 0..1000 {
        touches.touch(&store, &metrics, one.clone(), counted(), 10 + n);
    }
    for n in 0..5 {
        touches.touch(&store, &metrics, other.clone(), counted(), 10 + n);
    }
    // A call that sets its MCP session's link writes another key: a touch of its own.
    let linking = Links {
        count_only: false,
        ..counted()
    };
    touches.touch(&store, &metrics, one.clone(), linking, 2000);
    assert_eq!(touches.waiting(), 3, "1,006 calls, three touches waiting");
    assert_eq!(calls_of(&store, &one).await, (1, 0), "nothing ran yet");

    drop(busy);
    drained(&touches).await;
    assert_eq!(calls_of(&store, &one).await, (1 + 1000 + 1, 1000 + 1));
    assert_eq!(calls_of(&store, &other).await, (1 + 5, 5));
}

#[tokio::test]
async fn past_the_bound_touches_are_dropped_not_queued() {
    let sessions = [work("atlas"), work("zephyr"), work("linkedin")];
    let store = store_with(&sessions.iter().collect::<Vec<_>>()).await;
    let metrics = Metrics::new();
    let touches = Touches::new(1, 2, Duration::ZERO);
    let busy = touches
        .0
        .turns
        .acquire()
        .await
        .expect("the store's only turn");
    for session in &sessions {
        touches.touch(&store, &metrics, session.clone(), counted(), 10);
    }
    // The first two still count further calls; the third was dropped.
    touches.touch(&store, &metrics, sessions[0].clone(), counted(), 11);
    assert_eq!(touches.waiting(), 2);
    drop(busy);
    drained(&touches).await;
    assert_eq!(calls_of(&store, &sessions[0]).await.0, 1 + 2);
    assert_eq!(calls_of(&store, &sessions[1]).await.0, 1 + 1);
    assert_eq!(calls_of(&store, &sessions[2]).await.0, 1, "dropped");

    // Caught up, it queues again.
    touches.touch(&store, &metrics, sessions[2].clone(), counted(), 12);
    drained(&touches).await;
    assert_eq!(calls_of(&store, &sessions[2]).await.0, 1 + 1);
}

#[tokio::test]
async fn a_work_session_is_refreshed_at_most_once_per_interval_and_every_call_counts() {
    let interval = Duration::from_millis(150);
    let session = work("atlas");
    let store = store_with(&[&session]).await;
    let metrics = Metrics::new();
    let touches = Touches::new(4, 100, interval);
    // The first call is sent at once; the next ten, made after it was sent, wait for the interval
    // to end.
    touches.touch(&store, &metrics, session.clone(), counted(), 10);
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 0..10 {
        touches.touch(&store, &metrics, session.clone(), counted(), 11 + n);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        calls_of(&store, &session).await.0,
        1 + 1,
        "one refresh so far"
    );
    assert_eq!(
        touches.waiting(),
        1,
        "ten calls counted, waiting for the interval"
    );
    tokio::time::sleep(interval).await;
    assert_eq!(
        calls_of(&store, &session).await.0,
        1 + 11,
        "every call counted"
    );
    assert_eq!(touches.waiting(), 0);
    // An interval after the last refresh, a call is sent at once again.
    tokio::time::sleep(interval).await;
    touches.touch(&store, &metrics, session.clone(), counted(), 30);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls_of(&store, &session).await.0, 1 + 12);
}

#[tokio::test]
async fn a_stopping_replica_sends_the_counts_still_waiting() {
    let session = work("atlas");
    let store = store_with(&[&session]).await;
    let metrics = Metrics::new();
    let touches = Touches::new(4, 100, Duration::from_secs(60));
    touches.touch(&store, &metrics, session.clone(), counted(), 10);
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 0..4 {
        touches.touch(&store, &metrics, session.clone(), counted(), 11 + n);
    }
    assert_eq!(
        calls_of(&store, &session).await.0,
        1 + 1,
        "four calls wait for the interval"
    );
    touches.flush(&store, &metrics).await;
    assert_eq!(calls_of(&store, &session).await.0, 1 + 5, "sent at once");
    assert_eq!(touches.waiting(), 0);
}

#[test]
fn the_refresh_interval_is_a_tenth_of_the_idle_ttl_or_window_at_most_5_s() {
    let s = Duration::from_secs;
    // (idle TTL, surface window, interval)
    let rows = [
        (s(7200), s(600), s(5)),
        (s(20), s(600), s(2)),
        (s(7200), s(3), Duration::from_millis(300)),
        (s(7200), s(0), s(5)),
        (s(1), s(0), Duration::from_millis(100)),
    ];
    for (idle, window, interval) in rows {
        assert_eq!(
            super::refresh_interval(idle, window),
            interval,
            "{idle:?} {window:?}"
        );
    }
}
