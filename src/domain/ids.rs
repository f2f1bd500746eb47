//! Prefixed ULID identifiers: one type per resource so an id of one kind can never be used as another.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new ULID, monotonic within this process so that ids made in the same millisecond still sort in
/// creation order (lists are ordered by id).
pub fn new_ulid() -> ulid::Ulid {
    let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    // The generator only fails when 80 random bits overflow inside one millisecond.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, new_ulid()))
            }

            /// Accepts only this resource's prefix followed by a valid ULID; the result is canonical
            /// (upper-case), so lookups are exact.
            pub fn parse(raw: &str) -> Option<Self> {
                let rest = raw.strip_prefix($prefix)?;
                if rest.len() != 26 {
                    return None;
                }
                let ulid = ulid::Ulid::from_string(rest).ok()?;
                Some(Self(format!("{}{}", $prefix, ulid)))
            }

            /// For values read back from our own database.
            pub fn from_trusted(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(MerchantId, "facct_");
prefixed_id!(ApiKeyId, "fkey_");
prefixed_id!(ProductId, "fprod_");
prefixed_id!(PriceId, "fprice_");
prefixed_id!(CheckoutSessionId, "fcs_");
prefixed_id!(LineItemId, "fli_");
prefixed_id!(CustomerId, "fcus_");
prefixed_id!(PaymentMethodId, "fpm_");
prefixed_id!(PaymentIntentId, "fpi_");
prefixed_id!(PaymentAttemptId, "fpa_");
prefixed_id!(SubscriptionId, "fsub_");
prefixed_id!(InvoiceId, "fin_");
prefixed_id!(EventId, "fevt_");
prefixed_id!(ConsultationId, "fcons_");
prefixed_id!(WebhookEndpointId, "fwh_");
prefixed_id!(WebhookDeliveryId, "fwhd_");
prefixed_id!(WebhookAttemptId, "fwha_");
prefixed_id!(RefundId, "fre_");
prefixed_id!(TestClockId, "fclock_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_prefix_and_26_crockford_characters() {
        let id = ProductId::generate();
        let rest = id.as_str().strip_prefix("fprod_").unwrap();
        assert_eq!(rest.len(), 26);
        assert!(rest.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    }

    #[test]
    fn parse_rejects_a_wrong_prefix_or_a_bad_ulid() {
        let price = PriceId::generate();
        assert!(ProductId::parse(price.as_str()).is_none());
        assert!(ProductId::parse("fprod_").is_none());
        assert!(ProductId::parse("fprod_01HW5MXAPBE79RHMMJJGB4ACA").is_none());
        assert!(ProductId::parse("fprod_01HW5MXAPBE79RHMMJJGB4ACAU").is_none());
        assert!(ProductId::parse("fprod_01HW5MXAPBE79RHMMJJGB4ACAB").is_some());
    }

    #[test]
    fn parse_canonicalises_lower_case() {
        let id = ProductId::parse("fprod_01hw5mxapbe79rhmmjjgb4acab").unwrap();
        assert_eq!(id.as_str(), "fprod_01HW5MXAPBE79RHMMJJGB4ACAB");
    }

    #[test]
    fn ids_made_in_a_row_sort_in_creation_order() {
        let ids: Vec<_> = (0..1000).map(|_| CustomerId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
