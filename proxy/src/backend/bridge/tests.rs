//! The bridge's single-flight profile learning, under concurrent requests and a forget.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn profile(modern: bool) -> Profile {
    Profile {
        eras: BackendEras {
            modern,
            stateful: true,
        },
        initialize: None,
        discover: None,
        legacy_version: LEGACY_VERSION.to_owned(),
    }
}

/// A probe that answers `modern` once `gate` opens, counting its runs.
async fn slow_probe(
    runs: &AtomicUsize,
    gate: tokio::sync::oneshot::Receiver<()>,
    modern: bool,
) -> Result<Profile, BackendError> {
    runs.fetch_add(1, Ordering::SeqCst);
    let _ = gate.await;
    Ok(profile(modern))
}

async fn never() -> Result<Profile, BackendError> {
    std::future::pending().await
}

fn age(bridge: &Bridge) {
    if let Ok(mut learned) = bridge.profile.lock()
        && let Some((_, at)) = learned.profile.as_mut()
        && let Some(old) = at.checked_sub(PROFILE_TTL + Duration::from_secs(1))
    {
        *at = old;
    }
}

const PROMPTLY: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_slow_probe_stalls_no_request_that_has_a_profile() {
    let bridge = Arc::new(Bridge::default());
    let first = bridge.profile_or_probe(|| async { Ok(profile(false)) });
    assert!(!first.await.expect("learned").eras.modern);

    // Fresh: answered without probing.
    let fresh = tokio::time::timeout(PROMPTLY, bridge.profile_or_probe(never)).await;
    assert!(!fresh.expect("not stalled").expect("profile").eras.modern);

    // Expired: one request probes (slowly); the others get the expired profile meanwhile.
    age(&bridge);
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::oneshot::channel();
    let refresh = tokio::spawn({
        let (bridge, runs) = (bridge.clone(), runs.clone());
        async move {
            bridge
                .profile_or_probe(|| slow_probe(&runs, gate, true))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the refresh is probing");
    for _ in 0..3 {
        let during = tokio::time::timeout(PROMPTLY, bridge.profile_or_probe(never)).await;
        assert!(!during.expect("not stalled").expect("profile").eras.modern);
    }
    let _ = open.send(());
    let refreshed = refresh.await.expect("task").expect("profile");
    assert!(refreshed.eras.modern);
    let after = tokio::time::timeout(PROMPTLY, bridge.profile_or_probe(never)).await;
    assert!(after.expect("not stalled").expect("profile").eras.modern);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_no_profile_one_probe_runs_and_the_others_wait_for_it() {
    let bridge = Arc::new(Bridge::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::oneshot::channel();
    let prober = tokio::spawn({
        let (bridge, runs) = (bridge.clone(), runs.clone());
        async move {
            bridge
                .profile_or_probe(|| slow_probe(&runs, gate, true))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let bridge = bridge.clone();
            tokio::spawn(async move { bridge.profile_or_probe(never).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "nothing to answer yet"
    );
    let _ = open.send(());
    assert!(prober.await.expect("task").expect("profile").eras.modern);
    for waiter in waiters {
        assert!(waiter.await.expect("task").expect("profile").eras.modern);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one probe for all of them");
}

#[tokio::test]
async fn a_probe_under_way_when_the_profile_is_forgotten_is_not_kept() {
    let bridge = Arc::new(Bridge::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::oneshot::channel();
    let prober = tokio::spawn({
        let (bridge, runs) = (bridge.clone(), runs.clone());
        async move {
            bridge
                .profile_or_probe(|| slow_probe(&runs, gate, false))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    bridge.forget_profile().await; // the backend restarted while it probed
    let _ = open.send(());
    assert!(prober.await.expect("task").is_ok());
    let next = bridge.profile_or_probe(|| async { Ok(profile(true)) });
    assert!(next.await.expect("learned again").eras.modern);
}
