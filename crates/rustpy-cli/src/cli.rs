//! Command-line syntax (clap derive types). The commands' logic lives in
//! `commands/`; nothing here touches the file system.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, check, package and serve Triton model repositories for the rustpy backend.
#[derive(Debug, Parser)]
#[command(
    name = "rustpy",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 check/verification failed, 2 usage error, \
                        4 runtime error; `serve` exits with tritonserver's code."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print only results and errors: no progress bars or status messages.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a model (config.pbtxt, 1/model.py, requirements.txt, labels.txt).
    Init(InitArgs),
    /// Check a model repository, or one model, for configuration and Python errors.
    Check(CheckArgs),
    /// Fetch every model's rustpy.checkpoint into the cache (RUSTPY_CACHE).
    Fetch(FetchArgs),
    /// Install every in-process model's requirements.txt into one directory with pip.
    Env(EnvArgs),
    /// Package a model repository into a deterministic zip, or verify one.
    Zip(ZipArgs),
    /// Verify and safely extract an archive made by `rustpy zip`.
    Unzip(UnzipArgs),
    /// Run tritonserver on a model repository with the rustpy backend.
    Serve(ServeArgs),
    /// Run a model locally without tritonserver, with the backend's own core.
    Run(RunArgs),
    /// Run the golden cases kept with each model (<model>/tests/*.json), locally or against a server.
    Test(TestArgs),
    /// Manage rustpy's cache (RUSTPY_CACHE): prune unused unpacked environments.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Watch a running tritonserver: per model requests/s, p50/p99, rows per call, workers.
    Top(TopArgs),
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The server's HTTP endpoint (what `rustpy serve` prints).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// The server's metrics endpoint [default: port 8002 of --url's host, /metrics].
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,

    /// Seconds between refreshes; with --json, between the two polls the rates come from.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub interval: f64,

    /// Print one snapshot as JSON on stdout and exit.
    #[arg(long)]
    pub json: bool,

    /// Stop after N refreshes [default: run until Ctrl-C].
    #[arg(long, value_name = "N", conflicts_with = "json")]
    pub count: Option<u64>,

    /// Show only this model (repeatable).
    #[arg(long = "model", value_name = "NAME")]
    pub models: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Delete environments unpacked from EXECUTION_ENV_PATH archives
    /// ($RUSTPY_CACHE/envs/) that no loaded model uses; checkpoints are not touched.
    Prune(CachePruneArgs),
}

#[derive(Debug, Args)]
pub struct CachePruneArgs {
    /// Only entries last used longer ago than this (e.g. 30d, 12h, 90m, 45s, 2w).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,

    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Cache directory [default: $RUSTPY_CACHE, else ~/.cache/rustpy].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Print one object per entry as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// IMAGE UINT8 [H,W,3] -> PROBS FP32 [num_labels], with labels.txt.
    ImageClassification,
    /// TEXT BYTES [1] -> EMBEDDING FP32 [384].
    TextEmbedding,
    /// PROMPT BYTES [1] -> TOKEN BYTES [1], decoupled (streams tokens).
    TextGeneration,
    /// IMAGE UINT8 [H,W,3] -> BOXES, SCORES, CLASSES (fixed max detections).
    ObjectDetection,
    /// INPUT0 FP32 [-1] -> OUTPUT0 FP32 [-1], unchanged.
    Passthrough,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Model name: the directory created under the repository.
    pub name: String,

    /// What the scaffolded model does.
    #[arg(long, value_enum)]
    pub task: Task,

    /// Model repository to create the model in.
    #[arg(long = "dir", value_name = "REPO", default_value = "model_repository")]
    pub repo: PathBuf,

    /// Triton max_batch_size; 0 disables batching (and dynamic_batching).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub max_batch_size: u32,

    /// Input image height and width, for image tasks [default: 224,224].
    #[arg(long, value_name = "H,W", value_parser = parse_image_shape)]
    pub image_shape: Option<(u32, u32)>,

    /// Where the weights come from (config parameter rustpy.checkpoint): hf://ORG/NAME@REV,
    /// git+https://…@COMMIT, git+file://…@COMMIT, s3://BUCKET/PREFIX, https://….tar.gz, a path.
    #[arg(long, value_name = "SOURCE")]
    pub checkpoint: Option<String>,

