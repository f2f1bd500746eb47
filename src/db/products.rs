//! Products table.

use super::{flag, Arg, Conn, Cursor, Page, Sql};
use crate::domain::ids::ProductId;
use crate::domain::metadata::Metadata;
use crate::domain::product::{Eligibility, Product, VisitType};
use crate::domain::timestamp::Timestamp;
use crate::domain::{Mode, Owner};

#[derive(Clone, Debug, sqlx::FromRow)]
struct ProductRow {
    id: String,
    livemode: i64,
    name: String,
    description: Option<String>,
    visit_type: Option<String>,
    active: i64,
    upc_code: Option<String>,
    gtin: Option<String>,
    hsa_fsa_eligibility: String,
    url: Option<String>,
    metadata: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<ProductRow> for Product {
    fn from(r: ProductRow) -> Product {
        Product {
            product_id: ProductId::from_trusted(r.id),
            name: r.name,
            description: r.description,
            created_at: Timestamp::from_micros(r.created_at),
            visit_type: r.visit_type.as_deref().and_then(VisitType::from_wire),
            active: r.active != 0,
            upc_code: r.upc_code,
            gtin: r.gtin,
            hsa_fsa_eligibility: Eligibility::from_wire(&r.hsa_fsa_eligibility).unwrap_or(Eligibility::NotEligible),
            url: r.url,
            metadata: Metadata::from_stored(r.metadata.as_deref()),
            test_mode: Mode::from_flag(r.livemode).is_test(),
            updated_at: Timestamp::from_micros(r.updated_at),
        }
    }
}

const COLUMNS: &str = "id, livemode, name, description, visit_type, active, upc_code, gtin, \
                       hsa_fsa_eligibility, url, metadata, created_at, updated_at";

pub async fn insert(conn: &mut Conn, owner: &Owner, p: &Product) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO products (id, merchant_id, livemode, name, description, visit_type, active,
            upc_code, gtin, hsa_fsa_eligibility, url, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(p.product_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .bind(&p.name)
    .bind(p.description.as_deref())
    .bind(p.visit_type.map(|v| v.as_str()))
    .bind(flag(p.active))
    .bind(p.upc_code.as_deref())
    .bind(p.gtin.as_deref())
    .bind(p.hsa_fsa_eligibility.as_str())
    .bind(p.url.as_deref())
    .bind(p.metadata.as_ref().map(Metadata::to_json))
    .bind(p.created_at.micros())
    .bind(p.updated_at.micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes every mutable field of `p` back.
pub async fn update(conn: &mut Conn, owner: &Owner, p: &Product) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE products SET name = $1, description = $2, visit_type = $3, active = $4, upc_code = $5,
            gtin = $6, hsa_fsa_eligibility = $7, url = $8, metadata = $9, updated_at = $10
         WHERE id = $11 AND merchant_id = $12 AND livemode = $13",
    )
    .bind(&p.name)
    .bind(p.description.as_deref())
    .bind(p.visit_type.map(|v| v.as_str()))
    .bind(flag(p.active))
    .bind(p.upc_code.as_deref())
    .bind(p.gtin.as_deref())
    .bind(p.hsa_fsa_eligibility.as_str())
    .bind(p.url.as_deref())
    .bind(p.metadata.as_ref().map(Metadata::to_json))
    .bind(p.updated_at.micros())
    .bind(p.product_id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, owner: &Owner, id: &ProductId) -> Result<Option<Product>, sqlx::Error> {
    let row = sqlx::query_as::<_, ProductRow>(&format!(
        "SELECT {COLUMNS} FROM products WHERE id = $1 AND merchant_id = $2 AND livemode = $3"
    ))
    .bind(id.as_str())
    .bind(owner.merchant_id.as_str())
    .bind(owner.mode.as_flag())
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Product::from))
}

pub async fn list(
    conn: &mut Conn,
    owner: &Owner,
    active: Option<bool>,
    cursor: &Cursor,
) -> Result<Page<Product>, sqlx::Error> {
    let mut sql = Sql::new(&format!("SELECT {COLUMNS} FROM products WHERE merchant_id = "));
    sql.bind(Arg::Text(owner.merchant_id.to_string())).push(" AND livemode = ").bind(Arg::Int(owner.mode.as_flag()));
    if let Some(active) = active {
        sql.push(" AND active = ").bind(Arg::Int(flag(active)));
    }
    cursor.finish(&mut sql, "id");
    let rows = sql.query_as::<ProductRow>().fetch_all(conn).await?;
    let page = cursor.page(rows);
    Ok(Page { items: page.items.into_iter().map(Product::from).collect(), has_more: page.has_more })
}
