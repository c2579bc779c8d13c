//! Logging setup: `tracing` events as text or one JSON object per line, filtered by
//! `logging.level` and `logging.filters` (with ractor's span noise quieted) unless `RUST_LOG`
//! is set. Logs go to stderr so stdout stays for output,
//! written by a thread of their own (`tracing-appender`): a worker that logs every attempt
//! formats the line where it happens but never waits on the write. Nothing is dropped: a
//! full buffer makes the logger wait instead.
//! Panics (a handler's, caught by its actor) are logged as events too, so JSON logs stay
//! one object per line.

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LoggingSettings};

/// Flushes the log writer when dropped: keep it until the process ends.
#[must_use = "logs written after the guard is dropped may be lost"]
pub struct LogGuard(#[allow(dead_code)] Option<tracing_appender::non_blocking::WorkerGuard>);

/// Installs the global subscriber; a second call is a no-op.
pub fn init(settings: &LoggingSettings) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("jobu-log")
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(settings.directives()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(panic = %message, location = %location, "panic");
    }));
    LogGuard(installed.is_ok().then_some(guard))
}