    /// Pinned sha256 of the checkpoint (required for https:// archives).
    #[arg(long, value_name = "HEX", requires = "checkpoint")]
    pub checkpoint_sha256: Option<String>,

    /// Overwrite the model's files if it already exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A model repository, a model directory, or a config.pbtxt.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Count packages installed in DIR (by `rustpy env --target DIR`) as installed (repeatable).
    #[arg(long, value_name = "DIR")]
    pub site_packages: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The model repository whose models' requirements.txt are merged.
    #[arg(default_value = ".")]
    pub repo: PathBuf,

    /// Directory to install into (pip install --target); serve with
    /// --backend-config=rustpy,site-packages=DIR.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,

    /// Print the merged requirements instead of installing them.
    #[arg(long)]
    pub dry_run: bool,

    /// Extra arguments for pip (after `--`), e.g. -- --no-index --find-links WHEELS.
    #[arg(last = true, value_name = "PIP_ARGS")]
    pub pip_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// A model repository or a model directory.
    #[arg(default_value = ".")]
    pub repo: PathBuf,

    /// Use only the cache; fail for a checkpoint that is not in it.
    #[arg(long)]
    pub offline: bool,

    /// Cache directory [default: $RUSTPY_CACHE, else ~/.cache/rustpy].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Print the outcome per model as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ZipArgs {
    /// The model repository to package.
    #[arg(required_unless_present = "verify", conflicts_with = "verify")]
    pub repo: Option<PathBuf>,

    /// Package only this model (repeatable); default: the whole repository.
    #[arg(short, long = "model", value_name = "MODEL", conflicts_with = "verify")]
    pub models: Vec<String>,

    /// Archive to write (replaced atomically if it exists).
    #[arg(
        short,
        long,
        value_name = "OUT.zip",
        required_unless_present = "verify"
    )]
    pub output: Option<PathBuf>,

    /// Package even if `rustpy check` reports errors.
    #[arg(long, conflicts_with = "verify")]
    pub force: bool,

    /// Fetch each model's rustpy.checkpoint and put its files in the archive
    /// (MODEL/.rustpy-checkpoint/), so the unpacked repository needs no network.
    #[arg(long, conflicts_with = "verify")]
    pub with_checkpoints: bool,
    /// Leave each model's golden cases (`<model>/tests/`) out of the archive.
    #[arg(long, conflicts_with = "verify")]
    pub no_tests: bool,

    /// Instead of packaging, re-hash every entry of this archive against its manifest.
    #[arg(long, value_name = "ZIP", conflicts_with = "output")]
    pub verify: Option<PathBuf>,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Decompression bounds for reading an archive (`zip --verify`, `unzip`).
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Refuse an archive with an entry larger than SIZE decompressed (suffixes K, M, G, T:
    /// powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = parse_size)]
    pub max_entry_size: u64,

    /// Refuse an archive whose entries total more than SIZE decompressed.
    #[arg(long, value_name = "SIZE", default_value = "64G", value_parser = parse_size)]
    pub max_total_size: u64,

    /// Refuse an entry, or an archive, over 1M that expands more than N:1 (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub max_ratio: u64,
}

#[derive(Debug, Args)]
pub struct UnzipArgs {
    /// Archive made by `rustpy zip`.
    pub archive: PathBuf,

    /// Directory to extract into; must not exist or be empty.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,

    /// Extract an archive without a manifest (entry paths are still checked).
    #[arg(long)]
    pub no_verify: bool,

    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model repository to serve.
    pub repo: PathBuf,

    /// tritonserver binary [default: $TRITONSERVER, PATH, or .rustpy-deps/].
    #[arg(long, value_name = "PATH")]
    pub tritonserver: Option<PathBuf>,

    /// libtriton_rustpy.so [default: $RUSTPY_BACKEND_LIB, next to this binary,
    /// or target/release/].
    #[arg(long, value_name = "PATH")]
    pub backend_lib: Option<PathBuf>,

    /// Use this backend directory as is instead of assembling one.
    #[arg(long, value_name = "DIR", conflicts_with = "backend_lib")]
    pub backend_dir: Option<PathBuf>,

    /// Address the HTTP, GRPC and metrics endpoints bind to; `0.0.0.0` in a
    /// container.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,

    /// HTTP port [default: a free port].
    #[arg(long, value_name = "N")]
    pub http_port: Option<u16>,

