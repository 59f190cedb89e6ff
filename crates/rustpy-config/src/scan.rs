//! A token scanner for protobuf text format, used only to *locate* things
//! (field positions for diagnostics, colon-less message lists). Parsing
//! itself is prost-reflect's job; this never builds values.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokKind {
    Ident,
    /// A quoted string; `text` includes the quotes.
    Str,
    Number,
    Punct,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Tok<'a> {
    pub kind: TokKind,
    pub text: &'a str,
    /// Byte offset in the scanned text.
    pub start: usize,
    /// Nesting depth of `{}`/`<>` blocks the token is inside.
    pub depth: usize,
}

impl Tok<'_> {
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    fn is(&self, punct: &str) -> bool {
        self.kind == TokKind::Punct && self.text == punct
    }
}

/// Splits text into tokens, skipping whitespace and `#` comments.
pub(crate) fn tokens(text: &str) -> Vec<Tok<'_>> {
    let bytes = text.as_bytes();
    let mut toks = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let c = bytes[i];
        let kind = match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                TokKind::Str
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                TokKind::Ident
            }
            b'0'..=b'9' | b'.' => {
                // Includes suffixes and exponents like `1.5f`, `2e3`.
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.'))
                {
                    i += 1;
                }
                TokKind::Number
            }
            _ => {
                // One punctuation character (or any other UTF-8 character).
                i += text[i..].chars().next().map_or(1, char::len_utf8);
                TokKind::Punct
            }
        };
        let tok_text = &text[start..i];
        if kind == TokKind::Punct && matches!(tok_text, "}" | ">") {
            depth = depth.saturating_sub(1);
        }
        toks.push(Tok {
            kind,
            text: tok_text,
            start,
            depth,
        });
        if kind == TokKind::Punct && matches!(tok_text, "{" | "<") {
            depth += 1;
        }
    }
    toks
}

/// 1-based (line, column) of a byte offset; the column counts characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Finds fields in a text-format document by position, for diagnostics.
pub(crate) struct Locator<'a> {
    text: &'a str,
    toks: Vec<Tok<'a>>,
}

/// Token indices of a message block's contents (between its delimiters),
/// plus the depth of the fields directly inside it.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    range: Range<usize>,
    depth: usize,
}

