//! Crash points for the kill tests: in debug builds only, `FLEX_TEST_CRASH_AT=<name>` makes the
//! process SIGKILL itself on reaching the point of that name, so a test can stop it at exactly the
//! worst moment (after the processor answered, before we recorded the answer). Release builds
//! compile every point to nothing.

/// Dies here, at once and without clean-up, if the test asked for it.
pub fn reached(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("FLEX_TEST_CRASH_AT").is_ok_and(|v| v == point) {
        tracing::warn!(point, "crash point reached: killing this process");
        // SIGKILL, as a power cut or the OOM killer would: no destructor, no flush, no shutdown.
        let _ = std::process::Command::new("kill").arg("-KILL").arg(std::process::id().to_string()).status();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
