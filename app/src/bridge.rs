//! The app's only link to the node. The UI never awaits: it hands work to the [`Bridge`], which
//! runs it on the tokio runtime; node events and the results of that work come back as
//! [`Msg`]s through one bounded channel, and every message sent asks egui for a repaint. The app
//! drains the channel each frame under a time budget ([`Bridge::drain`]).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use confab_node::{Client, Event};
use tokio::sync::{broadcast, mpsc};

/// Messages waiting for the UI, at most; a full channel makes the node's event forwarder wait
/// (and, if the node gets far ahead, the app reloads what it shows: [`Msg::Lagged`]).
pub const CHANNEL: usize = 4096;

/// What comes back to the UI.
#[derive(Debug)]
pub enum Msg {
    /// The node's own event.
    Event(Box<Event>),
    /// The node's event stream skipped `n` events (the app was too slow): reload.
    Lagged(u64),
    /// A piece of work finished: what it was, and its result for the model.
    Done(Box<crate::model::Outcome>),
}

/// Asks egui for a repaint from any thread, once the UI has told where.
#[derive(Clone, Default)]
pub struct Repaint(Arc<Mutex<Option<egui::Context>>>);

impl Repaint {
    /// The UI's context: repaints go there from now on.
    pub fn set(&self, ctx: &egui::Context) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(ctx.clone());
        }
    }

    /// Requests a repaint, if the UI is known.
    pub fn request(&self) {
        if let Some(ctx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            ctx.request_repaint();
        }
    }
}

/// The node's handle with a runtime to run work on and the channel back to the UI.
pub struct Bridge {
    client: Client,
    runtime: tokio::runtime::Handle,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
    repaint: Repaint,
}

impl Bridge {
    /// Connects to `client` (its events start flowing now) on `runtime`.
    pub fn new(client: Client, runtime: tokio::runtime::Handle, repaint: Repaint) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let events = client.subscribe();
        runtime.spawn(forward(events, tx.clone(), repaint.clone()));
        Self {
            client,
            runtime,
            tx,
            rx,
            repaint,
        }
    }

    /// The node's handle (cheap to clone).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The repaint hook.
    pub fn repaint(&self) -> &Repaint {
        &self.repaint
    }

    /// Runs `work` with the node's handle on the runtime; its outcome comes back as
    /// [`Msg::Done`].
    pub fn run<F, Fut>(&self, work: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = crate::model::Outcome> + Send + 'static,
    {
        let future = work(self.client.clone());
        let (tx, repaint) = (self.tx.clone(), self.repaint.clone());
        self.runtime.spawn(async move {
            let outcome = future.await;
            if tx.send(Msg::Done(Box::new(outcome))).await.is_ok() {
                repaint.request();
            }
        });
    }

    /// Runs `future` on the runtime with no outcome for the UI (a file dialog's own task).
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(future);
    }

    /// A sender for tasks that report by themselves.
    pub fn sender(&self) -> mpsc::Sender<Msg> {
        self.tx.clone()
    }

    /// The messages waiting now, taken until `budget` is spent; the rest wait for the next
    /// frame (which is requested).
    pub fn drain(&mut self, budget: Duration) -> Vec<Msg> {
        let start = Instant::now();
        let mut out = Vec::new();
        while start.elapsed() < budget {
            match self.rx.try_recv() {
                Ok(msg) => out.push(msg),
                Err(_) => return out,
            }
        }
        if !self.rx.is_empty() {
            self.repaint.request();
        }
        out
    }
}

/// Forwards the node's events to the UI until either side is gone.
async fn forward(mut events: broadcast::Receiver<Event>, tx: mpsc::Sender<Msg>, repaint: Repaint) {
    loop {
        let msg = match events.recv().await {
            Ok(event) => Msg::Event(Box::new(event)),
            Err(broadcast::error::RecvError::Lagged(n)) => Msg::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(msg).await.is_err() {
            return;
        }
        repaint.request();
    }
}
