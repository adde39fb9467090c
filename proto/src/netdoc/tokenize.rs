//! The directory meta-format (dir-spec §1.2): a document is a sequence of items, each a
//! keyword line (`Keyword SP Arg SP Arg … NL`) optionally followed by one object
//! (`-----BEGIN LABEL-----` NL base64 lines NL `-----END LABEL-----` NL).
//!
//! Every directory document we parse (server descriptors, extra-info, votes, key
//! certificates, detached signatures) goes through [`tokenize`], which is strict where C
//! tor is strict and bounded everywhere:
//! - the input must be UTF-8 with LF line ends (a CR anywhere is refused, trap 18);
//! - keywords are `[A-Za-z0-9-]+`; arguments are split on runs of spaces and tabs;
//! - an object's BEGIN and END labels must agree, its body must be base64 and at most
//!   [`MAX_OBJECT_LEN`] bytes;
//! - at most [`MAX_ITEMS`] items; an unterminated last line is refused.
//!
//! Invariant: every [`Item`] records the byte range it occupies, so signature checks can
//! hash exactly "from the first keyword through the signature item's keyword".

use crate::{Error, Result};

/// Largest decoded object accepted (a 4096-bit RSA signature is 512 bytes; certificates
/// and keys are smaller).
pub const MAX_OBJECT_LEN: usize = 4096;
/// Most items in one document (a consensus of a few thousand relays fits).
pub const MAX_ITEMS: usize = 200_000;

/// One object attached to an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The label between `BEGIN ` and `-----`, e.g. `RSA PUBLIC KEY`.
    pub label: String,
    /// The decoded body.
    pub data: Vec<u8>,
}

/// One item of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// The keyword.
    pub keyword: &'a str,
    /// Everything after the keyword and its separating whitespace (may be empty).
    pub rest: &'a str,
    /// The object, if one follows.
    pub object: Option<Object>,
    /// Byte offset of the keyword's first character.
    pub start: usize,
    /// Byte offset just past the item (its keyword line, or its object's END line).
    pub end: usize,
}

impl<'a> Item<'a> {
    /// The arguments, split on spaces and tabs.
    pub fn args(&self) -> Vec<&'a str> {
        self.rest
            .split([' ', '\t'])
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Argument `i`, or an error naming the keyword.
    ///
    /// # Errors
    /// [`Error::Malformed`] when the item has fewer arguments.
    pub fn arg(&self, i: usize) -> Result<&'a str> {
        self.args()
            .get(i)
            .copied()
            .ok_or_else(|| malformed(self.keyword, "missing argument"))
    }

    /// The object's body when its label is one of `labels`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when there is no object or its label differs.
    pub fn object_data(&self, labels: &[&str]) -> Result<&[u8]> {
        match &self.object {
            Some(o) if labels.contains(&o.label.as_str()) => Ok(&o.data),
            Some(_) => Err(malformed(self.keyword, "object has the wrong label")),
            None => Err(malformed(self.keyword, "object missing")),
        }
    }
}

/// A [`Error::Malformed`] for `what` in item `keyword`.
pub fn malformed(keyword: &str, what: &str) -> Error {
    Error::Malformed(format!("{keyword}: {what}"))
}

fn keyword_ok(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Splits `text` into items.
///
/// # Errors
/// [`Error::Malformed`] naming the first offending line.
pub fn tokenize(text: &str) -> Result<Vec<Item<'_>>> {
    if text.contains('\r') || text.contains('\0') {
        return Err(Error::Malformed("document contains CR or NUL".into()));
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(Error::Malformed(
            "document does not end in a newline".into(),
        ));
    }
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
        let line = &text[pos..line_end];
        let next = line_end + 1;
        if line.is_empty() {
            return Err(Error::Malformed(format!("empty line at byte {pos}")));
        }
        if line.starts_with("-----") {
            return Err(Error::Malformed(format!(
                "object without an item at byte {pos}"
            )));
        }
        let (keyword, rest) = match line.find([' ', '\t']) {
            Some(i) => (&line[..i], line[i..].trim_start_matches([' ', '\t'])),
            None => (line, ""),
        };
        // C tor accepts (and ignores) the obsolete "opt " prefix.
        let (keyword, rest) = if keyword == "opt" {
            match rest.find([' ', '\t']) {
                Some(i) => (&rest[..i], rest[i..].trim_start_matches([' ', '\t'])),
                None => (rest, ""),
            }
        } else {
            (keyword, rest)
        };
        if !keyword_ok(keyword) {
            return Err(Error::Malformed(format!("bad keyword at byte {pos}")));
        }
        let start = pos;
        pos = next;
        let mut object = None;
        if text[pos.min(text.len())..].starts_with("-----BEGIN ") {
            let (obj, after) = read_object(text, pos)?;
            object = Some(obj);
            pos = after;
        }
        items.push(Item {
            keyword,
            rest,
            object,
            start,
            end: pos.min(text.len()),
        });
        if items.len() > MAX_ITEMS {
            return Err(Error::Malformed("too many items".into()));
        }
    }
    Ok(items)
}

