//! `s3://bucket/prefix` through the `object_store` crate (any S3-compatible
//! server: endpoint from `rustpy.checkpoint.endpoint` or `AWS_ENDPOINT_URL`).

use std::fs;
use std::io::Write;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;
use rustpy_config::checkpoint::{Checkpoint, Source};

use crate::{runtime, safe_join, Options};

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The endpoint a fetch talks to (`None`: AWS itself).
pub(crate) fn endpoint(ck: &Checkpoint) -> Option<String> {
    ck.endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"))
}

pub(crate) fn fetch(ck: &Checkpoint, stage: &Path, opts: &Options) -> Result<(), String> {
    let Source::S3 { bucket, prefix } = &ck.source else {
        unreachable!()
    };
    let anonymous = env("AWS_SKIP_SIGNATURE").is_some_and(|v| v == "true" || v == "1");
    let (key_id, secret) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"));
    // Without keys object_store would ask the cloud instance-metadata
    // service; say what is missing instead.
    if !anonymous && (key_id.is_none() || secret.is_none()) {
        return Err(
            "missing S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_SKIP_SIGNATURE=true for a public bucket)"
                .into(),
        );
    }
    let region = ck
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_skip_signature(anonymous);
    if let (Some(k), Some(s)) = (key_id, secret) {
        b = b.with_access_key_id(k).with_secret_access_key(s);
        if let Some(t) = env("AWS_SESSION_TOKEN") {
            b = b.with_token(t);
        }
    }
    if let Some(ep) = endpoint(ck) {
        b = b
            .with_allow_http(ep.starts_with("http://"))
            .with_endpoint(ep);
    }
    let store = b.build().map_err(|e| format!("S3 client: {e}"))?;
    let base = if prefix.is_empty() {
        None
    } else {
        Some(object_store::path::Path::from(prefix.as_str()))
    };
    runtime()?.block_on(async {
        let objects: Vec<_> = store
            .list(base.as_ref())
            .try_collect()
            .await
            .map_err(|e| format!("listing: {e}"))?;
        let mut n = 0;
        for meta in objects {
            let full = meta.location.to_string();
            let rel = full
                .strip_prefix(prefix.as_str())
                .unwrap_or(&full)
                .trim_start_matches('/');
            if rel.is_empty() || rel.ends_with('/') || !ck.includes(rel) {
                continue;
            }
            let dest = safe_join(stage, rel)?;
            if let Some(p) = dest.parent() {
                fs::create_dir_all(p).map_err(|e| e.to_string())?;
            }
            opts.begin(rel, Some(meta.size));
            let got = store
                .get(&meta.location)
                .await
                .map_err(|e| format!("reading {rel}: {e}"))?;
            let mut out = fs::File::create(&dest).map_err(|e| e.to_string())?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| format!("reading {rel}: {e}"))?;
                out.write_all(&chunk).map_err(|e| e.to_string())?;
                opts.advance(chunk.len() as u64);
            }
            opts.end();
            n += 1;
        }
        if n == 0 {
            return Err(format!(
                "no objects under s3://{bucket}/{prefix}{}",
                if ck.include.is_empty() {
                    ""
                } else {
                    " matching the include patterns"
                }
            ));
        }
        Ok(())
    })
}
