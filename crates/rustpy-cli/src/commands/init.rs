//! `rustpy init NAME --task TASK`: scaffolds a model that runs out of the box.
//!
//! Writes `REPO/NAME/config.pbtxt`, `REPO/NAME/1/model.py` (rustpy's batched
//! API, numpy only), `REPO/NAME/requirements.txt`,
//! `REPO/NAME/request_parameters.json` (the typed request parameters the
//! template reads), `REPO/NAME/tests/basic.json` (a golden case for
//! `rustpy test`, its outputs recorded by running the new model) and, for
//! tasks with classes, `REPO/NAME/labels.txt`.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    cli::{InitArgs, Task},
    Error, Global, Result, Status,
};

const DEFAULT_IMAGE_SHAPE: (u32, u32) = (224, 224);
const EMBEDDING_DIM: u32 = 384;
const MAX_DETECTIONS: u32 = 10;
const MAX_TOKENS: u32 = 16;

const CLASSIFICATION_LABELS: &[&str] = &[
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
const DETECTION_LABELS: &[&str] = &["red", "green", "blue"];

const REQUIREMENTS: &str = "\
# Python packages this model needs at run time, for the interpreter that the
# rustpy backend embeds (e.g. Debian's python3-numpy).
numpy
";

pub fn run(global: &Global, args: InitArgs) -> Result {
    validate_name(&args.name)?;
    let is_image_task = matches!(args.task, Task::ImageClassification | Task::ObjectDetection);
    if args.image_shape.is_some() && !is_image_task {
        return Err(Error::usage(format!(
            "--image-shape only applies to image tasks, not `{}`",
            task_name(args.task)
        )));
    }

    let model_dir = args.repo.join(&args.name);
    if !args.force && is_non_empty_dir(&model_dir)? {
        return Err(Error::usage(format!(
            "{} already exists; pass --force to overwrite its scaffolded files",
            model_dir.display()
        )));
    }

    let mut scaffold = Scaffold::new(
        &args.name,
        args.task,
        args.max_batch_size,
        args.image_shape.unwrap_or(DEFAULT_IMAGE_SHAPE),
    );
    if let Some(source) = &args.checkpoint {
        use rustpy_config::checkpoint::{Checkpoint, SHA256_PARAMETER, SOURCE_PARAMETER};
        Checkpoint::new(source, args.checkpoint_sha256.clone(), None, None, None)
            .map_err(Error::usage)?;
        if source.contains(['"', '\\']) {
            return Err(Error::usage(
                "--checkpoint may not contain quotes or backslashes",
            ));
        }
        scaffold.parameters.push((SOURCE_PARAMETER, source.clone()));
        if let Some(sha) = &args.checkpoint_sha256 {
            scaffold
                .parameters
                .push((SHA256_PARAMETER, sha.to_ascii_lowercase()));
        }
    }
    let written = scaffold.write(&model_dir)?;

    for path in &written {
        global.status(format!("  created {}", path.display()));
    }
    global.status(format!(
        "Scaffolded `{}` ({}). Next: `rustpy check {}` and `rustpy serve {}`.",
        args.name,
        task_name(args.task),
        model_dir.display(),
        args.repo.display()
    ));
    Ok(Status::Success)
}

fn task_name(task: Task) -> String {
    use clap::ValueEnum as _;
    task.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_else(|| format!("{task:?}"))
}

/// Names become directory names and Triton model names: keep them portable.
fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if name.is_empty() || !ok_chars || name.starts_with(['.', '-']) {
        return Err(Error::usage(format!(
            "invalid model name `{name}`: use letters, digits, `_`, `-` and `.`, \
             not starting with `.` or `-`"
        )));
    }
    Ok(())
}

fn is_non_empty_dir(path: &Path) -> Result<bool> {
    if path.exists() && !path.is_dir() {
        return Err(Error::usage(format!(
            "{} exists and is not a directory",
            path.display()
        )));
    }
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot read {}", path.display()))
            .into()),
    }
}

struct Tensor {
    name: &'static str,
    data_type: &'static str,
    dims: Vec<i64>,
    label_filename: Option<&'static str>,
}

impl Tensor {
    fn new(name: &'static str, data_type: &'static str, dims: &[i64]) -> Self {
        Tensor {
            name,
            data_type,
            dims: dims.to_vec(),
            label_filename: None,
        }
    }
}

