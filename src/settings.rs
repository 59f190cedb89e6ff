//! The backend's own settings, from `--backend-config=<backend>,key=value`
//! (`<backend>` is `rustpy`, or `python` when rustpy is installed as the
//! `python` backend). Keys rustpy does not know are left alone: a server
//! started for the official backend passes its own (`shm-default-byte-size`).

use std::path::PathBuf;
use std::time::Duration;

use rustpy_config::model::Isolation;
use rustpy_core::readiness;
use rustpy_core::Error;

/// `site-packages`: a directory of packages put first on `sys.path`.
pub const SITE_PACKAGES: &str = "site-packages";
/// `default-isolation`: `in_process` (the default) or `process`, for every
/// model that does not choose with `rustpy.isolation` or an environment.
pub const DEFAULT_ISOLATION: &str = "default-isolation";
/// `readiness-timeout-ms`: how long a readiness check waits for a model's
/// `is_ready()` (default 5000, as upstream).
pub const READINESS_TIMEOUT: &str = "readiness-timeout-ms";
/// `readiness-probe-interval-ms`: how often rustpy asks `is_ready()` itself
/// to keep the `rustpy_model_instance_ready` gauge current (default 10000;
/// 0 turns the probe off).
pub const READINESS_PROBE_INTERVAL: &str = "readiness-probe-interval-ms";

/// `metrics`: rustpy's own metric families on Triton's metrics endpoint
/// (`true`, the default, or `false`; also 1/0, on/off, yes/no).
pub const METRICS: &str = "metrics";

/// `response-thread`: each instance sends its responses from a thread of its
/// own (`true`, the default) or inline on the instance's thread (`false`);
/// src/send_thread.rs, docs/performance.md.
pub const RESPONSE_THREAD: &str = "response-thread";

const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub site_packages: Option<PathBuf>,
    pub default_isolation: Isolation,
    pub readiness_timeout: Duration,
    /// None: no probe.
    pub readiness_probe_interval: Option<Duration>,
    pub metrics: bool,
    pub response_thread: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            site_packages: None,
            default_isolation: Isolation::InProcess,
            readiness_timeout: readiness::DEFAULT_TIMEOUT,
            readiness_probe_interval: Some(DEFAULT_PROBE_INTERVAL),
            metrics: true,
            response_thread: true,
        }
    }
}

impl Settings {
    /// Reads the backend configuration JSON Triton hands the backend
    /// (`{"cmdline": {"key": "value", ...}, ...}`); a bad value of one of
    /// rustpy's keys is an error naming the key and what it accepts.
    pub fn from_backend_config(json: &str) -> Result<Settings, Error> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        let get = |key: &str| value["cmdline"][key].as_str().map(str::trim);
        let bad = |key: &str, got: &str, want: &str| {
            Error::invalid_arg(format!(
                "rustpy: --backend-config {key}={got}: expected {want}"
            ))
        };
        let millis = |key: &str, zero_ok: bool| -> Result<Option<Duration>, Error> {
            match get(key) {
                None => Ok(None),
                Some(text) => match text.parse::<u64>() {
                    Ok(n) if n > 0 || zero_ok => Ok(Some(Duration::from_millis(n))),
                    _ => Err(bad(
                        key,
                        text,
                        if zero_ok {
                            "a number of milliseconds (0: off)"
                        } else {
                            "a positive number of milliseconds"
                        },
                    )),
                },
            }
        };
        let default_isolation = match get(DEFAULT_ISOLATION) {
            None | Some("in_process") => Isolation::InProcess,
            Some("process") => Isolation::Process,
            Some(other) => return Err(bad(DEFAULT_ISOLATION, other, "in_process or process")),
        };
        let flag = |key: &str| match get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("true" | "1" | "on" | "yes") => Ok(true),
            Some("false" | "0" | "off" | "no") => Ok(false),
            Some(_) => Err(bad(key, get(key).unwrap_or_default(), "true or false")),
        };
        let metrics = flag(METRICS)?;
        let response_thread = flag(RESPONSE_THREAD)?;
        let defaults = Settings::default();
        let s = Settings {
            site_packages: get(SITE_PACKAGES).map(PathBuf::from),
            default_isolation,
            readiness_timeout: millis(READINESS_TIMEOUT, false)?
                .unwrap_or(defaults.readiness_timeout),
            readiness_probe_interval: match millis(READINESS_PROBE_INTERVAL, true)? {
                None => defaults.readiness_probe_interval,
                Some(i) => (!i.is_zero()).then_some(i),
            },
            metrics,
            response_thread,
        };
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cmdline: &str) -> Result<Settings, Error> {
        Settings::from_backend_config(&format!(r#"{{"cmdline": {cmdline}}}"#))
    }

    #[test]
    fn defaults_and_foreign_keys() {
        assert_eq!(read("{}").unwrap(), Settings::default());
        // The official backend's keys, when rustpy is installed as `python`.
        assert_eq!(
            read(r#"{"shm-default-byte-size": "5242880"}"#).unwrap(),
            Settings::default()
        );
        assert_eq!(
            Settings::from_backend_config("").unwrap(),
            Settings::default()
        );
    }

    #[test]
    fn reads_its_keys() {
        let s = read(
            r#"{"default-isolation": "process", "site-packages": "/x",
                "readiness-timeout-ms": "250", "readiness-probe-interval-ms": "0"}"#,
        )
        .unwrap();
        assert_eq!(s.default_isolation, Isolation::Process);
        assert_eq!(s.site_packages, Some(PathBuf::from("/x")));
        assert_eq!(s.readiness_timeout, Duration::from_millis(250));
        assert_eq!(s.readiness_probe_interval, None);
        assert!(s.metrics);
        assert!(!read(r#"{"metrics": " OFF "}"#).unwrap().metrics);
        assert!(s.response_thread);
        assert!(
            !read(r#"{"response-thread": "false"}"#)
                .unwrap()
                .response_thread
        );
        let s = read(r#"{"readiness-probe-interval-ms": "1500"}"#).unwrap();
        assert_eq!(
            s.readiness_probe_interval,
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (cmdline, key) in [
            (r#"{"default-isolation": "stub"}"#, DEFAULT_ISOLATION),
            (r#"{"metrics": "maybe"}"#, METRICS),
            (r#"{"response-thread": "sometimes"}"#, RESPONSE_THREAD),
            (r#"{"readiness-timeout-ms": "0"}"#, READINESS_TIMEOUT),
            (r#"{"readiness-timeout-ms": "soon"}"#, READINESS_TIMEOUT),
            (
                r#"{"readiness-probe-interval-ms": "-1"}"#,
                READINESS_PROBE_INTERVAL,
            ),
        ] {
            let e = read(cmdline).unwrap_err();
            assert!(e.message.contains(key), "{}", e.message);
        }
    }
}
