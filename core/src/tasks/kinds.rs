//! The task kinds, each with its payload: the one place they are defined. The API, the status page's form, the
//! task rows and the worker all go through [`TaskSpec`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest `sleep` accepted, so a demo task can never outlive the default task timeout.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// What a `sleep` enqueued from the status page's form sleeps (the form has no field for it).
pub const FORM_SLEEP_MS: u64 = 1000;

/// A validated task: its kind is the serde tag, its payload the variant's fields, as in the API's
/// `{"kind": "sleep", "payload": {"ms": 5}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "payload",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum TaskSpec {
    /// Counts each word of `text` (case-insensitive).
    WordCount { text: String },
    /// Sleeps `ms` milliseconds (at most [`MAX_SLEEP_MS`]); for shutdown and crash tests.
    Sleep { ms: u64 },
    /// Always fails; for retries and the `dead` state.
    Fail {},
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidTask {
    #[error("unknown task kind `{0}`; expected one of: {kinds}", kinds = TaskSpec::KINDS.join(", "))]
    UnknownKind(String),
    #[error("invalid payload for `{kind}`: {reason}")]
    InvalidPayload { kind: &'static str, reason: String },
}

impl TaskSpec {
    /// The serde tags of the variants, in the order the status page offers them.
    pub const KINDS: [&'static str; 3] = ["wordcount", "sleep", "fail"];

    /// The serde tag (a unit test holds the two together).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WordCount { .. } => "wordcount",
            Self::Sleep { .. } => "sleep",
            Self::Fail {} => "fail",
        }
    }

    /// A task from a kind and a payload (an API body, a task row); unknown fields are refused.
    pub fn parse(kind: &str, payload: &Value) -> Result<Self, InvalidTask> {
        let Some(kind) = Self::KINDS.into_iter().find(|k| *k == kind) else {
            return Err(InvalidTask::UnknownKind(kind.chars().take(64).collect()));
        };
        let invalid = |reason: String| InvalidTask::InvalidPayload { kind, reason };
        // serde would also fill a struct from an array (`[]`, `["text"]`): only an object is a payload.
        if !payload.is_object() {
            return Err(invalid("the payload must be a JSON object".into()));
        }
        let spec = Self::deserialize(json!({ "kind": kind, "payload": payload }))
            .map_err(|e| invalid(e.to_string()))?;
        spec.validated()
    }

    /// A task from the status page's form: its one text field feeds `wordcount`, `sleep` sleeps `ms` (or
    /// [`FORM_SLEEP_MS`]).
    pub fn from_form(
        kind: &str,
        text: Option<String>,
        ms: Option<u64>,
    ) -> Result<Self, InvalidTask> {
        let offered = [
            Self::WordCount {
                text: text.unwrap_or_default(),
            },
            Self::Sleep {
                ms: ms.unwrap_or(FORM_SLEEP_MS),
            },
            Self::Fail {},
        ];
        offered
            .into_iter()
            .find(|spec| spec.kind() == kind)
            .ok_or_else(|| InvalidTask::UnknownKind(kind.chars().take(64).collect()))?
            .validated()
    }

    fn validated(self) -> Result<Self, InvalidTask> {
        match self {
            // Valid JSON, but PostgreSQL's jsonb cannot hold it: refused here, not as a 503 from the INSERT.
            Self::WordCount { ref text } if text.contains('\0') => {
                Err(InvalidTask::InvalidPayload {
                    kind: self.kind(),
                    reason: "text must not contain the NUL character (\\u0000)".into(),
                })
            }
            Self::Sleep { ms } if ms > MAX_SLEEP_MS => Err(InvalidTask::InvalidPayload {
                kind: self.kind(),
                reason: format!("ms must be at most {MAX_SLEEP_MS}"),
            }),
            valid => Ok(valid),
        }
    }

    /// The payload as stored in the task's row.
    pub fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("payload").unwrap_or_else(|| json!({})),
            _ => json!({}),
        }
    }

    /// Runs the task; `Err` carries the message stored as the task's `error`.
    pub async fn run(&self) -> Result<Value, String> {
        match self {
            Self::WordCount { text } => Ok(word_count(text)),
            Self::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(json!({ "slept_ms": ms }))
            }
            Self::Fail {} => Err("the `fail` task always fails".into()),
        }
    }
}

fn word_count(text: &str) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let total: u64 = counts.values().sum();
    json!({ "words": total, "counts": counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wordcount_counts_case_insensitively() {
        let spec =
            TaskSpec::parse("wordcount", &json!({"text": "The cat, the HAT; don't"})).unwrap();
        let result = spec.run().await.unwrap();
        assert_eq!(
            result,
            json!({"words": 5, "counts": {"cat": 1, "don't": 1, "hat": 1, "the": 2}})
        );
    }

    #[test]
    fn bad_payloads_are_rejected_precisely() {
        assert_eq!(
            TaskSpec::parse("nope", &json!({})),
            Err(InvalidTask::UnknownKind("nope".into()))
        );
        let err = TaskSpec::parse("wordcount", &json!({"text": 3})).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = TaskSpec::parse("sleep", &json!({"ms": 1, "extra": true})).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(TaskSpec::parse("sleep", &json!({"ms": MAX_SLEEP_MS + 1})).is_err());
        let err = TaskSpec::parse("wordcount", &json!({"text": "a\u{0}b"})).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        assert!(TaskSpec::from_form("wordcount", Some("a\0b".into()), None).is_err());
        assert!(TaskSpec::parse("fail", &json!([])).is_err());
        assert_eq!(TaskSpec::parse("fail", &json!({})), Ok(TaskSpec::Fail {}));
    }

    /// `KINDS`, `kind()` and the serde tags name the same kinds, and the form can make each of them.
    #[test]
    fn every_kind_is_spelled_the_same_everywhere() {
        for kind in TaskSpec::KINDS {
            let spec = TaskSpec::from_form(kind, Some("a b".into()), None).unwrap();
            assert_eq!(spec.kind(), kind);
            let tagged = serde_json::to_value(&spec).unwrap();
            assert_eq!(tagged["kind"], kind);
            assert_eq!(TaskSpec::parse(kind, &spec.payload()), Ok(spec));
        }
        let err = TaskSpec::deserialize(json!({"kind": "nope", "payload": {}})).unwrap_err();
        let serde_lists = TaskSpec::KINDS.map(|k| format!("`{k}`")).join(", ");
        assert!(err.to_string().contains(&serde_lists), "{err}");
    }
}
