//! Protobuf text format (`config.pbtxt`) through prost-reflect. Uses
//! [`crate::scan`] to find list colons and error positions; `scan` depends on
//! nothing here.

use std::{borrow::Cow, collections::HashSet, sync::OnceLock};

use prost_reflect::{text_format::FormatOptions, DynamicMessage, Kind};

use crate::{
    descriptor_pool, model_config_descriptor, proto,
    scan::{line_col, tokens, TokKind},
    to_dynamic, transcode,
};

/// A `config.pbtxt` syntax or schema error, located in the source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct PbtxtError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What the parser expected or rejected.
    pub message: String,
}

/// Parses protobuf text format (the contents of a `config.pbtxt`), with the
/// same grammar Triton's protobuf parser accepts.
pub fn parse_pbtxt(text: &str) -> Result<proto::ModelConfig, PbtxtError> {
    let (normalized, inserted) = insert_list_colons(text);
    let message = DynamicMessage::parse_text_format(model_config_descriptor(), &normalized)
        .map_err(|err| {
            let offset = error_offset(&normalized, &err);
            // Map the offset back to the user's text, before our insertions.
            let shift = inserted.iter().take_while(|&&pos| pos < offset).count();
            let (line, column) = line_col(text, offset - shift);
            PbtxtError {
                line,
                column,
                message: err.to_string(),
            }
        })?;
    Ok(transcode(&message))
}

/// Formats a config as multi-line protobuf text format, fit for a
/// `config.pbtxt`. Fields left at their default are omitted.
pub fn to_pbtxt(cfg: &proto::ModelConfig) -> String {
    let mut text = to_dynamic(cfg).to_text_format_with_options(&FormatOptions::new().pretty(true));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Byte offset of a parse error in the text that was parsed.
fn error_offset(text: &str, err: &prost_reflect::text_format::ParseError) -> usize {
    use miette::Diagnostic;
    // prost-reflect exposes the span only through miette labels. Errors
    // without one (unexpected end of input) point just past the last
    // non-blank character, which is where something was missing.
    err.labels()
        .and_then(|mut labels| labels.next())
        .map_or_else(|| text.trim_end().len(), |label| label.offset())
}

/// Names of fields whose values are messages (including map fields) and that
/// are never scalar fields anywhere in the schema.
fn message_field_names() -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut messages = HashSet::new();
        let mut scalars = HashSet::new();
        for message in descriptor_pool().all_messages() {
            for field in message.fields() {
                let set = if matches!(field.kind(), Kind::Message(_)) {
                    &mut messages
                } else {
                    &mut scalars
                };
                set.insert(field.name().to_owned());
            }
        }
        &messages - &scalars
    })
}

/// Rewrites `field [ {..}, {..} ]` to `field: [ {..}, {..} ]` for message fields.
///
/// Protobuf's text format makes the colon optional before a message value
/// *and* before a list of message values, and Triton configs are usually
/// written that way (`input [ ... ]`), but prost-reflect only accepts the
/// colon-less form before `{`/`<`. Scalar fields keep requiring the colon, as
/// in protobuf. Returns the text and the offsets (in the returned text) of
/// the inserted colons, so error positions can be mapped back.
fn insert_list_colons(text: &str) -> (Cow<'_, str>, Vec<usize>) {
    let toks = tokens(text);
    let colons_at: Vec<usize> = toks
        .windows(2)
        .enumerate()
        .filter(|(i, pair)| {
            let (field, open) = (&pair[0], &pair[1]);
            open.kind == TokKind::Punct
                && open.text == "["
                && field.kind == TokKind::Ident
                // `kind: KIND_CPU` is a value, not a field name.
                && !(*i > 0 && toks[i - 1].text == ":" && toks[i - 1].kind == TokKind::Punct)
                && message_field_names().contains(field.text)
        })
        .map(|(_, pair)| pair[0].end())
        .collect();

    if colons_at.is_empty() {
        return (Cow::Borrowed(text), colons_at);
    }
    let mut out = String::with_capacity(text.len() + colons_at.len());
    let mut inserted = Vec::with_capacity(colons_at.len());
    let mut last = 0;
    for &at in &colons_at {
        out.push_str(&text[last..at]);
        inserted.push(out.len());
        out.push(':');
        last = at;
    }
    out.push_str(&text[last..]);
    (Cow::Owned(out), inserted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colons_are_inserted_only_before_message_lists() {
        let (text, at) = insert_list_colons(
            "input [ {} ]\ninstance_group[{}] # input [\nname: \"output [\" output: [] dims [1] kind: input [",
        );
        assert_eq!(
            text,
            "input: [ {} ]\ninstance_group:[{}] # input [\nname: \"output [\" output: [] dims [1] kind: input ["
        );
        assert_eq!(at, vec![5, 28]);
    }
}
