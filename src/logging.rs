//! Logging set-up: `-v` verbosity to an env_logger filter on stderr; `RUST_LOG` overrides.

use log::LevelFilter;

/// The log level for a `-v` value: 0 off, 1 (fatal) and 2 error, 3 warn,
/// 4 info, 5 debug, 6 and above trace.
pub fn level_for(verbosity: u8) -> LevelFilter {
    match verbosity {
        0 => LevelFilter::Off,
        1 | 2 => LevelFilter::Error,
        3 => LevelFilter::Warn,
        4 => LevelFilter::Info,
        5 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Sets up the global logger on stderr (timestamp, level, module). `RUST_LOG`,
/// when set and not empty, replaces the `-v` level. A second call does nothing.
pub fn init(verbosity: u8) {
    let mut builder = env_logger::Builder::new();
    builder
        .target(env_logger::Target::Stderr)
        .filter_level(level_for(verbosity));
    if level_for(verbosity) > LevelFilter::Debug {
        // tungstenite hex-dumps every frame at trace: slow and useless next
        // to our own trace lines. RUST_LOG can still ask for it.
        builder.filter_module("tungstenite", LevelFilter::Debug);
    }
    if let Ok(filters) = std::env::var("RUST_LOG") {
        if !filters.trim().is_empty() {
            builder.parse_filters(&filters);
        }
    }
    // Fails only when a logger is already installed; keep that one.
    let _ = builder.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_maps_like_the_reference() {
        assert_eq!(level_for(0), LevelFilter::Off);
        assert_eq!(level_for(1), LevelFilter::Error);
        assert_eq!(level_for(2), LevelFilter::Error);
        assert_eq!(level_for(3), LevelFilter::Warn);
        assert_eq!(level_for(4), LevelFilter::Info);
        assert_eq!(level_for(5), LevelFilter::Debug);
        assert_eq!(level_for(6), LevelFilter::Trace);
        assert_eq!(level_for(255), LevelFilter::Trace);
    }
}
