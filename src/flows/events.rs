//! Emitting events into the outbox, inside the caller's transaction, with their deliveries to the
//! merchant's webhook endpoints: no event without the change, no delivery without the event.

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
    // A type missing from the list could never be subscribed to by name.
    debug_assert!(
        crate::domain::webhook::EVENT_TYPES.contains(&event_type),
        "event type {event_type} is not in domain::webhook::EVENT_TYPES"
    );
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
    db::webhook_deliveries::enqueue_for_event(conn, owner, &id, event_type, None, now).await?;
    Ok(id)
}
