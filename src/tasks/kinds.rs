//! The demo task kinds: what a payload must look like, and what running one does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// Longest `sleep` accepted, so a demo task can never outlive the default task timeout.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// A validated task: kind plus typed payload.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSpec {
    /// Counts each word of `text` (case-insensitive).
    WordCount { text: String },
    /// Sleeps `ms` milliseconds; for shutdown and crash tests.
    Sleep { ms: u64 },
    /// Always fails; for retries and the `dead` state.
    Fail,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidTask {
    #[error("unknown task kind `{0}`; expected one of: wordcount, sleep, fail")]
    UnknownKind(String),
    #[error("invalid payload for `{kind}`: {reason}")]
    InvalidPayload { kind: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WordCountPayload {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailPayload {}

impl TaskSpec {
    pub const KINDS: [&'static str; 3] = ["wordcount", "sleep", "fail"];

    pub fn parse(kind: &str, payload: &Value) -> Result<Self, InvalidTask> {
        fn typed<T: for<'de> Deserialize<'de>>(
            kind: &'static str,
            payload: &Value,
        ) -> Result<T, InvalidTask> {
            // serde would also fill a struct from an array (`[]`, `["text"]`): only an object is a payload.
            if !payload.is_object() {
                return Err(InvalidTask::InvalidPayload {
                    kind,
                    reason: "the payload must be a JSON object".into(),
                });
            }
            T::deserialize(payload).map_err(|e| InvalidTask::InvalidPayload {
                kind,
                reason: e.to_string(),
            })
        }
        match kind {
            "wordcount" => {
                let p: WordCountPayload = typed("wordcount", payload)?;
                Ok(Self::WordCount { text: p.text })
            }
            "sleep" => {
                let p: SleepPayload = typed("sleep", payload)?;
                if p.ms > MAX_SLEEP_MS {
                    return Err(InvalidTask::InvalidPayload {
                        kind: "sleep",
                        reason: format!("ms must be at most {MAX_SLEEP_MS}"),
                    });
                }
                Ok(Self::Sleep { ms: p.ms })
            }
            "fail" => {
                let _: FailPayload = typed("fail", payload)?;
                Ok(Self::Fail)
            }
            other => Err(InvalidTask::UnknownKind(other.chars().take(64).collect())),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::WordCount { .. } => "wordcount",
            Self::Sleep { .. } => "sleep",
            Self::Fail => "fail",
        }
    }

    pub fn payload(&self) -> Value {
        match self {
            Self::WordCount { text } => json!({ "text": text }),
            Self::Sleep { ms } => json!({ "ms": ms }),
            Self::Fail => json!({}),
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
            Self::Fail => Err("the `fail` task always fails".into()),
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
        assert!(TaskSpec::parse("fail", &json!([])).is_err());
        assert_eq!(TaskSpec::parse("fail", &json!({})), Ok(TaskSpec::Fail));
    }
}