    /// GRPC port [default: a free port].
    #[arg(long, value_name = "N")]
    pub grpc_port: Option<u16>,

    /// Metrics port [default: a free port].
    #[arg(long, value_name = "N")]
    pub metrics_port: Option<u16>,

    /// tritonserver's --model-control-mode.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ModelControl::None)]
    pub model_control_mode: ModelControl,

    /// Model to load at start-up in `explicit` mode (repeatable; `*` for all).
    #[arg(long = "load-model", value_name = "NAME")]
    pub load_models: Vec<String>,

    /// Where tritonserver's own log goes [default: rustpy-serve-<pid>.log in
    /// the temp directory]; kept after exit.
    #[arg(long, value_name = "FILE", conflicts_with = "log")]
    pub log_file: Option<PathBuf>,

    /// Stream tritonserver's raw log to stderr instead of a file.
    #[arg(long, visible_alias = "verbose")]
    pub log: bool,

    /// tritonserver's --log-verbose level.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub log_verbose: u32,

    /// Seconds to wait for the server to become ready.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub ready_timeout: u64,

    /// Seconds to wait for tritonserver to exit after SIGTERM before killing it.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub stop_timeout: u64,

    /// Print the endpoints and model states as JSON on stdout once ready.
    #[arg(long)]
    pub json: bool,

    /// Extra arguments passed to tritonserver as they are (after `--`).
    #[arg(last = true, value_name = "TRITONSERVER_ARGS")]
    pub extra: Vec<String>,
}

/// tritonserver's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelControl {
    /// Load every model at start-up; no load/unload API.
    None,
    /// Rescan the repository and (re)load changed models.
    Poll,
    /// Load only `--load-model` models; the repository API loads the others.
    Explicit,
}

impl ModelControl {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelControl::None => "none",
            ModelControl::Poll => "poll",
            ModelControl::Explicit => "explicit",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model directory (holding config.pbtxt and version directories).
    pub model_dir: PathBuf,

    /// Put packages installed by `rustpy env --target DIR` on sys.path first, as the backend's
    /// --backend-config=rustpy,site-packages=DIR does (repeatable).
    #[arg(long, value_name = "DIR")]
    pub site_packages: Vec<PathBuf>,

    /// Model version to load (default: the highest version directory).
    #[arg(long)]
    pub version: Option<u64>,

    /// Inputs as JSON: `{"NAME": [[...]], ...}` or a KServe v2 request body
    /// `{"inputs": [{"name", "shape", "datatype", "data"}]}`.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// An input from a .npy file (repeatable).
    #[arg(long = "npy", value_name = "NAME=FILE")]
    pub npy: Vec<String>,

    /// Send this many copies of the request in one execution, to exercise
    /// batching exactly as the backend does.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch: u32,

    /// A request parameter KEY=VALUE (repeatable; numbers and true/false are typed).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Ask only for these outputs (repeatable; default: all).
    #[arg(long = "output", value_name = "NAME")]
    pub outputs: Vec<String>,

    /// Write each output of the first request as DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Seconds to wait for streamed (decoupled) responses.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,

    /// Print a JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A model directory or a model repository.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Run the cases against a live tritonserver's HTTP endpoint
    /// (http://HOST:PORT) instead of locally.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Seconds to wait for each request's responses.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

/// Parses `H,W` (or `HxW`) into two positive integers.
fn parse_image_shape(s: &str) -> Result<(u32, u32), String> {
    let (h, w) = s
        .split_once(',')
        .or_else(|| s.split_once(['x', 'X']))
        .ok_or_else(|| format!("expected H,W (e.g. 224,224), got `{s}`"))?;
    let dim = |v: &str| match v.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{}` is not a positive integer", v.trim())),
    };
    Ok((dim(h)?, dim(w)?))
}

/// `1234`, `64K`, `512M`, `16G`, `1T` (powers of 1024; a trailing `B` or `iB` is accepted).
fn parse_size(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 4096, 64K, 512M, 16G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("16G"), Ok(16 << 30));
        assert_eq!(parse_size("1tb"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn image_shape() {
        assert_eq!(parse_image_shape("224,224"), Ok((224, 224)));
        assert_eq!(parse_image_shape("32x48"), Ok((32, 48)));
        assert!(parse_image_shape("0,3").is_err());
        assert!(parse_image_shape("224").is_err());
        assert!(parse_image_shape("a,b").is_err());
    }
}
