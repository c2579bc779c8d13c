//! Logging setup: `tracing` events as text or one JSON object per line, filtered by
//! `logging.level` unless `RUST_LOG` is set. Logs go to stderr so stdout stays for output.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global subscriber; a second call is a no-op.
pub fn init(settings: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
