//! Card details typed by a customer on the sandbox form, and the documented test cards. The number
//! and CVC live only as long as one request; only brand, last four digits and expiry are kept.

use super::payment::DeclineCode;
use super::FieldError;

/// What the sandbox does with a documented test card, as Stripe's test mode does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBehavior {
    Succeeds,
    Declines(DeclineCode),
    /// Can be saved, but every charge is declined.
    ChargesDeclined,
    /// Needs 3-D Secure on the first payment; later off-session charges succeed.
    ThreeDSecureOnce,
    /// Needs 3-D Secure on every payment; off-session charges fail with `authentication_required`.
    ThreeDSecureAlways,
}

impl TestBehavior {
    /// A stable name, used inside sandbox tokens so a saved card keeps its behaviour.
    pub fn code(self) -> &'static str {
        match self {
            TestBehavior::Succeeds => "ok",
            TestBehavior::Declines(DeclineCode::InsufficientFunds) => "insufficient_funds",
            TestBehavior::Declines(DeclineCode::LostCard) => "lost_card",
            TestBehavior::Declines(DeclineCode::ExpiredCard) => "expired_card",
            TestBehavior::Declines(DeclineCode::IncorrectCvc) => "incorrect_cvc",
            TestBehavior::Declines(DeclineCode::AuthenticationRequired) => "authentication_required",
            TestBehavior::Declines(DeclineCode::GenericDecline) => "generic_decline",
            TestBehavior::ChargesDeclined => "charges_declined",
            TestBehavior::ThreeDSecureOnce => "3ds_once",
            TestBehavior::ThreeDSecureAlways => "3ds_always",
        }
    }

    pub fn from_code(code: &str) -> Option<TestBehavior> {
        TEST_CARDS.iter().map(|c| c.behavior).find(|b| b.code() == code)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TestCard {
    pub number: &'static str,
    pub brand: Brand,
    pub funding: &'static str,
    pub behavior: TestBehavior,
}

pub const TEST_CARDS: &[TestCard] = &[
    TestCard { number: "4242424242424242", brand: Brand::Visa, funding: "credit", behavior: TestBehavior::Succeeds },
    TestCard {
        number: "5555555555554444",
        brand: Brand::Mastercard,
        funding: "credit",
        behavior: TestBehavior::Succeeds,
    },
    TestCard { number: "4000056655665556", brand: Brand::Visa, funding: "debit", behavior: TestBehavior::Succeeds },
    TestCard {
        number: "4000000000009995",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::Declines(DeclineCode::InsufficientFunds),
    },
    TestCard {
        number: "4000000000000002",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::Declines(DeclineCode::GenericDecline),
    },
    TestCard {
        number: "4000000000009987",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::Declines(DeclineCode::LostCard),
    },
    TestCard {
        number: "4000000000000069",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::Declines(DeclineCode::ExpiredCard),
    },
    TestCard {
        number: "4000000000000127",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::Declines(DeclineCode::IncorrectCvc),
    },
    TestCard {
        number: "4000000000000341",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::ChargesDeclined,
    },
    TestCard {
        number: "4000002500003155",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::ThreeDSecureOnce,
    },
    TestCard {
        number: "4000002760003184",
        brand: Brand::Visa,
        funding: "credit",
        behavior: TestBehavior::ThreeDSecureAlways,
    },
];

pub fn test_card(number: &str) -> Option<&'static TestCard> {
    TEST_CARDS.iter().find(|c| c.number == number)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Unknown,
}

impl Brand {
    pub fn detect(digits: &str) -> Brand {
        let two: u32 = digits.get(..2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let four: u32 = digits.get(..4).and_then(|s| s.parse().ok()).unwrap_or(0);
        if digits.starts_with('4') {
            Brand::Visa
        } else if (51..=55).contains(&two) || (2221..=2720).contains(&four) {
            Brand::Mastercard
        } else if two == 34 || two == 37 {
            Brand::Amex
        } else if four == 6011 || two == 65 {
            Brand::Discover
        } else {
            Brand::Unknown
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Unknown => "unknown",
        }
    }

    /// As printed on a receipt: "Visa".
    pub fn display(brand: &str) -> &'static str {
        match brand {
            "visa" => "Visa",
            "mastercard" => "Mastercard",
            "amex" => "American Express",
            "discover" => "Discover",
            _ => "Card",
        }
    }
}

