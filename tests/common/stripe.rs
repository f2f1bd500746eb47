//! The Stripe gateway against localstripe (`LOCALSTRIPE_URL`, started by scripts/test.sh): a
//! server configured for it, the browser's part of the card step played over HTTP exactly as the
//! page's script and localstripe's Stripe.js do it, and reads of localstripe's own records.
#![allow(dead_code)]

use serde_json::{json, Value};

use super::{spawn_app_with, TestApp};

pub const SECRET: &str = "sk_test_flexcheckouttests";
pub const PUBLISHABLE: &str = "pk_test_flexcheckouttests";

fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1" | "yes"))
}

/// localstripe's base URL, or `None` (with a notice) when it is not running; in CI that fails.
pub fn localstripe_url() -> Option<String> {
    match std::env::var("LOCALSTRIPE_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_string()),
        _ if ci() => panic!("CI=true but LOCALSTRIPE_URL is not set: scripts/test.sh starts localstripe"),
        _ => {
            eprintln!("notice: LOCALSTRIPE_URL is not set; skipping a Stripe (localstripe) test");
            None
        }
    }
}

pub fn stripe_config(base: &str) -> flex_checkout::gateway::stripe::StripeConfig {
    flex_checkout::gateway::stripe::StripeConfig {
        secret_key: SECRET.into(),
        publishable_key: PUBLISHABLE.into(),
        api_base: Some(base.to_string()),
        js_url: format!("{base}/js.stripe.com/v3/"),
    }
}

/// A server whose test mode pays through Stripe at localstripe, or `None` without localstripe.
pub async fn spawn_stripe_app() -> Option<TestApp> {
    spawn_stripe_app_with(|_| {}).await
}

pub async fn spawn_stripe_app_with(adjust: impl FnOnce(&mut flex_checkout::config::Settings)) -> Option<TestApp> {
    let base = localstripe_url()?;
    Some(
        spawn_app_with(|s| {
            s.stripe = Some(stripe_config(&base));
            adjust(s);
        })
        .await,
    )
}

/// What the customer types besides the card.
pub fn contact_fields() -> Vec<(&'static str, &'static str)> {
    vec![("email", "ana@example.com"), ("first_name", "Ana"), ("last_name", "Silva")]
}

/// The CSRF token of a session's page.
pub async fn csrf_of(app: &TestApp, session: &str) -> String {
    let html = app.client.get(format!("{}/pay/c/{session}", app.address)).send().await.unwrap().text().await.unwrap();
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).unwrap_or_else(|| panic!("no CSRF token on the page: {html}")) + marker.len();
    html[start..start + 64].to_string()
}

/// The page's script, first step: `POST /pay/c/{id}/setup` with the form's fields.
pub async fn start_setup(app: &TestApp, session: &str, fields: &[(&str, &str)]) -> (u16, Value) {
    let csrf = csrf_of(app, session).await;
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let res = app
        .client
        .post(format!("{}/pay/c/{session}/setup", app.address))
        .header("Origin", &app.address)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// What localstripe's Stripe.js sends for `confirmCardSetup` with its card element filled in.
/// Returns localstripe's answer (a SetupIntent, or an error body for a declined card).
pub async fn confirm_card_setup(client_secret: &str, number: &str) -> Value {
    let base = localstripe_url().expect("localstripe");
    let seti = client_secret.split("_secret_").next().unwrap();
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/setup_intents/{seti}/confirm"))
        .body(
            json!({
                "key": PUBLISHABLE,
                "use_stripe_sdk": true,
                "client_secret": client_secret,
                "payment_method_data": {
                    "type": "card",
                    "card": {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
                    "billing_details": {"email": "ana@example.com", "name": "Ana Silva", "address": {"postal_code": "94110"}},
                },
            })
            .to_string(),
        )
        .send()
        .await
        .expect("localstripe answers");
    res.json().await.unwrap_or(Value::Null)
}

/// The answer to localstripe's 3-D Secure dialog for a SetupIntent ("Complete authentication"
/// confirms it again, "Fail authentication" cancels it), as its Stripe.js sends it.
pub async fn answer_setup_challenge(client_secret: &str, complete: bool) -> Value {
    let base = localstripe_url().expect("localstripe");
    let seti = client_secret.split("_secret_").next().unwrap();
    let action = if complete { "confirm" } else { "cancel" };
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/setup_intents/{seti}/{action}"))
        .body(json!({"key": PUBLISHABLE, "use_stripe_sdk": true, "client_secret": client_secret}).to_string())
        .send()
        .await
        .expect("localstripe answers");
    res.json().await.unwrap_or(Value::Null)
}

/// The answer to localstripe's 3-D Secure dialog for a PaymentIntent (`confirmCardPayment`).
pub async fn answer_payment_challenge(client_secret: &str, complete: bool) -> Value {
    let base = localstripe_url().expect("localstripe");
    let pi = client_secret.split("_secret_").next().unwrap();
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/payment_intents/{pi}/_authenticate?success={complete}"))
        .body(json!({"key": PUBLISHABLE, "client_secret": client_secret}).to_string())
        .send()
        .await
        .expect("localstripe answers");
    res.json().await.unwrap_or(Value::Null)
}

/// The page's script, last step: the hidden form that hands the attempt back to our server.
/// Returns the raw response (a 303 to the success URL, or a page with a decline message, ...).
pub async fn finish_setup(app: &TestApp, session: &str, attempt: &str) -> reqwest::Response {
    let csrf = csrf_of(app, session).await;
    app.client
        .post(format!("{}/pay/c/{session}/confirm", app.address))
        .header("Origin", &app.address)
        .form(&[("csrf", csrf.as_str()), ("attempt", attempt)])
        .send()
        .await
        .unwrap()
}

/// The whole card step for a card without a challenge: setup, Stripe.js's confirmation, hand-back.
pub async fn pay_with_stripe(app: &TestApp, session: &str, number: &str) -> reqwest::Response {
    let (status, setup) = start_setup(app, session, &contact_fields()).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["client_secret"].as_str().unwrap_or_else(|| panic!("no client secret: {setup}"));
    confirm_card_setup(secret, number).await;
    finish_setup(app, session, setup["attempt"].as_str().unwrap()).await
}

/// GET on localstripe's API with our secret key.
pub async fn localstripe_get(path: &str) -> Value {
    let base = localstripe_url().expect("localstripe");
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .basic_auth(SECRET, Some(""))
        .send()
        .await
        .expect("localstripe answers")
        .json()
        .await
        .expect("JSON from localstripe")
}

/// Every PaymentIntent localstripe holds (it lists oldest first, 100 at a time).
pub async fn all_payment_intents() -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/payment_intents?limit=100&starting_after={a}"),
            None => "/v1/payment_intents?limit=100".to_string(),
        };
        let page = localstripe_get(&path).await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        after = data.last().and_then(|p| p["id"].as_str()).map(String::from);
        let more = page["has_more"] == true && !data.is_empty();
        out.extend(data);
        if !more {
            return out;
        }
    }
}

/// localstripe's PaymentIntents made for the attempts of one checkout session (our attempt ids are
/// in their metadata).
pub async fn payment_intents_of_session(app: &TestApp, session: &str) -> Vec<Value> {
    let attempts: Vec<String> = sqlx::query_scalar("SELECT id FROM payment_attempts WHERE session_id = $1")
        .bind(session)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    all_payment_intents()
        .await
        .into_iter()
        .filter(|pi| pi["metadata"]["flex_attempt"].as_str().is_some_and(|a| attempts.iter().any(|x| x == a)))
        .collect()
}
