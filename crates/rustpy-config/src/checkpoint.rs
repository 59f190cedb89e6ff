//! Where a model's weights come from: the `rustpy.checkpoint` config
//! parameters, parsed and validated without any network code (the fetching
//! lives in `rustpy-fetch`; `rustpy check` only needs this module).
//!
//! ```text
//! parameters { key: "rustpy.checkpoint" value { string_value: "hf://org/name@v1.0/onnx" } }
//! parameters { key: "rustpy.checkpoint.include" value { string_value: "*.json,*.onnx" } }
//! ```
//!
//! | source | form |
//! |---|---|
//! | Hugging Face | `hf://ORG/NAME[@REVISION][/SUBPATH]` (revision defaults to `main`) |
//! | git + LFS | `git+https://HOST/REPO.git@COMMIT`, `git+file:///PATH/REPO.git@COMMIT` (full commit hash) |
//! | S3-compatible | `s3://BUCKET[/PREFIX]` (`rustpy.checkpoint.endpoint`, `rustpy.checkpoint.region`) |
//! | archive | `https://HOST/PATH.tar.gz` (also `.tgz`, `.tar`, `.zip`, or one file), `rustpy.checkpoint.sha256` required |
//! | local | `file:///ABS/PATH`, `/ABS/PATH`, or a path relative to the model directory |

use crate::proto::ModelConfig;

/// The source string.
pub const SOURCE_PARAMETER: &str = "rustpy.checkpoint";
/// Pinned sha256: of the archive for `https://`, of the fetched tree (see
/// `rustpy_fetch::tree_digest`) for every other kind.
pub const SHA256_PARAMETER: &str = "rustpy.checkpoint.sha256";
/// Comma-separated file patterns (`*`, `?`) a Hugging Face / S3 / git fetch keeps.
pub const INCLUDE_PARAMETER: &str = "rustpy.checkpoint.include";
/// S3 endpoint URL (an S3-compatible server); else `AWS_ENDPOINT_URL`.
pub const ENDPOINT_PARAMETER: &str = "rustpy.checkpoint.endpoint";
/// S3 region; else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
pub const REGION_PARAMETER: &str = "rustpy.checkpoint.region";

/// One kind of checkpoint source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    HuggingFace {
        repo: String,
        revision: String,
        subpath: String,
    },
    Git {
        /// The URL git is given (`https://…` or `file://…`).
        url: String,
        commit: String,
    },
    S3 {
        bucket: String,
        prefix: String,
    },
    Archive {
        url: String,
    },
    Local {
        /// As written (resolved against the model directory when relative).
        path: String,
    },
}

impl Source {
    /// Short kind name: `hf`, `git`, `s3`, `https`, `local`.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::HuggingFace { .. } => "hf",
            Source::Git { .. } => "git",
            Source::S3 { .. } => "s3",
            Source::Archive { .. } => "https",
            Source::Local { .. } => "local",
        }
    }

    /// The source as a string safe for logs: URL user-info (`user:token@`) is
    /// replaced by `***@`.
    pub fn redacted(&self) -> String {
        match self {
            Source::HuggingFace {
                repo,
                revision,
                subpath,
            } => {
                let mut s = format!("hf://{repo}@{revision}");
                if !subpath.is_empty() {
                    s.push('/');
                    s.push_str(subpath);
                }
                s
            }
            Source::Git { url, commit } => format!("git+{}@{commit}", redact_url(url)),
            Source::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
            Source::Archive { url } => redact_url(url),
            Source::Local { path } => path.clone(),
        }
    }
}

/// A model's checkpoint: its source plus the optional settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub source: Source,
    pub sha256: Option<String>,
    pub include: Vec<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

