//! A strict well-formedness check of the input before anything is edited, with
//! `saphyr-parser` (a YAML 1.2 parser: the one of the saphyr project). The lossless editor
//! (`yaml-edit`) recovers from errors by design and accepts text such as `a: b: c` or a
//! mapping key indented one space off; this check refuses it, naming the document and the
//! line, and also refuses duplicate keys (YAML requires keys to be unique; Kubernetes'
//! strict decoding refuses them too).

use std::collections::HashSet;

use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

/// Why the input is not well-formed YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The document (1-based) the problem is in.
    pub doc: usize,
    /// The line (1-based) in the input.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

/// The facts about a well-formed input that the editor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The line (1-based) each document starts on, in order.
    pub doc_lines: Vec<usize>,
}

/// Checks that `text` is well-formed YAML (any number of documents) without duplicate keys.
///
/// Errors: the first problem, with its document and line.
pub fn check(text: &str) -> Result<Checked, SyntaxError> {
    let mut c = Checker::default();
    let parsed = Parser::new_from_str(text).load(&mut c, true);
    if let Err(e) = parsed {
        return Err(SyntaxError {
            doc: c.doc_lines.len().max(1),
            line: e.marker().line(),
            problem: e.info().to_string(),
        });
    }
    if let Some(e) = c.duplicate {
        return Err(e);
    }
    Ok(Checked {
        doc_lines: c.doc_lines,
    })
}

/// An open collection while the events stream by.
enum Frame {
    Sequence,
    /// A mapping: the scalar keys seen so far, and whether the next node is a key.
    Mapping {
        keys: HashSet<String>,
        next_is_key: bool,
    },
}

#[derive(Default)]
struct Checker {
    doc_lines: Vec<usize>,
    stack: Vec<Frame>,
    duplicate: Option<SyntaxError>,
}

impl Checker {
    /// A node starts (scalar `key` text if it is a scalar); keys are checked for repeats.
    fn node(&mut self, scalar: Option<&str>, line: usize) {
        let doc = self.doc_lines.len();
        if let Some(Frame::Mapping { keys, next_is_key }) = self.stack.last_mut() {
            if *next_is_key {
                if let Some(k) = scalar {
                    if !keys.insert(k.to_string()) && self.duplicate.is_none() {
                        self.duplicate = Some(SyntaxError {
                            doc,
                            line,
                            problem: format!("duplicate key {k:?}"),
                        });
                    }
                }
            }
            *next_is_key = !*next_is_key;
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Checker {
    fn on_event(&mut self, ev: Event<'input>, span: Span) {
        let line = span.start.line();
        match ev {
            Event::DocumentStart(_) => {
                self.doc_lines.push(line);
                self.stack.clear();
            }
            Event::Scalar(v, ..) => self.node(Some(&v), line),
            Event::Alias(_) => self.node(None, line),
            Event::SequenceStart(..) => {
                self.node(None, line);
                self.stack.push(Frame::Sequence);
            }
            Event::MappingStart(..) => {
                self.node(None, line);
                self.stack.push(Frame::Mapping {
                    keys: HashSet::new(),
                    next_is_key: true,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd | Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_documents_and_their_lines() {
        let c = check("a: 1\n---\nb: 2\n---\n# c\nd: [1, 2]\n").unwrap();
        assert_eq!(c.doc_lines, [1, 2, 4]);
        assert_eq!(check("").unwrap().doc_lines, Vec::<usize>::new());
    }

    #[test]
    fn refuses_what_the_editor_would_accept() {
        for (text, doc, line) in [
            ("a: b: c\n", 1, 1),
            ("x: 1\n---\na:\n  b: 1\n c: 2\n", 2, 5),
            ("a: 1\n---\nk: \"open\n", 2, 3),
            ("a: 1\nb:\n  c: 1\n  c: 2\n", 1, 4),
        ] {
            let e = check(text).unwrap_err();
            assert_eq!((e.doc, e.line), (doc, line), "{text:?}: {e:?}");
        }
        // The same key in different mappings, and a value equal to a key, are fine.
        check("a: {b: 1}\nc: {b: a}\nd: [a, a]\n").unwrap();
    }
}
