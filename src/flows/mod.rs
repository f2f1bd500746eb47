//! Use cases shared by the API, the pages and the workers. Each owns its transaction: everything a
//! use case changes, and the events that report it, commit together or not at all.

pub mod catalog;
pub mod checkout;
pub mod events;
pub mod keys;

use crate::error::ApiError;

/// What a use case can refuse, independent of the door (API or page) it was called through.
#[derive(Debug)]
pub enum FlowError {
    /// Bad input, with the field it concerns.
    Invalid(crate::domain::FieldError),
    NotFound {
        resource: &'static str,
        id: String,
    },
    /// Well-formed but impossible in the current state.
    Unprocessable {
        code: &'static str,
        message: String,
    },
    Conflict {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for FlowError {
    fn from(e: sqlx::Error) -> FlowError {
        FlowError::Internal(e.into())
    }
}

impl From<crate::domain::FieldError> for FlowError {
    fn from(e: crate::domain::FieldError) -> FlowError {
        FlowError::Invalid(e)
    }
}

impl From<FlowError> for ApiError {
    fn from(e: FlowError) -> ApiError {
        match e {
            FlowError::Invalid(f) => f.into(),
            FlowError::NotFound { resource, id } => ApiError::not_found(resource, &id),
            FlowError::Unprocessable { code, message } => ApiError::unprocessable(code, message),
            FlowError::Conflict { code, message, param } => {
                let e = ApiError::conflict(code, message);
                match param {
                    Some(p) => e.with_param(p),
                    None => e,
                }
            }
            FlowError::Internal(e) => ApiError::internal(e),
        }
    }
}
