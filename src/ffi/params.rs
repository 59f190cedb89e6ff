//! Inference parameters as Triton hands them out (a name, a type tag and a
//! pointer to the value) decoded into the core's [`ParamValue`]: the one
//! decoder for the parameters of the requests Execute receives
//! ([`super::handles::Request::parameters`]) and of the BLS responses the
//! server sends back ([`super::server`]).

use std::os::raw::{c_char, c_void};
use std::ptr;

use rustpy_core::request::ParamValue;

use super::{borrow_str, raw};

/// One parameter as a TRITON*Parameter getter writes it.
pub(super) struct RawParameter {
    pub name: *const c_char,
    pub kind: raw::TRITONSERVER_ParameterType,
    pub value: *const c_void,
}

impl RawParameter {
    /// Empty out-arguments for a getter to fill.
    pub fn new() -> Self {
        RawParameter {
            name: ptr::null(),
            kind: raw::TRITONSERVER_PARAMETER_STRING,
            value: ptr::null(),
        }
    }

    /// Copies the parameter out; None for kinds models never see (BYTES) or
    /// a missing value.
    ///
    /// # Safety
    /// The getter that filled `self` must have succeeded: `name` is a
    /// NUL-terminated string and `value` points to a value of the type `kind`
    /// names (a NUL-terminated string for STRING), both valid for this call.
    pub unsafe fn decode(&self) -> Option<(String, ParamValue)> {
        if self.value.is_null() {
            return None;
        }
        // SAFETY: guaranteed by the caller: `value` points to a value of the
        // type `kind` names; each is copied out.
        let value = unsafe {
            match self.kind {
                raw::TRITONSERVER_PARAMETER_STRING => {
                    ParamValue::String(borrow_str(self.value as *const c_char).to_owned())
                }
                raw::TRITONSERVER_PARAMETER_INT => ParamValue::Int(*(self.value as *const i64)),
                raw::TRITONSERVER_PARAMETER_BOOL => ParamValue::Bool(*(self.value as *const bool)),
                raw::TRITONSERVER_PARAMETER_DOUBLE => {
                    ParamValue::Double(*(self.value as *const f64))
                }
                _ => return None, // BYTES parameters are not exposed to models
            }
        };
        // SAFETY: guaranteed by the caller: a NUL-terminated name; copied here.
        let name = unsafe { borrow_str(self.name) }.to_owned();
        Some((name, value))
    }
}
