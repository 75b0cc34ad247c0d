//! Asking a dependency with a deadline, for `/readyz` and the status page: a hung PostgreSQL or Redis shows as
//! down instead of hanging the answer.

use std::fmt;
use std::time::Duration;

/// Each check gets this long, so `/readyz` answers within a second even when a dependency hangs.
pub const CHECK_BUDGET: Duration = Duration::from_millis(800);

/// Why a check has no answer.
#[derive(Debug, Clone)]
pub enum Unanswered {
    Failed(String),
    TimedOut,
}

impl Unanswered {
    /// The status page's shorter wording.
    pub fn brief(self) -> String {
        match self {
            Self::Failed(err) => err,
            Self::TimedOut => "no answer".into(),
        }
    }
}

impl fmt::Display for Unanswered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(err) => f.write_str(err),
            Self::TimedOut => write!(f, "no answer within {}ms", CHECK_BUDGET.as_millis()),
        }
    }
}

/// `check`'s value, or why there is none within [`CHECK_BUDGET`].
pub async fn within<T, E: fmt::Display>(
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, Unanswered> {
    match tokio::time::timeout(CHECK_BUDGET, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Unanswered::Failed(err.to_string())),
        Err(_) => Err(Unanswered::TimedOut),
    }
}
