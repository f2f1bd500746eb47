//! Pure types and rules of the product: no actix, no sqlx, no I/O. Everything from outside is parsed
//! into these types once, at the edge, and the rest of the program trusts them.

pub mod billing_period;
pub mod billing_settings;
pub mod card;
pub mod checkout_session;
pub mod consultation;
pub mod customer;
pub mod ids;
pub mod invoicing;
pub mod metadata;
pub mod money;
pub mod payment;
pub mod price;
pub mod product;
pub mod refund;
pub mod subscription;
pub mod subscription_request;
pub mod test_clock;
pub mod text;
pub mod timestamp;
pub mod webhook;
pub mod webhook_signature;

/// A rejected input: which field (in the request's own nesting, `line_items[0].price`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub param: String,
    pub message: String,
}

impl FieldError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { param: param.into(), message: message.into() }
    }

    /// The same error seen from an enclosing object: `price` inside `line_items[0]`.
    pub fn within(mut self, parent: &str) -> Self {
        self.param = if self.param.is_empty() {
            parent.to_string()
        } else if self.param.starts_with('[') {
            format!("{parent}{}", self.param)
        } else {
            format!("{parent}.{}", self.param)
        };
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

/// Declares a closed set of wire spellings with parsing that names what is allowed.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn from_wire(raw: &str) -> Option<Self> {
                match raw { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// Parses the wire spelling, or says which spellings `param` accepts.
            pub fn parse(raw: &str, param: &str) -> Result<Self, $crate::domain::FieldError> {
                Self::from_wire(raw).ok_or_else(|| {
                    let allowed: Vec<String> = Self::ALL.iter().map(|v| format!("`{}`", v.as_str())).collect();
                    $crate::domain::FieldError::new(
                        param,
                        format!("`{}` is not a valid {}; use one of {}", raw, param.rsplit('.').next().unwrap_or(param), allowed.join(", ")),
                    )
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

/// Test data and live data never mix: every stored object belongs to one merchant in one mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub fn is_live(self) -> bool {
        self == Mode::Live
    }

    pub fn is_test(self) -> bool {
        self == Mode::Test
    }

    pub fn as_flag(self) -> i64 {
        i64::from(self.is_live())
    }

    pub fn from_flag(flag: i64) -> Mode {
        if flag != 0 {
            Mode::Live
        } else {
            Mode::Test
        }
    }
}

/// The merchant and mode every API call acts for, taken from its key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub merchant_id: ids::MerchantId,
    pub mode: Mode,
}