/// Everything `init` writes for one model.
struct Scaffold {
    name: String,
    max_batch_size: u32,
    inputs: Vec<Tensor>,
    outputs: Vec<Tensor>,
    decoupled: bool,
    parameters: Vec<(&'static str, String)>,
    model_py: String,
    labels: Option<&'static [&'static str]>,
    /// `request_parameters.json`.
    request_parameters: String,
    /// The golden case's requests (inputs and parameters; outputs are recorded).
    test_case: serde_json::Value,
}

/// The IMAGE input of the image tasks (UINT8, height x width x RGB).
fn image_input((h, w): (u32, u32)) -> Tensor {
    Tensor::new("IMAGE", "TYPE_UINT8", &[h.into(), w.into(), 3])
}

/// The golden case of the image tasks: two images in one batch, the second
/// with request parameters.
fn image_case(
    (h, w): (u32, u32),
    fills: [serde_json::Value; 2],
    params: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "description": "two images in one batch, the second with request parameters",
        "requests": [
            {"inputs": {"IMAGE": {"shape": [h, w, 3], "fill": fills[0]}}},
            {"inputs": {"IMAGE": {"shape": [h, w, 3], "fill": fills[1]}}, "parameters": params}
        ]
    })
}

impl Scaffold {
    fn new(name: &str, task: Task, max_batch_size: u32, (h, w): (u32, u32)) -> Self {
        let mut scaffold = Scaffold {
            name: name.to_owned(),
            max_batch_size,
            inputs: Vec::new(),
            outputs: Vec::new(),
            decoupled: false,
            parameters: Vec::new(),
            model_py: String::new(),
            labels: None,
            request_parameters: String::new(),
            test_case: serde_json::Value::Null,
        };
        let template = match task {
            Task::ImageClassification => scaffold.image_classification((h, w)),
            Task::TextEmbedding => scaffold.text_embedding(),
            Task::TextGeneration => scaffold.text_generation(),
            Task::ObjectDetection => scaffold.object_detection((h, w)),
            Task::Passthrough => scaffold.passthrough(),
        };
        scaffold.model_py = template
            .replace("{{name}}", name)
            .replace("{{dim}}", &EMBEDDING_DIM.to_string())
            .replace("{{max_detections}}", &MAX_DETECTIONS.to_string());
        scaffold
    }

