//! The HTML templates (minijinja): compiled into the binary, or read from `TEMPLATE_DIR` in development.
//!
//! Embedded, the binary needs no source tree (like the static assets). With `DEBUG=true` and `TEMPLATE_DIR` set,
//! a template is re-read when its file changed, so an edit is served on the next request without a restart.
//! Either way an undefined variable is an error, not a blank: the price of giving up askama's compile-time check
//! is paid back by the unit tests below, which render every page with its real context.

use std::path::Path;

use include_dir::{Dir, include_dir};
use minijinja::{AutoEscape, Environment, Error, Output, State, UndefinedBehavior, Value};
use serde::Serialize;

static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

pub struct Templates {
    env: Environment<'static>,
}

#[derive(Debug, thiserror::Error)]
#[error("template {name}: {source:#}")]
pub struct RenderError {
    name: String,
    #[source]
    source: minijinja::Error,
}

impl Templates {
    /// The templates compiled into the binary.
    pub fn embedded() -> Self {
        let mut env = strict_environment();
        env.set_loader(|name| {
            Ok(TEMPLATES
                .get_file(name)
                .and_then(|f| f.contents_utf8())
                .map(str::to_owned))
        });
        Self { env }
    }

    /// The templates under `dir`, each re-read when its file changed (minijinja's path loader and auto-reload).
    pub fn from_dir(dir: &Path) -> Self {
        let mut env = strict_environment();
        env.set_loader(minijinja::path_loader(dir));
        env.set_auto_reload(true);
        Self { env }
    }

    /// `embedded()`, or `from_dir()` when a directory is given (the caller decides: only with `DEBUG=true`).
    pub fn new(dir: Option<&Path>) -> Self {
        dir.map_or_else(Self::embedded, Self::from_dir)
    }

    pub fn render(&self, name: &str, context: &impl Serialize) -> Result<String, RenderError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(Value::from(minijinja::value::Serde(context))))
            .map_err(|source| RenderError {
                name: name.to_string(),
                source,
            })
    }
}

fn strict_environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A misspelt or missing field fails the render (and the unit tests) instead of printing nothing.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_formatter(html_formatter);
    env
}

/// minijinja's own HTML escaping also turns `/` into `&#x2f;`, which makes every URL in an attribute unreadable in
/// the page source; `/` needs no escaping in HTML text or quoted attributes, so strings are escaped like askama
/// and Django do (`& < > " '`). Everything else (numbers, undefined in strict mode, safe strings) is minijinja's.
fn html_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    match value.as_str() {
        Some(text) if *state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            let mut rest = text;
            while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
                out.write_str(&rest[..at])?;
                out.write_str(match rest.as_bytes()[at] {
                    b'&' => "&amp;",
                    b'<' => "&lt;",
                    b'>' => "&gt;",
                    b'"' => "&quot;",
                    _ => "&#x27;",
                })?;
                rest = &rest[at + 1..];
            }
            out.write_str(rest)?;
            Ok(())
        }
        _ => minijinja::escape_formatter(out, state, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::page::{Check, StatusPage, TaskRow};

    fn status_page() -> StatusPage {
        StatusPage {
            version: "9.9.9",
            debug: true,
            checks: vec![
                Check {
                    name: "PostgreSQL",
                    ok: true,
                    detail: "version 17".into(),
                },
                Check {
                    name: "Redis",
                    ok: false,
                    detail: "unavailable: <timeout>".into(),
                },
            ],
            tasks: vec![TaskRow {
                id: "0190c0de-0000-7000-8000-000000000000".into(),
                short_id: "0190c0de".into(),
                kind: "wordcount".into(),
                state: "dead",
                attempts: 5,
                created_at: "2026-01-01 00:00:00 UTC".into(),
                error: String::new(),
            }],
            csrf_token: "token-123".into(),
            idempotency_key: "k-0190c0de".into(),
            css_url: "/static/app.1234abcd.css".into(),
            js_url: "/static/app.js".into(),
            logo_url: "/static/logo.svg".into(),
            kinds: ["wordcount", "sleep", "fail"],
        }
    }

    #[test]
    fn the_embedded_status_page_renders_its_context_escaped() {
        let html = Templates::embedded()
            .render("status.html", &status_page())
            .expect("status.html renders");
        for expected in [
            "v9.9.9 (DEBUG)",
            "<dd class=\"ok\">version 17</dd>",
            "<dd class=\"bad\">unavailable: &lt;timeout&gt;</dd>",
            "<td class=\"bad\">dead</td>",
            "value=\"token-123\"",
            "href=\"/static/app.1234abcd.css\"",
            "<option value=\"sleep\">sleep</option>",
        ] {
            assert!(html.contains(expected), "{expected} missing in:\n{html}");
        }
    }

    #[test]
    fn an_undefined_variable_is_an_error() {
        let err = Templates::embedded()
            .render("status.html", &serde_json::json!({ "version": "1" }))
            .expect_err("a context without the page's fields must not render");
        assert!(
            err.to_string().contains("undefined"),
            "the error names the cause: {err}"
        );
        assert!(Templates::embedded().render("missing.html", &()).is_err());
    }

    #[test]
    fn a_template_dir_is_read_again_after_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hello.html");
        std::fs::write(&file, "one {{ name }}").unwrap();
        let templates = Templates::from_dir(dir.path());
        let context = serde_json::json!({ "name": "<a href='/x'>&\"" });
        let escaped = "&lt;a href=&#x27;/x&#x27;&gt;&amp;&quot;";
        assert_eq!(
            templates.render("hello.html", &context).unwrap(),
            format!("one {escaped}")
        );
        // The path loader compares modification time and size; a different length is seen even on a coarse clock.
        std::fs::write(&file, "second {{ name }}").unwrap();
        assert_eq!(
            templates.render("hello.html", &context).unwrap(),
            format!("second {escaped}")
        );
        std::fs::write(&file, "{{ nope }}").unwrap();
        assert!(templates.render("hello.html", &context).is_err());
    }
}
