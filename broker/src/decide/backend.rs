//! Which backend session a forwarded request runs on, and what a 404 from it means. Pure: the proxy
//! gathers the facts ([`Facts`]), executes the [`Choice`], and asks [`after_404`] whether to try once
//! more.
//!
//! Rows, in order:
//! 1. an answer or cancellation names its backend session ([`Choice::Target`]);
//! 2. a bridged modern client: its work session's backend session when the route is `Work` and a
//!    work session is bound, else the principal's bridged session (a fresh one after a 404);
//! 3. no backend session in the session id (neither recorded nor to be opened), or the route says
//!    none (a sessionless backend): [`Choice::Sessionless`];
//! 4. `Work` with a bound work session: its backend session for the project;
//! 5. otherwise the client's own backend session, opened again after a 404. This includes a `Work`
//!    route with no work session bound: [`super::decide`] never makes one, but if it did the request
//!    would run where an exempt tool runs, never on another project's session.

use super::Route;

/// What the proxy knows when it picks a backend session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// The request names its backend session (an answer, a cancellation).
    pub target: bool,
    /// A modern client bridged onto legacy backend sessions.
    pub bridged: bool,
    /// The session id records a backend session, or one to open when first needed.
    pub has_backend: bool,
    pub route: Route,
    /// A work session is bound to the request.
    pub bound: bool,
    /// The backend session used before answered 404 (this is the retry).
    pub forgotten: bool,
}

/// The backend session to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Target,
    /// None: the request goes without `Mcp-Session-Id`.
    Sessionless,
    /// The bound work session's backend session for its project; `replay`: open one and select
    /// the project first when none is recorded.
    Work {
        replay: bool,
    },
    /// The client's own backend session, as recorded (or opened when first needed).
    Own,
    /// The client's own backend session, opened again (the one used answered 404).
    ReopenOwn,
    /// A bridged client's own: the principal's bridged backend session; `fresh`: open a new one
    /// and learn again what the backend speaks (it answered 404: it restarted).
    BridgedOwn {
        fresh: bool,
    },
}

/// Picks the backend session (see the module doc for the rows).
pub fn choose(facts: &Facts) -> Choice {
    if facts.target {
        return Choice::Target;
    }
    if facts.bridged {
        return match facts.route {
            Route::Work { replay } if facts.bound => Choice::Work { replay },
            _ => Choice::BridgedOwn {
                fresh: facts.forgotten,
            },
        };
    }
    if !facts.has_backend {
        return Choice::Sessionless;
    }
    match facts.route {
        Route::None => Choice::Sessionless,
        Route::Work { replay } if facts.bound => Choice::Work { replay },
        Route::Own | Route::Work { .. } if facts.forgotten => Choice::ReopenOwn,
        Route::Own | Route::Work { .. } => Choice::Own,
    }
}

/// After the backend answered `status` on `attempt` (0: the first): whether the broker opens the
/// backend session again (and replays its selection) and sends the request once more. Only a 404 on
/// a backend session, only once, and only for a request that may be sent twice (`retryable`: a
/// request the backend has not run, which a 404 for its session says).
pub fn after_404(status: u16, had_session: bool, attempt: u8, retryable: bool) -> bool {
    status == 404 && had_session && attempt == 0 && retryable
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORK: Route = Route::Work { replay: true };
    const SELECT: Route = Route::Work { replay: false };

    fn facts(route: Route) -> Facts {
        Facts {
            target: false,
            bridged: false,
            has_backend: true,
            route,
            bound: true,
            forgotten: false,
        }
    }

    #[test]
    fn the_backend_session_a_request_runs_on() {
        let with = |f: &dyn Fn(&mut Facts), route| {
            let mut facts = facts(route);
            f(&mut facts);
            facts
        };
        // (facts, choice, why)
        let rows: Vec<(Facts, Choice, &str)> = vec![
            (
                with(&|f| f.target = true, WORK),
                Choice::Target,
                "an answer names its session",
            ),
            (
                facts(WORK),
                Choice::Work { replay: true },
                "a bound project call",
            ),
            (
                facts(SELECT),
                Choice::Work { replay: false },
                "a select selects, no replay",
            ),
            (facts(Route::Own), Choice::Own, "an exempt tool"),
            (
                with(&|f| f.forgotten = true, Route::Own),
                Choice::ReopenOwn,
                "own, after a 404",
            ),
            (
                with(&|f| f.forgotten = true, WORK),
                Choice::Work { replay: true },
                "work, after a 404: opened again by its opener",
            ),
            (
                with(&|f| f.bound = false, WORK),
                Choice::Own,
                "work with no binding: the client's own, never another project's",
            ),
            (
                with(
                    &|f| {
                        f.bound = false;
                        f.forgotten = true
                    },
                    WORK,
                ),
                Choice::ReopenOwn,
                "the same, after a 404",
            ),
            (
                facts(Route::None),
                Choice::Sessionless,
                "a sessionless backend",
            ),
            (
                with(&|f| f.has_backend = false, WORK),
                Choice::Sessionless,
                "no backend session in the session id",
            ),
            (
                with(&|f| f.bridged = true, WORK),
                Choice::Work { replay: true },
                "bridged, bound",
            ),
            (
                with(
                    &|f| {
                        f.bridged = true;
                        f.bound = false
                    },
                    WORK,
                ),
                Choice::BridgedOwn { fresh: false },
                "bridged, unbound",
            ),
            (
                with(&|f| f.bridged = true, Route::Own),
                Choice::BridgedOwn { fresh: false },
                "bridged, exempt",
            ),
            (
                with(
                    &|f| {
                        f.bridged = true;
                        f.forgotten = true
                    },
                    Route::None,
                ),
                Choice::BridgedOwn { fresh: true },
                "bridged, after a 404",
            ),
            (
                with(
                    &|f| {
                        f.bridged = true;
                        f.has_backend = false
                    },
                    Route::Own,
                ),
                Choice::BridgedOwn { fresh: false },
                "bridged clients have no session id",
            ),
        ];
        for (facts, expected, why) in rows {
            assert_eq!(choose(&facts), expected, "{why}: {facts:?}");
        }
    }

    #[test]
    fn a_404_is_retried_once_on_a_backend_session() {
        // (status, had a session, attempt, retryable, retry)
        let rows = [
            (404, true, 0, true, true),
            (404, true, 1, true, false),
            (404, false, 0, true, false),
            (404, true, 0, false, false),
            (200, true, 0, true, false),
            (502, true, 0, true, false),
        ];
        for (status, session, attempt, retryable, retry) in rows {
            assert_eq!(
                after_404(status, session, attempt, retryable),
                retry,
                "{status} session={session} attempt={attempt} retryable={retryable}"
            );
        }
    }
}
