//! `https://…` (or `http://…`) archives pinned by sha256, downloaded with
//! reqwest and unpacked with `tar`/`flate2`/`zip` by the URL's suffix.

use std::fs;
use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use rustpy_config::checkpoint::Checkpoint;
use sha2::{Digest, Sha256};

use crate::{hex, runtime, Options};

/// Downloads into `work`, verifies the pin, unpacks into `stage`; returns the
/// archive's sha256.
pub(crate) fn fetch(
    url: &str,
    ck: &Checkpoint,
    stage: &Path,
    work: &Path,
    opts: &Options,
) -> Result<String, String> {
    let shown = rustpy_config::checkpoint::redact_url(url);
    let path_part = url.split(['?', '#']).next().unwrap_or(url);
    let name = path_part
        .rsplit('/')
        .next()
        .unwrap_or("download")
        .to_string();
    let file = work.join("download");
    let got = runtime()?.block_on(async {
        // A stalled server must not hold the cache lock (and every load
        // waiting on it) forever.
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {shown}: {}", e.without_url()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {shown}: HTTP {status}"));
        }
        opts.begin(&name, resp.content_length());
        let mut out = fs::File::create(&file).map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("GET {shown}: {}", e.without_url()))?;
            h.update(&chunk);
            out.write_all(&chunk).map_err(|e| e.to_string())?;
            opts.advance(chunk.len() as u64);
        }
        out.sync_all().map_err(|e| e.to_string())?;
        opts.end();
        Ok::<_, String>(hex(&h.finalize()))
    })?;
    let want = ck.sha256.as_deref().unwrap_or_default();
    if got != want {
        return Err(format!(
            "sha256 mismatch for {shown}: {} pins {want}, the download hashes to {got}; nothing was cached",
            rustpy_config::checkpoint::SHA256_PARAMETER
        ));
    }
    let lower = path_part.to_ascii_lowercase();
    let open = || fs::File::open(&file).map_err(|e| e.to_string());
    let unpack = |r: Box<dyn std::io::Read>| {
        let mut a = tar::Archive::new(r);
        a.set_preserve_permissions(false);
        a.unpack(stage)
            .map_err(|e| format!("unpacking {name}: {e}"))
    };
    if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
        unpack(Box::new(flate2::read::GzDecoder::new(open()?)))?;
    } else if lower.ends_with(".tar") {
        unpack(Box::new(open()?))?;
    } else if lower.ends_with(".zip") {
        let mut z = zip::ZipArchive::new(open()?).map_err(|e| format!("reading {name}: {e}"))?;
        // `extract` refuses entries that would leave the directory.
        z.extract(stage)
            .map_err(|e| format!("unpacking {name}: {e}"))?;
    } else {
        fs::rename(&file, stage.join(&name)).map_err(|e| e.to_string())?;
    }
    Ok(got)
}
