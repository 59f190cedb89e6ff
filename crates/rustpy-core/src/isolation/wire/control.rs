//! A worker's life on the wire: the backend's first frame ([`Init`], or
//! [`AutoComplete`] for a short-lived worker) and the worker's answer
//! (`FromWorker::Ready` / `InitFailed` / `AutoCompleted`), the log lines
//! user code writes meanwhile (`FromWorker::Log`), and `ToWorker::Shutdown`.

use serde::{Deserialize, Serialize};

use crate::python::InstanceInfo;

/// Load the model and create the instance (runs the user's `initialize`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Init {
    pub config_json: String,
    pub model_dir: String,
    pub version: u64,
    pub instance: WireInstance,
}

/// Instead of Init: run the model's `auto_complete_config`, answer, exit.
#[derive(Debug, Serialize, Deserialize)]
pub struct AutoComplete {
    pub config_json: String,
    pub model_dir: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireInstance {
    pub name: String,
    pub kind: String,
    pub device_id: i32,
}

impl From<&InstanceInfo> for WireInstance {
    fn from(i: &InstanceInfo) -> Self {
        WireInstance {
            name: i.name.clone(),
            kind: i.kind.clone(),
            device_id: i.device_id,
        }
    }
}

impl From<WireInstance> for InstanceInfo {
    fn from(i: WireInstance) -> Self {
        InstanceInfo {
            name: i.name,
            kind: i.kind,
            device_id: i.device_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_from_worker, decode_to_worker, encode_frame, FromWorker, ToWorker};
    use super::*;

    #[test]
    fn the_first_frames_and_their_answers_round_trip() {
        let info = InstanceInfo {
            name: "m_0".into(),
            kind: "KIND_CPU".into(),
            device_id: 0,
        };
        let init = ToWorker::Init(Init {
            config_json: "{\"name\":\"m\"}".into(),
            model_dir: "/models/m".into(),
            version: 3,
            instance: (&info).into(),
        });
        match decode_to_worker(&encode_frame(&init).unwrap()).unwrap() {
            ToWorker::Init(i) => {
                assert_eq!((i.version, i.model_dir.as_str()), (3, "/models/m"));
                let back = InstanceInfo::from(i.instance);
                assert_eq!((back.name, back.kind), (info.name, info.kind));
            }
            other => panic!("{other:?}"),
        }
        let auto = ToWorker::AutoComplete(AutoComplete {
            config_json: "{}".into(),
            model_dir: "d".into(),
            version: 1,
        });
        assert!(matches!(
            decode_to_worker(&encode_frame(&auto).unwrap()).unwrap(),
            ToWorker::AutoComplete(AutoComplete { version: 1, .. })
        ));
        for answer in [
            FromWorker::Ready,
            FromWorker::InitFailed {
                code: 3,
                message: "initialize raised".into(),
            },
            FromWorker::AutoCompleted {
                result: Ok(Some("{}".into())),
            },
            FromWorker::AutoCompleted {
                result: Err((1, "no".into())),
            },
            FromWorker::Log {
                level: 2,
                file: "model.py".into(),
                line: 7,
                message: "hello".into(),
            },
        ] {
            let before = format!("{answer:?}");
            let back = decode_from_worker(&encode_frame(&answer).unwrap()).unwrap();
            assert_eq!(format!("{back:?}"), before);
        }
    }
}
