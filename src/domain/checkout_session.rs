//! Checkout sessions: what a customer is asked to pay, and the state machine open -> complete |
//! expired. An open session past `expires_at` is expired at once, wherever it is read.

use serde::{Deserialize, Serialize};

use super::ids::{
    CheckoutSessionId, CustomerId, InvoiceId, LineItemId, PaymentIntentId, PriceId, ProductId, SubscriptionId,
};
use super::metadata::Metadata;
use super::money::Currency;
use super::price::Recurring;
use super::product::VisitType;
use super::timestamp::{unix_seconds, Timestamp};
use super::wire_enum;

wire_enum!(SessionMode {
    Payment => "payment",
    Subscription => "subscription",
    Setup => "setup",
});

wire_enum!(SessionStatus {
    Open => "open",
    Complete => "complete",
    Expired => "expired",
});

wire_enum!(PaymentStatus {
    Unpaid => "unpaid",
    Paid => "paid",
    NoPaymentRequired => "no_payment_required",
});

wire_enum!(CaptureMethod {
    Automatic => "automatic",
    Manual => "manual",
});

/// After this many declines a session stops taking cards (card-testing defence).
pub const MAX_DECLINES: i64 = 5;
/// Default lifetime, as in the seed: `expires_at` = `created_at` + 3600.
pub const DEFAULT_LIFETIME_SECONDS: i64 = 3600;
pub const MIN_LIFETIME_SECONDS: i64 = 30 * 60;
pub const MAX_LIFETIME_SECONDS: i64 = 24 * 3600;
pub const MAX_LINE_ITEMS: usize = 100;
pub const MAX_QUANTITY: i64 = 999;

#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Defaults {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct SubscriptionData {
    pub trial_period_days: Option<u32>,
    pub trial_end: Option<i64>,
    pub metadata: Option<serde_json::Value>,
    pub billing_cycle: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TotalDetails {
    pub amount_discount: i64,
    pub amount_tax: Option<i64>,
    pub amount_shipping: Option<i64>,
}

/// A session as the API shows it: the seed's fields in the seed's order, then ours.
#[derive(Clone, Debug, Serialize)]
pub struct CheckoutSession {
    pub allow_promotion_codes: bool,
    pub amount_total: i64,
    pub amount_subtotal: i64,
    pub cancel_url: String,
    pub capture_method: CaptureMethod,
    pub checkout_session_id: CheckoutSessionId,
    #[serde(with = "unix_seconds")]
    pub created_at: Timestamp,
    pub customer: Option<CustomerId>,
    pub customer_email: Option<String>,
    pub defaults: Defaults,
    #[serde(with = "unix_seconds")]
    pub expires_at: Timestamp,
    pub invoice: Option<InvoiceId>,
    pub hsa_fsa_eligible: bool,
    pub letter_of_medical_necessity_required: bool,
    pub metadata: Option<Metadata>,
    pub mode: SessionMode,
    pub multiple_subscriptions: bool,
    pub payment_intent_id: Option<PaymentIntentId>,
    pub redirect_url: String,
    pub setup_intent: Option<String>,
    pub shipping_options: Option<serde_json::Value>,
    pub shipping_address_collection: bool,
    pub shipping_details: Option<serde_json::Value>,
    pub status: SessionStatus,
    pub success_url: String,
    pub subscription: Option<SubscriptionId>,
    pub tax_rate: Option<serde_json::Value>,
    pub test_mode: bool,
    pub total_details: TotalDetails,
    pub visit_type: Option<VisitType>,
    pub payment_status: PaymentStatus,
    pub currency: Currency,
    pub client_reference_id: Option<String>,
    #[serde(with = "unix_seconds::option")]
    pub completed_at: Option<Timestamp>,
    #[serde(skip)]
    pub setup_future_use: Option<String>,
    #[serde(skip)]
    pub subscription_data: Option<SubscriptionData>,
    #[serde(skip)]
    pub decline_count: i64,
}

