//! The server's notion of now: the system clock plus an offset that tests can move forward.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::domain::timestamp::Timestamp;

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_micros: Arc<AtomicI64>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> Timestamp {
        let system = time::OffsetDateTime::now_utc();
        Timestamp::from_micros(Timestamp::from_datetime(system).micros() + self.offset_micros.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) forward; used by tests to reach expiry and renewals
    /// without waiting.
    pub fn advance_seconds(&self, seconds: i64) {
        self.offset_micros.fetch_add(seconds * Timestamp::MICROS_PER_SECOND, Ordering::Relaxed);
    }
}
