//! Test clocks (owner-scoped; a deleted one is kept with `deleted_at`, because customers and the
//! billing engine's rows still name it) and the compare-and-set steps of an advance.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::{SubscriptionId, TestClockId};
use crate::domain::test_clock::{TestClock, TestClockStatus};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
struct ClockRow {
    id: String,
    livemode: i64,
    name: Option<String>,
    frozen_time: i64,
    status: String,
    advancing_since: Option<i64>,
    created_at: i64,
}

impl From<ClockRow> for TestClock {
    fn from(r: ClockRow) -> TestClock {
        TestClock {
            test_clock_id: TestClockId::from_trusted(r.id),
            name: r.name,
            frozen_time: Timestamp::from_micros(r.frozen_time),
            status: TestClockStatus::from_wire(&r.status).unwrap_or(TestClockStatus::Advancing),
            created_at: Timestamp::from_micros(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            deleted: false,
            advancing_since: r.advancing_since.map(Timestamp::from_micros),
        }
    }
}

const COLUMNS: &str = "id, livemode, name, frozen_time, status, advancing_since, created_at";

pub async fn insert(conn: &mut Conn, owner: &Owner, clock: &TestClock) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO test_clocks (id, merchant_id, livemode, name, frozen_time, status, created_at, deleted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
    )
    .bind(clock.test_clock_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(clock.name.as_deref())
    .bind(clock.frozen_time.micros())
    .bind(clock.status.as_str())
    .bind(clock.created_at.micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// The clock of `owner`, unless deleted.
pub async fn get(conn: &mut Conn, owner: &Owner, id: &TestClockId) -> Result<Option<TestClock>, sqlx::Error> {
    let row = sqlx::query_as::<_, ClockRow>(&format!(
        "SELECT {COLUMNS} FROM test_clocks
         WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND deleted_at IS NULL"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(TestClock::from))
}

pub async fn list(conn: &mut Conn, owner: &Owner, cursor: &Cursor) -> Result<Page<TestClock>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM test_clocks WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string()))
        .push(" AND livemode = ")
        .bind(Arg::Int(owner.mode.as_flag()))
        .push(" AND deleted_at IS NULL");
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<ClockRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(TestClock::from).collect(), has_more: page.has_more })
}

/// Marks the clock `advancing`, only if it is `ready` and still at `from` (so of two requests that
/// read the same clock, one wins). Returns whether this call did it.
pub async fn begin_advance(
    conn: &mut Conn,
    owner: &Owner,
    id: &TestClockId,
    from: Timestamp,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE test_clocks SET status = 'advancing', advancing_since = $5
         WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND deleted_at IS NULL
           AND (status = 'ready' OR advancing_since < $6) AND frozen_time = $4",
    )
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(from.micros())
    .bind(now.micros())
    .bind(now.plus_seconds(-crate::domain::test_clock::STUCK_ADVANCE_SECONDS).micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends an advance at `to`. (A clock deleted meanwhile is still updated: it stays hidden, and the
/// rows that name it keep a consistent time.) Returns whether the clock was advancing.
pub async fn finish_advance(
    conn: &mut Conn,
    owner: &Owner,
    id: &TestClockId,
    to: Timestamp,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE test_clocks SET frozen_time = $1, status = 'ready'
         WHERE id = $2 AND merchant_id = $3 AND livemode = $4 AND status = 'advancing'",
    )
    .bind(to.micros())
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives up an advance: the clock is `ready` at the time it had.
pub async fn abort_advance(conn: &mut Conn, owner: &Owner, id: &TestClockId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE test_clocks SET status = 'ready'
         WHERE id = $1 AND merchant_id = $2 AND livemode = $3 AND status = 'advancing'",
    )
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the clock deleted. Returns whether it existed (undeleted) for `owner`.
pub async fn delete(conn: &mut Conn, owner: &Owner, id: &TestClockId, now: Timestamp) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE test_clocks SET deleted_at = $1
         WHERE id = $2 AND merchant_id = $3 AND livemode = $4 AND deleted_at IS NULL",
    )
    .bind(now.micros())
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The subscriptions on clock `id` that have not ended.
pub async fn subscriptions_not_ended(conn: &mut Conn, id: &TestClockId) -> Result<Vec<SubscriptionId>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM subscriptions
         WHERE test_clock = $1 AND status NOT IN ('CANCELED', 'INCOMPLETE_EXPIRED') ORDER BY id",
    )
    .bind(id.as_str())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(SubscriptionId::from_trusted).collect())
}

/// The time on clock `id`, whoever owns it and even if deleted (what lives on a clock keeps its
/// time): for the billing engine, which has the id from a row it already owns.
pub async fn frozen_time(conn: &mut Conn, id: &TestClockId) -> Result<Option<Timestamp>, sqlx::Error> {
    let micros: Option<i64> = sqlx::query_scalar("SELECT frozen_time FROM test_clocks WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(micros.map(Timestamp::from_micros))
}