    /// image-classification: an image in, class probabilities out.
    fn image_classification(&mut self, (h, w): (u32, u32)) -> &'static str {
        let mut probs = Tensor::new("PROBS", "TYPE_FP32", &[CLASSIFICATION_LABELS.len() as i64]);
        probs.label_filename = Some("labels.txt");
        self.inputs.push(image_input((h, w)));
        self.outputs.push(probs);
        self.labels = Some(CLASSIFICATION_LABELS);
        self.request_parameters = declaration(&[
            format!(
                r#"{{"name": "top_k", "type": "int", "default": 0, "min": 0, "max": {}, "description": "keep only the k highest probabilities (0: all)"}}"#,
                CLASSIFICATION_LABELS.len()
            ),
            r#"{"name": "threshold", "type": "float", "default": 0.0, "min": 0, "max": 1, "description": "zero the probabilities below this"}"#.into(),
        ]);
        self.test_case = image_case(
            (h, w),
            [0.into(), "ramp".into()],
            serde_json::json!({"top_k": 3}),
        );
        include_str!("../../templates/image_classification.py")
    }

    /// text-embedding: a text in, its embedding out.
    fn text_embedding(&mut self) -> &'static str {
        self.inputs.push(Tensor::new("TEXT", "TYPE_STRING", &[1]));
        self.outputs.push(Tensor::new(
            "EMBEDDING",
            "TYPE_FP32",
            &[EMBEDDING_DIM.into()],
        ));
        self.request_parameters = declaration(&[
            r#"{"name": "normalize", "type": "bool", "default": true, "description": "L2-normalise the embedding"}"#.into(),
        ]);
        self.test_case = serde_json::json!({
            "description": "two texts in one batch, the second not normalised",
            "requests": [
                {"inputs": {"TEXT": ["hello world"]}},
                {"inputs": {"TEXT": ["rust and python"]}, "parameters": {"normalize": false}}
            ]
        });
        include_str!("../../templates/text_embedding.py")
    }

    /// text-generation: a prompt in, tokens streamed out (decoupled).
    fn text_generation(&mut self) -> &'static str {
        self.inputs.push(Tensor::new("PROMPT", "TYPE_STRING", &[1]));
        self.outputs.push(Tensor::new("TOKEN", "TYPE_STRING", &[1]));
        self.decoupled = true;
        self.request_parameters = declaration(&[
            format!(
                r#"{{"name": "max_tokens", "type": "int", "default": {MAX_TOKENS}, "min": 1, "max": 256, "description": "number of tokens to stream"}}"#
            ),
            r#"{"name": "temperature", "type": "float", "default": 1.0, "min": 0, "max": 2, "description": "0: repeat the prompt's words; otherwise sample"}"#.into(),
        ]);
        self.test_case = serde_json::json!({
            "description": "a short greedy stream",
            "inputs": {"PROMPT": ["once upon a time"]},
            "parameters": {"max_tokens": 3, "temperature": 0}
        });
        include_str!("../../templates/text_generation.py")
    }

    /// object-detection: an image in, padded boxes, scores, classes, labels out.
    fn object_detection(&mut self, (h, w): (u32, u32)) -> &'static str {
        // Dim 0 of a batched output must be the batch size, so every
        // image reports exactly MAX_DETECTIONS rows (padded).
        let n = i64::from(MAX_DETECTIONS);
        self.inputs.push(image_input((h, w)));
        self.outputs.extend([
            Tensor::new("BOXES", "TYPE_FP32", &[n, 4]),
            Tensor::new("SCORES", "TYPE_FP32", &[n]),
            Tensor::new("CLASSES", "TYPE_INT32", &[n]),
            Tensor::new("LABELS", "TYPE_STRING", &[n]),
        ]);
        self.labels = Some(DETECTION_LABELS);
        self.request_parameters = declaration(&[
            r#"{"name": "score_threshold", "type": "float", "default": 0.05, "min": 0, "max": 1, "description": "drop weaker detections"}"#.into(),
        ]);
        self.test_case = image_case(
            (h, w),
            ["ramp".into(), "ramp".into()],
            serde_json::json!({"score_threshold": 0.15}),
        );
        include_str!("../../templates/object_detection.py")
    }

    /// passthrough: an FP32 vector in, scaled out.
    fn passthrough(&mut self) -> &'static str {
        self.inputs.push(Tensor::new("INPUT0", "TYPE_FP32", &[-1]));
        self.outputs
            .push(Tensor::new("OUTPUT0", "TYPE_FP32", &[-1]));
        self.request_parameters = declaration(&[
            r#"{"name": "scale", "type": "float", "default": 1.0, "min": -1000, "max": 1000, "description": "multiply the input by this"}"#.into(),
        ]);
        self.test_case = serde_json::json!({
            "description": "two requests in one batch; a scale out of range fails only its request",
            "requests": [
                {"inputs": {"INPUT0": [1.0, 2.0, 3.0]}, "outputs": {"OUTPUT0": [[1.0, 2.0, 3.0]]}},
                {"inputs": {"INPUT0": [1.0, 2.0, 3.0]}, "parameters": {"scale": 2.0}},
                {"inputs": {"INPUT0": [1.0, 2.0, 3.0]}, "parameters": {"scale": 5000},
                 "error": "request parameter 'scale' is 5000.0, above the maximum 1000"}
            ]
        });
        include_str!("../../templates/passthrough.py")
    }

    /// Writes the files and returns their paths.
    fn write(&self, model_dir: &Path) -> Result<Vec<PathBuf>> {
        let mut files = vec![
            (model_dir.join("config.pbtxt"), self.config_pbtxt()),
            (model_dir.join("1").join("model.py"), self.model_py.clone()),
            (model_dir.join("requirements.txt"), REQUIREMENTS.to_owned()),
        ];
        if let Some(labels) = self.labels {
            files.push((model_dir.join("labels.txt"), labels.join("\n") + "\n"));
        }
        files.push((
            model_dir.join(rustpy_config::params::REQUEST_PARAMETERS_FILE),
            self.request_parameters.clone(),
        ));
        for (path, contents) in &files {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::write(path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut written: Vec<PathBuf> = files.into_iter().map(|(path, _)| path).collect();
        written.push(self.write_test_case(model_dir)?);
        Ok(written)
    }

    /// Writes `tests/basic.json` with the outputs the new model produces for
    /// the template's requests (without them, when the model cannot run
    /// here, e.g. numpy is missing: the case then only checks for success).
    fn write_test_case(&self, model_dir: &Path) -> Result<PathBuf> {
        let dir = model_dir.join(super::test::TESTS_DIR);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let case =
            super::test::record_case(model_dir, self.test_case.clone()).unwrap_or_else(|e| {
                eprintln!("warning: could not run the new model to record its test outputs: {e:#}");
                self.test_case.clone()
            });
        let path = dir.join("basic.json");
        let text = readable_json(&case, 0) + "\n";
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Renders config.pbtxt in protobuf text format, laid out like Triton's docs.
    fn config_pbtxt(&self) -> String {
        let mut out = String::new();
        // `write!` to a String cannot fail.
        let _ = writeln!(out, "name: \"{}\"", self.name);
        let _ = writeln!(out, "backend: \"rustpy\"");
        let _ = writeln!(out, "max_batch_size: {}", self.max_batch_size);
        write_tensors(&mut out, "input", &self.inputs);
        write_tensors(&mut out, "output", &self.outputs);
        if self.decoupled {
            out.push_str(
                "\n# Streaming: predict() is a generator and each yield is one response.\n",
            );
            out.push_str("model_transaction_policy {\n  decoupled: true\n}\n");
        }
        if self.max_batch_size > 0 {
            out.push_str("\ndynamic_batching { }\n");
        }
        out.push_str("\ninstance_group [\n  {\n    kind: KIND_CPU\n    count: 1\n  }\n]\n");
        for (key, value) in &self.parameters {
            let _ = write!(
                out,
                "\nparameters: {{\n  key: \"{key}\"\n  value: {{ string_value: \"{value}\" }}\n}}\n"
            );
        }
        out
    }
}

/// JSON with objects (and lists of objects) laid out one entry per line and
/// other lists (tensor data) kept on one line.
fn readable_json(v: &serde_json::Value, indent: usize) -> String {
    use serde_json::Value;
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{pad}{}: {}",
                        Value::from(k.as_str()),
                        readable_json(v, indent + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{end}}}", items.join(",\n"))
        }
        Value::Array(list) if list.iter().any(Value::is_object) => {
            let items: Vec<String> = list
                .iter()
                .map(|v| format!("{pad}{}", readable_json(v, indent + 1)))
                .collect();
            format!("[\n{}\n{end}]", items.join(",\n"))
        }
        other => other.to_string(),
    }
}

