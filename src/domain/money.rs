//! Currencies and amounts in integer minor units, and how they are shown to a customer.

use serde::{Deserialize, Serialize};

/// A lower-case ISO 4217 code for a currency that can be charged (no funds, metals or test codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub const USD: Currency = Currency(iso_currency::Currency::USD);

    pub fn parse(code: &str) -> Option<Currency> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        let currency = iso_currency::Currency::from_code(&code.to_ascii_uppercase())?;
        if currency.is_fund() || currency.is_special() || currency.is_superseded().is_some() {
            return None;
        }
        currency.exponent()?;
        Some(Currency(currency))
    }

    pub fn code(self) -> String {
        self.0.code().to_ascii_lowercase()
    }

    /// Digits after the decimal point: 2 for usd, 0 for jpy, 3 for kwd.
    pub fn exponent(self) -> u32 {
        self.0.exponent().map(u32::from).unwrap_or(2)
    }

    /// The symbol a US-English reader expects: `$` for usd, `CA$` for other dollars, `€`, `¥`.
    pub fn symbol(self) -> String {
        let symbol = self.0.symbol().symbol;
        if symbol == "$" && self.0 != iso_currency::Currency::USD {
            format!("{}$", &self.0.code()[..2])
        } else {
            symbol
        }
    }

    /// Formats an amount in minor units, en-US style: `$49.99`, `¥5,000`, `-$1.50`.
    pub fn format(self, minor: i64) -> String {
        let exponent = self.exponent();
        let scale = 10_i64.pow(exponent);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let whole = abs / scale as u64;
        let fraction = abs % scale as u64;
        let whole = group_thousands(whole);
        if exponent == 0 {
            format!("{sign}{}{whole}", self.symbol())
        } else {
            format!("{sign}{}{whole}.{fraction:0width$}", self.symbol(), width = exponent as usize)
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value).ok_or_else(|| format!("unknown currency `{value}`"))
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.code())
    }
}

fn group_thousands(mut n: u64) -> String {
    let mut groups = Vec::new();
    loop {
        if n < 1000 {
            groups.push(n.to_string());
            break;
        }
        groups.push(format!("{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_show_two_decimals_and_thousands_separators() {
        assert_eq!(Currency::USD.format(4999), "$49.99");
        assert_eq!(Currency::USD.format(0), "$0.00");
        assert_eq!(Currency::USD.format(5), "$0.05");
        assert_eq!(Currency::USD.format(123456789), "$1,234,567.89");
        assert_eq!(Currency::USD.format(-150), "-$1.50");
    }

    #[test]
    fn zero_decimal_currencies_have_no_fraction() {
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(jpy.exponent(), 0);
        assert_eq!(jpy.format(5000), "¥5,000");
        let krw = Currency::parse("krw").unwrap();
        assert_eq!(krw.exponent(), 0);
    }

    #[test]
    fn three_decimal_currencies_keep_three_digits() {
        let kwd = Currency::parse("kwd").unwrap();
        assert_eq!(kwd.exponent(), 3);
        assert!(kwd.format(1500).ends_with("1.500"));
    }

    #[test]
    fn other_dollars_are_told_apart_from_the_us_dollar() {
        assert_eq!(Currency::parse("cad").unwrap().format(100), "CA$1.00");
        assert_eq!(Currency::parse("eur").unwrap().format(1999), "€19.99");
    }

    #[test]
    fn codes_must_be_lower_case_known_and_chargeable() {
        assert!(Currency::parse("USD").is_none());
        assert!(Currency::parse("usdd").is_none());
        assert!(Currency::parse("xau").is_none());
        assert!(Currency::parse("zzz").is_none());
        assert!(Currency::parse("").is_none());
        assert_eq!(Currency::parse("usd"), Some(Currency::USD));
    }
}
