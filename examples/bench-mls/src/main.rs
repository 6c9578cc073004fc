#![doc = include_str!("../README.md")]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use confab_node::mls::Mls;
use confab_protocol::e2e::{MlsDevice, Suite};
use libp2p::PeerId;

/// The conversation every measurement uses.
const CONVERSATION: &str = "group:bench";
/// Message sizes measured, in bytes.
const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];

#[derive(Parser)]
#[command(about = "MLS encrypt/decrypt throughput and commit time, as the node does them")]
struct Args {
    /// Messages per suite and size (fewer for the largest sizes: at least 50).
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Devices in the group whose commits are timed.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Commits timed in that group.
    #[arg(long, default_value_t = 20)]
    commits: usize,
}

/// A device: its MLS state in its own redb file.
struct Device {
    mls: Mls,
    id: MlsDevice,
    _dir: tempfile::TempDir,
}

fn device(user: &str) -> Result<Device> {
    let dir = tempfile::tempdir()?;
    let peer = PeerId::random();
    let mls = Mls::open(&dir.path().join("mls.redb"), user, peer)?;
    Ok(Device {
        mls,
        id: MlsDevice {
            user: user.into(),
            device: peer.to_bytes(),
        },
        _dir: dir,
    })
}

fn anyone(_: &str) -> bool {
    true
}

/// `first` starts the conversation with every other device, which joins from the Welcome.
fn group(suite: Suite, devices: &[Device]) -> Result<()> {
    let (first, others) = devices.split_first().context("no devices")?;
    let mut packages = Vec::new();
    for d in others {
        packages.push((d.id.clone(), d.mls.key_packages(suite, 1)?.remove(0)));
    }
    let commit = first.mls.start(CONVERSATION, suite, &packages)?;
    first.mls.confirm(CONVERSATION)?;
    let welcome = commit.welcome.context("no welcome")?;
    for d in others {
        d.mls.join_welcome(CONVERSATION, &welcome, &anyone)?;
    }
    Ok(())
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn throughput(suite: Suite, messages: usize) -> Result<()> {
    let devices = vec![device("alice")?, device("bob")?];
    group(suite, &devices)?;
    for size in SIZES {
        let n = if size >= 16 * 1024 {
            (messages / 4).max(50)
        } else {
            messages
        };
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let started = Instant::now();
        let mut sealed = Vec::with_capacity(n);
        for _ in 0..n {
            sealed.push(devices[0].mls.encrypt(CONVERSATION, &plaintext)?);
        }
        let encrypt = started.elapsed();
        let started = Instant::now();
        for ct in &sealed {
            let opened = devices[1].mls.decrypt(CONVERSATION, ct)?;
            ensure!(opened.plaintext.len() == size, "a message came back wrong");
        }
        let decrypt = started.elapsed();
        let both = encrypt + decrypt;
        println!(
            "| {suite_short} | {size} | {n} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            n as f64 / encrypt.as_secs_f64(),
            n as f64 / decrypt.as_secs_f64(),
            n as f64 / both.as_secs_f64(),
            mib_per_s(size * n, both),
            sealed[0].len() - size,
            suite_short = short(suite),
        );
    }
    Ok(())
}

fn short(suite: Suite) -> &'static str {
    match suite {
        Suite::X25519Aes128Gcm => "X25519 AES-128-GCM",
        Suite::X25519ChaCha20Poly1305 => "X25519 ChaCha20-Poly1305",
        Suite::P256Aes128Gcm => "P-256 AES-128-GCM",
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn commits(suite: Suite, n_devices: usize, n_commits: usize) -> Result<()> {
    ensure!(n_devices >= 2, "a group needs two devices");
    // Two devices per user, as with a phone and a laptop.
    let devices: Vec<Device> = (0..n_devices)
        .map(|i| device(&format!("user{}", i / 2)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    group(suite, &devices)?;
    let built = started.elapsed();
    let mut make = Vec::new();
    let mut apply = Vec::new();
    for _ in 0..n_commits {
        let started = Instant::now();
        let commit = devices[0].mls.commit(CONVERSATION, &[], &[])?;
        devices[0].mls.confirm(CONVERSATION)?;
        make.push(started.elapsed());
        for d in &devices[1..] {
            let started = Instant::now();
            d.mls.apply_commit(CONVERSATION, &commit.commit, &anyone)?;
            apply.push(started.elapsed());
        }
    }
    let epoch = devices[0].mls.epoch(CONVERSATION).context("no epoch")?;
    ensure!(
        devices
            .iter()
            .all(|d| d.mls.epoch(CONVERSATION) == Some(epoch)),
        "the devices did not end at the same epoch"
    );
    // Everyone still reads the last epoch.
    let ct = devices[0].mls.encrypt(CONVERSATION, b"still together")?;
    for d in &devices[1..] {
        ensure!(d.mls.decrypt(CONVERSATION, &ct)?.plaintext == b"still together");
    }
    println!(
        "| {} | {n_devices} | {} | {} | {} | {} | {} | {} |",
        short(suite),
        ms(built),
        n_commits,
        ms(percentile(make.clone(), 0.5)),
        ms(percentile(make, 1.0)),
        ms(percentile(apply.clone(), 0.5)),
        ms(percentile(apply, 1.0)),
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("## Encrypt + decrypt (one sender, one receiver; state written through to redb)\n");
    println!(
        "| suite | bytes | messages | encrypt/s | decrypt/s | encrypt+decrypt/s | MiB/s (both) | overhead bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for suite in Suite::ALL {
        throughput(suite, args.messages)?;
    }
    println!("\n## Commits in a {}-device group\n", args.devices);
    println!(
        "| suite | devices | build (ms) | commits | make+merge p50 (ms) | max | apply p50 (ms) | max |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for suite in Suite::ALL {
        commits(suite, args.devices, args.commits)?;
    }
    Ok(())
}
