//! The built-in test-mode processor. It answers for the documented test cards exactly as Stripe's
//! test mode does, and keeps its own ledger (a table of its own, as a real processor would keep
//! its records) keyed by our idempotency key, so a replayed request gets the first answer.

use super::{
    BoxFuture, CardEntry, ChallengeAnswer, ChargeLookup, ChargeOutcome, ChargeRequest, FormCards, GatewayError,
    PaymentGateway, PendingCharge, RefundOutcome, RefundRequest, SavedCard,
};
use crate::clock::Clock;
use crate::db::payments::{self, SandboxCharge, SandboxRefund};
use crate::db::Db;
use crate::domain::card::{self, CardInput, TestBehavior};
use crate::domain::payment::{CardDetails, DeclineCode};

pub struct SandboxGateway {
    db: Db,
    clock: Clock,
}

impl SandboxGateway {
    pub fn new(db: Db, clock: Clock) -> SandboxGateway {
        SandboxGateway { db, clock }
    }
}

const TOKEN_PREFIX: &str = "sbx_card_";
const CHARGE_PREFIX: &str = "sbx_ch_";

fn behavior_of(card_ref: &str) -> Option<TestBehavior> {
    let rest = card_ref.strip_prefix(TOKEN_PREFIX)?;
    let (code, _) = rest.rsplit_once('_')?;
    TestBehavior::from_code(code)
}

/// What Stripe's test mode does with this card for this request, before any challenge.
fn first_answer(behavior: TestBehavior, amount: i64, off_session: bool) -> (&'static str, Option<DeclineCode>) {
    match behavior {
        TestBehavior::Succeeds => ("succeeded", None),
        // Saving a card checks it without taking money: insufficient funds do not show until a
        // charge, and the "charges fail" card saves fine.
        TestBehavior::Declines(DeclineCode::InsufficientFunds) if amount == 0 => ("succeeded", None),
        TestBehavior::Declines(code) => ("declined", Some(code)),
        TestBehavior::ChargesDeclined if amount == 0 => ("succeeded", None),
        TestBehavior::ChargesDeclined => ("declined", Some(DeclineCode::GenericDecline)),
        TestBehavior::ThreeDSecureOnce if off_session => ("succeeded", None),
        TestBehavior::ThreeDSecureAlways if off_session => ("declined", Some(DeclineCode::AuthenticationRequired)),
        TestBehavior::ThreeDSecureOnce | TestBehavior::ThreeDSecureAlways => ("requires_action", None),
    }
}

fn outcome_of(charge: &SandboxCharge) -> Result<ChargeOutcome, GatewayError> {
    let gateway_ref = format!("{CHARGE_PREFIX}{}", charge.idempotency_key);
    match charge.outcome.as_str() {
        "succeeded" => Ok(ChargeOutcome::Succeeded { gateway_ref }),
        "requires_action" => Ok(ChargeOutcome::RequiresAction { gateway_ref }),
        "declined" | "canceled" => Ok(ChargeOutcome::Declined {
            code: charge
                .decline_code
                .as_deref()
                .and_then(DeclineCode::from_wire)
                .unwrap_or(DeclineCode::GenericDecline),
        }),
        other => Err(GatewayError::Unavailable(format!("unknown sandbox outcome {other}"))),
    }
}

fn unavailable(e: sqlx::Error) -> GatewayError {
    GatewayError::Unavailable(e.to_string())
}

impl FormCards for SandboxGateway {
    fn save_card<'a>(&'a self, input: &'a CardInput) -> BoxFuture<'a, Result<SavedCard, GatewayError>> {
        Box::pin(async move {
            let Some(test_card) = card::test_card(&input.number) else {
                return Err(GatewayError::CardRejected {
                    param: "card_number",
                    message: "Your card was declined. Use a test card in test mode, such as 4242 4242 4242 4242."
                        .into(),
                });
            };
            Ok(SavedCard {
                gateway_ref: format!("{TOKEN_PREFIX}{}_{}", test_card.behavior.code(), crate::domain::ids::new_ulid()),
                gateway_customer: None,
                details: CardDetails {
                    brand: test_card.brand.as_str().into(),
                    last4: input.last4(),
                    exp_month: input.exp_month,
                    exp_year: input.exp_year,
                    funding: test_card.funding.into(),
                    country: Some("US".into()),
                },
            })
        })
    }
}

