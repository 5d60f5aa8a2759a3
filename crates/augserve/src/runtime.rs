//! The tokio runtime of the networked subcommands.

/// A multi-threaded runtime with I/O and timers.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
