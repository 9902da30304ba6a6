//! The `tracing` layer writing libvirt-style logs, and the handle that changes its
//! settings while it runs (SIGHUP, virt-admin).
//!
//! The settings and their open outputs form one [`Logger`]. It sits in a
//! `tracing_subscriber::reload` layer: a change of outputs opens the new ones first
//! and swaps a whole new `Logger` in, a change of level or filters edits the one in
//! place, and `reload` then rebuilds the callsites' cached interest.
//!
//! The filtering itself stays in [`Logger`]: libvirt's filters (first match anywhere
//! in the target wins) and its per-output levels are not what `EnvFilter`, `Targets`
//! or per-layer filters do.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::{reload, Registry};

use super::record::{BodyVisitor, Record};
use super::settings::LogSettings;
use super::sinks::Sink;
use super::syntax::{Filter, Output};
use super::{LogError, Priority};

/// Settings in effect with their opened outputs.
///
/// It only looks at events: spans are disabled, since nothing is done with them.
pub struct Logger {
    settings: LogSettings,
    /// One per `settings.outputs`, same order.
    sinks: Vec<Sink>,
    /// `settings.floor()`, kept with the settings it derives from.
    floor: Option<Priority>,
    /// Lines that could not be written, counted across every `Logger` of one handle.
    dropped: Arc<AtomicU64>,
}

impl Logger {
    /// Opens the outputs of `settings` (no outputs: the default ones).
    fn open(settings: LogSettings, dropped: Arc<AtomicU64>) -> Result<Self, LogError> {
        let settings = settings.normalized();
        let sinks = settings
            .outputs
            .iter()
            .map(|o| Sink::open(&o.dest))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::with_sinks(settings, sinks, dropped))
    }

    pub(super) fn with_sinks(
        settings: LogSettings,
        sinks: Vec<Sink>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            floor: settings.floor(),
            settings,
            sinks,
            dropped,
        }
    }

    /// Changes settings that need no output reopened (level, filters).
    fn edit(&mut self, change: impl FnOnce(&mut LogSettings)) {
        change(&mut self.settings);
        self.floor = self.settings.floor();
    }

    fn wants(&self, metadata: &Metadata<'_>) -> bool {
        if !metadata.is_event() {
            return false;
        }
        let level = Priority::of(metadata.level());
        self.floor.is_some_and(|floor| level >= floor)
            && self.settings.wants(level, metadata.target())
    }

    fn emit(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let level = Priority::of(metadata.level());
        if !self.floor.is_some_and(|floor| level >= floor) {
            return;
        }
        let target = metadata.target();
        if level < self.settings.threshold(target)
            || !self.settings.outputs.iter().any(|o| level >= o.level)
        {
            return;
        }
        let mut visitor = BodyVisitor::default();
        event.record(&mut visitor);
        let body = visitor.finish();
        let record = Record {
            level,
            target,
            body: &body,
            file: metadata.file(),
            line: metadata.line(),
            time: SystemTime::now(),
            pid: std::process::id(),
        };
        let mut text_line = None;
        for (output, sink) in self.settings.outputs.iter().zip(&self.sinks) {
            if level >= output.level && sink.write(&record, &mut text_line).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for Logger {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Exact per callsite: target and level are fixed, so with the settings known
        // a disabled debug! costs only the cached "never". Every settings change
        // rebuilds this cache.
        if self.wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wants(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.floor.map_or(LevelFilter::OFF, Priority::level_filter))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        self.emit(event);
    }
}

/// The layer to install; see [`super::layer`] and [`super::install`].
pub type LogLayer = reload::Layer<Logger, Registry>;

/// Changes the settings of a [`LogLayer`] while it runs. Cheap to clone. Once the
/// layer's subscriber is dropped, changes fail with [`LogError::Gone`].
#[derive(Clone)]
pub struct LogHandle {
    reload: reload::Handle<Logger, Registry>,
    dropped: Arc<AtomicU64>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle")
            .field("settings", &self.settings())
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// A layer whose outputs are already open, and its handle.
pub(super) fn layer_with(logger: Logger) -> (LogLayer, LogHandle) {
    let dropped = Arc::clone(&logger.dropped);
    let (layer, reload) = reload::Layer::new(logger);
    (layer, LogHandle { reload, dropped })
}

/// Opens the outputs of `settings`; see [`super::layer`].
pub(super) fn open(settings: LogSettings) -> Result<(LogLayer, LogHandle), LogError> {
    Logger::open(settings, Arc::default()).map(layer_with)
}

impl LogHandle {
    /// Replaces all settings. Outputs are opened first; if one fails, nothing changes.
    pub fn set(&self, settings: LogSettings) -> Result<(), LogError> {
        let new = Logger::open(settings, Arc::clone(&self.dropped))?;
        let mut old = None;
        self.reload
            .modify(|current| old = Some(std::mem::replace(current, new)))
            .map_err(|_| LogError::Gone)?;
        // The old outputs are closed here, once the lock is free, so that logging
        // threads do not wait for it.
        drop(old);
        Ok(())
    }

    /// Changes the default level.
    pub fn set_level(&self, level: Priority) -> Result<(), LogError> {
        self.reload
            .modify(|logger| logger.edit(|settings| settings.level = level))
            .map_err(|_| LogError::Gone)
    }

    /// Replaces the filters (an empty list removes them). Once the layer is gone
    /// nothing is logged, so there is nothing to change and nothing to report.
    pub fn set_filters(&self, filters: Vec<Filter>) {
        let _ = self
            .reload
            .modify(|logger| logger.edit(|settings| settings.filters = filters));
    }

    /// Replaces the outputs; an empty list selects the default outputs. The new
    /// outputs are opened before the old ones are closed; if one fails to open,
    /// the old outputs stay in effect.
    pub fn set_outputs(&self, outputs: Vec<Output>) -> Result<(), LogError> {
        let mut settings = self.current()?;
        settings.outputs = outputs;
        self.set(settings)
    }

    fn current(&self) -> Result<LogSettings, LogError> {
        self.reload
            .with_current(|logger| logger.settings.clone())
            .map_err(|_| LogError::Gone)
    }

    /// The settings in effect (the defaults once the layer is gone: nothing is
    /// logged then).
    pub fn settings(&self) -> LogSettings {
        self.current().unwrap_or_default()
    }

    /// How many lines could not be written (full disk, journald gone, ...).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