impl Checkpoint {
    /// The model's checkpoint, `None` when it declares none, `Err` with a
    /// message (naming the parameter) when a parameter is invalid.
    pub fn from_config(cfg: &ModelConfig) -> Option<Result<Checkpoint, String>> {
        let get = |k: &str| {
            crate::parameter(cfg, k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let raw = get(SOURCE_PARAMETER)?;
        Some(Checkpoint::new(
            &raw,
            get(SHA256_PARAMETER),
            get(INCLUDE_PARAMETER),
            get(ENDPOINT_PARAMETER),
            get(REGION_PARAMETER),
        ))
    }

    /// Validates the parts as `from_config` would.
    pub fn new(
        source: &str,
        sha256: Option<String>,
        include: Option<String>,
        endpoint: Option<String>,
        region: Option<String>,
    ) -> Result<Checkpoint, String> {
        let source = parse_source(source).map_err(|e| format!("{SOURCE_PARAMETER}: {e}"))?;
        let sha256 = match sha256 {
            Some(h) => {
                let h = h.to_ascii_lowercase();
                if !is_hex(&h, &[64]) {
                    return Err(format!(
                        "{SHA256_PARAMETER}: expected 64 hexadecimal digits, got {} characters",
                        h.len()
                    ));
                }
                Some(h)
            }
            None => None,
        };
        if matches!(source, Source::Archive { .. }) && sha256.is_none() {
            return Err(format!(
                "{SOURCE_PARAMETER}: an archive URL must be pinned: set {SHA256_PARAMETER} to the archive's sha256"
            ));
        }
        let include: Vec<String> = include
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ep) = &endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(format!(
                    "{ENDPOINT_PARAMETER}: expected an http:// or https:// URL"
                ));
            }
        }
        Ok(Checkpoint {
            source,
            sha256,
            include,
            endpoint,
            region,
        })
    }

    /// Whether a file (path relative to the checkpoint root, `/`-separated)
    /// passes the include patterns (all pass when there are none). A pattern
    /// without `/` matches the file name, one with `/` the whole path.
    pub fn includes(&self, rel: &str) -> bool {
        if self.include.is_empty() {
            return true;
        }
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.include.iter().any(|p| {
            if p.contains('/') {
                glob_match(p, rel)
            } else {
                glob_match(p, name)
            }
        })
    }
}

/// Parses a source string (see the module docs).
pub fn parse_source(s: &str) -> Result<Source, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("hf://") {
        return parse_hf(rest);
    }
    if let Some(rest) = s.strip_prefix("git+") {
        let (url, commit) = rest
            .rsplit_once('@')
            .filter(|(_, c)| !c.contains('/'))
            .ok_or_else(|| "a git source must be pinned to a commit: git+URL@COMMIT".to_string())?;
        if !(url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("file://"))
        {
            return Err("git sources must use git+https://, git+http:// or git+file://".into());
        }
        let commit = commit.to_ascii_lowercase();
        if !is_hex(&commit, &[40, 64]) {
            return Err(format!(
                "git commit '{commit}' is not a full commit hash (40 or 64 hexadecimal digits)"
            ));
        }
        if url.len() <= "file://".len() + 1 {
            return Err("git URL is empty".into());
        }
        return Ok(Source::Git {
            url: url.to_string(),
            commit,
        });
    }
    if let Some(rest) = s.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            return Err(format!(
                "'{bucket}' is not a valid bucket name (3-63 of a-z, 0-9, '-', '.')"
            ));
        }
        return Ok(Source::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    if s.starts_with("https://") || s.starts_with("http://") {
        let after = s.split_once("://").map(|x| x.1).unwrap_or("");
        let (host, path) = after.split_once('/').unwrap_or((after, ""));
        if host.is_empty() || path.is_empty() || path.ends_with('/') {
            return Err("an archive URL needs a host and a file path".into());
        }
        return Ok(Source::Archive { url: s.to_string() });
    }
    if let Some(path) = s.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err("file:// URLs need an absolute path (file:///...)".into());
        }
        return Ok(Source::Local {
            path: path.to_string(),
        });
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "unknown source scheme '{scheme}://' (use hf://, git+https://, git+file://, s3://, https://, file:// or a path)"
        ));
    }
    if s.is_empty() {
        return Err("empty source".into());
    }
    Ok(Source::Local {
        path: s.to_string(),
    })
}

