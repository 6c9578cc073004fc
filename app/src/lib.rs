//! `confab-app`: the Confab desktop app (egui/eframe). It runs a node in-process (the same data
//! dir layout and options as `confab`) and shows the whole chat in one window: people on the
//! LAN, friends, groups, conversations with files and images, notifications with a sound.
//!
//! Layout (see `../shared/STYLE.md`, egui/rerun: the UI never awaits):
//! - [`bridge`]: the only link to the node. Work runs on the tokio runtime; node events and
//!   results come back through one bounded channel, each with a repaint request.
//! - [`model`]: what the window shows, updated from those messages (no I/O).
//! - [`app`]: [`ConfabApp`], its stages (first run, starting, running), the frame (drain under a
//!   time budget, alert, draw) and the requests widgets make.
//! - [`ui`]: the screens.
//! - [`alert`]: desktop notifications and the message sound.
//! - [`prefs`]: UI state that survives a restart (`<data dir>/app.json`).
#![deny(missing_docs)]

pub mod alert;
pub mod app;
pub mod bridge;
pub mod model;
pub mod prefs;
pub mod ui;

pub use app::ConfabApp;
