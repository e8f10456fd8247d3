//! Where things are in the configuration text.
//!
//! The file is parsed once into toml's span-preserving tree ([`DeTable`]). From it this module
//! builds a flat index of every key and value with its key path (`devices[0].groups[1].name`),
//! which answers the two questions error reporting asks:
//! - a validation problem names a key path: at which line and column is that key? (If it is
//!   absent, a required key, the nearest table that exists: the one that should hold it.)
//! - a serde error carries a byte span: which key path is it about?
//!
//! Positions are those of the key (`interval_ms = 0` → the `i`), or of the header for a table
//! written as `[table]` / `[[array]]`, so an error points at the start of the line to edit.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::ConfigDiagnostic;

/// Path shown for a syntax error that precedes every table.
const DOCUMENT: &str = "<document>";

/// One key or array element.
#[derive(Debug)]
struct Node {
    path: String,
    /// Span of the key (`None` for array elements).
    key: Option<Range<usize>>,
    /// Span of the value; for a `[table]` or `[[array]]` this is its header.
    value: Range<usize>,
    /// A table or array-of-tables element written with a header line.
    header: bool,
}

impl Node {
    /// Where an error about this node points: the key, or the header if that comes first.
    fn anchor(&self) -> usize {
        self.key
            .as_ref()
            .map_or(self.value.start, |k| k.start.min(self.value.start))
    }
}

/// A parsed configuration text and the index of its keys.
#[derive(Debug)]
pub(super) struct Document<'i> {
    text: &'i str,
    root: DeTable<'i>,
    nodes: Vec<Node>,
    by_path: HashMap<String, usize>,
    line_starts: Vec<usize>,
}

impl<'i> Document<'i> {
    /// Parses `text`; on TOML syntax errors returns every one of them, located.
    pub(super) fn parse(text: &'i str) -> Result<Self, Vec<ConfigDiagnostic>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let mut doc = Document {
            text,
            root: root.into_inner(),
            nodes: Vec::new(),
            by_path: HashMap::new(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        let mut nodes = Vec::new();
        index_table(text, &doc.root, "", &mut nodes);
        doc.by_path = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.path.clone(), i))
            .collect();
        doc.nodes = nodes;
        if errors.is_empty() {
            return Ok(doc);
        }
        Err(errors
            .iter()
            .map(|e| {
                let at = e.span().map_or(0, |s| s.start);
                let path = doc.enclosing_table(at);
                doc.diagnostic_at(at, path, format!("TOML syntax: {}", e.message()))
            })
            .collect())
    }

    /// The top-level table.
    pub(super) fn root(&self) -> &DeTable<'i> {
        &self.root
    }

    /// `(line, column)`, both 1-based, of a byte offset; the column counts characters.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }

    /// A diagnostic at a byte offset.
    pub(super) fn diagnostic_at(
        &self,
        offset: usize,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigDiagnostic {
        let (line, column) = self.line_col(offset);
        ConfigDiagnostic {
            line,
            column,
            path: path.into(),
            message: message.into(),
        }
    }

    /// A diagnostic for a problem named by key path: at the key if it exists, else at the
    /// nearest enclosing table that does (the document start if none).
    pub(super) fn diagnostic_for_path(&self, path: &str, message: &str) -> ConfigDiagnostic {
        let mut p = path;
        let offset = loop {
            if let Some(&i) = self.by_path.get(p) {
                break self.nodes[i].anchor();
            }
            match parent(p) {
                Some(up) => p = up,
                None => break 0,
            }
        };
        self.diagnostic_at(offset, path, message)
    }

    /// The key path a span of the text belongs to: the smallest key or value containing it
    /// (the deepest on ties, so `[[devices]]` means `devices[0]`, not `devices`).
    pub(super) fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        let contains =
            |r: &Range<usize>| r.start <= span.start && span.end <= r.end.max(r.start + 1);
        self.nodes
            .iter()
            .filter_map(|n| {
                let key = n.key.as_ref().filter(|k| contains(k));
                let value = Some(&n.value).filter(|v| contains(v));
                let len = key.or(value)?.len();
                Some((len, std::cmp::Reverse(n.path.len()), n.path.as_str()))
            })
            .min()
            .map(|(_, _, p)| p)
    }

    /// For a syntax error: the innermost value containing `offset`, else the last table header
    /// before it (the table whose body the error is in).
    fn enclosing_table(&self, offset: usize) -> String {
        if let Some(p) = self.path_at(&(offset..offset)) {
            return p.to_owned();
        }
        self.nodes
            .iter()
            .filter(|n| n.header && n.value.start <= offset)
            .max_by_key(|n| (n.value.start, n.path.len()))
            .map_or_else(|| DOCUMENT.to_owned(), |n| n.path.clone())
    }
}

