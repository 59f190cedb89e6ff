//! The typed model of Triton's model configuration (`config.pbtxt`).
//!
//! [`proto`] holds the prost types generated from rustpy's own declaration of
//! Triton's `ModelConfig` schema. Text format and JSON go through prost-reflect
//! on a [`DynamicMessage`] built from the same schema and are then transcoded
//! into the prost types, so there is exactly one schema and no hand-written
//! parser (the small token scanner in `scan` only locates positions for
//! diagnostics and adds the colon prost-reflect wants in `input [ ... ]`).
//!
//! - [`parse_pbtxt`] / [`to_pbtxt`]: protobuf text format, as in `config.pbtxt`.
//! - [`parse_json`] / [`to_json`]: protobuf JSON with the original (snake_case)
//!   field names, as Triton hands a backend its config.
//! - [`model`]: helpers the backend and the CLI share.
//! - [`repo`]: repository layout by Triton's rules: model and version
//!   directories, model files (the core and the CLI discover models here).
//! - [`check`]: model repository validation (`rustpy check`), one file per
//!   group of rules; [`diagnostic`]: what it reports and how that renders.
//! - [`checkpoint`]: the checkpoint source a model declares.
//! - [`params`]: typed request parameters a model declares.
//! - [`pyenv`]: the Python version of a per-model environment.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};

pub mod check;
pub mod checkpoint;
pub mod diagnostic;
pub mod failures;
pub mod model;
pub mod params;
mod pbtxt;
pub mod pyenv;
pub mod repo;
mod scan;
pub mod threads;

/// Types generated from `proto/model_config.proto` (protobuf package `inference`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

pub use model::{is_decoupled, parameter};
pub use pbtxt::{parse_pbtxt, to_pbtxt, PbtxtError};

/// Encoded `FileDescriptorSet` of `model_config.proto`, for reflection.
const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model_config.fds"));

/// Full protobuf name of the top-level message.
const MODEL_CONFIG: &str = "inference.ModelConfig";

/// The descriptor pool for [`FILE_DESCRIPTOR_SET`], decoded once.
pub(crate) fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The bytes are produced by our own build script, so failing here is a
        // build bug, not a runtime condition.
        DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("embedded descriptor set is valid")
    })
}

/// The reflection descriptor of `inference.ModelConfig`.
pub fn model_config_descriptor() -> MessageDescriptor {
    descriptor_pool()
        .get_message_by_name(MODEL_CONFIG)
        .expect("inference.ModelConfig is in the embedded descriptor set")
}

/// Any failure to turn input into a [`proto::ModelConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid model config JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid config.pbtxt: {0}")]
    Pbtxt(#[from] PbtxtError),
}

/// Parses the JSON Triton produces for a model config (`TRITONBACKEND_ModelConfig`).
///
/// Accepts the protobuf JSON mapping with original or lowerCamel field names,
/// 64-bit integers as numbers or strings (Triton's config version 1 turns
/// most of them into numbers, plain protobuf JSON uses strings) and enums as
/// names or numbers. Unknown fields are ignored so a newer server's config
/// still loads.
pub fn parse_json(json: &str) -> Result<proto::ModelConfig, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize_with_options(
        model_config_descriptor(),
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )?;
    de.end()?;
    Ok(transcode(&message))
}

/// Serializes a config as JSON in the shape Triton gives backends and the
/// official Python backend gives `TritonPythonModel` (`args["model_config"]`):
/// original proto field names, enums as names, every scalar/repeated/map field
/// present even when default, and 64-bit integers as JSON numbers (so Python
/// sees `"dims": [4]`). Triton parses this back with `TRITONBACKEND_ModelSetConfig`.
pub fn to_json(cfg: &proto::ModelConfig) -> serde_json::Value {
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    to_dynamic(cfg)
        .serialize_with_options(serde_json::value::Serializer, &options)
        // Serializing into a `Value` only fails for non-string map keys, and
        // prost-reflect always writes map keys as strings.
        .expect("a model config always serializes to JSON")
}

pub(crate) fn to_dynamic(cfg: &proto::ModelConfig) -> DynamicMessage {
    DynamicMessage::decode(model_config_descriptor(), cfg.encode_to_vec().as_slice())
        .expect("prost and reflection types share one schema")
}

pub(crate) fn transcode(message: &DynamicMessage) -> proto::ModelConfig {
    message
        .transcode_to()
        .expect("prost and reflection types share one schema")
}
