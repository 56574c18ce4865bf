//! `mcp-load`: an MCP-speaking closed-loop load generator for what wrk cannot do (multi-request
//! turns), and the session set-up of `bench/run`.
//!
//! - `mcp-load open --url U`: initialize, notifications/initialized, select the project; prints the
//!   session id (for wrk's `bench/call.lua`).
//! - `mcp-load turns --url U -c 32 -d 5 --expect TEXT`: per turn, what Claude's connectors send:
//!   a fresh `initialize`, `notifications/initialized`, one `tools/call` on the new session; a
//!   turn is one unit (latency from the first byte sent to the last byte of the call's reply).
//! - `mcp-load calls --url U --session S ...`: one `tools/call` per unit on an established session
//!   (what wrk does with `bench/call.lua`; for machines without wrk, or to cross-check it).
//! - `mcp-load populate --url U --from 0 --to 100000`: live work sessions for `bench/scale`, one
//!   per credential `TOKEN-<i>` (so one principal each: the store's worst case), each made as a
//!   client makes it (initialize, notifications/initialized, select).
//!
//! Each of `-c` connections is one keep-alive TCP connection and one unit in flight at a time; the
//! run stops starting units after `-d` seconds, and every request is bounded by `--timeout`. It
//! prints one `BENCH ...` line (see [`bench_tools::stats`]).

use std::time::{Duration, Instant};

use bench_tools::client::{Conn, Error, Target};
use bench_tools::messages;
use bench_tools::stats::Run;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(about = "MCP-speaking closed-loop load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open a session, select a project on it, print its id.
    Open {
        #[command(flatten)]
        common: Common,
        /// The project to select.
        #[arg(long, default_value = "linkedin")]
        project: String,
    },
    /// Connector turns: initialize + initialized + tools/call per unit.
    Turns {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
    },
    /// One tools/call per unit on an established session.
    Calls {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// The session to call on (from `mcp-load open`).
        #[arg(long)]
        session: String,
    },
    /// Live work sessions numbered FROM..TO, one per credential `TOKEN-<i>`.
    Populate {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        to: u64,
        /// Concurrent connections.
        #[arg(short = 'c', long, default_value_t = 16)]
        connections: usize,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// The MCP endpoint, http://host:port/path.
    #[arg(long)]
    url: String,
    /// The bearer credential (the broker's principal).
    #[arg(long, default_value = "bench-credential")]
    token: String,
    /// `clientInfo.name` of `initialize` (the broker's surface).
    #[arg(long, default_value = "claude-ai")]
    client: String,
    /// Longest wait for one reply, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

#[derive(Args, Clone)]
struct Load {
    /// Concurrent connections, one unit in flight on each.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Seconds to keep starting units.
    #[arg(short = 'd', long, default_value_t = 5.0)]
    duration: f64,
    /// The tool called.
    #[arg(long, default_value = "get_last_handover")]
    tool: String,
    /// Its arguments, as JSON.
    #[arg(long, default_value = "{}")]
    arguments: String,
    /// Text every call's reply must contain (else it counts as a bad reply).
    #[arg(long, default_value = "")]
    expect: String,
}

/// What one unit sends.
#[derive(Clone)]
struct Plan {
    initialize: Option<(Bytes, Bytes)>,
    session: Option<String>,
    call: Bytes,
    expect: Vec<u8>,
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Open { common, project } => open(&common, &project).await,
            Command::Turns { common, load } => {
                let plan = plan(&common, &load, None);
                drive(&common, &load, plan).await
            }
            Command::Calls {
                common,
                load,
                session,
            } => {
                let plan = plan(&common, &load, Some(session));
                drive(&common, &load, plan).await
            }
            Command::Populate {
                common,
                from,
                to,
                connections,
            } => populate(&common, from..to, connections).await,
        }
    });
    std::process::exit(code);
}

fn target(common: &Common) -> Target {
    match Target::parse(
        &common.url,
        Some(common.token.clone()),
        Duration::from_secs_f64(common.timeout),
    ) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("mcp-load: {error}");
            std::process::exit(2);
        }
    }
}

fn plan(common: &Common, load: &Load, session: Option<String>) -> Plan {
    let arguments: serde_json::Value = match serde_json::from_str(&load.arguments) {
        Ok(value) => value,
        Err(error) => {
            eprintln!("mcp-load: --arguments is not JSON: {error}");
            std::process::exit(2);
        }
    };
    Plan {
        initialize: session.is_none().then(|| {
            (
                Bytes::from(messages::initialize(&common.client)),
                Bytes::from(messages::initialized()),
            )
        }),
        session,
        call: Bytes::from(messages::tools_call(&load.tool, arguments)),
        expect: load.expect.as_bytes().to_vec(),
    }
}