/// The card fields of the sandbox form, checked. Holds the number only for this request.
#[derive(Clone, Debug)]
pub struct CardInput {
    pub number: String,
    pub exp_month: u32,
    pub exp_year: i32,
    pub postal_code: Option<String>,
}

impl CardInput {
    pub fn last4(&self) -> String {
        self.number[self.number.len() - 4..].to_string()
    }

    /// Parses the form fields. `today` is (year, month) on the server's clock: a card that expired
    /// before this month is refused.
    pub fn parse(
        number: &str,
        expiry: &str,
        cvc: &str,
        postal_code: &str,
        today: (i32, u32),
    ) -> Result<CardInput, FieldError> {
        let digits: String = number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if digits.is_empty() {
            return Err(FieldError::new("card_number", "Enter your card number."));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !(12..=19).contains(&digits.len()) || !luhn_ok(&digits) {
            return Err(FieldError::new("card_number", "Your card number is invalid."));
        }
        let (exp_month, exp_year) = parse_expiry(expiry)?;
        if (exp_year, exp_month) < today {
            return Err(FieldError::new("card_expiry", "Your card's expiration date is in the past."));
        }
        if exp_year > today.0 + 50 {
            return Err(FieldError::new("card_expiry", "Your card's expiration year is invalid."));
        }
        let cvc = cvc.trim();
        let cvc_len = if Brand::detect(&digits) == Brand::Amex { 4 } else { 3 };
        if cvc.len() != cvc_len || !cvc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new("card_cvc", "Your card's security code is incomplete."));
        }
        let postal = postal_code.trim();
        let postal_code = if postal.is_empty() {
            None
        } else if postal.len() > 10 || !postal.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
            return Err(FieldError::new("card_postal_code", "Your postal code is invalid."));
        } else {
            Some(postal.to_string())
        };
        Ok(CardInput { number: digits, exp_month, exp_year, postal_code })
    }
}

/// Accepts `MM/YY`, `MM / YY`, `MM/YYYY` and `MMYY`.
fn parse_expiry(raw: &str) -> Result<(u32, i32), FieldError> {
    let err = || FieldError::new("card_expiry", "Your card's expiration date is incomplete (use MM / YY).");
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let (month, year) = match compact.split_once('/') {
        Some((m, y)) => (m.to_string(), y.to_string()),
        None if compact.len() == 4 => (compact[..2].to_string(), compact[2..].to_string()),
        None => return Err(err()),
    };
    let month: u32 = month.parse().map_err(|_| err())?;
    if !(1..=12).contains(&month) {
        return Err(FieldError::new("card_expiry", "Your card's expiration month is invalid."));
    }
    let year: i32 = match year.len() {
        2 => 2000 + year.parse::<i32>().map_err(|_| err())?,
        4 => year.parse().map_err(|_| err())?,
        _ => return Err(err()),
    };
    Ok((month, year))
}

pub fn luhn_ok(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_card_passes_luhn_and_has_its_brand() {
        for card in TEST_CARDS {
            assert!(luhn_ok(card.number), "{}", card.number);
            assert_eq!(Brand::detect(card.number), card.brand);
        }
    }

    #[test]
    fn card_fields_are_parsed_and_checked() {
        let ok = CardInput::parse("4242 4242 4242 4242", "12 / 34", "123", "94103", (2026, 11)).unwrap();
        assert_eq!(ok.last4(), "4242");
        assert_eq!((ok.exp_month, ok.exp_year), (12, 2034));
        let err = |n, e, c| CardInput::parse(n, e, c, "", (2026, 11)).unwrap_err().param;
        assert_eq!(err("4242424242424241", "12/34", "123"), "card_number");
        assert_eq!(err("", "12/34", "123"), "card_number");
        assert_eq!(err("4242424242424242", "13/34", "123"), "card_expiry");
        assert_eq!(err("4242424242424242", "10/26", "123"), "card_expiry");
        assert_eq!(err("4242424242424242", "12/34", "12"), "card_cvc");
        assert!(CardInput::parse("4242424242424242", "11/26", "123", "", (2026, 11)).is_ok());
        assert!(CardInput::parse("4242424242424242", "1126", "123", "", (2026, 11)).is_ok());
    }

    #[test]
    fn behaviour_codes_round_trip() {
        for card in TEST_CARDS {
            assert_eq!(TestBehavior::from_code(card.behavior.code()), Some(card.behavior));
        }
    }
}
