//! Per-request accounting: the request's method label and the time it spent waiting on the
//! backend, in a task-local that [`in_request`] opens around one request's handling. Code deep
//! down (forward, backend) adds to it without threading a parameter; outside a scope (unit tests
//! calling `call::plan`) every function here does nothing.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use super::Rpc;

/// Per-request accounting, task-local while [`in_request`] runs.
#[derive(Debug, Default)]
pub struct RequestScope {
    method: Cell<Option<Rpc>>,
    mcp_method: Cell<Option<&'static str>>,
    upstream: Cell<Duration>,
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs one request's handling with a fresh [`RequestScope`].
pub async fn in_request<F: Future>(handling: F) -> F::Output {
    SCOPE.scope(RequestScope::default(), handling).await
}

/// Sets the current request's method label.
pub fn set_method(method: Rpc) {
    let _ = SCOPE.try_with(|s| s.method.set(Some(method)));
}

/// Sets the current request's MCP method (a [`super::method_label`]).
pub fn set_mcp_method(method: &'static str) {
    let _ = SCOPE.try_with(|s| s.mcp_method.set(Some(method)));
}

/// The current request's MCP method, once known.
pub fn current_mcp_method() -> Option<&'static str> {
    SCOPE.try_with(|s| s.mcp_method.get()).ok().flatten()
}

/// The current request's method label, once known.
pub fn current_method() -> Option<Rpc> {
    SCOPE.try_with(|s| s.method.get()).ok().flatten()
}

/// Adds time spent waiting on the backend to the current request.
pub fn add_upstream_time(elapsed: Duration) {
    let _ = SCOPE.try_with(|s| s.upstream.set(s.upstream.get() + elapsed));
}

/// Time the current request spent waiting on the backend so far.
pub fn upstream_time() -> Duration {
    SCOPE.try_with(|s| s.upstream.get()).unwrap_or_default()
}

/// Awaits `reading` (a backend reply body the broker reads itself) and counts the time as the
/// current request's upstream time.
pub async fn upstream_body<F: Future>(reading: F) -> F::Output {
    let started = Instant::now();
    let output = reading.await;
    add_upstream_time(started.elapsed());
    output
}