impl PaymentGateway for SandboxGateway {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn card_entry(&self) -> CardEntry<'_> {
        CardEntry::OwnForm(self)
    }

    fn charge<'a>(&'a self, req: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            self.charge_many(vec![req])
                .await
                .pop()
                .unwrap_or_else(|| Err(GatewayError::Unavailable("no sandbox answer".into())))
        })
    }

    /// Records every charge in the ledger with one statement (in the ledger's own transaction, as
    /// a processor keeps its own records); a key asked before gets its first answer.
    fn charge_many<'a>(
        &'a self,
        reqs: Vec<ChargeRequest<'a>>,
    ) -> BoxFuture<'a, Vec<Result<ChargeOutcome, GatewayError>>> {
        Box::pin(async move {
            let asked: Vec<Result<SandboxCharge, GatewayError>> = reqs
                .iter()
                .map(|req| {
                    let behavior = behavior_of(&req.card.gateway_ref)
                        .ok_or_else(|| GatewayError::Unavailable("unknown sandbox card reference".into()))?;
                    let (outcome, code) = first_answer(behavior, req.amount, req.off_session);
                    Ok(SandboxCharge {
                        idempotency_key: req.idempotency_key.to_string(),
                        token: req.card.gateway_ref.clone(),
                        amount: req.amount,
                        currency: req.currency.code(),
                        outcome: outcome.to_string(),
                        decline_code: code.map(|c| c.as_str().to_string()),
                    })
                })
                .collect();
            let to_record: Vec<SandboxCharge> = asked.iter().filter_map(|a| a.as_ref().ok().cloned()).collect();
            let recorded = async {
                if to_record.is_empty() {
                    return Ok(Vec::new());
                }
                let mut conn = self.db.conn().await?;
                payments::sandbox_charges(&mut conn, &to_record, self.clock.now()).await
            }
            .await;
            let mut stored = match recorded {
                Ok(stored) => stored.into_iter(),
                Err(e) => {
                    let message = e.to_string();
                    return asked.into_iter().map(|a| a.and(Err(GatewayError::Unavailable(message.clone())))).collect();
                }
            };
            asked
                .into_iter()
                .map(|a| {
                    a?;
                    stored
                        .next()
                        .as_ref()
                        .map_or_else(|| Err(GatewayError::Unavailable("no sandbox answer".into())), outcome_of)
                })
                .collect()
        })
    }

    fn complete_action<'a>(
        &'a self,
        charge: PendingCharge<'a>,
        answer: ChallengeAnswer,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.db.conn().await.map_err(unavailable)?;
            let key = charge.idempotency_key;
            let decided = match answer {
                ChallengeAnswer::Approved => Some(("succeeded", None)),
                ChallengeAnswer::Failed | ChallengeAnswer::Abandoned => {
                    Some(("declined", Some(DeclineCode::AuthenticationRequired.as_str())))
                }
                // The sandbox has no dialog of its own in the browser: its ledger says how it stands.
                ChallengeAnswer::AtGateway => None,
            };
            if let Some((outcome, code)) = decided {
                payments::update_sandbox_charge(&mut conn, key, "requires_action", outcome, code)
                    .await
                    .map_err(unavailable)?;
            }
            let stored = payments::get_sandbox_charge(&mut conn, key)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| GatewayError::Unavailable("no sandbox charge under this key".into()))?;
            outcome_of(&stored)
        })
    }

    fn lookup<'a>(&'a self, lookup: ChargeLookup<'a>) -> BoxFuture<'a, Result<Option<ChargeOutcome>, GatewayError>> {
        Box::pin(async move {
            let mut conn = self.db.conn().await.map_err(unavailable)?;
            match payments::get_sandbox_charge(&mut conn, lookup.idempotency_key).await.map_err(unavailable)? {
                Some(c) => outcome_of(&c).map(Some),
                None => Ok(None),
            }
        })
    }

    fn refund<'a>(&'a self, req: RefundRequest<'a>) -> BoxFuture<'a, Result<RefundOutcome, GatewayError>> {
        Box::pin(async move {
            let Some(charge_key) = req.charge_ref.strip_prefix(CHARGE_PREFIX) else {
                return Ok(RefundOutcome::Failed { reason: format!("no sandbox charge {}", req.charge_ref) });
            };
            let mut tx = self.db.begin().await.map_err(unavailable)?;
            let charge = payments::get_sandbox_charge(&mut tx, charge_key).await.map_err(unavailable)?;
            let Some(charge) = charge.filter(|c| c.outcome == "succeeded") else {
                return Ok(RefundOutcome::Failed {
                    reason: format!("no successful sandbox charge {}", req.charge_ref),
                });
            };
            if charge.currency != req.currency.code() {
                return Ok(RefundOutcome::Failed { reason: "the refund's currency differs from the charge's".into() });
            }
            let recorded =
                payments::sandbox_refund(&mut tx, req.idempotency_key, &charge, req.amount, self.clock.now())
                    .await
                    .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(match recorded {
                SandboxRefund::Recorded => {
                    RefundOutcome::Succeeded { gateway_ref: format!("sbx_re_{}", req.idempotency_key) }
                }
                SandboxRefund::ExceedsCharge { left } => {
                    RefundOutcome::Failed { reason: format!("only {left} of the charge is left to refund") }
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_behave_as_documented() {
        use DeclineCode::*;
        assert_eq!(first_answer(TestBehavior::Succeeds, 4999, false), ("succeeded", None));
        assert_eq!(
            first_answer(TestBehavior::Declines(InsufficientFunds), 4999, false),
            ("declined", Some(InsufficientFunds))
        );
        assert_eq!(first_answer(TestBehavior::Declines(InsufficientFunds), 0, false), ("succeeded", None));
        assert_eq!(first_answer(TestBehavior::ChargesDeclined, 0, false), ("succeeded", None));
        assert_eq!(first_answer(TestBehavior::ChargesDeclined, 4999, true), ("declined", Some(GenericDecline)));
        assert_eq!(first_answer(TestBehavior::ThreeDSecureOnce, 4999, false), ("requires_action", None));
        assert_eq!(first_answer(TestBehavior::ThreeDSecureOnce, 4999, true), ("succeeded", None));
        assert_eq!(
            first_answer(TestBehavior::ThreeDSecureAlways, 4999, true),
            ("declined", Some(AuthenticationRequired))
        );
    }

    #[test]
    fn tokens_carry_the_behaviour_but_not_the_number() {
        let token = format!("{TOKEN_PREFIX}3ds_once_01HW5MXAPBE79RHMMJJGB4ACAB");
        assert_eq!(behavior_of(&token), Some(TestBehavior::ThreeDSecureOnce));
        assert!(!token.contains("4000002500003155"));
        assert_eq!(behavior_of("sbx_card_nonsense_x"), None);
    }
}
