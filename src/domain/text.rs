//! Small text values that arrive from merchants and customers: names, emails, phone numbers, URLs.

use super::{FieldError, Mode};

/// Trimmed, non-empty, at most `max` characters, no control characters.
pub fn required_text(raw: &str, param: &str, max: usize) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::new(param, format!("{param} must not be empty")));
    }
    optional_text(value, param, max).map(|v| v.unwrap_or_default())
}

/// Like `required_text`, but an empty string means "not given".
pub fn optional_text(raw: &str, param: &str, max: usize) -> Result<Option<String>, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max {
        return Err(FieldError::new(param, format!("{param} must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(FieldError::new(param, format!("{param} must not contain control characters")));
    }
    Ok(Some(value.to_string()))
}

/// A plausible email address: one `@`, a local part, a domain with a dot, no spaces; at most 254.
pub fn email(raw: &str, param: &str) -> Result<String, FieldError> {
    let value = raw.trim();
    let invalid = || FieldError::new(param, format!("`{value}` is not a valid email address (like name@example.com)"));
    if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(invalid());
    }
    Ok(value.to_string())
}

/// A phone number in E.164 (`+14155550123`); spaces, dashes, dots and brackets are removed first.
pub fn phone(raw: &str, param: &str) -> Result<String, FieldError> {
    let compact: String = raw.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    if digits.len() < 8 || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
        return Err(FieldError::new(
            param,
            format!("`{}` is not a phone number in E.164 form (like +14155550123)", raw.trim()),
        ));
    }
    Ok(compact)
}

/// Where a customer is sent back to. Absolute `https`, or `http` to a loopback host in test mode.
/// The empty string is accepted (the seed's quickstart sends it): the hosted page then shows its
/// own confirmation instead of redirecting.
pub fn redirect_url(raw: &str, param: &str, mode: Mode) -> Result<String, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(String::new());
    }
    if value.len() > 2048 {
        return Err(FieldError::new(param, format!("{param} must be at most 2048 characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(param, format!("{param} must not contain control characters")));
    }
    // `{CHECKOUT_SESSION_ID}` is not valid in a URL as written; check the URL it will become.
    let probe = value.replace("{CHECKOUT_SESSION_ID}", "fcs_placeholder");
    let url = url::Url::parse(&probe).map_err(|_| {
        FieldError::new(param, format!("{param} must be an absolute URL like https://example.com/done"))
    })?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(value.to_string()),
        "http" if loopback && mode.is_test() => Ok(value.to_string()),
        "http" if loopback => Err(FieldError::new(param, format!("{param} must use https in live mode"))),
        "http" => Err(FieldError::new(
            param,
            format!("{param} must use https (http is allowed only for localhost in test mode)"),
        )),
        _ => Err(FieldError::new(param, format!("{param} must be an https URL"))),
    }
}

/// A merchant's public web address for a product: absolute http or https.
pub fn web_url(raw: &str, param: &str) -> Result<Option<String>, FieldError> {
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(param, format!("{param} must not contain control characters")));
    }
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && value.len() <= 2048 => {
            Ok(Some(value.to_string()))
        }
        _ => Err(FieldError::new(param, format!("{param} must be an absolute http or https URL"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email("a@b.co", "email").is_ok());
        for bad in ["", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@b..co", "a@.b.co"] {
            assert!(email(bad, "email").is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_are_normalised_to_e164() {
        assert_eq!(phone("+1 (415) 555-0123", "phone").unwrap(), "+14155550123");
        for bad in ["4155550123", "+0123456789", "+1", "+1415555012345678", "+1415abc0123"] {
            assert!(phone(bad, "phone").is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_urls_need_https_except_loopback_in_test_mode() {
        assert!(redirect_url("https://shop.example/ok?s={CHECKOUT_SESSION_ID}", "success_url", Mode::Live).is_ok());
        assert!(redirect_url("http://localhost:8000/ok", "success_url", Mode::Test).is_ok());
        assert!(redirect_url("http://127.0.0.1/ok", "success_url", Mode::Test).is_ok());
        assert!(redirect_url("http://localhost/ok", "success_url", Mode::Live).is_err());
        assert!(redirect_url("http://shop.example/ok", "success_url", Mode::Test).is_err());
        assert!(redirect_url("javascript:alert(1)", "success_url", Mode::Test).is_err());
        assert!(redirect_url("/relative", "success_url", Mode::Test).is_err());
        assert_eq!(redirect_url("", "success_url", Mode::Test).unwrap(), "");
    }

    #[test]
    fn text_limits() {
        assert!(required_text("  ", "name", 10).is_err());
        assert!(required_text("abcdefghijk", "name", 10).is_err());
        assert_eq!(required_text(" ok ", "name", 10).unwrap(), "ok");
        assert!(optional_text("a\u{0}b", "name", 10).is_err());
        assert_eq!(optional_text("", "name", 10).unwrap(), None);
    }
}
