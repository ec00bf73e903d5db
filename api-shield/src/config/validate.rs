//! Turns a file's text into a `Config`, collecting every problem with its line.
//!
//! A plain deserialization stops at the first problem. Instead, each key is tried on its own
//! against the real `Config` type (wrapped in the tables above it), so the serde attributes stay
//! the single source of truth for names, types and per-key checks, and each failure is pinned
//! to its key. Failing keys are then dropped, the rest deserialized with defaults, and the
//! checks that span several keys run on the result.
//!
//! Spans come from `toml_edit`: `toml::Spanned` cannot describe implicit tables (dotted keys
//! such as `limits.burst = 5`), which are valid TOML.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};
use toml_edit::{ImDocument, Item, TableLike};

use super::{Config, ConfigError, ConfigErrors};

struct Problem {
    span: Option<Range<usize>>,
    message: String,
}

pub(super) fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let report = |problems: Vec<Problem>| {
        ConfigErrors::new(
            problems
                .into_iter()
                .map(|p| ConfigError {
                    file: file.to_owned(),
                    line: p.span.map(|span| line_of(text, span.start)),
                    message: p.message,
                })
                .collect(),
        )
    };
    let table: Table =
        toml::from_str(text).map_err(|e| report(vec![syntax(e.message(), e.span())]))?;
    let doc = ImDocument::parse(text).map_err(|e| report(vec![syntax(e.message(), e.span())]))?;

    let mut checker = Checker {
        doc: &doc,
        problems: Vec::new(),
        bad: Vec::new(),
    };
    let root = Value::Table(table);
    checker.check(&mut Vec::new(), &root);
    let Checker {
        mut problems, bad, ..
    } = checker;

    let Value::Table(mut clean) = root else {
        unreachable!("the root was built as a table")
    };
    for path in &bad {
        remove(&mut clean, path);
    }
    match Config::deserialize(Value::Table(clean)) {
        Ok(config) => {
            problems.extend(cross_key_problems(&config, &doc));
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(report(problems))
            }
        }
        // Every key that failed alone was removed, so this means the key-by-key pass missed
        // something; still report it rather than panic.
        Err(e) => {
            problems.push(Problem {
                span: e.span(),
                message: e.message().to_owned(),
            });
            Err(report(problems))
        }
    }
}

fn syntax(message: &str, span: Option<Range<usize>>) -> Problem {
    Problem {
        span,
        // One problem per output line.
        message: format!("invalid TOML: {}", message.trim().replace('\n', "; ")),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

struct Checker<'a> {
    doc: &'a ImDocument<&'a str>,
    problems: Vec<Problem>,
    /// Keys whose values were refused.
    bad: Vec<Vec<String>>,
}

impl Checker<'_> {
    fn check(&mut self, path: &mut Vec<String>, value: &Value) {
        // A known section: check its keys one by one.
        if let Value::Table(table) = value
            && probe(path, Value::Table(Table::new())).is_ok()
        {
            for (key, inner) in table {
                path.push(key.clone());
                self.check(path, inner);
                path.pop();
            }
            return;
        }
        let Err(error) = probe(path, value.clone()) else {
            return;
        };
        self.bad.push(path.clone());
        // A list of the right type: blame the elements that fail on their own.
        if let Value::Array(items) = value
            && probe(path, Value::Array(Vec::new())).is_ok()
        {
            let before = self.problems.len();
            for (index, item) in items.iter().enumerate() {
                if let Err(e) = probe(path, Value::Array(vec![item.clone()])) {
                    self.problems.push(Problem {
                        span: self.element_span(path, index),
                        message: format!("{}[{index}] = {item}: {}", dotted(path), e.message()),
                    });
                }
            }
            if self.problems.len() > before {
                return;
            }
        }
        self.problems.push(Problem {
            span: key_span(self.doc, path),
            message: describe(path, value, error.message()),
        });
    }

    fn element_span(&self, path: &[String], index: usize) -> Option<Range<usize>> {
        let item = item_at(self.doc, path)?;
        let span = if let Some(array) = item.as_array() {
            array.get(index).and_then(toml_edit::Value::span)
        } else if let Some(tables) = item.as_array_of_tables() {
            tables.get(index).and_then(toml_edit::Table::span)
        } else {
            None
        };
        span.or_else(|| key_span(self.doc, path))
    }
}

/// Deserializes `value` alone at `path` (every other key defaulted) into a `Config`.
fn probe(path: &[String], value: Value) -> Result<(), toml::de::Error> {
    let wrapped = path.iter().rev().fold(value, |inner, key| {
        let mut table = Table::new();
        table.insert(key.clone(), inner);
        Value::Table(table)
    });
    Config::deserialize(wrapped).map(drop)
}

