//! Property tests ("fuzzing" in `cargo test`) for the config codecs:
//!
//! - `parse_pbtxt` never panics, whatever the text (random unicode, soups of
//!   pbtxt tokens, and random edits of a real config);
//! - any schema-valid `ModelConfig` — generated field by field from the
//!   descriptor, so every message, enum, map and oneof of the schema is
//!   reached — round-trips through `to_pbtxt` → `parse_pbtxt` and through
//!   `to_json` → `parse_json`.
//!
//! Bounded (a few hundred cases each) so the whole file runs in seconds.
//! A failure found here stays below as a plain `#[test]` regression case.

use proptest::collection::vec;
use proptest::prelude::*;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use rustpy_config::proto::ModelConfig;
use rustpy_config::{model_config_descriptor, parse_json, parse_pbtxt, to_json, to_pbtxt};
use std::collections::HashMap;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 384,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A realistic config, the seed of the mutation tests.
const SEED: &str = r#"
name: "text_classifier"   # comment
backend: "rustpy"
max_batch_size: 8
version_policy: { specific { versions: [ 1, 3 ] } }
input [
  { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "MASK", data_type: TYPE_BOOL, dims: [ -1, 16 ], optional: true }
]
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2, kind: KIND_CPU }, { kind: KIND_GPU gpus: [ 0, 1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
parameters { key: "rustpy.native" value: { string_value: "echo" } }
parameters [ { key: "k\"2" value { string_value: "v\n\u00e9" } } ]
model_transaction_policy { decoupled: true }
"#;

const TOKENS: &[&str] = &[
    "name",
    "input",
    "output",
    "dims",
    "data_type",
    "TYPE_FP32",
    "TYPE_STRING",
    "instance_group",
    "kind",
    "KIND_CPU",
    "count",
    "parameters",
    "key",
    "value",
    "string_value",
    "max_batch_size",
    "version_policy",
    "latest",
    "all",
    "specific",
    "versions",
    "dynamic_batching",
    "sequence_batching",
    "ensemble_scheduling",
    "step",
    "input_map",
    "optimization",
    "model_warmup",
    "inputs",
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    ":",
    ",",
    ";",
    "\"",
    "\"x\"",
    "'y'",
    "\"\\",
    "\\x",
    "#",
    "\n",
    " ",
    "-",
    "-1",
    "0",
    "1",
    "1e9",
    "0x10",
    "9223372036854775808",
    "-9223372036854775809",
    "inf",
    "nan",
    "true",
    "false",
    "é",
    "\u{0}",
    "\u{feff}",
    "[inf]",
    "1.5",
    "-0",
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_never_panics_on_random_text(text in "\\PC{0,200}") {
        let _ = parse_pbtxt(&text);
    }

    #[test]
    fn parse_never_panics_on_token_soup(toks in vec(0usize..TOKENS.len(), 0..60)) {
        let text: String = toks.iter().map(|&i| TOKENS[i]).collect::<Vec<_>>().join(" ");
        if let Err(e) = parse_pbtxt(&text) {
            // Positions are 1-based and inside (or just past) the text.
            prop_assert!(e.line >= 1 && e.column >= 1);
            prop_assert!(e.line <= text.matches('\n').count() + 1);
        }
    }

    /// Random byte-range deletions, duplications and insertions of a real
    /// config: errors must carry a position inside the text.
    #[test]
    fn parse_never_panics_on_edited_config(
        edits in vec((any::<prop::sample::Index>(), 0usize..12, 0usize..TOKENS.len(), 0u8..3), 1..6)
    ) {
        let mut text = SEED.to_string();
        for (at, len, tok, op) in edits {
            let mut start = at.index(text.len() + 1);
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) { end += 1; }
            match op {
                0 => { text.replace_range(start..end, ""); }
                1 => { let dup = text[start..end].to_string(); text.insert_str(start, &dup); }
                _ => text.insert_str(start, TOKENS[tok]),
            }
        }
        match parse_pbtxt(&text) {
            Ok(cfg) => {
                // Whatever parses also survives a round trip.
                let again = parse_pbtxt(&to_pbtxt(&cfg)).expect("to_pbtxt output parses");
                prop_assert_eq!(again, cfg);
            }
            Err(e) => {
                prop_assert!(e.line >= 1 && e.column >= 1);
                prop_assert!(e.line <= text.matches('\n').count() + 1, "line {} past the end", e.line);
            }
        }
    }

    /// Any ModelConfig the schema allows round-trips through both codecs.
    #[test]
    fn generated_configs_round_trip(seed in vec(any::<u8>(), 0..1500)) {
        let cfg = generate(&seed);
        let text = to_pbtxt(&cfg);
        let back = parse_pbtxt(&text);
        prop_assert!(back.is_ok(), "to_pbtxt output does not parse: {:?}\n{}", back.err(), text);
        prop_assert_eq!(back.unwrap(), cfg.clone(), "pbtxt round trip changed the config:\n{}", text);

        let json = to_json(&cfg).to_string();
        let back = parse_json(&json);
        prop_assert!(back.is_ok(), "to_json output does not parse: {:?}\n{}", back.err(), json);
        prop_assert_eq!(back.unwrap(), cfg, "JSON round trip changed the config:\n{}", json);
    }
}

#[test]
fn seed_config_parses() {
    let cfg = parse_pbtxt(SEED).unwrap();
    assert_eq!(cfg.input.len(), 2);
    assert_eq!(cfg.parameters["k\"2"].string_value, "v\n\u{e9}");
    assert_eq!(parse_pbtxt(&to_pbtxt(&cfg)).unwrap(), cfg);
}

// ------------------------------------------------------------ generation
/// Turns a byte string into choices; exhausted input reads as zeros, so
/// shorter (shrunk) seeds give smaller configs.
struct Choices<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.byte() as usize % n
        }
    }
    fn u64(&mut self) -> u64 {
        match self.byte() % 6 {
            0 => 0,
            1 => self.byte() as u64,
            2 => u64::MAX,
            3 => u32::MAX as u64 + 1,
            4 => (0..8).fold(0u64, |acc, _| acc << 8 | self.byte() as u64),
            _ => 1,
        }
    }
    fn i64(&mut self) -> i64 {
        match self.byte() % 7 {
            0 => 0,
            1 => -1,
            2 => i64::MIN,
            3 => i64::MAX,
            4 => -(self.byte() as i64),
            5 => self.u64() as i64,
            _ => self.byte() as i64,
        }
    }
    fn f64(&mut self) -> f64 {
        match self.byte() % 7 {
            0 => 0.0,
            1 => -0.5,
            2 => 1e300,
            3 => f64::MIN_POSITIVE,
            4 => f64::INFINITY,
            5 => f64::NEG_INFINITY,
            _ => self.i64() as f64 / 7.0,
        }
    }
    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "_",
            "0",
            " ",
            "\"",
            "'",
            "\\",
            "\n",
            "\t",
            "\r",
            "é",
            "日本",
            "🙂",
            "\u{0}",
            "\u{7f}",
            "#",
            "[",
            "]",
            "{",
            ":",
            "\\x41",
            "\\n",
            "INPUT__0",
            "TYPE_FP32",
        ];
        let n = self.below(6);
        (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }
}

