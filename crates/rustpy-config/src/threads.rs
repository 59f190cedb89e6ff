//! `rustpy.threads`: how many threads the BLAS and OpenMP pools of the
//! process running a model may use (applied with `threadpoolctl`, see
//! docs/performance.md), and the default that never oversubscribes the cores.

use crate::model::parameter;
use crate::proto::ModelConfig;

/// `parameters` key: threads of the BLAS/OpenMP pools per instance.
pub const THREADS_KEY: &str = "rustpy.threads";

/// What `rustpy.threads` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threads {
    /// Unset or `"auto"`: leave the pools alone for a single instance; with
    /// several, give each `cores / instances` (at least 1) so that together
    /// they fit the cores.
    #[default]
    Auto,
    /// A positive number: this many threads, whatever the instance count.
    Fixed(usize),
}

impl Threads {
    /// The limit to apply for a model with `instances` instances on `cores`
    /// cores, or `None`: leave the pools as the libraries sized them.
    pub fn limit(self, instances: usize, cores: usize) -> Option<usize> {
        match self {
            Threads::Fixed(n) => Some(n),
            Threads::Auto if instances > 1 => Some((cores / instances).max(1)),
            Threads::Auto => None,
        }
    }
}

/// Reads `rustpy.threads`: unset, `"auto"` or a positive integer. The error
/// names the parameter and the accepted values.
pub fn threads_setting(cfg: &ModelConfig) -> Result<Threads, String> {
    match parameter(cfg, THREADS_KEY).map(str::trim) {
        None | Some("") | Some("auto") => Ok(Threads::Auto),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Threads::Fixed(n)),
            _ => Err(format!(
                "parameter '{THREADS_KEY}' is \"{text}\"; expected \"auto\" or a positive number of threads"
            )),
        },
    }
}

/// How many instances of the model Triton creates: each group's `count`
/// (Triton's default 1 when unset) times its GPUs (one set per listed GPU);
/// 1 without groups.
pub fn instance_count(cfg: &ModelConfig) -> usize {
    if cfg.instance_group.is_empty() {
        return 1;
    }
    cfg.instance_group
        .iter()
        .map(|g| usize::try_from(g.count).unwrap_or(0).max(1) * g.gpus.len().max(1))
        .sum()
}

/// The cores this process may run on (its affinity and cgroup quota).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The limit for `cfg` on this machine (see [`Threads::limit`]).
pub fn thread_limit(cfg: &ModelConfig) -> Result<Option<usize>, String> {
    Ok(threads_setting(cfg)?.limit(instance_count(cfg), available_cores()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ModelInstanceGroup, ModelParameter};

    fn config(threads: Option<&str>, counts: &[i32]) -> ModelConfig {
        let mut cfg = ModelConfig::default();
        if let Some(v) = threads {
            cfg.parameters.insert(
                THREADS_KEY.into(),
                ModelParameter {
                    string_value: v.into(),
                },
            );
        }
        for &count in counts {
            cfg.instance_group.push(ModelInstanceGroup {
                count,
                ..Default::default()
            });
        }
        cfg
    }

    #[test]
    fn values_parse_or_name_the_parameter() {
        assert_eq!(threads_setting(&config(None, &[])), Ok(Threads::Auto));
        assert_eq!(
            threads_setting(&config(Some(" auto "), &[])),
            Ok(Threads::Auto)
        );
        assert_eq!(
            threads_setting(&config(Some("3"), &[])),
            Ok(Threads::Fixed(3))
        );
        for bad in ["0", "-1", "1.5", "all", "2 threads"] {
            let e = threads_setting(&config(Some(bad), &[])).unwrap_err();
            assert!(
                e.contains("rustpy.threads") && e.contains("\"auto\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn auto_fits_the_instances_into_the_cores() {
        // One instance: the libraries' own sizing (all cores) is kept.
        assert_eq!(Threads::Auto.limit(1, 8), None);
        // Several: instances × threads ≤ cores, never below one thread.
        assert_eq!(Threads::Auto.limit(2, 8), Some(4));
        assert_eq!(Threads::Auto.limit(3, 8), Some(2));
        assert_eq!(Threads::Auto.limit(4, 2), Some(1));
        for instances in 2..10 {
            for cores in 1..17 {
                let n = Threads::Auto.limit(instances, cores).unwrap();
                assert!(
                    n >= 1 && (n == 1 || n * instances <= cores),
                    "{instances} on {cores}: {n}"
                );
            }
        }
        // Asked for: applied as asked, even beyond the cores.
        assert_eq!(Threads::Fixed(6).limit(4, 2), Some(6));
        assert_eq!(Threads::Fixed(1).limit(1, 8), Some(1));
    }

    #[test]
    fn instances_count_groups_and_gpus() {
        assert_eq!(instance_count(&config(None, &[])), 1);
        assert_eq!(instance_count(&config(None, &[0])), 1);
        assert_eq!(instance_count(&config(None, &[2, 3])), 5);
        let mut cfg = config(None, &[2]);
        cfg.instance_group[0].gpus = vec![0, 1];
        assert_eq!(instance_count(&cfg), 4);
        let cfg = config(Some("auto"), &[2]);
        let cores = available_cores();
        assert_eq!(thread_limit(&cfg), Ok(Some((cores / 2).max(1))));
        assert!(thread_limit(&config(Some("x"), &[2])).is_err());
    }
}