fn parse_hf(rest: &str) -> Result<Source, String> {
    let mut parts = rest.splitn(3, '/');
    let org = parts.next().unwrap_or("");
    let name_rev = parts.next().unwrap_or("");
    let tail = parts.next().unwrap_or("");
    let (name, revision) = match name_rev.split_once('@') {
        Some((n, r)) => (n, r),
        None => (name_rev, "main"),
    };
    let valid = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !p.starts_with('.')
    };
    if !valid(org) || !valid(name) {
        return Err("expected hf://ORG/NAME[@REVISION][/SUBPATH]".into());
    }
    if revision.is_empty() || revision.contains(char::is_whitespace) {
        return Err("empty revision after '@'".into());
    }
    let subpath = tail.trim_matches('/');
    if subpath.split('/').any(|c| c == ".." || c == ".") {
        return Err("the subpath may not contain '.' or '..'".into());
    }
    Ok(Source::HuggingFace {
        repo: format!("{org}/{name}"),
        revision: revision.to_string(),
        subpath: subpath.to_string(),
    })
}

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `scheme://user:secret@host/…` → `scheme://***@host/…`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_string()
}

/// `*` (any run of characters) and `?` (one character) against `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            parse_source("hf://org/name@v1/onnx/fp16").unwrap(),
            Source::HuggingFace {
                repo: "org/name".into(),
                revision: "v1".into(),
                subpath: "onnx/fp16".into()
            }
        );
        assert_eq!(
            parse_source("hf://org/name").unwrap(),
            Source::HuggingFace {
                repo: "org/name".into(),
                revision: "main".into(),
                subpath: "".into()
            }
        );
        let c = "a".repeat(40);
        assert_eq!(
            parse_source(&format!("git+file:///srv/w.git@{c}")).unwrap(),
            Source::Git {
                url: "file:///srv/w.git".into(),
                commit: c.clone()
            }
        );
        assert_eq!(
            parse_source("s3://my-bucket/models/v1/").unwrap(),
            Source::S3 {
                bucket: "my-bucket".into(),
                prefix: "models/v1".into()
            }
        );
        assert_eq!(
            parse_source("https://h/x.tar.gz").unwrap(),
            Source::Archive {
                url: "https://h/x.tar.gz".into()
            }
        );
        assert_eq!(
            parse_source("file:///w").unwrap(),
            Source::Local { path: "/w".into() }
        );
        assert_eq!(
            parse_source("weights").unwrap(),
            Source::Local {
                path: "weights".into()
            }
        );
    }

    #[test]
    fn rejects_bad_sources_with_reasons() {
        for (s, why) in [
            ("hf://onlyorg", "ORG/NAME"),
            ("hf://o/n@", "revision"),
            ("hf://o/n/../x", ".."),
            ("git+file:///r.git", "pinned"),
            ("git+file:///r.git@main", "full commit"),
            (
                "git+ssh://h/r.git@0123456789012345678901234567890123456789",
                "git+https",
            ),
            ("s3://B", "bucket"),
            ("https://host", "file path"),
            ("ftp://h/x", "unknown source scheme"),
            ("file://rel", "absolute"),
        ] {
            let e = parse_source(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn archive_needs_a_pin_and_pins_are_hex() {
        let e = Checkpoint::new("https://h/a.tgz", None, None, None, None).unwrap_err();
        assert!(e.contains(SHA256_PARAMETER), "{e}");
        let e =
            Checkpoint::new("https://h/a.tgz", Some("xyz".into()), None, None, None).unwrap_err();
        assert!(e.contains("64 hexadecimal"), "{e}");
        let ok =
            Checkpoint::new("https://h/a.tgz", Some("A".repeat(64)), None, None, None).unwrap();
        assert_eq!(ok.sha256.unwrap(), "a".repeat(64));
    }

    #[test]
    fn redacts_user_info() {
        assert_eq!(
            redact_url("https://u:tok@h/p@x"),
            "https://***@h/p@x".to_string()
        );
        let c = "b".repeat(40);
        let s = parse_source(&format!("git+https://u:secret@h/r.git@{c}")).unwrap();
        assert!(!s.redacted().contains("secret"));
    }

    #[test]
    fn include_patterns() {
        let ck = Checkpoint::new(
            "s3://bkt/p",
            None,
            Some("*.json, onnx/*.onnx".into()),
            None,
            None,
        )
        .unwrap();
        assert!(ck.includes("config.json"));
        assert!(ck.includes("a/b/config.json"));
        assert!(ck.includes("onnx/m.onnx"));
        assert!(!ck.includes("m.onnx"));
        assert!(!ck.includes("weights.bin"));
        assert!(glob_match("a*b?c", "aXXbYc"));
        assert!(!glob_match("a*b?c", "aXXbc"));
    }
}