/// The parent of a key path: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → none.
fn parent(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn index_table(text: &str, table: &DeTable<'_>, prefix: &str, out: &mut Vec<Node>) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        index_value(text, value, path, Some(key.span()), out);
    }
}

fn index_value(
    text: &str,
    value: &Spanned<DeValue<'_>>,
    path: String,
    key: Option<Range<usize>>,
    out: &mut Vec<Node>,
) {
    let span = value.span();
    // Inline tables start with `{`, dotted-key tables at their key: only a header starts
    // with `[` and is a table.
    let header =
        value.get_ref().is_table() && text.get(span.clone()).is_some_and(|s| s.starts_with('['));
    out.push(Node {
        path: path.clone(),
        key,
        value: span,
        header,
    });
    match value.get_ref() {
        DeValue::Table(t) => index_table(text, t, &path, out),
        DeValue::Array(a) => {
            for (i, element) in a.iter().enumerate() {
                index_value(text, element, format!("{path}[{i}]"), None, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# c\n[gateway]\nname = \"gw\"\n\n[[devices]]\nname = \"a\"\n[[devices.groups]]\nname = \"g\"\ninterval_ms = 0\n[[devices]]\nname = \"b\"\ngroups = [{ name = \"x\" }]\n";

    #[test]
    fn paths_point_at_keys_and_headers() {
        let doc = Document::parse(TEXT).unwrap();
        let at = |p: &str| {
            let d = doc.diagnostic_for_path(p, "m");
            (d.line, d.column)
        };
        assert_eq!(at("gateway.name"), (3, 1));
        assert_eq!(at("gateway"), (2, 1));
        assert_eq!(at("devices[0].groups[0].interval_ms"), (9, 1));
        assert_eq!(at("devices[0].groups[0]"), (7, 1));
        // Absent: the table that should hold it.
        assert_eq!(at("devices[0].address"), (5, 1));
        assert_eq!(at("devices[1].groups[0].interval_ms"), (12, 11));
        assert_eq!(at("mqtt"), (1, 1));
    }

    #[test]
    fn spans_map_back_to_paths() {
        let doc = Document::parse(TEXT).unwrap();
        let offset = TEXT.find("interval_ms").unwrap();
        assert_eq!(
            doc.path_at(&(offset..offset + 11)),
            Some("devices[0].groups[0].interval_ms")
        );
        let header = TEXT.find("[[devices.groups]]").unwrap();
        assert_eq!(
            doc.path_at(&(header..header + 18)),
            Some("devices[0].groups[0]")
        );
    }

    #[test]
    fn syntax_errors_are_all_located() {
        let errs = Document::parse("[gateway]\nname = \"x\n[mqtt]\nhost = \nport = 1\nport = 2\n")
            .unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|d| d.line).collect();
        assert!(
            lines.contains(&2) && lines.contains(&4) && lines.contains(&6),
            "{errs:?}"
        );
        assert!(errs.iter().all(|d| d.message.starts_with("TOML syntax: ")));
    }

    #[test]
    fn columns_count_characters() {
        let doc = Document::parse("a = \"é\"\nb = 1\n").unwrap();
        assert_eq!(doc.line_col(0), (1, 1));
        assert_eq!(doc.line_col("a = \"é\"".len()), (1, 8));
        assert_eq!(doc.line_col("a = \"é\"\n".len()), (2, 1));
    }
}