async fn open(common: &Common, project: &str) -> i32 {
    let target = target(common);
    let steps = async {
        let mut conn = Conn::connect(&target).await?;
        let initialize = Bytes::from(messages::initialize(&common.client));
        let initialized = Bytes::from(messages::initialized());
        let session = turn_start(&mut conn, &initialize, &initialized).await?;
        let select = messages::tools_call(
            "select_project_for_session",
            serde_json::json!({ "name": project }),
        );
        let reply = conn.post(Some(&session), Bytes::from(select)).await?;
        Ok::<_, Error>((session, reply))
    };
    match steps.await {
        Ok((session, reply)) => {
            let wanted = format!("Selected project {project}");
            if reply.status.is_success() && contains(&reply.body, wanted.as_bytes()) {
                println!("{session}");
                0
            } else {
                eprintln!(
                    "mcp-load: select on {} failed: {} {}",
                    common.url,
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
                1
            }
        }
        Err(error) => {
            eprintln!("mcp-load: {}: {error}", common.url);
            1
        }
    }
}

async fn populate(common: &Common, range: std::ops::Range<u64>, connections: usize) -> i32 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let target = target(common);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(range.start));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (target, next, failed) = (target.clone(), next.clone(), failed.clone());
            let (token, client) = (
                target.bearer.clone().unwrap_or_default(),
                common.client.clone(),
            );
            let end = range.end;
            tokio::spawn(async move {
                let initialize = Bytes::from(messages::initialize(&client));
                let initialized = Bytes::from(messages::initialized());
                let mut conn: Option<Conn> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    if conn.as_ref().is_none_or(Conn::is_closed) {
                        conn = Conn::connect(&target).await.ok();
                    }
                    let Some(current) = conn.as_mut() else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    current.set_bearer(format!("{token}-{i}"));
                    let project = format!("project-{}", i % 50);
                    let select = Bytes::from(messages::tools_call(
                        "select_project_for_session",
                        serde_json::json!({ "name": project }),
                    ));
                    let made = async {
                        let session = turn_start(current, &initialize, &initialized).await?;
                        current.post(Some(&session), select).await
                    };
                    match made.await {
                        Ok(reply)
                            if reply.status.is_success()
                                && contains(&reply.body, b"Selected project") => {}
                        Ok(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "POPULATED from={} to={} failed={failed} seconds={:.1}",
        range.start,
        range.end,
        started.elapsed().as_secs_f64()
    );
    i32::from(failed > 0)
}

async fn drive(common: &Common, load: &Load, plan: Plan) -> i32 {
    let target = target(common);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(load.duration);
    let workers: Vec<_> = (0..load.connections.max(1))
        .map(|_| tokio::spawn(worker(target.clone(), plan.clone(), deadline)))
        .collect();
    let mut total = Run::default();
    for worker in workers {
        match worker.await {
            Ok(run) => total.merge(run),
            Err(error) => eprintln!("mcp-load: a connection's task failed: {error}"),
        }
    }
    println!("{}", total.bench_line(started.elapsed().as_secs_f64()));
    0
}

async fn worker(target: Target, plan: Plan, deadline: Instant) -> Run {
    let mut run = Run::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        if conn.as_ref().is_some_and(Conn::is_closed) {
            conn = None;
        }
        let current = match conn.as_mut() {
            Some(current) => current,
            None => match Conn::connect(&target).await {
                Ok(fresh) => conn.insert(fresh),
                Err(_) => {
                    run.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let began = Instant::now();
        match unit(current, &plan, &mut run.http_requests).await {
            Ok(true) => {
                let micros = began.elapsed().as_micros();
                run.latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok(false) => run.bad_replies += 1,
            Err(_) => {
                run.errors += 1;
                conn = None;
            }
        }
    }
    run
}

/// One unit: whether its call's reply was the expected one.
async fn unit(conn: &mut Conn, plan: &Plan, requests: &mut u64) -> Result<bool, Error> {
    let fresh;
    let session = match (&plan.initialize, &plan.session) {
        (Some((initialize, initialized)), _) => {
            *requests += 2;
            fresh = turn_start(conn, initialize, initialized).await?;
            Some(fresh.as_str())
        }
        (None, session) => session.as_deref(),
    };
    *requests += 1;
    let reply = conn.post(session, plan.call.clone()).await?;
    if !reply.status.is_success() {
        return Err(Error::Status(reply.status.as_u16()));
    }
    Ok(contains(&reply.body, &plan.expect))
}

/// initialize + notifications/initialized; the new session's id.
async fn turn_start(
    conn: &mut Conn,
    initialize: &Bytes,
    initialized: &Bytes,
) -> Result<String, Error> {
    let reply = conn.post(None, initialize.clone()).await?;
    let session = match (reply.status.is_success(), reply.session) {
        (true, Some(session)) => session,
        (_, _) => return Err(Error::Status(reply.status.as_u16())),
    };
    let note = conn.post(Some(&session), initialized.clone()).await?;
    if note.status.as_u16() != 202 {
        return Err(Error::Status(note.status.as_u16()));
    }
    Ok(session)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
