//! The two ways a request can fail: `ApiError` (the JSON error envelope of the merchant API) and
//! `PageError` (an HTML page for customers; never JSON, never a stack trace).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::domain::FieldError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error_type,
            code: code.to_string(),
            message: message.into(),
            param: None,
            decline_code: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// 400: a field is missing, malformed or out of range.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "parameter_invalid", message).with_param(param)
    }

    pub fn missing(param: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_missing",
            format!("{param} is required"),
        )
        .with_param(param)
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "api_key_invalid", message)
    }

    /// 404 without saying whether the object exists for someone else.
    pub fn not_found(resource: &str, id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "resource_missing", format!("No such {resource}: '{id}'"))
    }

    /// 404 for something that exists only with configuration this server does not have.
    pub fn not_found_message(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", message)
    }

    /// 404 for a route that exists only in test mode, asked with a live key: live mode has no such
    /// objects at all, so saying why leaks nothing.
    pub fn test_mode_only(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "test_mode_only",
            format!("{path} exists only in test mode: use a test key (fsk_test_...)"),
        )
    }

    pub fn route_not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "not_found",
            format!("Unrecognized request URL: {path}. See the API reference for the supported endpoints."),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not supported on {path}"),
        )
    }

    pub fn idempotency(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "idempotency_error", code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", code, message)
    }

    /// 422: well-formed but impossible now (inactive price, wrong mode, session already complete).
    pub fn unprocessable(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", code, message)
    }

    /// 402: the card was declined; `decline_code` says why.
    pub fn card_declined(code: crate::domain::payment::DeclineCode) -> ApiError {
        let mut e =
            ApiError::new(StatusCode::PAYMENT_REQUIRED, "card_error", code.error_code(), code.customer_message());
        e.decline_code = Some(code.as_str().to_string());
        e
    }

    pub fn payload_too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "payload_too_large",
            format!("the request body must be at most {limit} bytes"),
        )
    }

    /// 500 with no internal detail; the cause goes to the log.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            "Something went wrong on our side. It is safe to retry the request with the same Idempotency-Key.",
        )
    }

    /// 503: the payment processor did not answer; nothing is half done and a retry is safe.
    pub fn processor_unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "processor_unavailable",
            "The payment processor did not answer. Nothing was changed; retry with the same Idempotency-Key.",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({
            "type": self.error_type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        });
        if let Some(d) = &self.decline_code {
            error["decline_code"] = json!(d);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.insert_header((header::CACHE_CONTROL, "no-store")).json(self.body())
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::invalid(e.param, e.message)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::internal(e)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        ApiError::internal(e)
    }
}

/// A failure on a customer-facing page.
#[derive(Debug)]
pub enum PageError {
    NotFound,
    Forbidden(&'static str),
    BadRequest(String),
    TooLarge,
    /// The payment processor did not answer.
    Unavailable,
    Internal(String),
}

impl PageError {
    pub fn internal(cause: impl std::fmt::Display) -> PageError {
        tracing::error!(error = %cause, "internal error on a page");
        PageError::Internal(cause.to_string())
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::NotFound => f.write_str("not found"),
            PageError::Forbidden(why) => write!(f, "forbidden: {why}"),
            PageError::BadRequest(why) => write!(f, "bad request: {why}"),
            PageError::TooLarge => f.write_str("form too large"),
            PageError::Unavailable => f.write_str("payment processor unavailable"),
            PageError::Internal(_) => f.write_str("internal error"),
        }
    }
}

impl From<sqlx::Error> for PageError {
    fn from(e: sqlx::Error) -> PageError {
        PageError::internal(e)
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> PageError {
        PageError::internal(e)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            PageError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (title, text) = match self {
            PageError::NotFound => (
                "Page not found",
                "We couldn't find this checkout page. Please check the link or return to the store and try again.",
            ),
            PageError::Forbidden(why) => ("This request was refused", *why),
            PageError::BadRequest(_) => {
                ("Something in this request was not right", "Please go back, reload the page and try again.")
            }
            PageError::TooLarge => {
                ("That was more than this form takes", "Please shorten what you typed and try again.")
            }
            PageError::Unavailable => (
                "The payment service is not answering",
                "We could not reach the payment service, and no payment was taken. Please try again in a moment.",
            ),
            PageError::Internal(_) => (
                "Something went wrong",
                "Something went wrong on our side. No payment was taken twice. Please try again in a moment.",
            ),
        };
        crate::pages::render_message(self.status_code(), title, text, None)
    }
}
