//! `rustpy init NAME --task TASK`: scaffolds a model that runs out of the box.
//!
//! Writes `REPO/NAME/config.pbtxt`, `REPO/NAME/1/model.py` (rustpy's batched
//! API, numpy only), `REPO/NAME/requirements.txt` and, for tasks with
//! classes, `REPO/NAME/labels.txt`.

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
}

impl Scaffold {
    fn new(name: &str, task: Task, max_batch_size: u32, (h, w): (u32, u32)) -> Self {
        let image = || Tensor::new("IMAGE", "TYPE_UINT8", &[h.into(), w.into(), 3]);
        let mut scaffold = Scaffold {
            name: name.to_owned(),
            max_batch_size,
            inputs: Vec::new(),
            outputs: Vec::new(),
            decoupled: false,
            parameters: Vec::new(),
            model_py: String::new(),
            labels: None,
        };
        let template = match task {
            Task::ImageClassification => {
                let mut probs =
                    Tensor::new("PROBS", "TYPE_FP32", &[CLASSIFICATION_LABELS.len() as i64]);
                probs.label_filename = Some("labels.txt");
                scaffold.inputs.push(image());
                scaffold.outputs.push(probs);
                scaffold.labels = Some(CLASSIFICATION_LABELS);
                include_str!("../../templates/image_classification.py")
            }
            Task::TextEmbedding => {
                scaffold
                    .inputs
                    .push(Tensor::new("TEXT", "TYPE_STRING", &[1]));
                scaffold.outputs.push(Tensor::new(
                    "EMBEDDING",
                    "TYPE_FP32",
                    &[EMBEDDING_DIM.into()],
                ));
                include_str!("../../templates/text_embedding.py")
            }
            Task::TextGeneration => {
                scaffold
                    .inputs
                    .push(Tensor::new("PROMPT", "TYPE_STRING", &[1]));
                scaffold
                    .outputs
                    .push(Tensor::new("TOKEN", "TYPE_STRING", &[1]));
                scaffold.decoupled = true;
                scaffold
                    .parameters
                    .push(("max_tokens", MAX_TOKENS.to_string()));
                include_str!("../../templates/text_generation.py")
            }
            Task::ObjectDetection => {
                // Dim 0 of a batched output must be the batch size, so every
                // image reports exactly MAX_DETECTIONS rows (padded).
                let n = i64::from(MAX_DETECTIONS);
                scaffold.inputs.push(image());
                scaffold.outputs.extend([
                    Tensor::new("BOXES", "TYPE_FP32", &[n, 4]),
                    Tensor::new("SCORES", "TYPE_FP32", &[n]),
                    Tensor::new("CLASSES", "TYPE_INT32", &[n]),
                ]);
                scaffold.labels = Some(DETECTION_LABELS);
                include_str!("../../templates/object_detection.py")
            }
            Task::Passthrough => {
                scaffold
                    .inputs
                    .push(Tensor::new("INPUT0", "TYPE_FP32", &[-1]));
                scaffold
                    .outputs
                    .push(Tensor::new("OUTPUT0", "TYPE_FP32", &[-1]));
                include_str!("../../templates/passthrough.py")
            }
        };
        scaffold.model_py = template
            .replace("{{name}}", name)
            .replace("{{dim}}", &EMBEDDING_DIM.to_string())
            .replace("{{max_detections}}", &MAX_DETECTIONS.to_string())
            .replace("{{max_tokens}}", &MAX_TOKENS.to_string());
        scaffold
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
        for (path, contents) in &files {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::write(path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(files.into_iter().map(|(path, _)| path).collect())
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