impl Block {
    /// The first token inside the block, if any.
    pub fn first_token(&self) -> Option<usize> {
        (!self.range.is_empty()).then_some(self.range.start)
    }
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Locator {
            text,
            toks: tokens(text),
        }
    }

    /// The whole document as a block.
    pub fn root(&self) -> Block {
        Block {
            range: 0..self.toks.len(),
            depth: 0,
        }
    }

    /// 1-based line and column of a token.
    pub fn position(&self, tok: usize) -> (usize, usize) {
        line_col(self.text, self.toks[tok].start)
    }

    /// Token indices of every occurrence of field `name` directly in `block`.
    pub fn fields(&self, block: &Block, name: &str) -> Vec<usize> {
        block
            .range
            .clone()
            .filter(|&i| {
                let tok = &self.toks[i];
                tok.kind == TokKind::Ident
                    && tok.depth == block.depth
                    && tok.text == name
                    // A field name is followed by `:` or a message/list opener;
                    // an enum value equal to the name would follow a colon.
                    && self.toks.get(i + 1).is_some_and(|n| n.is(":") || n.is("{") || n.is("<") || n.is("["))
                    && (i == 0 || !self.toks[i - 1].is(":"))
            })
            .collect()
    }

    /// First occurrence of field `name` in `block`.
    pub fn field(&self, block: &Block, name: &str) -> Option<usize> {
        self.fields(block, name).into_iter().next()
    }

    /// The message blocks given to field `name` in `block`, in order: one per
    /// `name { }` and one per element of `name [ {..}, {..} ]`. This is the
    /// order in which they appear in the parsed repeated field.
    pub fn elements(&self, block: &Block, name: &str) -> Vec<Block> {
        let mut out = Vec::new();
        for field in self.fields(block, name) {
            let mut i = field + 1;
            if self.toks.get(i).is_some_and(|t| t.is(":")) {
                i += 1;
            }
            match self.toks.get(i) {
                Some(t) if t.is("[") => {
                    let list_depth = t.depth;
                    let mut j = i + 1;
                    while let Some(t) = self.toks.get(j) {
                        if t.depth == list_depth && t.is("]") {
                            break;
                        }
                        if t.depth == list_depth && (t.is("{") || t.is("<")) {
                            let block = self.block_at(j);
                            j = block.range.end;
                            out.push(block);
                        }
                        j += 1;
                    }
                }
                Some(t) if t.is("{") || t.is("<") => out.push(self.block_at(i)),
                _ => {}
            }
        }
        out
    }

    /// The `i`-th element block of field `name` in `block`.
    pub fn element(&self, block: &Block, name: &str, i: usize) -> Option<Block> {
        self.elements(block, name).into_iter().nth(i)
    }

    /// The block opened at token `open` (`{` or `<`).
    fn block_at(&self, open: usize) -> Block {
        let depth = self.toks[open].depth + 1;
        let end = (open + 1..self.toks.len())
            .find(|&j| self.toks[j].depth < depth)
            .unwrap_or(self.toks.len());
        Block {
            range: open + 1..end,
            depth,
        }
    }

    /// First token (after field `name` in `block`) whose text is `value`,
    /// e.g. the `0` in `dims: [ 4, 0 ]`; falls back to the field itself.
    pub fn value_of(&self, block: &Block, name: &str, value: &str) -> Option<usize> {
        let field = self.field(block, name)?;
        let found = (field + 1..block.range.end)
            .take_while(|&j| {
                let t = &self.toks[j];
                // Stop at the next field of the same block.
                !(t.depth == block.depth
                    && t.kind == TokKind::Ident
                    && !self.toks[j - 1].is(":")
                    && !self.toks[j - 1].is(",")
                    && !self.toks[j - 1].is("["))
            })
            .find(|&j| {
                let t = &self.toks[j];
                // `-1` is two tokens: `-` and `1`.
                t.text == value
                    || (t.is("-")
                        && self.toks.get(j + 1).is_some_and(|n| {
                            n.start == t.end() && value.strip_prefix('-') == Some(n.text)
                        }))
            });
        Some(found.unwrap_or(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: \"m\" # name: \"not this\"\n\
        input [\n  { name: \"A\" dims: [ 4 ] },\n  {\n    name: \"B\"\n    dims: [ 2, 0 ]\n  }\n]\n\
        input { name: \"C\" dims: 1 }\n\
        instance_group { kind: KIND_CPU count: -1 }\n";

    #[test]
    fn finds_fields_and_elements_in_order() {
        let loc = Locator::new(TEXT);
        let root = loc.root();
        assert_eq!(loc.fields(&root, "name").len(), 1);
        let inputs = loc.elements(&root, "input");
        assert_eq!(inputs.len(), 3);
        let b = &inputs[1];
        let name = loc.field(b, "name").unwrap();
        assert_eq!(loc.position(name), (5, 5));
        assert_eq!(loc.position(loc.field(b, "dims").unwrap()), (6, 5));
        assert_eq!(loc.position(loc.value_of(b, "dims", "0").unwrap()), (6, 16));
        assert_eq!(
            loc.position(loc.field(&inputs[2], "dims").unwrap()),
            (9, 19)
        );
        // `count` inside instance_group, not a top-level field.
        assert!(loc.field(&root, "count").is_none());
        let group = loc.element(&root, "instance_group", 0).unwrap();
        assert_eq!(loc.position(loc.field(&group, "count").unwrap()), (10, 33));
        assert_eq!(
            loc.position(loc.value_of(&group, "count", "-1").unwrap()),
            (10, 40)
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\n", 3), (2, 1));
        assert_eq!(line_col("é!", 2), (1, 2));
    }
}