fn remove(table: &mut Table, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut table = table;
    for key in parents {
        match table.get_mut(key) {
            Some(Value::Table(inner)) => table = inner,
            _ => return,
        }
    }
    table.remove(last);
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

fn describe(path: &[String], value: &Value, reason: &str) -> String {
    match value {
        // A whole table would drown the message; its key says enough.
        Value::Table(_) => format!("{}: {reason}", dotted(path)),
        _ => format!("{} = {value}: {reason}", dotted(path)),
    }
}

fn item_at<'a>(doc: &'a ImDocument<&str>, path: &[String]) -> Option<&'a Item> {
    let (last, parents) = path.split_last()?;
    table_at(doc, parents)?.get(last)
}

fn table_at<'a>(doc: &'a ImDocument<&str>, path: &[String]) -> Option<&'a dyn TableLike> {
    let mut table: &dyn TableLike = doc.as_table();
    for key in path {
        table = table.get(key)?.as_table_like()?;
    }
    Some(table)
}

/// Where `path`'s key is written. A key always shares its line with the start of its value.
fn key_span(doc: &ImDocument<&str>, path: &[String]) -> Option<Range<usize>> {
    let (last, parents) = path.split_last()?;
    let (key, item) = table_at(doc, parents)?.get_key_value(last)?;
    key.span().or_else(|| item.span())
}

/// Checks that involve more than one key, run once each key is known to be valid alone.
fn cross_key_problems(config: &Config, doc: &ImDocument<&str>) -> Vec<Problem> {
    let limits = &config.limits;
    let pairs = [
        (
            "packets_per_second",
            limits.packets_per_second,
            "burst",
            limits.burst,
        ),
        (
            "syn_per_second",
            limits.syn_per_second,
            "syn_burst",
            limits.syn_burst,
        ),
    ];
    let mut problems = feed_problems(config, doc);
    let span = key_span(doc, &["inventory".to_owned()]);
    problems.extend(
        config
            .inventory
            .problems()
            .into_iter()
            .map(|message| Problem {
                span: span.clone(),
                message,
            }),
    );
    problems.extend(
        pairs
            .into_iter()
            .filter(|&(_, rate, _, burst)| rate > 0 && burst == 0)
            .map(|(rate_key, rate, burst_key, burst)| {
                let path = ["limits".to_owned(), burst_key.to_owned()];
                Problem {
                    span: key_span(doc, &path),
                    message: format!(
                        "limits.{burst_key} = {burst}: must be at least 1 while \
                     limits.{rate_key} is {rate} (set {rate_key} = 0 to disable the limit)"
                    ),
                }
            })
            .collect::<Vec<_>>(),
    );
    problems
}

/// Feed names become list names (origins): each must be valid and used once.
fn feed_problems(config: &Config, doc: &ImDocument<&str>) -> Vec<Problem> {
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    if let Some(crowdsec) = &config.crowdsec {
        if let Err(e) = crowdsec.validate() {
            problems.push(Problem {
                span: key_span(doc, &["crowdsec".to_owned()]),
                message: e.to_string(),
            });
        }
        if config.feeds.iter().any(|f| f.name == crowdsec.list) {
            problems.push(Problem {
                span: key_span(doc, &["crowdsec".to_owned()]),
                message: format!(
                    "crowdsec.list = \"{}\" is also a feed's name",
                    crowdsec.list
                ),
            });
        }
    }
    if let Some(gateway) = &config.gateway {
        let span = key_span(doc, &["gateway".to_owned()]);
        problems.extend(gateway.problems().into_iter().map(|message| Problem {
            span: span.clone(),
            message,
        }));
        if !gateway.listeners.is_empty() && config.run_as.is_none() {
            problems.push(Problem {
                span,
                message: "gateway.listeners need `run_as` (an unprivileged user): the \
                          internet-facing gateway never runs as root"
                    .into(),
            });
        }
    }
    if config.run_as.as_deref() == Some("") || config.run_as.as_deref() == Some("root") {
        problems.push(Problem {
            span: key_span(doc, &["run_as".to_owned()]),
            message: "run_as must name an unprivileged user".into(),
        });
    }
    if let Some(push) = &config.push {
        let span = key_span(doc, &["push".to_owned()]);
        problems.extend(push.problems().into_iter().map(|message| Problem {
            span: span.clone(),
            message,
        }));
    }
    for feed in &config.feeds {
        let span = key_span(doc, &["feeds".to_owned()]);
        if let Err(e) = crate::lists::valid_list_name(&feed.name) {
            problems.push(Problem {
                span: span.clone(),
                message: format!("feeds.name: {e}"),
            });
        }
        if !seen.insert(feed.name.as_str()) {
            problems.push(Problem {
                span: span.clone(),
                message: format!("feeds.name = \"{}\": used by two feeds", feed.name),
            });
        }
        if feed.interval.is_zero() {
            problems.push(Problem {
                span: span.clone(),
                message: format!("feeds.interval of `{}` must be positive", feed.name),
            });
        }
        if feed.max_shrink_percent > 100 || feed.max_bytes == 0 {
            problems.push(Problem {
                span,
                message: format!(
                    "feeds of `{}`: max_shrink_percent is 0-100 and max_bytes positive",
                    feed.name
                ),
            });
        }
    }
    problems
}
