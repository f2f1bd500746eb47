//! Prices table. A price carries a copy of its product's eligibility when read.

use super::{flag, Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::{PriceId, ProductId};
use crate::domain::metadata::Metadata;
use crate::domain::money::Currency;
use crate::domain::price::{Interval, Price, PriceType, Recurring};
use crate::domain::product::Eligibility;
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
struct PriceRow {
    id: String,
    livemode: i64,
    product_id: String,
    description: Option<String>,
    unit_amount: i64,
    currency: String,
    recurring_interval: Option<String>,
    recurring_interval_count: Option<i64>,
    trial_period_days: Option<i64>,
    active: i64,
    metadata: Option<String>,
    created_at: i64,
    hsa_fsa_eligibility: String,
}

impl From<PriceRow> for Price {
    fn from(r: PriceRow) -> Price {
        let recurring = r.recurring_interval.as_deref().and_then(Interval::from_wire).map(|interval| Recurring {
            interval,
            interval_count: r.recurring_interval_count.unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32,
            trial_period_days: r.trial_period_days.map(|d| d.clamp(0, i64::from(u32::MAX)) as u32),
        });
        Price {
            price_id: PriceId::from_trusted(r.id),
            description: r.description,
            unit_amount: r.unit_amount,
            price: r.unit_amount,
            currency: Currency::parse(&r.currency).unwrap_or(Currency::USD),
            price_type: if recurring.is_some() { PriceType::Recurring } else { PriceType::OneTime },
            recurring,
            active: r.active != 0,
            product: ProductId::from_trusted(r.product_id),
            created_at: Timestamp::from_micros(r.created_at),
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            hsa_fsa_eligibility: Eligibility::from_wire(&r.hsa_fsa_eligibility).unwrap_or(Eligibility::NotEligible),
        }
    }
}

const SELECT: &str = "SELECT p.id, p.livemode, p.product_id, p.description, p.unit_amount, p.currency, \
    p.recurring_interval, p.recurring_interval_count, p.trial_period_days, p.active, p.metadata, \
    p.created_at, pr.hsa_fsa_eligibility \
    FROM prices p JOIN products pr ON pr.id = p.product_id";

pub async fn insert(conn: &mut Conn, owner: &Owner, p: &Price) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO prices (id, merchant_id, livemode, product_id, description, unit_amount, currency,
            recurring_interval, recurring_interval_count, trial_period_days, active, metadata,
            created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)",
    )
    .bind(p.price_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(p.product.as_str())
    .bind(p.description.as_deref())
    .bind(p.unit_amount)
    .bind(p.currency.code())
    .bind(p.recurring.map(|r| r.interval.as_str()))
    .bind(p.recurring.map(|r| i64::from(r.interval_count)))
    .bind(p.recurring.and_then(|r| r.trial_period_days).map(i64::from))
    .bind(flag(p.active))
    .bind(p.metadata.as_ref().map(Metadata::to_json))
    .bind(p.created_at.micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes back the fields a price update may change: description, active, metadata.
pub async fn update(conn: &mut Conn, owner: &Owner, p: &Price, now: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE prices SET description = $1, active = $2, metadata = $3, updated_at = $4
         WHERE id = $5 AND merchant_id = $6 AND livemode = $7",
    )
    .bind(p.description.as_deref())
    .bind(flag(p.active))
    .bind(p.metadata.as_ref().map(Metadata::to_json))
    .bind(now.micros())
    .bind(p.price_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &PriceId) -> Result<Option<Price>, sqlx::Error> {
    let row =
        sqlx::query_as::<_, PriceRow>(&format!("{SELECT} WHERE p.id = $1 AND p.merchant_id = $2 AND p.livemode = $3"))
            .bind(id.as_str())
            .bind(owner.merchant_id.as_str())
            .bind(owner.mode.as_flag())
            .fetch_optional(conn)
            .await?;
    Ok(row.map(Price::from))
}

pub struct PriceFilter {
    pub product: Option<ProductId>,
    pub active: Option<bool>,
    pub price_type: Option<PriceType>,
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    filter: &PriceFilter,
    cursor: &Cursor,
) -> Result<Page<Price>, sqlx::Error> {
    let mut sql = Sql::new(&format!("{SELECT} WHERE p.merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND p.livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(product) = &filter.product {
        sql.push(" AND p.product_id = ").bind(Arg::Text(product.to_string()));
    }
    if let Some(active) = filter.active {
        sql.push(" AND p.active = ").bind(Arg::Int(flag(active)));
    }
    match filter.price_type {
        Some(PriceType::Recurring) => {
            sql.push(" AND p.recurring_interval IS NOT NULL");
        }
        Some(PriceType::OneTime) => {
            sql.push(" AND p.recurring_interval IS NULL");
        }
        None => {}
    }
    cursor.finish(&mut sql, "p.id");
    let rows = sql.query_as::<PriceRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(Price::from).collect(), has_more: page.has_more })
}
