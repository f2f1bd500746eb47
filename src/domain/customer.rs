//! Customers of a merchant: contact details, a shipping address, and the merchant's own id.

use serde::{Deserialize, Serialize};

use super::ids::CustomerId;
use super::metadata::Metadata;
use super::text;
use super::timestamp::Timestamp;
use super::FieldError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Address {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

impl Address {
    /// Checks each line's length and the country (ISO 3166-1 alpha-2, upper-case).
    pub fn checked(self, param: &str) -> Result<Address, FieldError> {
        let line = |v: Option<String>, name: &str, max: usize| -> Result<Option<String>, FieldError> {
            match v {
                Some(v) => text::optional_text(&v, &format!("{param}.{name}"), max),
                None => Ok(None),
            }
        };
        let country = match self.country {
            Some(c) if !c.trim().is_empty() => {
                let c = c.trim().to_ascii_uppercase();
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(FieldError::new(
                        format!("{param}.country"),
                        "country must be a two-letter ISO 3166-1 code such as US",
                    ));
                }
                Some(c)
            }
            _ => None,
        };
        Ok(Address {
            line1: line(self.line1, "line1", 200)?,
            line2: line(self.line2, "line2", 200)?,
            city: line(self.city, "city", 100)?,
            state: line(self.state, "state", 100)?,
            postal_code: line(self.postal_code, "postal_code", 20)?,
            country,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub shipping: Option<Address>,
    pub metadata: Option<Metadata>,
    pub created_at: Timestamp,
    pub test_mode: bool,
    pub test_clock: Option<String>,
}

impl Customer {
    pub fn full_name(&self) -> Option<String> {
        full_name(self.first_name.as_deref(), self.last_name.as_deref())
    }
}

pub fn full_name(first: Option<&str>, last: Option<&str>) -> Option<String> {
    match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.to_string()),
        (None, Some(l)) => Some(l.to_string()),
        (None, None) => None,
    }
}

pub const NAME_MAX: usize = 100;
pub const EXTERNAL_ID_MAX: usize = 255;

/// Contact details a customer typed on the hosted page, checked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Contact {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub shipping: Option<Address>,
    pub lmn: Option<super::consultation::Answers>,
}
