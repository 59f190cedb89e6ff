//! A worker's life on the wire: the backend's first frame ([`Init`], or
//! [`AutoComplete`] for a short-lived worker) and the worker's answer
//! (`FromWorker::Ready` / `InitFailed` / `AutoCompleted`), the log lines
//! user code writes meanwhile (`FromWorker::Log`), and `ToWorker::Shutdown`.
//! Readiness too: `ToWorker::IsReady` asks the model's `is_ready()`,
//! `FromWorker::ReadyAnswer` carries its [`ReadyResult`].

use serde::{Deserialize, Serialize};

use super::values::{error_from_wire, error_to_wire, WireErrorValue};
use crate::error::Error;
use crate::python::InstanceInfo;

/// What `is_ready()` returned (or the error it raised).
pub type ReadyResult = Result<bool, WireErrorValue>;

/// Worker: `is_ready()`'s result as sent.
pub fn ready_to_wire(result: crate::error::Result<bool>) -> ReadyResult {
    result.map_err(|e| error_to_wire(&e))
}

/// Backend: the answer as the readiness check sees it.
pub fn ready_from_wire(result: ReadyResult) -> crate::error::Result<bool> {
    result.map_err(|e: WireErrorValue| -> Error { error_from_wire(e) })
}

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
            FromWorker::Ready { is_ready: false },
            FromWorker::Ready { is_ready: true },
            FromWorker::ReadyAnswer {
                call: 5,
                result: ready_to_wire(Ok(false)),
            },
            FromWorker::ReadyAnswer {
                call: 6,
                result: ready_to_wire(Err(Error::internal("is_ready raised"))),
            },
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

    #[test]
    fn readiness_round_trips_and_an_old_ready_frame_means_no_is_ready() {
        let ask = encode_frame(&ToWorker::IsReady { call: 9 }).unwrap();
        assert!(matches!(
            decode_to_worker(&ask).unwrap(),
            ToWorker::IsReady { call: 9 }
        ));
        for result in [
            Ok(true),
            Ok(false),
            Err(Error::new(crate::error::ErrorCode::Unavailable, "not yet")),
        ] {
            let want = format!("{result:?}");
            let frame = encode_frame(&FromWorker::ReadyAnswer {
                call: 1,
                result: ready_to_wire(result),
            })
            .unwrap();
            let FromWorker::ReadyAnswer { call: 1, result } = decode_from_worker(&frame).unwrap()
            else {
                panic!("not a ReadyAnswer");
            };
            assert_eq!(format!("{:?}", ready_from_wire(result)), want);
        }
        // A Ready without the field (a worker of an older build): no is_ready().
        let mut frame = br#"{"Ready":{}}"#.to_vec();
        frame.splice(0..0, (frame.len() as u32).to_le_bytes());
        assert!(matches!(
            decode_from_worker(&frame).unwrap(),
            FromWorker::Ready { is_ready: false }
        ));
    }
}
