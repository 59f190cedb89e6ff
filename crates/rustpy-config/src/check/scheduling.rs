//! Rules on scheduling: dynamic/sequence batching and instance groups.

use super::Rules;
use crate::{
    diagnostic::Severity,
    proto::{
        model_config::SchedulingChoice, model_instance_group::Kind,
        model_sequence_batching::StrategyChoice,
    },
    scan::Block,
};

impl Rules<'_, '_> {
    pub(super) fn scheduling(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        match &cfg.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(db)) => {
                let block = self.loc.element(&root, "dynamic_batching", 0);
                if cfg.max_batch_size == 0 {
                    let at = self.loc.field(&root, "dynamic_batching");
                    self.push(
                        Severity::Error,
                        at,
                        "batching.unbatched-model",
                        "dynamic_batching is set but max_batch_size is 0".into(),
                        "set max_batch_size to the largest batch the model accepts, or remove dynamic_batching".into(),
                    );
                } else {
                    self.preferred_sizes(&db.preferred_batch_size, block.as_ref());
                }
                if db.priority_levels != 0
                    && !(1..=db.priority_levels).contains(&db.default_priority_level)
                {
                    let at = block.as_ref().and_then(|b| {
                        self.loc
                            .field(b, "default_priority_level")
                            .or_else(|| self.loc.field(b, "priority_levels"))
                    });
                    self.push(
                        Severity::Error,
                        at,
                        "batching.priority-level",
                        format!(
                            "default_priority_level {} is outside 1..={}",
                            db.default_priority_level, db.priority_levels
                        ),
                        "set default_priority_level between 1 and priority_levels".into(),
                    );
                }
            }
            Some(SchedulingChoice::SequenceBatching(sb)) => {
                if let Some(StrategyChoice::Oldest(oldest)) = &sb.strategy_choice {
                    let block = self
                        .loc
                        .element(&root, "sequence_batching", 0)
                        .and_then(|b| self.loc.element(&b, "oldest", 0));
                    self.preferred_sizes(&oldest.preferred_batch_size, block.as_ref());
                }
            }
            _ => {}
        }
    }

    fn preferred_sizes(&mut self, sizes: &[i32], block: Option<&Block>) {
        let mbs = self.cfg.max_batch_size;
        for &size in sizes.iter().filter(|&&s| s <= 0 || s > mbs) {
            let at = block.and_then(|b| {
                self.loc
                    .value_of(b, "preferred_batch_size", &size.to_string())
            });
            self.push(
                Severity::Error,
                at,
                "batching.preferred-size",
                format!("preferred batch size {size} is not in 1..={mbs} (max_batch_size)"),
                "each preferred_batch_size must be > 0 and <= max_batch_size".into(),
            );
        }
    }

    pub(super) fn instance_groups(&mut self) {
        let root = self.root();
        for (i, group) in self.cfg.instance_group.iter().enumerate() {
            let block = self.loc.element(&root, "instance_group", i);
            let label = if group.name.is_empty() {
                format!("instance_group #{}", i + 1)
            } else {
                format!("instance_group '{}'", group.name)
            };
            let count_at = block.as_ref().and_then(|b| self.loc.field(b, "count"));
            // proto3 cannot tell `count: 0` from no count (Triton then uses its
            // default), so only an explicitly written 0 is reported.
            if group.count < 0 || (group.count == 0 && count_at.is_some()) {
                let severity = if group.count < 0 {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                self.push(
                    severity,
                    count_at,
                    "instance-group.count",
                    format!("{label} has count {}", group.count),
                    "count is the number of instances and must be >= 1 (0 means Triton's default)"
                        .into(),
                );
            }
            let kind = Kind::try_from(group.kind);
            if kind.is_err() {
                self.push(
                    Severity::Error,
                    block.as_ref().and_then(|b| self.loc.field(b, "kind")),
                    "instance-group.kind",
                    format!("{label} has unknown kind {}", group.kind),
                    "use KIND_CPU, KIND_GPU, KIND_MODEL or KIND_AUTO".into(),
                );
            } else if matches!(kind, Ok(Kind::Cpu | Kind::Model)) && !group.gpus.is_empty() {
                self.push(
                    Severity::Error,
                    block.as_ref().and_then(|b| self.loc.field(b, "gpus")),
                    "instance-group.gpus",
                    format!(
                        "{label} lists gpus but its kind is {}",
                        group.kind().as_str_name()
                    ),
                    "remove gpus, or use kind: KIND_GPU".into(),
                );
            }
        }
    }
}