fn generate(seed: &[u8]) -> ModelConfig {
    let mut c = Choices {
        bytes: seed,
        pos: 0,
    };
    let msg = gen_message(&mut c, &model_config_descriptor(), 0);
    msg.transcode_to()
        .expect("generated message fits the prost types")
}

fn gen_message(c: &mut Choices<'_>, desc: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    if depth > 4 {
        return msg;
    }
    for field in desc.fields() {
        // Each field is set with probability ~1/3 (less deep down).
        if c.below(3 + depth) != 0 {
            continue;
        }
        let value = if field.is_map() {
            gen_map(c, &field, depth)
        } else if field.is_list() {
            let n = 1 + c.below(3);
            Value::List(
                (0..n)
                    .map(|_| gen_single(c, &field.kind(), depth))
                    .collect(),
            )
        } else {
            gen_single(c, &field.kind(), depth)
        };
        msg.set_field(&field, value);
    }
    msg
}

fn gen_map(c: &mut Choices<'_>, field: &FieldDescriptor, depth: usize) -> Value {
    let Kind::Message(entry) = field.kind() else {
        unreachable!("map fields are entry messages")
    };
    let (kf, vf) = (entry.map_entry_key_field(), entry.map_entry_value_field());
    let mut map = HashMap::new();
    for _ in 0..1 + c.below(3) {
        let key = match kf.kind() {
            Kind::String => MapKey::String(c.string()),
            Kind::Uint64 | Kind::Fixed64 => MapKey::U64(c.u64()),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(c.i64()),
            Kind::Uint32 | Kind::Fixed32 => MapKey::U32(c.u64() as u32),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(c.i64() as i32),
            Kind::Bool => MapKey::Bool(c.byte() & 1 == 1),
            other => unreachable!("map key kind {other:?}"),
        };
        map.insert(key, gen_single(c, &vf.kind(), depth));
    }
    Value::Map(map)
}

fn gen_single(c: &mut Choices<'_>, kind: &Kind, depth: usize) -> Value {
    match kind {
        Kind::Double => Value::F64(c.f64()),
        Kind::Float => Value::F32(c.f64() as f32),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(c.i64() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(c.i64()),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(c.u64() as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(c.u64()),
        Kind::Bool => Value::Bool(c.byte() & 1 == 1),
        Kind::String => Value::String(c.string()),
        Kind::Bytes => Value::Bytes(
            (0..c.below(5))
                .map(|_| c.byte())
                .collect::<Vec<u8>>()
                .into(),
        ),
        Kind::Enum(e) => {
            let values: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(values[c.below(values.len())])
        }
        Kind::Message(m) => Value::Message(gen_message(c, m, depth + 1)),
    }
}

/// The generator is not vacuous: over many seeds it reaches the common
/// sections, both scheduling choices and several version policies.
#[test]
fn generator_reaches_the_schema() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut hits: HashMap<&str, usize> = HashMap::new();
    for _ in 0..400 {
        let seed: Vec<u8> = (0..1500)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let cfg = generate(&seed);
        let text = to_pbtxt(&cfg);
        assert_eq!(parse_pbtxt(&text).unwrap(), cfg);
        for (key, hit) in [
            ("input", !cfg.input.is_empty()),
            ("output", !cfg.output.is_empty()),
            ("parameters", !cfg.parameters.is_empty()),
            ("instance_group", !cfg.instance_group.is_empty()),
            ("version_policy", cfg.version_policy.is_some()),
            ("scheduling", cfg.scheduling_choice.is_some()),
            (
                "escaped string",
                text.contains("\\\"") || text.contains("\\n"),
            ),
        ] {
            *hits.entry(key).or_default() += hit as usize;
        }
    }
    for (key, n) in &hits {
        assert!(
            *n >= 20,
            "generator produced {key} in only {n} of 400 configs: {hits:?}"
        );
    }
}
