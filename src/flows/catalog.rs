//! Products, prices and customers: each write commits with the event that reports it.

use crate::db::{self, Db};
use crate::domain::customer::Customer;
use crate::domain::ids::TestClockId;
use crate::domain::price::Price;
use crate::domain::product::Product;
use crate::domain::timestamp::Timestamp;
use crate::domain::{FieldError, Owner};

use super::{events, FlowError};

pub async fn create_product(db: &Db, owner: &Owner, product: &Product, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    db::products::insert(&mut tx, owner, product).await?;
    events::emit(&mut tx, owner, "product.created", "product", product.product_id.as_str(), product, now).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn update_product(db: &Db, owner: &Owner, product: &Product, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    db::products::update(&mut tx, owner, product).await?;
    events::emit(&mut tx, owner, "product.updated", "product", product.product_id.as_str(), product, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Creates a price for an existing product of the same merchant and mode.
pub async fn create_price(db: &Db, owner: &Owner, price: &mut Price, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    let product = db::products::get(&mut tx, owner, &price.product)
        .await?
        .ok_or_else(|| FieldError::new("price.product", format!("No such product: '{}'", price.product)))?;
    price.hsa_fsa_eligibility = product.hsa_fsa_eligibility;
    db::prices::insert(&mut tx, owner, price).await?;
    events::emit(&mut tx, owner, "price.created", "price", price.price_id.as_str(), &*price, now).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn update_price(db: &Db, owner: &Owner, price: &Price, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    db::prices::update(&mut tx, owner, price, now).await?;
    events::emit(&mut tx, owner, "price.updated", "price", price.price_id.as_str(), price, now).await?;
    tx.commit().await?;
    Ok(())
}

fn external_id_taken(customer: &Customer) -> FlowError {
    FlowError::Conflict {
        code: "external_id_taken",
        message: format!(
            "external_id `{}` is already used by another customer",
            customer.external_id.as_deref().unwrap_or_default()
        ),
        param: Some("customer.external_id".into()),
    }
}

/// Creates a customer; one on a test clock needs that clock to exist (not deleted) for `owner`.
pub async fn create_customer(db: &Db, owner: &Owner, customer: &Customer, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    if let Some(clock) = &customer.test_clock {
        let id = TestClockId::parse(clock);
        let found = match &id {
            Some(id) => db::test_clocks::get(&mut tx, owner, id).await?.is_some(),
            None => false,
        };
        if !found {
            return Err(FieldError::new("customer.test_clock", format!("No such test clock: '{clock}'")).into());
        }
    }
    if let Err(e) = db::customers::insert(&mut tx, owner, customer).await {
        return Err(if db::is_unique_violation(&e) { external_id_taken(customer) } else { e.into() });
    }
    events::emit(&mut tx, owner, "customer.created", "customer", customer.customer_id.as_str(), customer, now).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn update_customer(db: &Db, owner: &Owner, customer: &Customer, now: Timestamp) -> Result<(), FlowError> {
    let mut tx = db.begin().await?;
    if let Err(e) = db::customers::update(&mut tx, owner, customer, now).await {
        return Err(if db::is_unique_violation(&e) { external_id_taken(customer) } else { e.into() });
    }
    events::emit(&mut tx, owner, "customer.updated", "customer", customer.customer_id.as_str(), customer, now).await?;
    tx.commit().await?;
    Ok(())
}
