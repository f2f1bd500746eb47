//! Emitting events into the outbox, inside the caller's transaction.

use serde::Serialize;
use serde_json::json;

use crate::db::{self, Conn};
use crate::domain::ids::EventId;
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

/// Writes `event_type` for `object` (as the API shows it now) under the key `object_type`.
pub async fn emit<T: Serialize>(
    conn: &mut Conn,
    owner: &Owner,
    event_type: &str,
    object_type: &str,
    object_id: &str,
    object: &T,
    now: Timestamp,
) -> Result<EventId, sqlx::Error> {
    let id = EventId::generate();
    let payload = json!({
        "event_id": id,
        "event_type": event_type,
        "created_at": now,
        "test_mode": owner.mode.is_test(),
        "object": { object_type: object },
    });
    db::events::insert(
        conn,
        db::events::NewEvent { id: &id, owner, event_type, object_type, object_id, payload: &payload.to_string() },
        now,
    )
    .await?;
    Ok(id)
}
