//! `confab-app`: the desktop app. Same options as `confab` (`--data-dir`, `--name`,
//! `--listen`, `--bootstrap`, `--no-mdns` / `CONFAB_NO_MDNS=1`).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use confab_app::ConfabApp;
use confab_node::Config;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "confab-app",
    about = "Confab: peer-assisted chat for LANs and the internet"
)]
struct Cli {
    /// Where the node keeps its identity and history (default: the platform's data dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The display name (asked at first run otherwise).
    #[arg(long)]
    name: Option<String>,
    /// Addresses to listen on (default: TCP and QUIC on every interface, any port).
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// Bootstrap servers to use.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// No LAN discovery (mDNS).
    #[arg(long)]
    no_mdns: bool,
}

fn main() -> Result<()> {
    confab_app::app::mark_start();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,confab_app=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data_dir = match cli.data_dir {
        Some(d) => d,
        None => Config::default_data_dir().context("no home directory: pass --data-dir")?,
    };
    let mut config = Config::new(data_dir);
    config.name = cli.name;
    if !cli.listen.is_empty() {
        config.listen = cli.listen;
    }
    config.bootstrap = cli.bootstrap;
    config.mdns = !(cli.no_mdns || Config::mdns_disabled_by_env());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let handle = runtime.handle().clone();
    // The window's size and place and the panels' sizes are kept beside the node's data.
    let window_state = config.data_dir.join("window");
    let options = eframe::NativeOptions {
        persist_window: true,
        persistence_path: Some(window_state),
        viewport: egui::ViewportBuilder::default()
            .with_title("Confab")
            .with_inner_size([1000.0, 680.0])
            .with_min_inner_size([560.0, 400.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Confab",
        options,
        Box::new(move |_cc| Ok(Box::new(ConfabApp::new(config, handle)))),
    )
    .map_err(|e| anyhow!("the window failed: {e}"))?;
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(())
}
