//! The `waggle-operator` process: settings, logs, the HTTP endpoint, leader election and the
//! controllers, stopped cleanly on SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use waggle_operator::builders::Defaults;
use waggle_operator::controller::{self, Context};
use waggle_operator::leader::LeaseLock;
use waggle_operator::metrics::Metrics;
use waggle_operator::server;
use waggle_operator::settings::{LogFormat, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::parse().validated() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("waggle-operator: invalid setting: {error}");
            return ExitCode::from(2);
        }
    };
    init_logs(settings.log_format);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let metrics = Metrics::new()?;
    let ready = Arc::new(AtomicBool::new(false));
    let http = tokio::spawn(server::serve(
        settings.http_addr,
        server::router(metrics.clone(), ready.clone()),
        shutdown.clone(),
    ));

    let client = Client::try_default().await?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        namespaces = ?settings.namespaces,
        leader_elect = settings.leader_elect,
        identity = %settings.identity,
        "operator started"
    );

    let lock = settings.leader_elect.then(|| {
        let api: Api<Lease> = Api::namespaced(client.clone(), &settings.lease_namespace);
        LeaseLock::new(api, &settings.lease_name, &settings.identity, settings.lease_duration())
    });
    let mut outcome = Ok(());
    if let Some(lock) = &lock {
        if !lock.acquire(&shutdown).await {
            return finish(http, shutdown).await;
        }
        tracing::info!(lease = %settings.lease_name, "became leader");
    }
    metrics.set_leader(true);

    let defaults = Defaults { image: settings.default_image.clone() };
    let ctx = Arc::new(Context::new(client, defaults, metrics.clone(), &settings.identity));
    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let controllers =
        futures::future::join_all(namespaces.into_iter().map(|ns| controller::run(ctx.clone(), ns, shutdown.clone())));
    let keep_lease = async {
        match &lock {
            Some(lock) => lock.keep(&shutdown).await,
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        }
    };
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => {}
        kept = keep_lease => {
            if let Err(error) = kept {
                outcome = Err(error.into());
            }
            shutdown.cancel();
            controllers.await;
        }
    }
    metrics.set_leader(false);
    if let Some(lock) = &lock {
        if let Err(error) = lock.release().await {
            tracing::warn!(%error, "could not release the lease; it will expire");
        }
    }
    finish(http, shutdown).await?;
    outcome
}

async fn finish(
    http: tokio::task::JoinHandle<Result<(), server::ServerError>>,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error>> {
    shutdown.cancel();
    http.await??;
    tracing::info!("operator stopped cleanly");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
