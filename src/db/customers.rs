//! Customers table.

use super::{Arg, Conn, Cursor, Page, Sql};
use crate::domain::customer::{Address, Customer};
use crate::domain::ids::{CustomerId, TestClockId};
use crate::domain::metadata::Metadata;
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
struct CustomerRow {
    id: String,
    livemode: i64,
    external_id: Option<String>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    shipping: Option<String>,
    metadata: Option<String>,
    test_clock: Option<String>,
    created_at: i64,
}

impl From<CustomerRow> for Customer {
    fn from(r: CustomerRow) -> Customer {
        Customer {
            customer_id: CustomerId::from_trusted(r.id),
            external_id: r.external_id,
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            phone: r.phone,
            shipping: r.shipping.as_deref().and_then(|s| serde_json::from_str::<Address>(s).ok()),
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            created_at: Timestamp::from_micros(r.created_at),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            test_clock: r.test_clock,
        }
    }
}

const COLUMNS: &str = "id, livemode, external_id, email, first_name, last_name, phone, shipping, \
                       metadata, test_clock, created_at";

fn shipping_json(c: &Customer) -> Option<String> {
    c.shipping.as_ref().and_then(|s| serde_json::to_string(s).ok())
}

pub async fn insert(conn: &mut Conn, owner: &Owner, c: &Customer) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (id, merchant_id, livemode, external_id, email, first_name, last_name,
            phone, shipping, metadata, test_clock, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(c.customer_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(c.external_id.as_deref())
    .bind(c.email.as_deref())
    .bind(c.first_name.as_deref())
    .bind(c.last_name.as_deref())
    .bind(c.phone.as_deref())
    .bind(shipping_json(c))
    .bind(c.metadata.as_ref().map(Metadata::to_json))
    .bind(c.test_clock.as_deref())
    .bind(c.created_at.micros())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update(conn: &mut Conn, owner: &Owner, c: &Customer, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customers SET external_id = $1, email = $2, first_name = $3, last_name = $4, phone = $5,
            shipping = $6, metadata = $7, updated_at = $8
         WHERE id = $9 AND merchant_id = $10 AND livemode = $11",
    )
    .bind(c.external_id.as_deref())
    .bind(c.email.as_deref())
    .bind(c.first_name.as_deref())
    .bind(c.last_name.as_deref())
    .bind(c.phone.as_deref())
    .bind(shipping_json(c))
    .bind(c.metadata.as_ref().map(Metadata::to_json))
    .bind(now.micros())
    .bind(c.customer_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &CustomerId) -> Result<Option<Customer>, sqlx::Error> {
    let row = sqlx::query_as::<_, CustomerRow>(&format!(
        "SELECT {COLUMNS} FROM customers WHERE id = $1 AND merchant_id = $2 AND livemode = $3"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Customer::from))
}

pub struct CustomerFilter {
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub test_clock: Option<TestClockId>,
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    filter: &CustomerFilter,
    cursor: &Cursor,
) -> Result<Page<Customer>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM customers WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(email) = &filter.email {
        sql.push(" AND email = ").bind(Arg::Text(email.clone()));
    }
    if let Some(external_id) = &filter.external_id {
        sql.push(" AND external_id = ").bind(Arg::Text(external_id.clone()));
    }
    if let Some(clock) = &filter.test_clock {
        sql.push(" AND test_clock = ").bind(Arg::Text(clock.to_string()));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<CustomerRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(Customer::from).collect(), has_more: page.has_more })
}
