//! The event outbox: one row per state change, written in the same transaction as the change.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::EventId;
use crate::domain::timestamp::Timestamp;
use crate::domain::Owner;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    pub merchant_id: String,
    pub livemode: i64,
    pub event_type: String,
    pub object_type: String,
    pub object_id: String,
    pub payload: String,
    pub created_at: i64,
}

pub struct NewEvent<'a> {
    pub id: &'a EventId,
    pub owner: &'a Owner,
    pub event_type: &'a str,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub payload: &'a str,
}

pub async fn insert(conn: &mut Conn, event: NewEvent<'_>, now: Timestamp) -> Result<(), sqlx::Error> {
    insert_many(conn, &[(event, now)]).await
}

/// Writes many events, one statement per chunk of rows.
pub async fn insert_many(conn: &mut Conn, events: &[(NewEvent<'_>, Timestamp)]) -> Result<(), sqlx::Error> {
    let rows: Vec<Vec<Arg>> = events
        .iter()
        .map(|(e, at)| {
            vec![
                Arg::text(e.id.as_str()),
                Arg::text(e.owner.merchant_id.as_str()),
                Arg::Int(e.owner.mode.as_flag()),
                Arg::text(e.event_type),
                Arg::text(e.object_type),
                Arg::text(e.object_id),
                Arg::text(e.payload),
                Arg::Int(at.micros()),
            ]
        })
        .collect();
    super::insert_rows(
        conn,
        "events",
        &["id", "merchant_id", "livemode", "event_type", "object_type", "object_id", "payload", "created_at"],
        rows,
        "",
    )
    .await
}

/// What a list of events is narrowed to; every bound is inclusive.
#[derive(Clone, Debug, Default)]
pub struct Filter<'a> {
    pub event_type: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub created_gte: Option<Timestamp>,
    pub created_lte: Option<Timestamp>,
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    filter: &Filter<'_>,
    cursor: &Cursor,
) -> Result<Page<EventRow>, sqlx::Error> {
    let mut sql = Sql::new("SELECT * FROM events WHERE merchant_id = ");
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(t) = filter.event_type {
        sql.push(" AND event_type = ").bind(Arg::Text(t.to_string()));
    }
    if let Some(o) = filter.object_id {
        sql.push(" AND object_id = ").bind(Arg::Text(o.to_string()));
    }
    if let Some(t) = filter.created_gte {
        sql.push(" AND created_at >= ").bind(Arg::Int(t.micros()));
    }
    if let Some(t) = filter.created_lte {
        sql.push(" AND created_at <= ").bind(Arg::Int(t.micros()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<EventRow>().fetch_all(conn).await?;
    Ok(cursor.page(rows))
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &EventId) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>("SELECT * FROM events WHERE id = $1 AND merchant_id = $2 AND livemode = $3")
        .bind(id.as_str())
        .bind(owner.merchant_id.as_str())
        .bind(owner.mode.as_flag())
        .fetch_optional(conn)
        .await
}
