//! `session-broker`: reads the command line (and the `--config` file), sets up logging, binds, and
//! runs until SIGTERM/Ctrl-C. With `sessions`, `token` or `keygen` first, it runs that operator
//! subcommand instead ([`proxy::ops::admin_cli`]), parsed on its own; with `check` first, it checks
//! the server's configuration and exits ([`proxy::ops::check`]).

use proxy::config::file::{self, ConfigError};

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if proxy::ops::admin_cli::is_subcommand(&argv) {
        let code = runtime(1).map_or(2, |rt| rt.block_on(proxy::ops::admin_cli::main(argv)));
        std::process::exit(code);
    }
    if proxy::ops::check::is_subcommand(&argv) {
        let code = runtime(1).map_or(2, |rt| rt.block_on(proxy::ops::check::main(argv)));
        std::process::exit(code);
    }
    let args = match file::load() {
        Ok(args) => args,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("session-broker: {error}");
            std::process::exit(2);
        }
    };
    match runtime(args.worker_threads) {
        Some(runtime) => runtime.block_on(serve(args)),
        None => std::process::exit(2),
    }
}

/// The tokio runtime for `--worker-threads`: one thread for 1 (no work-stealing scheduler, no
/// hand-offs between threads), else a multi-threaded one (0: one worker per CPU, or
/// `TOKIO_WORKER_THREADS`).
fn runtime(threads: usize) -> Option<tokio::runtime::Runtime> {
    let built = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    built
        .map_err(|error| eprintln!("session-broker: cannot start the runtime: {error}"))
        .ok()
}

async fn serve(args: proxy::config::cli::Args) {
    let telemetry = match proxy::telemetry::init(args.log_json, args.traces) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("session-broker: {error}");
            std::process::exit(2);
        }
    };
    let listen = args.listen;
    let settings = match args.into_settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("session-broker: {error}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("session-broker: --listen {listen}: cannot listen: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = proxy::run(settings, listener, shutdown_signal()).await {
        tracing::error!(%error, "cannot start");
        eprintln!("session-broker: {error}");
        std::process::exit(2);
    }
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
