//! Differential test of the two stores: random sequences of store operations (binds, lookups of
//! every kind, touches, MCP sessions ended, backend-session records, parked rounds, operator
//! rebinds and ends, sweeps, deliveries, acknowledgements, dead letters and replays, and steps of
//! the clock below and past the idle TTL) run against a fresh [`MemoryStore`] and a fresh
//! [`RedisStore`] (a real `redis-server` on a free port, flushed between cases), both on one manual
//! clock; after every operation their answers must be the same (normalized where they may
//! legitimately differ: `apply.rs` lists each normalization and why).
//!
//! 128 cases of 10 to 50 operations by default (`PROPTEST_CASES=n` for more); a failure prints the
//! shortest sequence proptest found that still makes the stores disagree, the operation, and both
//! answers. A missing `redis-server` fails the test, as everywhere (`support`).

#[path = "../support/mod.rs"]
mod support;

mod apply;
mod ops;

use std::time::Duration;

use broker::store::Lifetimes;
use broker::store::memory::MemoryStore;
use broker::store::redis::{RedisSettings, RedisStore};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use apply::Side;
use ops::{Op, World, op, step};
use support::time::TestTime;

/// Cases when `PROPTEST_CASES` does not say.
const CASES: u32 = 128;
/// Operations in one case: at least enough to bind, idle, sweep and deliver.
const OPS: std::ops::RangeInclusive<usize> = 10..=50;
/// Most live work sessions per principal: low, so that binds meet the cap.
const CAP: u64 = 2;

/// An idle TTL of a minute; the grace and the safety TTL far longer than the clock's steps in a
/// case (at most 50 x 10 min): the memory store purges expired data lazily (at most once a
/// minute), so past the grace the two may legitimately differ for up to a minute. Not tested here.
fn lifetimes() -> Lifetimes {
    let mut lifetimes = Lifetimes::with_idle(Duration::from_secs(60));
    lifetimes.grace = Duration::from_secs(24 * 3600);
    // As the proxy runs them: a touch records its activity this far ahead (Lifetimes::refresh).
    lifetimes.refresh = Duration::from_secs(5);
    lifetimes
}

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs one sequence against both stores, comparing every answer.
async fn case(redis: &support::RedisServer, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut admin = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut admin)
        .await
        .expect("FLUSHALL");
    let time = TestTime::redis_url(&redis.url());
    let memory = MemoryStore::new(lifetimes())
        .with_max_work_sessions(CAP)
        .with_clock(time.clock());
    let in_redis = RedisStore::new(RedisSettings::new(redis.url()), lifetimes())
        .expect("store")
        .with_max_work_sessions(CAP)
        .with_clock(time.clock())
        .with_lookup_cache(true);
    // With the lookup cache serving from the first operation on: every write must reach the
    // lookups after it, and time steps must expire what they would in Redis.
    let started = std::time::Instant::now();
    while !in_redis.lookup_cache_live() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cache's feed never came up"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut sides = [Side::new(Box::new(memory)), Side::new(Box::new(in_redis))];
    let world = World::new();
    for (n, op) in ops.iter().enumerate() {
        if let Op::Advance { secs } = op {
            time.pass(step(*secs)).await;
            continue;
        }
        let now = time.now_ms();
        let [memory, in_redis] = &mut sides;
        let (from_memory, from_redis) = (
            memory.apply(&world, op, now).await,
            in_redis.apply(&world, op, now).await,
        );
        prop_assert_eq!(
            &from_memory,
            &from_redis,
            "operation {} of the sequence, {:?}: the memory store (left) and Redis (right) disagree",
            n,
            op
        );
    }
    Ok(())
}

/// Sequences run before the random ones: a walk through every path of an event (random sequences
/// reach its end rarely), then each sequence that once made the stores disagree (the shortest
/// proptest found, or written from it), with the store that was wrong, and how, in its comment.
fn regressions() -> Vec<Vec<Op>> {
    let bind = |ws, project, conversation| Op::Bind {
        ws,
        project,
        mcp: None,
        conversation,
        backend: None,
    };
    let lookup = |principal| Op::Lookup {
        principal,
        surface: 0,
        handle: None,
        mcp: None,
        conversation: None,
        mode: ops::Mode::Full,
    };
    let next = |consumer| Op::Next { consumer };
    let advance = |secs| Op::Advance { secs };
    vec![
        // Two work sessions idle out; one event is acknowledged, the other handed out again and
        // again until its attempts are spent, buried, listed, replayed and acknowledged at last.
        vec![
            bind(0, 0, None),
            bind(1, 1, Some(1)),
            advance(70),
            Op::Claim,
            next(0),
            Op::Ack(0),
            advance(20),
            next(1),
            advance(40),
            next(0),
            advance(80),
            next(1),
            Op::DeadLetters,
            Op::Replay(0),
            Op::Replay(0),
            Op::DeadLetters,
            next(0),
            Op::Ack(4),
            advance(600),
            next(1),
            Op::LiveCount,
            Op::List { principal: 1 },
        ],
        // Memory listed recent projects (and a surface's work sessions) of equal time in the
        // other order than Redis's ZREVRANGE.
        vec![bind(2, 0, None), bind(2, 1, None), lookup(0)],
        // Memory dropped the conversation of a work session bound again without one; Redis's
        // hash keeps it.
        vec![bind(4, 0, Some(0)), bind(4, 0, None), lookup(0)],
        // Memory listed an operator's work sessions of equal time in hash order.
        vec![
            bind(0, 0, None),
            bind(2, 1, None),
            Op::List { principal: 0 },
        ],
        // Memory kept the last activity of a work session an operator ended; Redis sets it an
        // idle TTL back (what its finalized event then reports).
        vec![
            bind(2, 0, None),
            Op::End {
                principal: 0,
                ws: 2,
            },
            Op::List { principal: 0 },
        ],
        // Memory scored an operator's rebind in the recent projects at the last activity;
        // Redis at the time of the rebind.
        vec![
            bind(0, 1, None),
            Op::Advance { secs: 10 },
            Op::Rebind {
                principal: 0,
                ws: 0,
                project: 0,
            },
            lookup(0),
        ],
        // Redis buried an event another taker had acknowledged (its actions had succeeded).
        vec![
            bind(0, 0, None),
            Op::Advance { secs: 70 },
            Op::Claim,
            Op::Next { consumer: 0 },
            Op::Ack(0),
            Op::DeadLetter(0),
            Op::DeadLetters,
        ],
        // Redis counted a buried event's deliveries as its caller's copy said, not the group.
        vec![
            bind(0, 0, None),
            Op::Advance { secs: 70 },
            Op::Claim,
            Op::Next { consumer: 0 },
            Op::Advance { secs: 20 },
            Op::Next { consumer: 1 },
            Op::DeadLetter(0),
            Op::DeadLetters,
        ],
    ]
}

#[test]
fn memory_and_redis_answer_alike() {
    let redis = support::RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (n, ops) in regressions().iter().enumerate() {
        if let Err(failure) = runtime.block_on(case(&redis, ops)) {
            panic!("fixed sequence {n}: {failure}\n{ops:#?}");
        }
    }
    let mut runner = TestRunner::new(config());
    let strategy = prop::collection::vec(op(), OPS);
    let result = runner.run(&strategy, |ops| runtime.block_on(case(&redis, &ops)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
