//! parse_pbtxt / parse_json / to_json / to_pbtxt against realistic inputs.

use rustpy_config::proto::{
    model_config::SchedulingChoice, model_instance_group::Kind, model_version_policy::PolicyChoice,
    DataType, ModelConfig,
};
use rustpy_config::{is_decoupled, parameter, parse_json, parse_pbtxt, to_json, to_pbtxt};
use serde_json::json;

/// A config in the style people write by hand, touching every common section.
const FULL: &str = r#"
# A comment, as Triton allows.
name: "text_classifier"
backend: "rustpy"
max_batch_size: 8
version_policy: { latest { num_versions: 2 } }

input [
  {
    name: "TEXT"
    data_type: TYPE_STRING
    dims: [ 1 ]
  },
  {
    name: "MASK"
    data_type: TYPE_BOOL
    dims: [ -1, 16 ]
    optional: true
    allow_ragged_batch: true
  }
]
output [
  {
    name: "LOGITS"
    data_type: TYPE_FP32
    dims: [ 3 ]
    label_filename: "labels.txt"
  },
  {
    name: "EMBEDDING"
    data_type: TYPE_BF16
    dims: [ 2, 384 ]
    reshape: { shape: [ 768 ] }
  }
]

instance_group [
  { count: 2, kind: KIND_CPU },
  { name: "gpu_group" count: 1 kind: KIND_GPU gpus: [ 0, 1 ] }
]

dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 2
  default_priority_level: 1
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5000 max_queue_size: 10 }
  priority_queue_policy { key: 1 value: { allow_timeout_override: true } }
}

parameters: {
  key: "tokenizer"
  value: { string_value: "bert-base-uncased" }
}
parameters { key: "EXECUTION_ENV_PATH" value { string_value: "$$TRITON_MODEL_DIRECTORY/env.tar.gz" } }

model_transaction_policy { decoupled: true }
response_cache { enable: true }
model_warmup [
  {
    name: "warm"
    batch_size: 1
    inputs { key: "TEXT" value: { data_type: TYPE_STRING dims: [ 1 ] zero_data: true } }
  }
]
optimization { input_pinned_memory { enable: false } }
"#;

#[test]
fn parses_every_common_section() {
    let cfg = parse_pbtxt(FULL).expect("valid config");
    assert_eq!(cfg.name, "text_classifier");
    assert_eq!(cfg.backend, "rustpy");
    assert_eq!(cfg.max_batch_size, 8);
    assert!(matches!(
        cfg.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()),
        Some(PolicyChoice::Latest(l)) if l.num_versions == 2
    ));

    assert_eq!(cfg.input.len(), 2);
    assert_eq!(cfg.input[0].data_type(), DataType::TypeString);
    assert_eq!(cfg.input[0].dims, vec![1]);
    assert_eq!(cfg.input[1].dims, vec![-1, 16]);
    assert!(cfg.input[1].optional && cfg.input[1].allow_ragged_batch);

    assert_eq!(cfg.output[0].label_filename, "labels.txt");
    assert_eq!(cfg.output[1].data_type(), DataType::TypeBf16);
    assert_eq!(cfg.output[1].reshape.as_ref().unwrap().shape, vec![768]);

    assert_eq!(cfg.instance_group.len(), 2);
    assert_eq!(cfg.instance_group[0].kind(), Kind::Cpu);
    assert_eq!(cfg.instance_group[0].count, 2);
    assert_eq!(cfg.instance_group[1].gpus, vec![0, 1]);

    let Some(SchedulingChoice::DynamicBatching(db)) = &cfg.scheduling_choice else {
        panic!("expected dynamic batching, got {:?}", cfg.scheduling_choice);
    };
    assert_eq!(db.preferred_batch_size, vec![4, 8]);
    assert_eq!(db.max_queue_delay_microseconds, 100);
    assert!(db.preserve_ordering);
    assert_eq!(db.default_queue_policy.as_ref().unwrap().max_queue_size, 10);
    assert!(db.priority_queue_policy[&1].allow_timeout_override);

    assert_eq!(parameter(&cfg, "tokenizer"), Some("bert-base-uncased"));
    assert_eq!(
        parameter(&cfg, "EXECUTION_ENV_PATH"),
        Some("$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    );
    assert_eq!(parameter(&cfg, "missing"), None);
    assert!(is_decoupled(&cfg));
    assert!(cfg.response_cache.unwrap().enable);
    assert_eq!(cfg.model_warmup[0].inputs["TEXT"].dims, vec![1]);
}

#[test]
fn empty_text_is_a_default_config() {
    let cfg = parse_pbtxt("  # nothing but a comment\n").unwrap();
    assert_eq!(cfg, ModelConfig::default());
    assert!(!is_decoupled(&cfg));
}

#[test]
fn syntax_error_reports_line_and_column() {
    // An integer field given an identifier: the error points at the value.
    let text = "name: \"m\"\nbackend: \"python\"\nmax_batch_size: eight\n";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (3, 17), "{err}");
    assert!(err.message.contains("expected"), "{err}");
    assert_eq!(err.to_string(), format!("3:17: {}", err.message));
}

