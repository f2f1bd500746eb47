//! Merchant metadata: up to 50 string keys of at most 40 characters with string values of at most
//! 500, kept in the order given so it round-trips exactly.

use serde::Serialize;
use serde_json::{Map, Value};

use super::FieldError;

pub const MAX_KEYS: usize = 50;
pub const MAX_KEY_CHARS: usize = 40;
pub const MAX_VALUE_CHARS: usize = 500;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Parses a JSON value given for `param`; JSON null means "no metadata".
    pub fn parse(value: &Value, param: &str) -> Result<Option<Metadata>, FieldError> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            _ => return Err(FieldError::new(param, "metadata must be an object of string keys and string values")),
        };
        if map.len() > MAX_KEYS {
            return Err(FieldError::new(param, format!("metadata can have at most {MAX_KEYS} keys")));
        }
        for (key, value) in map {
            let key_param = format!("{param}.{key}");
            if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
                return Err(FieldError::new(
                    key_param,
                    format!("metadata keys must be 1 to {MAX_KEY_CHARS} characters"),
                ));
            }
            match value {
                Value::String(s) if s.chars().count() <= MAX_VALUE_CHARS => {}
                Value::String(_) => {
                    return Err(FieldError::new(
                        key_param,
                        format!("metadata values must be at most {MAX_VALUE_CHARS} characters"),
                    ))
                }
                _ => return Err(FieldError::new(key_param, "metadata values must be strings")),
            }
        }
        Ok(Some(Metadata(map.clone())))
    }

    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// Reads back what `to_json` stored.
    pub fn from_stored(raw: Option<&str>) -> Option<Metadata> {
        match serde_json::from_str(raw?) {
            Ok(Value::Object(map)) => Some(Metadata(map)),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn string_maps_round_trip_in_order() {
        let value = json!({"zeta": "1", "alpha": "2"});
        let m = Metadata::parse(&value, "metadata").unwrap().unwrap();
        assert_eq!(m.to_json(), r#"{"zeta":"1","alpha":"2"}"#);
        assert_eq!(Metadata::from_stored(Some(&m.to_json())), Some(m));
    }

    #[test]
    fn non_strings_and_long_values_are_rejected_by_key() {
        let err = Metadata::parse(&json!({"n": 1}), "metadata").unwrap_err();
        assert_eq!(err.param, "metadata.n");
        let long = "x".repeat(501);
        let err = Metadata::parse(&json!({ "k": long }), "metadata").unwrap_err();
        assert_eq!(err.param, "metadata.k");
        let key = "k".repeat(41);
        assert!(Metadata::parse(&json!({ key: "v" }), "metadata").is_err());
        assert!(Metadata::parse(&json!(["a"]), "metadata").is_err());
    }

    #[test]
    fn at_most_fifty_keys() {
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), Value::String("v".into()))).collect();
        assert!(Metadata::parse(&Value::Object(many), "metadata").is_err());
        assert_eq!(Metadata::parse(&Value::Null, "metadata").unwrap(), None);
    }
}
