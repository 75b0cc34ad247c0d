//! Reading variables: `NAME` or, for secrets, `NAME_FILE` (Docker secrets), each problem recorded instead of
//! failing at the first, so a misconfigured deployment is fixed in one round trip.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// All configuration problems found, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A value a variable can hold, and how a problem names what was expected.
pub trait Parse: FromStr {
    const EXPECTED: &'static str;
}

impl Parse for SocketAddr {
    const EXPECTED: &'static str = "a socket address like 0.0.0.0:8000";
}

impl Parse for f64 {
    const EXPECTED: &'static str = "a number";
}

macro_rules! whole_numbers {
    ($($t:ty),*) => { $(impl Parse for $t { const EXPECTED: &'static str = "a whole number"; })* };
}
whole_numbers!(u16, u32, u64, usize, i32);

/// A variable source plus the problems found so far.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            problems: Vec::new(),
        }
    }

    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// `value` when no problem was found, else every problem.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// The value of a non-secret variable; empty counts as unset (compose env files often say `X=`).
    pub fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// Whether `NAME` or `NAME_FILE` is set. A secret that is set but unusable was reported by [`Env::secret`]
    /// already, so it must not be reported again as missing.
    pub fn is_set(&self, name: &str) -> bool {
        self.string(name).is_some() || self.string(&format!("{name}_FILE")).is_some()
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE`; never quoted in a problem.
    pub fn secret(&mut self, name: &str) -> Option<SecretString> {
        let direct = self.string(name);
        let file_var = format!("{name}_FILE");
        let file = self.string(&file_var);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(format!("{name} and {file_var} are both set; set only one"));
                None
            }
            (Some(value), None) => Some(SecretString::from(value)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    let value = contents.trim_end_matches(['\n', '\r']);
                    if value.is_empty() {
                        self.problem(format!("{file_var}: file `{path}` is empty"));
                        None
                    } else {
                        Some(SecretString::from(value))
                    }
                }
                Err(err) => {
                    self.problem(format!("{file_var}: cannot read `{path}`: {err}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    pub fn parse<T: Parse>(&mut self, name: &str, default: T) -> T {
        match self.string(name) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(value) => value,
                Err(_) => {
                    self.problem(format!("{name}: cannot parse `{raw}` as {}", T::EXPECTED));
                    default
                }
            },
        }
    }

    pub fn positive<T: Parse + PartialOrd + Default + Copy + fmt::Display>(
        &mut self,
        name: &str,
        default: T,
    ) -> T {
        let value = self.parse(name, default);
        if value <= T::default() {
            self.problem(format!("{name}: must be greater than 0, got {value}"));
            return default;
        }
        value
    }

    pub fn flag(&mut self, name: &str, default: bool) -> bool {
        match self.string(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => {
                self.problem(format!("{name}: expected true or false, got `{v}`"));
                default
            }
        }
    }

    /// Seconds, fractions allowed (`WAIT_TIMEOUT=0.5`).
    pub fn seconds(&mut self, name: &str, default: Duration) -> Duration {
        let secs: f64 = self.parse(name, default.as_secs_f64());
        if !secs.is_finite() || secs < 0.0 {
            self.problem(format!("{name}: must be a non-negative number of seconds"));
            return default;
        }
        Duration::from_secs_f64(secs)
    }

    /// Whole milliseconds, more than 0.
    pub fn millis(&mut self, name: &str, default: Duration) -> Duration {
        Duration::from_millis(self.positive(name, default.as_millis() as u64))
    }

    /// Whole hours, more than 0.
    pub fn hours(&mut self, name: &str, default: Duration) -> Duration {
        Duration::from_secs(3600 * self.positive(name, default.as_secs() / 3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<T>(vars: &[(&str, &str)], read: impl FnOnce(&mut Env<'_>) -> T) -> (T, Vec<String>) {
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let mut env = Env::new(&lookup);
        let value = read(&mut env);
        (value, env.problems)
    }

    #[test]
    fn a_bad_value_is_a_problem_and_the_default_is_kept() {
        let (addr, problems) = with(&[("ADDR", "nowhere")], |env| {
            env.parse("ADDR", SocketAddr::from(([127, 0, 0, 1], 1)))
        });
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(
            problems,
            ["ADDR: cannot parse `nowhere` as a socket address like 0.0.0.0:8000"]
        );
    }

    #[test]
    fn empty_counts_as_unset_and_hours_are_whole() {
        let (value, problems) = with(&[("H", " "), ("N", "0")], |env| {
            (
                env.hours("H", Duration::from_secs(7200)),
                env.positive("N", 3u32),
            )
        });
        assert_eq!(value, (Duration::from_secs(7200), 3));
        assert_eq!(problems, ["N: must be greater than 0, got 0"]);
    }
}
