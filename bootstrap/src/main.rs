//! `confab-bootstrap`: run the always-on Confab server.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use confab_bootstrap::{Config, limits::DEFAULT_PORT};

#[derive(Debug, Parser)]
#[command(
    name = "confab-bootstrap",
    version,
    about = "The always-on Confab server"
)]
struct Cli {
    /// Where the server keeps its key and data
    #[arg(long, value_name = "DIR", default_value = "confab-bootstrap-data")]
    data_dir: PathBuf,
    /// Listen on this multiaddr (repeatable) [default: TCP and QUIC on port 4717, all interfaces]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Do not advertise on the LAN over mDNS (also: CONFAB_NO_MDNS=1). The server does not use
    /// mDNS yet; the flag is accepted so scripts can pass it today.
    #[arg(long)]
    no_mdns: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let mut config = Config::new(&cli.data_dir);
    if !cli.listen.is_empty() {
        config.listen = cli.listen;
    }
    config.mdns = !(cli.no_mdns || confab_node::Config::mdns_disabled_by_env());
    let server = confab_bootstrap::start(config).await.with_context(|| {
        format!(
            "starting on port {DEFAULT_PORT} with data dir {}",
            cli.data_dir.display()
        )
    })?;
    for addr in &server.listen_addrs {
        println!("listening {addr}");
    }
    use std::io::Write;
    std::io::stdout().flush().context("writing to stdout")?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
