//! Products: what a merchant sells, with its HSA/FSA eligibility.

use serde::Serialize;

use super::ids::ProductId;
use super::metadata::Metadata;
use super::timestamp::Timestamp;
use super::{wire_enum, FieldError};

wire_enum!(
    /// How a product qualifies for HSA/FSA money.
    Eligibility {
        NotEligible => "not_eligible",
        AutoSubstantiation => "auto_substantiation",
        LetterOfMedicalNecessity => "letter_of_medical_necessity",
        PrivateLabel => "private_label",
        Vision => "vision",
        Prescription => "prescription",
    }
);

impl Eligibility {
    pub fn is_eligible(self) -> bool {
        self != Eligibility::NotEligible
    }
}

wire_enum!(
    /// The kind of consultation a letter of medical necessity is written for.
    VisitType {
        Gym => "gym",
        Fitness => "fitness",
        Nutrition => "nutrition",
        Sleep => "sleep",
        CbtSleep => "cbtSleep",
        WeightLoss => "weight_loss",
        Massage => "massage",
        General => "general",
    }
);

impl VisitType {
    /// Words for the questionnaire heading.
    pub fn label(self) -> &'static str {
        match self {
            VisitType::Gym => "gym membership",
            VisitType::Fitness => "fitness program",
            VisitType::Nutrition => "nutrition program",
            VisitType::Sleep => "sleep program",
            VisitType::CbtSleep => "CBT for insomnia program",
            VisitType::WeightLoss => "weight-loss program",
            VisitType::Massage => "massage therapy",
            VisitType::General => "wellness program",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Product {
    pub product_id: ProductId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub visit_type: Option<VisitType>,
    pub active: bool,
    pub upc_code: Option<String>,
    pub gtin: Option<String>,
    pub hsa_fsa_eligibility: Eligibility,
    pub url: Option<String>,
    pub metadata: Option<Metadata>,
    pub test_mode: bool,
    pub updated_at: Timestamp,
}

pub const NAME_MAX: usize = 250;
pub const DESCRIPTION_MAX: usize = 5000;

/// A letter of medical necessity is written for a kind of visit, so that eligibility needs one.
pub fn check_visit_type(
    eligibility: Eligibility,
    visit_type: Option<VisitType>,
    param: &str,
) -> Result<(), FieldError> {
    if eligibility == Eligibility::LetterOfMedicalNecessity && visit_type.is_none() {
        return Err(FieldError::new(
            param,
            "visit_type is required when hsa_fsa_eligibility is `letter_of_medical_necessity`",
        ));
    }
    Ok(())
}

/// A 12-digit UPC-A code with a valid check digit.
pub fn upc_code(raw: &str, param: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.len() != 12 || !gs1_check_digit_ok(value) {
        return Err(FieldError::new(param, "upc_code must be 12 digits with a valid check digit"));
    }
    Ok(value.to_string())
}

/// A GTIN-8, -12, -13 or -14 with a valid check digit.
pub fn gtin(raw: &str, param: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    if !matches!(value.len(), 8 | 12 | 13 | 14) || !gs1_check_digit_ok(value) {
        return Err(FieldError::new(param, "gtin must be 8, 12, 13 or 14 digits with a valid check digit"));
    }
    Ok(value.to_string())
}

/// GS1 mod-10: weights 3 and 1 alternate from the right, starting next to the check digit.
fn gs1_check_digit_ok(digits: &str) -> bool {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let values: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
    let (body, check) = values.split_at(values.len() - 1);
    let sum: u32 = body.iter().rev().enumerate().map(|(i, d)| if i % 2 == 0 { d * 3 } else { *d }).sum();
    (10 - sum % 10) % 10 == check[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs1_codes_need_a_valid_check_digit() {
        assert!(upc_code("036000291452", "upc_code").is_ok());
        assert!(upc_code("036000291453", "upc_code").is_err());
        assert!(upc_code("03600029145", "upc_code").is_err());
        assert!(gtin("4006381333931", "gtin").is_ok());
        assert!(gtin("96385074", "gtin").is_ok());
        assert!(gtin("4006381333932", "gtin").is_err());
        assert!(gtin("40063813339a1", "gtin").is_err());
    }

    #[test]
    fn enums_name_the_allowed_values() {
        let err = Eligibility::parse("maybe", "product.hsa_fsa_eligibility").unwrap_err();
        assert_eq!(err.param, "product.hsa_fsa_eligibility");
        assert!(err.message.contains("`letter_of_medical_necessity`"));
        assert_eq!(VisitType::parse("cbtSleep", "v").unwrap(), VisitType::CbtSleep);
    }

    #[test]
    fn a_letter_of_medical_necessity_needs_a_visit_type() {
        assert!(check_visit_type(Eligibility::LetterOfMedicalNecessity, None, "visit_type").is_err());
        assert!(check_visit_type(Eligibility::LetterOfMedicalNecessity, Some(VisitType::Gym), "visit_type").is_ok());
        assert!(check_visit_type(Eligibility::Vision, None, "visit_type").is_ok());
    }
}