#[test]
fn unknown_field_is_located() {
    let text = "name: \"m\"\n\ninput [\n  {\n    name: \"X\"\n    dtype: TYPE_FP32\n  }\n]\n";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (6, 5), "{err}");
    assert!(err.message.contains("dtype"), "{err}");
}

#[test]
fn colon_less_message_lists_are_accepted_and_errors_in_them_located() {
    // `input [` (no colon) is how most Triton configs are written; an error
    // after it on the same line must still get the user's column.
    let text = "input [ { name: \"X\" bogus: 1 } ]";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (1, 21), "{err}");
    assert!(err.message.contains("bogus"), "{err}");
}

#[test]
fn scalar_lists_still_need_a_colon() {
    // Protobuf (and so Triton) only lets the colon go before message values.
    let err = parse_pbtxt("input { name: \"X\" dims [ 1 ] }").unwrap_err();
    assert_eq!((err.line, err.column), (1, 24), "{err}");
}

#[test]
fn unknown_enum_value_is_located() {
    let text = "input { name: \"X\" data_type: TYPE_FLOAT32 dims: 1 }";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (1, 30), "{err}");
    assert!(err.message.contains("TYPE_FLOAT32"), "{err}");
}

#[test]
fn unterminated_block_points_after_the_last_token() {
    let text = "name: \"m\"\ninput {\n  name: \"X\"\n\n\n";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (3, 12), "{err}");
    assert!(err.message.contains("end of input"), "{err}");
}

#[test]
fn column_counts_characters_not_bytes() {
    let text = "name: \"modèle\" bogus: 1";
    let err = parse_pbtxt(text).unwrap_err();
    assert_eq!((err.line, err.column), (1, 16), "{err}");
}

/// What `TRITONBACKEND_ModelConfig` (config version 1) hands a backend:
/// snake_case names, enum names, every primitive field present, most 64-bit
/// integers already turned into numbers but some left as strings.
const TRITON_JSON: &str = r#"{
  "name": "add_sub",
  "platform": "",
  "backend": "rustpy",
  "runtime": "",
  "version_policy": {"latest": {"num_versions": 1}},
  "max_batch_size": 4,
  "input": [
    {"name": "INPUT0", "data_type": "TYPE_FP32", "format": "FORMAT_NONE",
     "dims": [4], "is_shape_tensor": false, "allow_ragged_batch": false,
     "optional": false, "is_non_linear_format_io": false},
    {"name": "INPUT1", "data_type": "TYPE_STRING", "format": "FORMAT_NONE",
     "dims": ["-1", "2"], "reshape": {"shape": ["2"]}, "is_shape_tensor": false,
     "allow_ragged_batch": false, "optional": true}
  ],
  "output": [
    {"name": "OUTPUT0", "data_type": "TYPE_INT64", "dims": ["4"],
     "label_filename": "", "is_shape_tensor": false}
  ],
  "batch_input": [],
  "batch_output": [],
  "optimization": {"priority": "PRIORITY_DEFAULT", "input_pinned_memory": {"enable": true},
                   "output_pinned_memory": {"enable": true},
                   "gather_kernel_buffer_threshold": 0, "eager_batching": false},
  "dynamic_batching": {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 500,
                       "preserve_ordering": false, "priority_levels": 0,
                       "default_priority_level": 0, "priority_queue_policy": {}},
  "instance_group": [
    {"name": "add_sub_0", "kind": "KIND_CPU", "count": 1, "gpus": [],
     "secondary_devices": [], "profile": [], "passive": false, "host_policy": ""}
  ],
  "default_model_filename": "",
  "cc_model_filenames": {},
  "metric_tags": {},
  "parameters": {"threads": {"string_value": "4"}},
  "model_warmup": [],
  "model_transaction_policy": {"decoupled": false},
  "a_field_from_a_newer_server": {"x": 1}
}"#;

