//! YAML configuration loading with precise errors.
//!
//! A config file is read in two passes. First serde (with `deny_unknown_fields` on every struct)
//! turns the text into typed structs; a type error or an unknown field stops that pass and is
//! reported with the line and column serde_yaml gives. Then [`Validate`] checks the meaning of
//! every field (addresses parse, ranges hold, combinations make sense) and collects *every*
//! problem, not just the first. A second, span-keeping parse of the same text (yaml-rust2 events)
//! maps each dotted field path back to the line and column where it was written, so every error
//! reads `file:line:column: field: message`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `redis.url` or `upstreams[1].address`. Empty for the whole
    /// document.
    pub field: String,
    /// 1-based line, when the field could be located in the file.
    pub line: Option<usize>,
    /// 1-based column, when the field could be located in the file.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in (or a label such as `<command line>`).
    pub file: PathBuf,
    /// The problems, in the order they were found.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{} has {n} configuration error{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "  {}", self.file.display())?;
            if let Some(line) = e.line {
                write!(f, ":{line}")?;
                if let Some(col) = e.column {
                    write!(f, ":{col}")?;
                }
            }
            if e.field.is_empty() {
                writeln!(f, ": {}", e.message)?;
            } else {
                writeln!(f, ": field `{}`: {}", e.field, e.message)?;
            }
        }
        Ok(())
    }
}

/// Collects semantic problems by field path while a config is validated.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<(String, String)>,
}

impl Problems {
    /// Record that `field` (a dotted path) is wrong because of `message`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.items.push((field.into(), message.into()));
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The recorded `(field, message)` pairs.
    pub fn items(&self) -> &[(String, String)] {
        &self.items
    }
}

/// Semantic validation of a deserialized config.
pub trait Validate {
    /// Record every problem in `problems`, naming each field by its dotted path.
    fn validate(&self, problems: &mut Problems);
}

/// Read, parse and validate a YAML config file.
pub fn load_file<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    load_str(&read_file(path)?, path)
}

/// Read a config file's text (an unreadable file is a [`ConfigError`] naming it).
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        errors: vec![FieldError {
            field: String::new(),
            line: None,
            column: None,
            message: format!("cannot read file: {e}"),
        }],
    })
}

/// Parse YAML text without validating it (for callers that change the value — command-line
/// overrides — before they validate it with [`problems_to_error`]).
pub fn parse_str<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    parse(text, file)
}

/// Parse and validate YAML text; `file` is only used in error messages.
pub fn load_str<T: DeserializeOwned + Validate>(text: &str, file: &Path) -> Result<T, ConfigError> {
    let value: T = parse(text, file)?;
    let mut problems = Problems::default();
    value.validate(&mut problems);
    if problems.is_empty() {
        return Ok(value);
    }
    let spans = SpanIndex::build(text);
    let errors = problems
        .items
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = spans.locate(&field);
            FieldError {
                field,
                line,
                column,
                message,
            }
        })
        .collect();
    Err(ConfigError {
        file: file.to_path_buf(),
        errors,
    })
}

/// Turn an already-collected set of problems into a [`ConfigError`] against `text`. Useful when a
/// binary validates command-line overrides after loading the file.
pub fn problems_to_error(problems: Problems, text: &str, file: &Path) -> Result<(), ConfigError> {
    if problems.is_empty() {
        return Ok(());
    }
    let spans = SpanIndex::build(text);
    Err(ConfigError {
        file: file.to_path_buf(),
        errors: problems
            .items
            .into_iter()
            .map(|(field, message)| {
                let (line, column) = spans.locate(&field);
                FieldError {
                    field,
                    line,
                    column,
                    message,
                }
            })
            .collect(),
    })
}

fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    // An empty file (or one holding only comments) means "all defaults".
    let effective = if text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---"
    }) {
        "{}"
    } else {
        text
    };
    serde_yaml::from_str(effective).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        errors: vec![serde_error(&e, text)],
    })
}

