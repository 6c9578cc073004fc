//! Telling the user about a new message while the window is not focused: a desktop notification
//! (freedesktop notifications over D-Bus, pure Rust) and a short sound shipped with the app
//! (`assets/message.wav`), played with the desktop's own player (`pw-play`, `paplay` or `aplay`,
//! whichever is there) so that building the app needs no audio libraries. Both are best effort:
//! a desktop without a notification service or a player only logs it. The caller decides
//! *whether* to alert (never when `notify` is false: do-not-disturb, muted, own message).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::model::Notice;

/// The sound, embedded in the binary.
pub const SOUND: &[u8] = include_bytes!("../assets/message.wav");

/// Players tried in turn for the sound.
const PLAYERS: [&str; 3] = ["pw-play", "paplay", "aplay"];

/// Alerts closer together than this are merged: a catch-up of many messages makes one sound
/// and one notification, not one each.
const MIN_GAP: std::time::Duration = std::time::Duration::from_millis(1500);

/// When the last alert went out.
static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Raises `notice` on the desktop and plays the sound, off the UI thread (at most one alert per
/// [`MIN_GAP`]).
pub fn raise(notice: &Notice) {
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MIN_GAP) {
            return;
        }
        *last = Some(now);
    }
    let notice = notice.clone();
    std::thread::spawn(move || {
        if let Err(e) = notify_rust::Notification::new()
            .appname("Confab")
            .summary(&notice.title)
            .body(&notice.body)
            .show()
        {
            tracing::debug!("no desktop notification: {e}");
        }
        play_sound();
    });
}

/// Where the sound is written for the players: a new file of this process's own (created
/// exclusively, so nothing placed there beforehand is followed or reused), once per run.
fn sound_file() -> std::io::Result<PathBuf> {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(path) = PATH.get() {
        return Ok(path.clone());
    }
    let nonce: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let path = std::env::temp_dir().join(format!(
        "confab-message-{}-{nonce:x}.wav",
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    file.write_all(SOUND)?;
    Ok(PATH.get_or_init(|| path).clone())
}

fn play_sound() {
    let path = match sound_file() {
        Ok(p) => p,
        Err(e) => return tracing::debug!("cannot write the sound: {e}"),
    };
    for player in PLAYERS {
        let played = Command::new(player)
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if played.is_ok_and(|s| s.success()) {
            return;
        }
    }
    tracing::debug!("no sound player worked ({})", PLAYERS.join(", "));
}

/// Players tried in turn for an audio message (the first that exists plays it).
const AUDIO_PLAYERS: [(&str, &[&str]); 5] = [
    ("ffplay", &["-nodisp", "-autoexit", "-loglevel", "quiet"]),
    ("mpv", &["--no-video", "--really-quiet"]),
    ("pw-play", &[]),
    ("paplay", &[]),
    ("aplay", &["-q"]),
];

/// Starts playing the audio file at `path` with the first player found; the caller stops it
/// by killing the process.
pub fn play(path: &std::path::Path) -> Result<std::process::Child, String> {
    for (player, args) in AUDIO_PLAYERS {
        match Command::new(player)
            .args(args)
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => return Ok(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{player}: {e}")),
        }
    }
    Err("no audio player found (ffplay, mpv, pw-play, paplay or aplay)".into())
}
