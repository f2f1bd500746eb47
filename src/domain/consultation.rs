//! The letter-of-medical-necessity questionnaire: what is asked for each kind of visit, and the
//! answers, checked.

use serde::{Deserialize, Serialize};

use super::product::VisitType;
use super::FieldError;

pub struct Questionnaire {
    pub visit_type: VisitType,
    pub goal_prompt: &'static str,
    pub conditions: &'static [(&'static str, &'static str)],
}

const COMMON: &[(&str, &str)] = &[
    ("hypertension", "High blood pressure (hypertension)"),
    ("prediabetes", "Pre-diabetes or type 2 diabetes"),
    ("obesity", "Obesity or overweight"),
    ("back_pain", "Back or joint pain"),
    ("stress", "Stress, anxiety or depression"),
    ("heart_disease", "Heart disease or high cholesterol"),
];

const SLEEP: &[(&str, &str)] = &[
    ("insomnia", "Trouble falling or staying asleep (insomnia)"),
    ("sleep_apnea", "Sleep apnea"),
    ("stress", "Stress, anxiety or depression"),
    ("hypertension", "High blood pressure (hypertension)"),
    ("chronic_pain", "Chronic pain that disturbs sleep"),
];

pub fn questionnaire(visit_type: VisitType) -> Questionnaire {
    let (goal_prompt, conditions) = match visit_type {
        VisitType::Gym | VisitType::Fitness => ("What health goals will this exercise help you with?", COMMON),
        VisitType::Nutrition | VisitType::WeightLoss => ("What health goals will this program help you with?", COMMON),
        VisitType::Sleep | VisitType::CbtSleep => ("What sleep problems do you want to address?", SLEEP),
        VisitType::Massage => ("What symptoms do you want massage therapy to relieve?", COMMON),
        VisitType::General => ("What health goals will this help you with?", COMMON),
    };
    Questionnaire { visit_type, goal_prompt, conditions }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answers {
    pub visit_type: String,
    pub goals: String,
    pub conditions: Vec<String>,
    pub attested: bool,
}

impl Answers {
    /// Checks a questionnaire's answers: goals in words, known conditions only, and the attestation.
    pub fn parse(
        visit_type: VisitType,
        goals: &str,
        conditions: &[String],
        attested: bool,
    ) -> Result<Answers, Vec<FieldError>> {
        let q = questionnaire(visit_type);
        let mut errors = Vec::new();
        let goals = goals.trim();
        if goals.is_empty() {
            errors.push(FieldError::new("lmn_goals", "Tell us briefly what you want this to help with."));
        } else if goals.chars().count() > 1000 {
            errors.push(FieldError::new("lmn_goals", "Please keep this under 1,000 characters."));
        }
        let mut picked = Vec::new();
        for c in conditions {
            if q.conditions.iter().any(|(key, _)| key == c) {
                if !picked.contains(c) {
                    picked.push(c.clone());
                }
            } else {
                errors.push(FieldError::new("lmn_conditions", "Choose conditions from the list."));
                break;
            }
        }
        if !attested {
            errors.push(FieldError::new("lmn_attest", "Please confirm that your answers are true and complete."));
        }
        if errors.is_empty() {
            Ok(Answers {
                visit_type: visit_type.as_str().to_string(),
                goals: goals.to_string(),
                conditions: picked,
                attested,
            })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_need_goals_known_conditions_and_the_attestation() {
        let ok = Answers::parse(VisitType::Gym, "Lower my blood pressure", &["hypertension".into()], true).unwrap();
        assert_eq!(ok.conditions, vec!["hypertension"]);
        let errs = Answers::parse(VisitType::Gym, " ", &["made_up".into()], false).unwrap_err();
        let params: Vec<_> = errs.iter().map(|e| e.param.as_str()).collect();
        assert_eq!(params, vec!["lmn_goals", "lmn_conditions", "lmn_attest"]);
    }
}