/// Split a serde_yaml error into field path, location and message.
fn serde_error(e: &serde_yaml::Error, text: &str) -> FieldError {
    let mut msg = e.to_string();
    let (mut line, mut column) = match e.location() {
        Some(loc) => (Some(loc.line()), Some(loc.column())),
        None => (None, None),
    };
    // serde_yaml appends " at line N column M"; we print the location ourselves.
    if let Some(idx) = msg.rfind(" at line ") {
        msg.truncate(idx);
    }
    // serde_yaml prefixes the dotted path of the failing value: "redis.url: invalid type ...".
    let mut field = String::new();
    if let Some((head, rest)) = msg.split_once(": ")
        && !head.contains(' ')
        && !head.is_empty()
    {
        field = head.to_string();
        msg = rest.to_string();
    }
    // For unknown fields, name the field itself rather than its parent.
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        let name = &rest[..end];
        field = if field.is_empty() || field == "." {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    if field == "." {
        field.clear();
    }
    if line.is_none() && !field.is_empty() {
        (line, column) = SpanIndex::build(text).locate(&field);
    }
    FieldError {
        field,
        line,
        column,
        message: msg,
    }
}

/// Maps dotted field paths (`a.b[2].c`) to where they are written in a YAML text.
#[derive(Debug, Default)]
struct SpanIndex {
    entries: Vec<(String, usize, usize)>,
}

impl SpanIndex {
    fn build(text: &str) -> Self {
        let mut builder = SpanBuilder::default();
        let mut parser = Parser::new_from_str(text);
        // A text serde already accepted parses here too; if not, we simply locate nothing.
        let _ = parser.load(&mut builder, false);
        SpanIndex {
            entries: builder.entries,
        }
    }

    /// The line and column of `field`, or of its nearest located parent.
    fn locate(&self, field: &str) -> (Option<usize>, Option<usize>) {
        let mut path = field.to_string();
        loop {
            if let Some((_, l, c)) = self.entries.iter().find(|(p, _, _)| *p == path) {
                return (Some(*l), Some(*c));
            }
            match path.rfind(['.', '[']) {
                Some(i) => path.truncate(i),
                None => return (None, None),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct SpanBuilder {
    stack: Vec<Frame>,
    entries: Vec<(String, usize, usize)>,
}

impl SpanBuilder {
    /// The path of the node that starts now (a value in the current container), and advance the
    /// container's cursor. Returns `None` when the node is a mapping key.
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        if !path.is_empty() {
            self.entries
                .push((path.to_string(), mark.line(), mark.col() + 1));
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for SpanBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                if is_key {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        let full = join(path, &value);
                        *key = Some(value);
                        self.entries.push((full, mark.line(), mark.col() + 1));
                    }
                } else {
                    // Value positions are already recorded at their key; sequence items are not.
                    if let Some(p) = self.next_value_path()
                        && p.ends_with(']')
                    {
                        self.record(&p, mark);
                    }
                }
            }
            Event::Alias(_) => {
                let _ = self.next_value_path();
            }
            Event::MappingStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                if path.ends_with(']') {
                    self.record(&path, mark);
                }
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                if path.ends_with(']') {
                    self.record(&path, mark);
                }
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
        #[serde(default)]
        nodes: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Top {
        listen: String,
        #[serde(default)]
        port: u16,
        redis: Inner,
    }

    impl Validate for Top {
        fn validate(&self, p: &mut Problems) {
            if self.listen.parse::<std::net::SocketAddr>().is_err() {
                p.push("listen", "not an address");
            }
            for (i, n) in self.redis.nodes.iter().enumerate() {
                if !n.contains(':') {
                    p.push(format!("redis.nodes[{i}]"), "missing port");
                }
            }
        }
    }

    const FILE: &str = "test.yaml";

    fn err(text: &str) -> ConfigError {
        match load_str::<Top>(text, Path::new(FILE)) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let e = err("listen: 127.0.0.1:1\nredis:\n  url: x\n  bogus: 1\n");
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].field, "redis.bogus");
        assert_eq!(e.errors[0].line, Some(4));
        assert!(e.to_string().contains("test.yaml:4:"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let e = err("listen: 127.0.0.1:1\nport: lots\nredis:\n  url: x\n");
        assert_eq!(e.errors[0].field, "port");
        assert_eq!(e.errors[0].line, Some(2));
    }

    #[test]
    fn every_semantic_error_is_listed_with_line_and_column() {
        let e = err("listen: nowhere\nredis:\n  url: x\n  nodes:\n    - a:1\n    - b\n    - c\n");
        let got: Vec<_> = e
            .errors
            .iter()
            .map(|f| (f.field.as_str(), f.line, f.column))
            .collect();
        assert_eq!(
            got,
            vec![
                ("listen", Some(1), Some(1)),
                ("redis.nodes[1]", Some(6), Some(7)),
                ("redis.nodes[2]", Some(7), Some(7)),
            ]
        );
    }

    #[test]
    fn empty_file_means_defaults_then_missing_fields_are_errors() {
        let e = err("# nothing\n");
        assert!(e.errors[0].message.contains("missing field"), "{e}");
    }
}
