//! Rules on inputs and outputs: names, data types, dims, reshapes, label
//! files, and a batch dimension written into dims.

use std::{collections::HashSet, fs};

use super::Rules;
use crate::{
    diagnostic::Severity,
    model::element_count,
    proto::{DataType, ModelTensorReshape},
};

/// The parts of a `ModelInput` / `ModelOutput` that share rules.
struct Tensor<'c> {
    name: &'c str,
    data_type: i32,
    dims: &'c [i64],
    reshape: Option<&'c ModelTensorReshape>,
}

impl Rules<'_, '_> {
    pub(super) fn io(&mut self) {
        let cfg = self.cfg;
        let inputs = cfg.input.iter().map(|i| Tensor {
            name: &i.name,
            data_type: i.data_type,
            dims: &i.dims,
            reshape: i.reshape.as_ref(),
        });
        self.tensors("input", inputs);
        let outputs = cfg.output.iter().map(|o| Tensor {
            name: &o.name,
            data_type: o.data_type,
            dims: &o.dims,
            reshape: o.reshape.as_ref(),
        });
        self.tensors("output", outputs);

        for (i, output) in cfg.output.iter().enumerate() {
            if output.label_filename.is_empty() {
                continue;
            }
            let block = self.loc.element(&self.root(), "output", i);
            let at = block.and_then(|b| self.loc.field(&b, "label_filename"));
            let path = self.dir.join(&output.label_filename);
            match fs::read_to_string(&path) {
                Err(err) => self.push(
                    Severity::Error,
                    at,
                    "output.label-file",
                    format!(
                        "label file '{}' of output '{}' cannot be read: {err}",
                        output.label_filename, output.name
                    ),
                    format!(
                        "create {} (one label per line) or remove label_filename",
                        path.display()
                    ),
                ),
                Ok(labels) => {
                    let count = labels.lines().count();
                    if let Some(expected) =
                        element_count(&output.dims).filter(|_| !output.dims.is_empty())
                    {
                        if usize::try_from(expected).ok() != Some(count) {
                            self.push(
                                Severity::Error,
                                at,
                                "output.label-count",
                                format!(
                                    "label file '{}' has {count} lines but output '{}' has {expected} elements",
                                    output.label_filename, output.name
                                ),
                                "write exactly one label per output element".into(),
                            );
                        }
                    }
                }
            }
        }

        // A clear sign that the batch dimension was written into dims: with
        // batching on, every tensor starts with exactly max_batch_size.
        let mbs = i64::from(cfg.max_batch_size);
        let all_dims: Vec<&Vec<i64>> = cfg
            .input
            .iter()
            .map(|i| &i.dims)
            .chain(cfg.output.iter().map(|o| &o.dims))
            .collect();
        if mbs > 1 && !all_dims.is_empty() && all_dims.iter().all(|d| d.len() >= 2 && d[0] == mbs) {
            let at = self
                .loc
                .element(&self.root(), "input", 0)
                .or_else(|| self.loc.element(&self.root(), "output", 0))
                .and_then(|b| self.loc.field(&b, "dims"));
            self.push(
                Severity::Warning,
                at,
                "io.batch-dim",
                format!("every tensor's dims start with {mbs} = max_batch_size; dims should not include the batch dimension"),
                "with max_batch_size > 0, Triton adds the batch dimension itself: drop the leading dimension from dims".into(),
            );
        }
    }

    /// Rules shared by inputs and outputs (`what` is the config field name).
    fn tensors<'c>(&mut self, what: &str, tensors: impl Iterator<Item = Tensor<'c>>) {
        let blocks = self.loc.elements(&self.root(), what);
        let mut seen = HashSet::new();
        for (i, tensor) in tensors.enumerate() {
            let Tensor {
                name,
                data_type: dtype,
                dims,
                reshape,
            } = tensor;
            let block = blocks.get(i);
            let field = |f: &str| block.and_then(|b| self.loc.field(b, f));
            let name_at = field("name").or_else(|| block.and_then(|b| b.first_token()));
            let label = if name.is_empty() {
                format!("{what} #{}", i + 1)
            } else {
                format!("{what} '{name}'")
            };

            if name.is_empty() {
                self.push(
                    Severity::Error,
                    name_at,
                    "io.name-missing",
                    format!("{label} has no name"),
                    format!("add name: \"...\" to the {what}"),
                );
            } else if !seen.insert(name) {
                self.push(
                    Severity::Error,
                    name_at,
                    "io.duplicate-name",
                    format!("{label} is declared more than once"),
                    format!("give each {what} a unique name"),
                );
            }

            if DataType::try_from(dtype).map_or(true, |d| d == DataType::TypeInvalid) {
                let at = field("data_type").or(name_at);
                self.push(
                    Severity::Error,
                    at,
                    "io.data-type",
                    format!("{label} has no valid data_type"),
                    "set data_type, e.g. TYPE_FP32, TYPE_INT64 or TYPE_STRING".into(),
                );
            }

            if dims.is_empty() {
                self.push(
                    Severity::Error,
                    field("dims").or(name_at),
                    "io.dims-missing",
                    format!("{label} has no dims"),
                    "Triton requires dims; use dims: [ 1 ] for a single value per batch item"
                        .into(),
                );
            }
            for &d in dims.iter().filter(|&&d| d == 0 || d < -1) {
                let at = block.and_then(|b| self.loc.value_of(b, "dims", &d.to_string()));
                self.push(
                    Severity::Error,
                    at,
                    "io.dims-invalid",
                    format!("{label} has dimension {d}"),
                    "each dimension must be >= 1, or -1 for a variable size".into(),
                );
            }

            if let Some(reshape) = reshape {
                let from = element_count(dims);
                let to = element_count(&reshape.shape);
                // An empty reshape of a one-element tensor is allowed (scalar view).
                let scalar_view = reshape.shape.is_empty() && from == Some(1);
                if let (Some(from), Some(to), false) = (from, to, scalar_view) {
                    if from != to && !dims.is_empty() {
                        let at = block.and_then(|b| self.loc.field(b, "reshape"));
                        self.push(
                            Severity::Error,
                            at,
                            "io.reshape-mismatch",
                            format!("{label} has {from} elements but its reshape has {to}"),
                            "reshape must keep the element count of dims".into(),
                        );
                    }
                }
            }
        }
    }
}