/// `request_parameters.json` with these parameter objects, refusing
/// undeclared parameters.
fn declaration(params: &[String]) -> String {
    format!(
        "{{\n  \"allow_unknown\": false,\n  \"parameters\": [\n    {}\n  ]\n}}\n",
        params.join(",\n    ")
    )
}

fn write_tensors(out: &mut String, kind: &str, tensors: &[Tensor]) {
    let _ = writeln!(out, "\n{kind} [");
    for (i, t) in tensors.iter().enumerate() {
        let dims = t
            .dims
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  {{");
        let _ = writeln!(out, "    name: \"{}\"", t.name);
        let _ = writeln!(out, "    data_type: {}", t.data_type);
        let _ = writeln!(out, "    dims: [ {dims} ]");
        if let Some(labels) = t.label_filename {
            let _ = writeln!(out, "    label_filename: \"{labels}\"");
        }
        let sep = if i + 1 < tensors.len() { "," } else { "" };
        let _ = writeln!(out, "  }}{sep}");
    }
    out.push_str("]\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("resnet50_v1.5-int8").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a\\b", "..", "ü"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batching_follows_max_batch_size() {
        let batched = Scaffold::new("m", Task::Passthrough, 4, DEFAULT_IMAGE_SHAPE).config_pbtxt();
        assert!(batched.contains("max_batch_size: 4"));
        assert!(batched.contains("dynamic_batching { }"));
        let single = Scaffold::new("m", Task::Passthrough, 0, DEFAULT_IMAGE_SHAPE).config_pbtxt();
        assert!(!single.contains("dynamic_batching"));
    }

    #[test]
    fn templates_are_fully_rendered() {
        for task in [
            Task::ImageClassification,
            Task::TextEmbedding,
            Task::TextGeneration,
            Task::ObjectDetection,
            Task::Passthrough,
        ] {
            let s = Scaffold::new("m", task, 8, (32, 48));
            assert!(!s.model_py.contains("{{"), "{task:?}");
            assert!(s.model_py.contains("class Model"), "{task:?}");
        }
        let cfg = Scaffold::new("m", Task::ImageClassification, 8, (32, 48)).config_pbtxt();
        assert!(cfg.contains("dims: [ 32, 48, 3 ]"), "{cfg}");
        assert!(cfg.contains("label_filename: \"labels.txt\""));
        let gen = Scaffold::new("m", Task::TextGeneration, 8, (1, 1)).config_pbtxt();
        assert!(gen.contains("decoupled: true"));
    }
}
