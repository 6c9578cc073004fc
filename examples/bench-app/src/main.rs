#![doc = include_str!("../README.md")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use confab_app::ConfabApp;
use confab_node::{Config, Conversation};

/// Most time a step (prefill, window start) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// Messages sent at once while prefilling (the receiver commits them in groups).
const PREFILL_BATCH: usize = 200;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks the desktop app with a long conversation")]
struct Args {
    /// Messages in the conversation.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    messages: u64,
    /// Frames drawn while scrolling (headless part).
    #[arg(long, default_value_t = 400)]
    frames: usize,
}

fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir);
    config.name = Some("bench".into());
    config.mdns = false;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config
}

/// Fills `dir`'s history with `n` messages from another node on loopback (sent directly, each
/// acknowledged once stored) and selects that conversation in the app; returns its address.
async fn prefill(dir: &Path, n: u64) -> Result<(String, Duration)> {
    let other_dir = tempfile::tempdir()?;
    let receiver = confab_node::start(config(dir)).await?;
    let sender = confab_node::start(config(other_dir.path())).await?;
    let addr = receiver.whoami().await?.listen_addrs[0].clone();
    let to = Conversation::Peer(sender.dial(&addr).await?);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let batch = (n - sent).min(PREFILL_BATCH as u64);
        let sends = (0..batch).map(|i| {
            let sender = sender.clone();
            let to = to.clone();
            let text = format!("message number {}", sent + i);
            async move { sender.send(&to, &text).await }
        });
        for result in futures::future::join_all(sends).await {
            result?;
        }
        sent += batch;
    }
    let conversation = Conversation::Peer(sender.peer_id().to_owned());
    let deadline = Instant::now() + STEP_TIMEOUT;
    while (receiver.history(&conversation, n as usize).await?.len() as u64) < n {
        if Instant::now() > deadline {
            bail!("the messages never all arrived");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t0.elapsed();
    tokio::time::timeout(STEP_TIMEOUT, sender.shutdown()).await??;
    tokio::time::timeout(STEP_TIMEOUT, receiver.shutdown()).await??;
    let selected = conversation.to_string();
    std::fs::write(
        dir.join("app.json"),
        serde_json::to_vec(&serde_json::json!({"name": "bench", "selected": selected}))?,
    )?;
    Ok((selected, took))
}

/// `VmRSS` and `VmHWM` of process `pid`, in MiB.
fn memory(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// What the real window reported.
struct Window {
    first_frame_ms: u64,
    conversation_ms: u64,
    rss: f64,
    hwm: f64,
}

/// Starts the release app on `dir` under a display and reads its timing lines and memory.
fn window(dir: &Path) -> Result<Window> {
    let exe = std::env::current_exe()?;
    let app: PathBuf = exe.with_file_name("confab-app");
    if !app.exists() {
        bail!(
            "{} is missing: cargo build --release -p confab-app",
            app.display()
        );
    }
    let mut xvfb = None;
    let display = match std::env::var("DISPLAY") {
        Ok(d) => d,
        Err(_) => {
            let child = Command::new("Xvfb")
                .args([":98", "-screen", "0", "1280x800x24"])
                .stderr(Stdio::null())
                .spawn()
                .context("no DISPLAY and no Xvfb to start")?;
            xvfb = Some(child);
            std::thread::sleep(Duration::from_secs(1));
            ":98".into()
        }
    };
    let mut child = Command::new(&app)
        .arg("--data-dir")
        .arg(dir)
        .args(["--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .env("DISPLAY", &display)
        .env("CONFAB_APP_TIMING", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the app")?;
    let pid = child.id();
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let ms = |line: &str| -> Option<u64> { line.split_whitespace().rev().nth(1)?.parse().ok() };
    let deadline = Instant::now() + STEP_TIMEOUT;
    let (mut first, mut shown) = (None, None);
    while shown.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .context("the app never showed the conversation")?;
        if line.contains("timing: first frame after") {
            first = ms(&line);
        } else if line.contains("timing: first frame with the conversation") {
            shown = ms(&line);
        }
    }
    // Let it settle (row heights measured, history applied) before reading memory.
    std::thread::sleep(Duration::from_secs(3));
    let (rss, hwm) = memory(pid).unwrap_or((f64::NAN, f64::NAN));
    let _ = child.kill();
    let _ = child.wait();
    if let Some(mut x) = xvfb {
        let _ = x.kill();
        let _ = x.wait();
    }
    Ok(Window {
        first_frame_ms: first.unwrap_or(0),
        conversation_ms: shown.unwrap_or(0),
        rss,
        hwm,
    })
}

/// Frame times while scrolling the conversation from the bottom to the top, headless.
fn frames(
    dir: &Path,
    conversation: &str,
    n_frames: usize,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Vec<f64>, Vec<usize>, u64)> {
    let ctx = egui::Context::default();
    let mut app = ConfabApp::new(config(dir), runtime.handle().clone());
    let screen = egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1100.0, 760.0));
    let input = |events: Vec<egui::Event>, t: f64| egui::RawInput {
        screen_rect: Some(screen),
        time: Some(t),
        events,
        ..Default::default()
    };
    let mut t = 0.0;
    let mut run = |app: &mut ConfabApp, events: Vec<egui::Event>| -> Duration {
        t += 1.0 / 60.0;
        let start = Instant::now();
        let output = ctx.run_ui(input(events, t), |ui| app.frame(ui));
        let _ = ctx.tessellate(output.shapes, output.pixels_per_point);
        start.elapsed()
    };
    // Until the history is in and shown.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let loaded = loop {
        run(&mut app, Vec::new());
        let n = app
            .model()
            .and_then(|m| m.chats.get(conversation))
            .map_or(0, |c| c.messages.len());
        if n > 0 && app.rows_laid_out() > 0 {
            break n as u64;
        }
        if Instant::now() > deadline {
            bail!("the history never loaded");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for _ in 0..10 {
        run(&mut app, Vec::new());
    }
    let mut times = Vec::with_capacity(n_frames);
    let mut rows = Vec::with_capacity(n_frames);
    let wheel = egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 400.0),
        modifiers: egui::Modifiers::default(),
        phase: egui::TouchPhase::Move,
    };
    for _ in 0..n_frames {
        let events = vec![
            egui::Event::PointerMoved(egui::pos2(700.0, 400.0)),
            wheel.clone(),
        ];
        times.push(run(&mut app, events).as_secs_f64() * 1000.0);
        rows.push(app.rows_laid_out());
    }
    app.shut_down();
    Ok((times, rows, loaded))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    eprintln!("prefilling {} messages", args.messages);
    let (conversation, prefill_took) = runtime.block_on(prefill(dir.path(), args.messages))?;
    eprintln!("prefilled in {:.1} s", prefill_took.as_secs_f64());

    eprintln!("starting the app window");
    let window = window(dir.path());

    eprintln!("drawing {} frames headless while scrolling", args.frames);
    let (mut times, rows, loaded) = frames(dir.path(), &conversation, args.frames, &runtime)?;
    times.sort_by(f64::total_cmp);
    let max_rows = rows.iter().copied().max().unwrap_or(0);
    let mean_rows = rows.iter().sum::<usize>() as f64 / rows.len().max(1) as f64;

    println!("| Measure | Value |");
    println!("|---|---:|");
    println!("| messages in the conversation (loaded from the store) | {loaded} |");
    match &window {
        Ok(w) => {
            println!(
                "| window: first frame after start | {} ms |",
                w.first_frame_ms
            );
            println!(
                "| window: first frame showing the conversation | {} ms |",
                w.conversation_ms
            );
            println!("| window: RSS after 3 s settled | {:.0} MiB |", w.rss);
            println!("| window: peak RSS (VmHWM) | {:.0} MiB |", w.hwm);
        }
        Err(e) => println!("| window | not measured: {e:#} |"),
    }
    println!(
        "| headless frame while scrolling: p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!("| message rows laid out per frame: mean / max | {mean_rows:.1} / {max_rows} |");
    println!();
    println!(
        "- {} frames, each with a 400-point mouse-wheel scroll up, 1100×760 points; cores: {}",
        times.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}
