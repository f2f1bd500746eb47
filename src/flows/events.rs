//! Emitting events into the outbox, inside the caller's transaction, with their deliveries to the
//! merchant's webhook endpoints: no event without the change, no delivery without the event.
//!
//! [`emit`] writes one event at once. An [`EventBuffer`] collects the events of many changes (a
//! billing pass) and writes them all with [`EventBuffer::flush`]: one statement for the events and
//! one for their deliveries, instead of two per event. Either way an event's payload is the object
//! as it stands when the event is added, and its id (time-ordered) is given then.

use serde::Serialize;
use serde_json::value::RawValue;

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
    let mut buffer = EventBuffer::default();
    let id = buffer.push(owner, event_type, object_type, object_id, object, now);
    buffer.flush(conn).await?;
    Ok(id)
}

/// An event's payload: `{"event_id", "event_type", "created_at", "test_mode", "object": {<type>: <object>}}`.
#[derive(Serialize)]
struct Payload<'a> {
    event_id: &'a EventId,
    event_type: &'a str,
    created_at: Timestamp,
    test_mode: bool,
    object: Keyed<'a>,
}

/// `{<key>: <value>}`.
struct Keyed<'a> {
    key: &'a str,
    value: &'a RawValue,
}

impl Serialize for Keyed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.key, self.value)?;
        map.end()
    }
}

struct Buffered {
    id: EventId,
    owner: Owner,
    event_type: String,
    object_type: String,
    object_id: String,
    payload: String,
    at: Timestamp,
}

/// Events waiting to be written together, in the order they were added.
#[derive(Default)]
pub struct EventBuffer {
    events: Vec<Buffered>,
}

impl EventBuffer {
    /// Adds `event_type` for `object` as it stands now (see [`emit`]); returns the event's id.
    pub fn push<T: Serialize>(
        &mut self,
        owner: &Owner,
        event_type: &str,
        object_type: &str,
        object_id: &str,
        object: &T,
        now: Timestamp,
    ) -> EventId {
        self.push_each(owner, &[event_type], object_type, object_id, object, now).remove(0)
    }

    /// Adds one event of each of `event_types`, in order, for the same `object` as it stands now
    /// (an invoice is `created` and `finalized` at once); the object is serialized once for all.
    pub fn push_each<T: Serialize>(
        &mut self,
        owner: &Owner,
        event_types: &[&str],
        object_type: &str,
        object_id: &str,
        object: &T,
        now: Timestamp,
    ) -> Vec<EventId> {
        // Our own types always serialize; a failure would be a bug, shown as a null object.
        let object = serde_json::value::to_raw_value(object)
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        event_types
            .iter()
            .map(|event_type| {
                // A type missing from the list could never be subscribed to by name.
                debug_assert!(
                    crate::domain::webhook::EVENT_TYPES.contains(event_type),
                    "event type {event_type} is not in domain::webhook::EVENT_TYPES"
                );
                let id = EventId::generate();
                let payload = Payload {
                    event_id: &id,
                    event_type,
                    created_at: now,
                    test_mode: owner.mode.is_test(),
                    object: Keyed { key: object_type, value: &object },
                };
                self.events.push(Buffered {
                    id: id.clone(),
                    owner: owner.clone(),
                    event_type: event_type.to_string(),
                    object_type: object_type.to_string(),
                    object_id: object_id.to_string(),
                    payload: serde_json::to_string(&payload).unwrap_or_default(),
                    at: now,
                });
                id
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Writes the events and their deliveries (call in the transaction of the changes).
    pub async fn flush(self, conn: &mut Conn) -> Result<(), sqlx::Error> {
        if self.events.is_empty() {
            return Ok(());
        }
        let rows: Vec<(db::events::NewEvent<'_>, Timestamp)> = self
            .events
            .iter()
            .map(|e| {
                (
                    db::events::NewEvent {
                        id: &e.id,
                        owner: &e.owner,
                        event_type: &e.event_type,
                        object_type: &e.object_type,
                        object_id: &e.object_id,
                        payload: &e.payload,
                    },
                    e.at,
                )
            })
            .collect();
        db::events::insert_many(conn, &rows).await?;
        let deliveries: Vec<(&Owner, &EventId, &str, Timestamp)> =
            self.events.iter().map(|e| (&e.owner, &e.id, e.event_type.as_str(), e.at)).collect();
        db::webhook_deliveries::enqueue_for_events(conn, &deliveries).await?;
        Ok(())
    }
}