#[test]
fn parses_triton_json() {
    let cfg = parse_json(TRITON_JSON).expect("valid JSON config");
    assert_eq!(cfg.name, "add_sub");
    assert_eq!(cfg.max_batch_size, 4);
    assert_eq!(cfg.input[0].dims, vec![4]);
    assert_eq!(cfg.input[0].data_type(), DataType::TypeFp32);
    assert_eq!(cfg.input[1].dims, vec![-1, 2]);
    assert_eq!(cfg.input[1].reshape.as_ref().unwrap().shape, vec![2]);
    assert_eq!(cfg.output[0].dims, vec![4]);
    assert_eq!(cfg.output[0].data_type(), DataType::TypeInt64);
    assert_eq!(cfg.instance_group[0].kind(), Kind::Cpu);
    assert_eq!(parameter(&cfg, "threads"), Some("4"));
    assert!(!is_decoupled(&cfg));
    let Some(SchedulingChoice::DynamicBatching(db)) = &cfg.scheduling_choice else {
        panic!("expected dynamic batching");
    };
    assert_eq!(db.max_queue_delay_microseconds, 500);
}

#[test]
fn json_accepts_camel_case_and_enum_numbers() {
    // Plain protobuf JSON printers (not Triton's) write lowerCamel names.
    let cfg =
        parse_json(r#"{"maxBatchSize": 2, "input": [{"dataType": 11, "dims": []}]}"#).unwrap();
    assert_eq!(cfg.max_batch_size, 2);
    assert_eq!(cfg.input[0].data_type(), DataType::TypeFp32);
}

#[test]
fn json_errors_are_reported() {
    assert!(parse_json("{\"max_batch_size\": \"lots\"}").is_err());
    assert!(parse_json("{\"input\": [{\"data_type\": \"TYPE_FLOAT\"}]}").is_err());
    assert!(parse_json("{} trailing").is_err());
}

#[test]
fn to_json_uses_triton_shape() {
    let cfg = parse_pbtxt(FULL).unwrap();
    let value = to_json(&cfg);
    assert_eq!(value["name"], "text_classifier");
    assert_eq!(value["input"][0]["data_type"], "TYPE_STRING");
    // 64-bit ints as numbers, as Triton's config version 1 and pb_utils users expect.
    assert_eq!(value["input"][1]["dims"], json!([-1, 16]));
    assert_eq!(
        value["dynamic_batching"]["max_queue_delay_microseconds"],
        json!(100)
    );
    // Defaults are present, so Python can index them without `.get`.
    assert_eq!(value["platform"], "");
    assert_eq!(value["input"][0]["is_shape_tensor"], false);
    assert_eq!(value["input"][0]["format"], "FORMAT_NONE");
    assert_eq!(value["default_model_filename"], "");
    assert_eq!(value["batch_input"], json!([]));
    // Unset oneof members and messages are absent.
    assert!(value.get("sequence_batching").is_none());
    assert!(value["output"][0].get("reshape").is_none());
    assert_eq!(
        value["parameters"]["tokenizer"]["string_value"],
        "bert-base-uncased"
    );
    assert_eq!(value["model_transaction_policy"]["decoupled"], true);
    assert_eq!(value["instance_group"][1]["kind"], "KIND_GPU");
}

#[test]
fn json_round_trips() {
    let cfg = parse_json(TRITON_JSON).unwrap();
    let again = parse_json(&to_json(&cfg).to_string()).unwrap();
    assert_eq!(cfg, again);

    let full = parse_pbtxt(FULL).unwrap();
    assert_eq!(parse_json(&to_json(&full).to_string()).unwrap(), full);
}

#[test]
fn pbtxt_round_trips() {
    let cfg = parse_pbtxt(FULL).unwrap();
    let text = to_pbtxt(&cfg);
    assert!(text.contains("name: \"text_classifier\""), "{text}");
    assert!(text.contains("data_type: TYPE_STRING"), "{text}");
    assert_eq!(parse_pbtxt(&text).unwrap(), cfg, "{text}");
}