impl CheckoutSession {
    /// The status a reader sees at `now`: open sessions past their expiry are expired.
    pub fn status_at(&self, now: Timestamp) -> SessionStatus {
        match self.status {
            SessionStatus::Open if now >= self.expires_at => SessionStatus::Expired,
            other => other,
        }
    }

    /// Fills what is derived rather than stored: the hosted page's address and the status at `now`.
    pub fn present(mut self, public_url: &str, now: Timestamp) -> CheckoutSession {
        self.redirect_url = format!("{}/pay/c/{}", public_url.trim_end_matches('/'), self.checkout_session_id);
        self.status = self.status_at(now);
        self
    }

    pub fn is_locked(&self) -> bool {
        self.decline_count >= MAX_DECLINES
    }

    /// Where the browser goes after paying, with the session id filled in; `None` when the merchant
    /// gave no URL (our own confirmation page is shown instead).
    pub fn success_redirect(&self) -> Option<String> {
        if self.success_url.is_empty() {
            None
        } else {
            Some(self.success_url.replace("{CHECKOUT_SESSION_ID}", self.checkout_session_id.as_str()))
        }
    }

    pub fn saves_card(&self) -> bool {
        self.mode != SessionMode::Payment || self.setup_future_use.as_deref() == Some("off_session")
    }
}

/// One line of a session: a snapshot of the price and product at the moment the session was made.
#[derive(Clone, Debug, Serialize)]
pub struct LineItem {
    pub line_item_id: LineItemId,
    pub price: PriceId,
    pub product: ProductId,
    pub description: String,
    #[serde(skip)]
    pub product_description: Option<String>,
    pub quantity: i64,
    pub unit_amount: i64,
    pub currency: Currency,
    pub amount_subtotal: i64,
    pub amount_total: i64,
    pub recurring: Option<Recurring>,
}

/// The trial a subscription session starts with, in days, if any: the session's own setting wins
/// over the price's.
pub fn trial_days(data: Option<&SubscriptionData>, items: &[LineItem]) -> Option<u32> {
    if let Some(days) = data.and_then(|d| d.trial_period_days) {
        return Some(days).filter(|d| *d > 0);
    }
    items.iter().find_map(|i| i.recurring.and_then(|r| r.trial_period_days)).filter(|d| *d > 0)
}

