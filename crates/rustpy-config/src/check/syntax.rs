//! Fix hints for `config.pbtxt` parse errors: the nearest field or enum
//! value name for a misspelling, Triton's name for other frameworks' dtype
//! spellings.

use crate::{descriptor_pool, PbtxtError};

/// A fix hint for a config.pbtxt parse error, suggesting the nearest field or
/// enum value name for misspellings.
pub(super) fn syntax_hint(err: &PbtxtError) -> String {
    let quoted: Vec<&str> = err.message.split('\'').skip(1).step_by(2).collect();
    let pool = descriptor_pool();
    let suggestion = match quoted.as_slice() {
        [field, message] if err.message.starts_with("field ") => pool
            .get_message_by_name(message)
            .and_then(|m| closest(field, m.fields().map(|f| f.name().to_owned()))),
        [value, enum_name] if err.message.starts_with("value ") => {
            dtype_alias(value).map(str::to_owned).or_else(|| {
                pool.get_enum_by_name(enum_name)
                    .and_then(|e| closest(value, e.values().map(|v| v.name().to_owned())))
            })
        }
        _ => None,
    };
    match suggestion {
        Some(name) => format!("did you mean `{name}`?"),
        None if err.message.contains("':' or a message value") => {
            "scalar fields need a colon, e.g. dims: [ 4 ]".into()
        }
        None => "fix the protobuf text format at this position".into(),
    }
}

/// Data type spellings from other frameworks (numpy, torch) that edit
/// distance would map to the wrong Triton type (`FLOAT32` is closer to `UINT32`).
fn dtype_alias(value: &str) -> Option<&'static str> {
    let bare = value
        .strip_prefix("TYPE_")
        .unwrap_or(value)
        .to_ascii_uppercase();
    Some(match bare.as_str() {
        "FLOAT" | "FLOAT32" | "F32" | "SINGLE" => "TYPE_FP32",
        "DOUBLE" | "FLOAT64" | "F64" => "TYPE_FP64",
        "HALF" | "FLOAT16" | "F16" => "TYPE_FP16",
        "BFLOAT16" => "TYPE_BF16",
        "BYTES" | "STR" | "TEXT" | "OBJECT" => "TYPE_STRING",
        "INT" | "LONG" => "TYPE_INT64",
        "BOOLEAN" => "TYPE_BOOL",
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
fn closest(word: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_triton_dtype_for_other_spellings() {
        let err = |value: &str| PbtxtError {
            line: 1,
            column: 1,
            message: format!("value '{value}' was not found for enum 'inference.DataType'"),
        };
        assert_eq!(
            syntax_hint(&err("TYPE_FLOAT32")),
            "did you mean `TYPE_FP32`?"
        );
        assert_eq!(
            syntax_hint(&err("TYPE_BYTES")),
            "did you mean `TYPE_STRING`?"
        );
        assert_eq!(
            syntax_hint(&err("TYPE_INT33")),
            "did you mean `TYPE_INT32`?"
        );
    }

    #[test]
    fn suggests_near_names() {
        let names = || ["data_type", "dims", "name"].map(String::from).into_iter();
        assert_eq!(closest("dtype", names()).as_deref(), Some("data_type"));
        assert_eq!(closest("dim", names()).as_deref(), Some("dims"));
        assert_eq!(closest("completely_else", names()), None);
    }
}
