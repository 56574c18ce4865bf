//! The memory store's sweep and its deadline index (`deadlines.rs`): it visits only what may be
//! due, a stale entry never finalizes early, each work session is finalized once, and an
//! operator's end is due at the next sweep. Every case runs with the broker's own ids (32 hex
//! digits, the index's inline entries) and with short ones (its boxed entries).

use std::sync::Arc;
use std::time::Duration;

use super::MemoryStore;
use crate::finalize::Redelivery;
use crate::ids::{PrincipalId, Project, Surface, WorkSessionId, random_hex128};
use crate::session::{BackendSessions, Links, WorkSession};
use crate::store::clock::{Clock, ManualClock};
use crate::store::{AdminAction, Lifetimes, Store};

const IDLE: Duration = Duration::from_secs(60);
const REFRESH: Duration = Duration::from_secs(5);
const MS: Duration = Duration::from_millis(1);

/// The two forms of ids the index keeps.
fn id_forms() -> [(String, String); 2] {
    [
        (random_hex128(), random_hex128()),
        ("ab".into(), "cd".into()),
    ]
}

fn store() -> (MemoryStore, Arc<ManualClock>) {
    let (clock, hand) = Clock::manual();
    let mut lifetimes = Lifetimes::with_idle(IDLE);
    lifetimes.refresh = REFRESH;
    (MemoryStore::new(lifetimes).with_clock(clock), hand)
}

fn session(principal: &str, id: &str, at: u64) -> WorkSession {
    WorkSession {
        id: WorkSessionId::parse(id).expect("work session id"),
        principal: PrincipalId::parse(principal).expect("principal"),
        surface: Surface::parse("claude-ai").expect("surface"),
        conversation: None,
        project: Project::parse("alpha").expect("project"),
        created_ms: at,
        last_active_ms: at,
        calls: 0,
        backends: BackendSessions::default(),
    }
}

fn no_links() -> Links {
    Links {
        mcp_session: None,
        conversation: None,
        count_only: false,
    }
}

/// Deadline entries the sweeps popped so far.
fn visited(store: &MemoryStore) -> usize {
    store.maps.lock().expect("lock").visited
}

async fn sweep(store: &MemoryStore) -> usize {
    store.claim_expired(100).await.expect("sweep").finalized
}

/// (1) Bound at 0, its deadline is IDLE + REFRESH: a sweep at any time before it pops nothing.
#[tokio::test]
async fn a_sweep_with_nothing_due_visits_no_work_session() {
    let cases = [
        (Duration::ZERO, 0, 0),
        (IDLE - MS, 0, 0),
        (IDLE, 0, 0),
        (IDLE + REFRESH - MS, 0, 0),
        (IDLE + REFRESH, 2, 2),
    ];
    for (at, visits, claimed) in cases {
        let (store, hand) = store();
        let start = hand.now_ms();
        for (principal, id) in id_forms() {
            let bound = session(&principal, &id, start);
            store.bind(&bound, &no_links()).await.expect("bind");
        }
        hand.advance(at);
        assert_eq!(sweep(&store).await, claimed, "at {at:?}");
        assert_eq!(visited(&store), visits, "at {at:?}");
    }
}

/// (2) An entry written before a touch moved the deadline later is popped, judged by the record,
/// pushed again at the new deadline: finalized only then.
#[tokio::test]
async fn a_work_session_touched_after_its_entry_was_written_is_not_finalized_early() {
    for (principal, id) in id_forms() {
        let (store, hand) = store();
        let start = hand.now_ms();
        let bound = session(&principal, &id, start);
        store.bind(&bound, &no_links()).await.expect("bind");
        hand.advance(IDLE / 2);
        let touched = store
            .touch_calls(&bound, &no_links(), hand.now_ms(), 1)
            .await
            .expect("touch");
        assert!(touched);
        // (advance by, finalized by this sweep, entries popped so far)
        let steps = [
            (IDLE / 2 + REFRESH, 0, 1), // the bind's deadline: stale
            (IDLE / 2 - MS, 0, 1),      // just before the touch's
            (MS, 1, 2),                 // the touch's deadline
            (IDLE * 10, 0, 2),          // nothing left
        ];
        for (by, claimed, visits) in steps {
            hand.advance(by);
            assert_eq!(sweep(&store).await, claimed, "{id} +{by:?}");
            assert_eq!(visited(&store), visits, "{id} +{by:?}");
        }
    }
}

/// (3) Entries that outnumber the work sessions (a bind again, an operator's end) and sweeps of
/// one at a time, repeated long after: each work session is finalized once, with one event.
#[tokio::test]
async fn each_work_session_is_finalized_once_across_repeated_sweeps() {
    let (store, hand) = store();
    let start = hand.now_ms();
    let mut bound = Vec::new();
    for round in 0..2 {
        bound.push(session(&random_hex128(), &random_hex128(), start));
        bound.push(session(&format!("a{round}"), &format!("c{round}"), start));
    }
    for session in &bound {
        store.bind(session, &no_links()).await.expect("bind");
    }
    hand.advance(IDLE / 4);
    store
        .bind(&bound[0], &no_links())
        .await
        .expect("bind again");
    let ended = store
        .admin(&bound[1].principal, &bound[1].id, &AdminAction::End)
        .await
        .expect("end");
    assert!(ended);
    let mut finalized = 0;
    for _ in 0..20 {
        hand.advance(IDLE / 2);
        let claimed = store.claim_expired(1).await.expect("sweep").finalized;
        assert!(claimed <= 1);
        finalized += claimed;
    }
    assert_eq!(finalized, bound.len());
    let policy = Redelivery {
        after: Duration::from_secs(60),
        attempts: 3,
    };
    let events = store
        .next_finalized("test", 100, &policy)
        .await
        .expect("events");
    let mut ids: Vec<_> = events
        .iter()
        .map(|d| d.event.work_session.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), bound.len());
    assert_eq!(events.len(), bound.len());
}

/// (4) An operator's end makes a work session due at once, though its entry was for an idle TTL
/// later: the next sweep finalizes it (and only it).
#[tokio::test]
async fn an_operators_end_makes_it_due_at_the_next_sweep() {
    for (principal, id) in id_forms() {
        let (store, hand) = store();
        let start = hand.now_ms();
        let ended = session(&principal, &id, start);
        let other = session(&principal, &random_hex128(), start);
        for session in [&ended, &other] {
            store.bind(session, &no_links()).await.expect("bind");
        }
        hand.advance(Duration::from_secs(1));
        assert_eq!(sweep(&store).await, 0);
        let done = store
            .admin(&ended.principal, &ended.id, &AdminAction::End)
            .await
            .expect("end");
        assert!(done);
        assert_eq!(sweep(&store).await, 1);
        assert_eq!(visited(&store), 1);
        let status = store
            .work_session(&ended.principal, &ended.id)
            .await
            .expect("status")
            .expect("kept for the grace");
        assert!(status.finalized);
        // Its first entry, at the bind's deadline, finds it finalized; the other comes due.
        hand.advance(IDLE + REFRESH);
        assert_eq!(sweep(&store).await, 1);
        assert_eq!(visited(&store), 3);
    }
}