/// Subtotal of all lines, and what is charged today: recurring lines are free today during a trial.
pub fn amounts(mode: SessionMode, items: &[LineItem], in_trial: bool) -> (i64, i64) {
    let subtotal: i64 = items.iter().map(|i| i.amount_subtotal).sum();
    let due_today = match mode {
        SessionMode::Setup => 0,
        SessionMode::Payment => subtotal,
        SessionMode::Subscription if in_trial => {
            items.iter().filter(|i| i.recurring.is_none()).map(|i| i.amount_subtotal).sum()
        }
        SessionMode::Subscription => subtotal,
    };
    (subtotal, due_today)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::price::Interval;

    fn item(amount: i64, qty: i64, recurring: bool) -> LineItem {
        LineItem {
            line_item_id: LineItemId::generate(),
            price: PriceId::generate(),
            product: ProductId::generate(),
            description: "x".into(),
            product_description: None,
            quantity: qty,
            unit_amount: amount,
            currency: Currency::USD,
            amount_subtotal: amount * qty,
            amount_total: amount * qty,
            recurring: recurring.then_some(Recurring {
                interval: Interval::Monthly,
                interval_count: 1,
                trial_period_days: Some(14),
            }),
        }
    }

    fn session(status: SessionStatus, success_url: &str) -> CheckoutSession {
        let now = Timestamp::from_unix_seconds(1_714_156_917);
        CheckoutSession {
            allow_promotion_codes: false,
            amount_total: 4999,
            amount_subtotal: 4999,
            cancel_url: String::new(),
            capture_method: CaptureMethod::Automatic,
            checkout_session_id: CheckoutSessionId::parse("fcs_01HWDVDMWQT1N8TJJYDWKW4ZHZ").unwrap(),
            created_at: now,
            customer: None,
            customer_email: None,
            defaults: Defaults::default(),
            expires_at: now.plus_seconds(DEFAULT_LIFETIME_SECONDS),
            invoice: None,
            hsa_fsa_eligible: false,
            letter_of_medical_necessity_required: false,
            metadata: None,
            mode: SessionMode::Payment,
            multiple_subscriptions: false,
            payment_intent_id: None,
            redirect_url: String::new(),
            setup_intent: None,
            shipping_options: None,
            shipping_address_collection: false,
            shipping_details: None,
            status,
            success_url: success_url.to_string(),
            subscription: None,
            tax_rate: None,
            test_mode: true,
            total_details: TotalDetails { amount_discount: 0, amount_tax: None, amount_shipping: None },
            visit_type: None,
            payment_status: PaymentStatus::Unpaid,
            currency: Currency::USD,
            client_reference_id: None,
            completed_at: None,
            setup_future_use: None,
            subscription_data: None,
            decline_count: 0,
        }
    }

    #[test]
    fn an_open_session_reads_as_expired_from_its_expiry_on() {
        let s = session(SessionStatus::Open, "");
        assert_eq!(s.status_at(s.expires_at.plus_seconds(-1)), SessionStatus::Open);
        assert_eq!(s.status_at(s.expires_at), SessionStatus::Expired);
        let done = session(SessionStatus::Complete, "");
        assert_eq!(done.status_at(done.expires_at.plus_seconds(10)), SessionStatus::Complete);
        let presented = session(SessionStatus::Open, "").present("http://localhost:3000/", s.expires_at);
        assert_eq!(presented.status, SessionStatus::Expired);
        assert_eq!(presented.redirect_url, "http://localhost:3000/pay/c/fcs_01HWDVDMWQT1N8TJJYDWKW4ZHZ");
    }

    #[test]
    fn the_success_url_gets_the_session_id() {
        let s = session(SessionStatus::Complete, "https://shop.example/ok?id={CHECKOUT_SESSION_ID}");
        assert_eq!(s.success_redirect().unwrap(), "https://shop.example/ok?id=fcs_01HWDVDMWQT1N8TJJYDWKW4ZHZ");
        assert_eq!(session(SessionStatus::Complete, "").success_redirect(), None);
    }

    #[test]
    fn five_declines_lock_and_which_sessions_keep_the_card() {
        let mut s = session(SessionStatus::Open, "");
        s.decline_count = MAX_DECLINES - 1;
        assert!(!s.is_locked());
        s.decline_count = MAX_DECLINES;
        assert!(s.is_locked());
        assert!(!s.saves_card());
        s.setup_future_use = Some("off_session".into());
        assert!(s.saves_card());
        s.mode = SessionMode::Setup;
        s.setup_future_use = None;
        assert!(s.saves_card());
    }

    #[test]
    fn trials_make_recurring_lines_free_today() {
        let items = vec![item(4999, 1, true), item(1000, 2, false)];
        assert_eq!(amounts(SessionMode::Subscription, &items, false), (6999, 6999));
        assert_eq!(amounts(SessionMode::Subscription, &items, true), (6999, 2000));
        assert_eq!(amounts(SessionMode::Setup, &[], false), (0, 0));
    }

    #[test]
    fn the_sessions_trial_wins_over_the_prices() {
        let items = vec![item(4999, 1, true)];
        assert_eq!(trial_days(None, &items), Some(14));
        let data = SubscriptionData { trial_period_days: Some(0), ..Default::default() };
        assert_eq!(trial_days(Some(&data), &items), None);
        let data = SubscriptionData { trial_period_days: Some(7), ..Default::default() };
        assert_eq!(trial_days(Some(&data), &items), Some(7));
    }
}
