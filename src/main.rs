//! The `scimgate` binary: parse the command line, run it, map failures to exit codes.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use scimgate::app::App;
use scimgate::cli::{Cli, Command};
use scimgate::config::{Config, Secrets};
use tokio::sync::watch;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|loaded| serve(loaded, config)),
        Command::Check { config, strict } => return check(config.as_deref(), strict),
        Command::Demo => runtime().and_then(|rt| rt.block_on(scimgate::demo::run())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scimgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check(path: Option<&std::path::Path>, strict: bool) -> ExitCode {
    let secrets = if strict {
        Secrets::Required
    } else {
        Secrets::Optional
    };
    match Config::load_with(path, secrets) {
        Ok(config) => {
            print!("configuration OK\n{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, source: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    scimgate::telemetry::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration warning");
    }
    runtime()?.block_on(async {
        let app = App::build(config, source).context("cannot start")?;
        let listeners = app.bind().await?;
        tracing::info!(
            proxy_addr = %listeners.proxy_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin_addr = %listeners.admin_addr().map(|a| a.to_string()).unwrap_or_default(),
            version = env!("CARGO_PKG_VERSION"),
            "listening"
        );
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            scimgate::signal::terminated().await;
            tracing::info!("shutdown signal received");
            let _ = tx.send(true);
        });
        app.run(listeners, rx).await;
        tracing::info!("stopped");
        Ok(())
    })
}
