//! The one XML writer of the project (JUnit reports of `mock-kong run`, `mock-kong conform`,
//! `loadgen gate` and `loadgen ab`): escaping, and elements written with two-space indentation.
//!
//! XML 1.0 forbids most control characters even as character references (`&#1;` is not
//! well-formed), and JUnit readers reject such a file; they are written as visible `\u{1}` text
//! instead, as are the two noncharacters XML also forbids (U+FFFE, U+FFFF). Tab and newline stay
//! as they are in text (references in attributes); a carriage return is written `&#13;` (a
//! literal one would be read as a newline).

use std::fmt::Write as _;

/// `s` as XML text.
pub fn escape(s: &str) -> String {
    escape_with(s, false)
}

/// `s` as an XML attribute value: as text, and tab and newline as references (a parser reads a
/// literal one in an attribute as a space).
pub fn escape_attr(s: &str) -> String {
    escape_with(s, true)
}

fn escape_with(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' if attr => out.push_str("&#10;"),
            '\t' if attr => out.push_str("&#9;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if ((c as u32) < 0x20 && !matches!(c, '\n' | '\t'))
                || matches!(c, '\u{fffe}' | '\u{ffff}') =>
            {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An XML document written element by element (attributes and text escaped, children
/// indented by two spaces).
#[derive(Debug)]
pub struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
}

impl Default for XmlWriter {
    fn default() -> XmlWriter {
        XmlWriter::new()
    }
}

impl XmlWriter {
    /// A document with the UTF-8 declaration.
    pub fn new() -> XmlWriter {
        XmlWriter {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            open: Vec::new(),
        }
    }

    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        for _ in 0..self.open.len() {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            let _ = write!(self.out, " {k}=\"{}\"", escape_attr(v));
        }
    }

    /// `<tag attrs>`; children follow until [`XmlWriter::close`].
    pub fn open(&mut self, tag: &'static str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str(">\n");
        self.open.push(tag);
    }

    /// `<tag attrs/>`.
    pub fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) {
        self.start(tag, attrs);
        self.out.push_str("/>\n");
    }

    /// `<tag attrs>text</tag>`.
    pub fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(tag, attrs);
        let _ = writeln!(self.out, ">{}</{tag}>", escape(text));
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) {
        if let Some(tag) = self.open.pop() {
            for _ in 0..self.open.len() {
                self.out.push_str("  ");
            }
            let _ = writeln!(self.out, "</{tag}>");
        }
    }

    /// The document, every open element closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }
}

/// How one JUnit test case ended.
#[derive(Debug, Clone, Copy)]
pub enum Case<'a> {
    Passed,
    Skipped(&'a str),
    /// `<failure message type>text</failure>`.
    Failed {
        message: &'a str,
        kind: Option<&'a str>,
        text: &'a str,
    },
    /// `<error message type>text</error>` (could not be judged).
    Error {
        message: &'a str,
        kind: Option<&'a str>,
        text: &'a str,
    },
}

impl XmlWriter {
    /// A JUnit `<testcase>` with its outcome.
    pub fn testcase(&mut self, attrs: &[(&str, &str)], case: Case<'_>) {
        self.testcase_with_output(attrs, case, "");
    }

    /// A JUnit `<testcase>` with its outcome and, unless `output` is empty, a
    /// `<system-out>` (notes that are not failures).
    pub fn testcase_with_output(&mut self, attrs: &[(&str, &str)], case: Case<'_>, output: &str) {
        if matches!(case, Case::Passed) && output.is_empty() {
            return self.empty("testcase", attrs);
        }
        self.open("testcase", attrs);
        self.case_outcome(case);
        if !output.is_empty() {
            self.text("system-out", &[], output);
        }
        self.close();
    }

    fn case_outcome(&mut self, case: Case<'_>) {
        let (tag, message, kind, text) = match case {
            Case::Passed => return,
            Case::Skipped(reason) => return self.empty("skipped", &[("message", reason)]),
            Case::Failed {
                message,
                kind,
                text,
            } => ("failure", message, kind, text),
            Case::Error {
                message,
                kind,
                text,
            } => ("error", message, kind, text),
        };
        let mut a = vec![("message", message)];
        if let Some(k) = kind {
            a.push(("type", k));
        }
        if text.is_empty() {
            self.empty(tag, &a);
        } else {
            self.text(tag, &a, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"'\u{1}\t\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\\u{1}\t\n"
        );
    }

    #[test]
    fn writes_nested_elements() {
        let mut w = XmlWriter::new();
        w.open("testsuites", &[("name", "x & y")]);
        w.open("testsuite", &[("name", "s")]);
        w.testcase(&[("name", "ok")], Case::Passed);
        w.testcase(&[("name", "skip")], Case::Skipped("why"));
        w.testcase(
            &[("name", "bad")],
            Case::Failed {
                message: "m",
                kind: Some("t"),
                text: "<x>",
            },
        );
        let xml = w.finish();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"x &amp; y\">\n\
             \x20 <testsuite name=\"s\">\n\
             \x20   <testcase name=\"ok\"/>\n\
             \x20   <testcase name=\"skip\">\n\
             \x20     <skipped message=\"why\"/>\n\
             \x20   </testcase>\n\
             \x20   <testcase name=\"bad\">\n\
             \x20     <failure message=\"m\" type=\"t\">&lt;x&gt;</failure>\n\
             \x20   </testcase>\n\
             \x20 </testsuite>\n\
             </testsuites>\n"
        );
    }
}
