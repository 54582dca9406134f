//! The `scimgate` binary: parse the command line, run it, map failures to exit codes.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use scimgate::app::App;
use scimgate::cli::{Cli, Command, TokenCommand};
use scimgate::config::{Config, Secrets};
use tokio::sync::watch;

/// mimalloc's per-thread free lists: the request path allocates and frees many small buffers
/// (header maps, body frames, task cells), and glibc's malloc took about a tenth of the proxy's
/// user-space CPU per request on the benchmark (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => Config::load(config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|loaded| serve(loaded, config)),
        Command::Check { config, strict } => return check(config.as_deref(), strict),
        Command::Explain {
            config,
            json,
            tenant,
            method,
            path,
            token,
        } => {
            let question = scimgate::explain::Question {
                tenant: tenant.as_deref(),
                method: &method,
                path: path.as_deref(),
            };
            return explain(config.as_deref(), json, question, token);
        }
        Command::Token(TokenCommand::Mint {
            config,
            client,
            ttl,
        }) => mint(config.as_deref(), &client, &ttl),
        Command::Demo => runtime().and_then(|rt| {
            rt.block_on(scimgate::demo::run())
                .map_err(anyhow::Error::from)
        }),
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
    runtime_with(None)
}

fn runtime_with(worker_threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    // One worker (a typical sidecar setting) runs on the calling thread: no cross-thread
    // wake-ups or work-stealing queues on the request path.
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
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
            if let Some(toml) = Config::quickstart_toml(path) {
                println!(
                    "# Equivalent config file for the SCIMGATE_* quick-start variables:\n{toml}"
                );
            }
            print!("configuration OK\n{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0 allowed, 1 denied, 2 when the question could not be answered (config, I/O).
fn explain(
    path: Option<&std::path::Path>,
    json: bool,
    question: scimgate::explain::Question<'_>,
    token: Option<String>,
) -> ExitCode {
    let token = match token.filter(|t| t != "-") {
        Some(t) => t,
        None => {
            let mut buf = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf) {
                eprintln!("scimgate: cannot read the token from stdin: {e}");
                return ExitCode::from(2);
            }
            buf.trim().to_owned()
        }
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(scimgate::explain::explain(path, question, &token))
            .map_err(anyhow::Error::from)
    });
    match result {
        Ok(x) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&x).unwrap_or_default());
            } else {
                print!("{}", x.table());
            }
            if x.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("scimgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `token mint`: one token on stdout, nothing else (it is pasted or piped somewhere).
fn mint(path: Option<&std::path::Path>, client: &str, ttl: &str) -> anyhow::Result<()> {
    let ttl = humantime::parse_duration(ttl).with_context(|| format!("--ttl {ttl:?}"))?;
    let config = Config::load(path)?;
    let issuer_config = config
        .issuer
        .context("the config has no [issuer] section")?;
    // Minting never verifies an assertion: the assertion clients' verifiers are never used.
    let metrics = std::sync::Arc::new(scimgate::metrics::Metrics::new()?);
    let issuer = scimgate::issuer::Issuer::build(issuer_config, |_, settings| {
        let url = settings.jwks_url.clone().unwrap_or_default();
        let jwks = scimgate::auth::jwks::Jwks::new(
            settings,
            url,
            scimgate::metrics::JwksMetrics::unexported(),
        )?;
        Ok(scimgate::auth::verify::Verifier::new(
            settings,
            std::sync::Arc::new(jwks),
            std::sync::Arc::clone(&metrics),
        ))
    })?;
    let minted = issuer.mint(client, ttl, scimgate::auth::verify::now())?;
    println!("{}", minted.token);
    Ok(())
}

fn serve(config: Config, source: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let _log = scimgate::telemetry::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!(warning = %warning, "configuration warning");
    }
    runtime_with(config.worker_threads)?.block_on(async {
        let app = App::build(config, source).await.context("cannot start")?;
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
