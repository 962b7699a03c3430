//! Logging: the process's `tracing` subscriber (plain or JSON lines on stderr, its filter
//! reloadable at run time for `PUT /log-level`) and the per-request access log ([`access`]).
//!
//! One subscriber for the process, as `tracing` has one global dispatcher: [`init`] installs
//! it (the binary calls it once the configuration is read, so a configuration error is still
//! one plain line on stderr), and [`level`] hands the admin server the handle that swaps its
//! filter. Processes that embed the proxy without [`init`] (the integration tests) have no
//! handle: `/log-level` answers 404 there.
//!
//! The filter comes from `RUST_LOG` (default `info`); access log lines (target
//! [`access::TARGET`]) pass whatever it says, as Linkerd's `_access_log` target does: the
//! access log is switched by `[log] access`, not by the log level.
//!
//! Not here: what is logged (each module logs its own events), the access log's rate limit
//! (per worker, in [`access`]).

pub mod access;

use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{FilterExt, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The filter when `RUST_LOG` is unset or does not parse.
pub const DEFAULT_FILTER: &str = "info";

/// Most bytes a new filter may have (`PUT /log-level`): far above any useful filter, small
/// enough that a body is never a memory concern.
pub const MAX_FILTER_BYTES: usize = 4096;

/// The handle of the installed subscriber's filter.
static LEVEL: OnceLock<LevelHandle> = OnceLock::new();

/// Swaps the filter of the subscriber [`init`] installed.
#[derive(Debug)]
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// The filter in force, as `RUST_LOG` syntax (`info`, `warn,sidewire::http1=debug`).
    pub fn current(&self) -> String {
        self.0
            .with_current(|f| f.to_string())
            .unwrap_or_else(|e| format!("(unknown: {e})"))
    }

    /// Replaces the filter with `directives` (`RUST_LOG` syntax). Returns the new filter, or
    /// the parse error (the filter in force is then unchanged).
    pub fn set(&self, directives: &str) -> Result<String, String> {
        let directives = directives.trim();
        if directives.is_empty() {
            return Err(
                "empty filter: give a level (info) or directives (warn,sidewire=debug)".into(),
            );
        }
        let new = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?}: {e}"))?;
        let shown = new.to_string();
        self.0.reload(new).map_err(|e| e.to_string())?;
        Ok(shown)
    }
}

/// The filter handle, when this process installed its subscriber with [`init`].
pub fn level() -> Option<&'static LevelHandle> {
    LEVEL.get()
}

/// Installs the process's subscriber: `format` lines on stderr (`ansi` colours for plain
/// lines on a terminal), filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]) through a
/// reloadable filter, access log lines always through. Returns whether `RUST_LOG` was set but
/// did not parse (the default applies then; the caller may say so, once logging works).
///
/// A second call does nothing (one subscriber per process).
pub fn init(format: LogFormat, ansi: bool) -> Option<String> {
    let (env, bad) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
        Ok(v) => match EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(DEFAULT_FILTER),
                Some(format!(
                    "RUST_LOG={v:?} ignored ({e}); using {DEFAULT_FILTER:?}"
                )),
            ),
        },
    };
    let (filter, handle) = reload::Layer::new(env);
    // Cacheable per call site (it looks at the target only), and capped at INFO so that
    // `tracing`'s global max level stays what `RUST_LOG` says.
    let access =
        FilterFn::new(is_access as fn(&Metadata<'_>) -> bool).with_max_level_hint(Level::INFO);
    let filter = filter.or(access);
    let layer = match format {
        LogFormat::Plain => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            // {"timestamp", "level", "message", fields..., "target"}: one flat object.
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(LevelHandle(handle));
    }
    bad
}

fn is_access(m: &Metadata<'_>) -> bool {
    m.target() == access::TARGET && *m.level() == Level::INFO
}
