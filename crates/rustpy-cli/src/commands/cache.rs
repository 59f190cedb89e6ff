//! `rustpy cache prune`: delete the environments unpacked from
//! `EXECUTION_ENV_PATH` archives (`$RUSTPY_CACHE/envs/<sha256>/`) that no
//! loaded model uses (rustpy_fetch::env::prune_envs; a server holds a lock on
//! each environment its models use, so those are never deleted).

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::{cli::CachePruneArgs, Error, Global, Result, Status};
use rustpy_fetch::env::{prune_envs, PruneAction};

#[derive(Debug, Serialize)]
struct Entry {
    sha256: String,
    dir: std::path::PathBuf,
    bytes: u64,
    /// Seconds since the last use; absent for an incomplete entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_secs_ago: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<String>,
    /// "removed" (or, with --dry-run, would be), "in use", "recent", "busy".
    action: &'static str,
    dry_run: bool,
}

/// "30d", "12h", "90m", "45s", "2w" (a number and one unit).
pub fn parse_age(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("--older-than '{text}': expected a number and a unit (s, m, h, d, w), e.g. 30d")
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "--older-than '{text}': unknown unit '{unit}' (use s, m, h, d or w)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

pub fn prune(global: &Global, args: CachePruneArgs) -> Result {
    let older_than = args
        .older_than
        .as_deref()
        .map(parse_age)
        .transpose()
        .map_err(Error::usage)?;
    let mut opts = rustpy_fetch::Options::from_env();
    if let Some(dir) = &args.cache_dir {
        opts.cache_dir = dir.clone();
    }
    let entries = prune_envs(&opts.cache_dir, older_than, args.dry_run).map_err(|e| {
        Error::Runtime(anyhow::anyhow!(
            "pruning {}: {e}",
            opts.cache_dir.join("envs").display()
        ))
    })?;
    let now = SystemTime::now();
    let out: Vec<Entry> = entries
        .into_iter()
        .map(|e| Entry {
            last_used_secs_ago: e
                .last_used
                .map(|t| now.duration_since(t).unwrap_or_default().as_secs()),
            sha256: e.sha256,
            dir: e.dir,
            bytes: e.bytes,
            archive: e.archive,
            action: e.action.name(),
            dry_run: args.dry_run,
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).map_err(|e| Error::Runtime(e.into()))?
        );
        return Ok(Status::Success);
    }
    let removed = PruneAction::Removed.name();
    let freed: u64 = out
        .iter()
        .filter(|e| e.action == removed)
        .map(|e| e.bytes)
        .sum();
    for e in &out {
        let verb = match (e.action, args.dry_run) {
            (a, true) if a == removed => "would remove",
            (a, false) if a == removed => "removed",
            (a, _) => a,
        };
        println!(
            "{verb:<12} {} {:>10} {}",
            &e.sha256[..12.min(e.sha256.len())],
            human(e.bytes),
            e.archive.as_deref().unwrap_or("(incomplete)")
        );
    }
    global.status(format!(
        "{} {} environment(s), {} ({} kept) in {}",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        },
        out.iter().filter(|e| e.action == removed).count(),
        human(freed),
        out.iter().filter(|e| e.action != removed).count(),
        opts.cache_dir.join("envs").display()
    ));
    Ok(Status::Success)
}