/// Reads the object starting at `pos`; returns it and the offset after its END line.
fn read_object(text: &str, start: usize) -> Result<(Object, usize)> {
    let bad = |what: &str| Error::Malformed(format!("object at byte {start}: {what}"));
    let mut pos = start;
    let line_end = text[pos..]
        .find('\n')
        .map(|i| pos + i)
        .ok_or(bad("no end"))?;
    let label = text[pos..line_end]
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or(bad("bad BEGIN line"))?;
    if label.is_empty() || label.len() > 64 {
        return Err(bad("bad label"));
    }
    let end_line = format!("-----END {label}-----");
    pos = line_end + 1;
    let mut b64 = String::new();
    loop {
        let le = text[pos..]
            .find('\n')
            .map(|i| pos + i)
            .ok_or(bad("no END line"))?;
        let line = &text[pos..le];
        pos = le + 1;
        if line == end_line {
            break;
        }
        if line.starts_with("-----") {
            return Err(bad("END label differs from BEGIN"));
        }
        if line.len() > 76 || b64.len() > MAX_OBJECT_LEN * 4 / 3 + 4 {
            return Err(bad("object too large or line too long"));
        }
        b64.push_str(line);
    }
    let data = super::b64_decode(&b64).ok_or(bad("bad base64"))?;
    if data.len() > MAX_OBJECT_LEN {
        return Err(bad("object too large"));
    }
    Ok((
        Object {
            label: label.to_owned(),
            data,
        },
        pos,
    ))
}

/// Items looked up by keyword, with the counting rules of dir-spec §1.2 (`exactly once`,
/// `at most once`, `at least once`).
#[derive(Debug)]
pub struct Items<'a, 'b> {
    items: &'b [Item<'a>],
}

impl<'a, 'b> Items<'a, 'b> {
    /// Wraps a slice of items.
    pub fn new(items: &'b [Item<'a>]) -> Self {
        Items { items }
    }

    /// All items with `keyword`, in order.
    pub fn all<'k>(
        &self,
        keyword: &'k str,
    ) -> impl Iterator<Item = &'b Item<'a>> + use<'a, 'b, 'k> {
        self.items.iter().filter(move |i| i.keyword == keyword)
    }

    /// The one item with `keyword`.
    ///
    /// # Errors
    /// [`Error::Malformed`] when it is missing or repeated.
    pub fn one(&self, keyword: &str) -> Result<&'b Item<'a>> {
        let mut it = self.all(keyword);
        let first = it.next().ok_or_else(|| malformed(keyword, "missing"))?;
        if it.next().is_some() {
            return Err(malformed(keyword, "appears more than once"));
        }
        Ok(first)
    }

    /// The item with `keyword` if present.
    ///
    /// # Errors
    /// [`Error::Malformed`] when it is repeated.
    pub fn opt(&self, keyword: &str) -> Result<Option<&'b Item<'a>>> {
        let mut it = self.all(keyword);
        let first = it.next();
        if it.next().is_some() {
            return Err(malformed(keyword, "appears more than once"));
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_objects_and_ranges() {
        let text = "router a 1.2.3.4 9001 0 0\nsigning-key\n-----BEGIN RSA PUBLIC KEY-----\nAAEC\n-----END RSA PUBLIC KEY-----\nopt hibernating 1\nlast\n";
        let items = tokenize(text).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].keyword, "router");
        assert_eq!(items[0].args(), ["a", "1.2.3.4", "9001", "0", "0"]);
        assert_eq!(items[1].object.as_ref().unwrap().data, [0, 1, 2]);
        assert_eq!(items[1].object.as_ref().unwrap().label, "RSA PUBLIC KEY");
        assert_eq!(
            &text[items[1].start..items[1].end],
            "signing-key\n-----BEGIN RSA PUBLIC KEY-----\nAAEC\n-----END RSA PUBLIC KEY-----\n"
        );
        assert_eq!(items[2].keyword, "hibernating");
        assert_eq!(items[3].rest, "");
        let look = Items::new(&items);
        assert!(look.one("router").is_ok());
        assert!(look.one("missing").is_err());
        assert!(look.opt("missing").unwrap().is_none());
    }

    #[test]
    fn refuses_malformed_documents() {
        for bad in [
            "router a\r\n",
            "router a",
            "router a\n\nx\n",
            "-----BEGIN X-----\nAA==\n-----END X-----\n",
            "k\n-----BEGIN X-----\nAA==\n-----END Y-----\n",
            "k\n-----BEGIN X-----\nAA==\n",
            "k\n-----BEGIN X-----\n!!!!\n-----END X-----\n",
            "bad_kw x\n",
        ] {
            assert!(tokenize(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = tokenize(&s);
        }

        #[test]
        fn never_panics_on_doc_like_text(s in "([a-z-]{1,5}( [a-z0-9]{0,4}){0,3}\n(-----BEGIN [A-Z]{1,3}-----\n[A-Za-z0-9+/=]{0,8}\n-----END [A-Z]{1,3}-----\n)?){0,6}") {
            if let Ok(items) = tokenize(&s) {
                for i in &items {
                    prop_assert!(i.start < i.end && i.end <= s.len());
                }
            }
        }
    }
}
