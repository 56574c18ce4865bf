//! `fake-upstream`: a fast fake MCP server for benchmarks (see [`bench_tools::fake`] for what it
//! answers). One thread, HTTP/1.1 keep-alive, TCP_NODELAY. `GET /stats` returns the request counts
//! as JSON, `GET /health` answers `ok`; every other request goes to the MCP handler, whatever its path.
//!
//! Usage: `fake-upstream --listen 127.0.0.1:8001 [--sse] [--capacity 500000]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bench_tools::fake::{Fake, Request};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Largest request body read.
const MAX_BODY: usize = 1 << 20;

#[derive(Parser)]
#[command(about = "A fast fake MCP upstream for benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    listen: SocketAddr,
    /// Answer requests with one SSE event (text/event-stream) instead of a JSON body.
    #[arg(long)]
    sse: bool,
    /// Most sessions remembered; the oldest is forgotten (then answered 404) past it.
    #[arg(long, default_value_t = 500_000)]
    capacity: usize,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(serve(args));
}

async fn serve(args: Args) {
    let listener = TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|error| panic!("cannot listen on {}: {error}", args.listen));
    println!(
        "fake-upstream listening on {} ({} replies)",
        args.listen,
        if args.sse { "SSE" } else { "JSON" }
    );
    let fake = Arc::new(Mutex::new(Fake::new(args.sse, args.capacity)));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let fake = fake.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(fake.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    fake: Arc<Mutex<Fake>>,
    request: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    if parts.method == hyper::Method::GET {
        let body = match parts.uri.path() {
            "/stats" => match fake.lock() {
                Ok(fake) => serde_json::to_vec(&fake.counts()).unwrap_or_default(),
                Err(_) => return Ok(status(StatusCode::INTERNAL_SERVER_ERROR)),
            },
            "/health" => b"ok".to_vec(),
            _ => return Ok(status(StatusCode::METHOD_NOT_ALLOWED)),
        };
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let Ok(body) = Limited::new(body, MAX_BODY).collect().await else {
        return Ok(status(StatusCode::PAYLOAD_TOO_LARGE));
    };
    let body = body.to_bytes();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let reply = match fake.lock() {
        Ok(mut fake) => fake.handle(Request {
            method: parts.method.as_str(),
            session: header("mcp-session-id"),
            project_header: header("x-mcp-project"),
            body: &body,
        }),
        Err(_) => return Ok(status(StatusCode::INTERNAL_SERVER_ERROR)),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(kind) = reply.content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(kind),
        );
    }
    if let Some(session) = reply.session
        && let Ok(value) = http::HeaderValue::from_str(&session)
    {
        headers.insert("mcp-session-id", value);
    }
    Ok(response)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
