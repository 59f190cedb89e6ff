//! Typed request parameters: each request's parameters checked against the
//! model's declaration (`request_parameters.json`, parsed by rustpy-config)
//! before `predict`, with defaults filled in.

use std::path::Path;

use rustpy_config::params::{parse_declaration, Declaration, Value, REQUEST_PARAMETERS_FILE};

use crate::error::{Error, ErrorCode, Result};
use crate::rules::request::ParamValue;

/// Reads `<model_dir>/request_parameters.json`; `None` when there is none.
/// A declaration that does not parse or check fails the load, naming the
/// file, line and rule.
pub fn load_declaration(model: &str, model_dir: &Path) -> Result<Option<Declaration>> {
    let file = model_dir.join(REQUEST_PARAMETERS_FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::invalid_arg(format!(
                "model '{model}': cannot read {}: {e}",
                file.display()
            )))
        }
    };
    parse_declaration(&text).map(Some).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}:{e}", file.display()))
            .collect();
        Error::invalid_arg(format!(
            "model '{model}': invalid request parameter declaration: {}",
            lines.join("; ")
        ))
    })
}

pub fn to_value(v: &ParamValue) -> Value {
    match v {
        ParamValue::String(s) => Value::String(s.clone()),
        ParamValue::Int(i) => Value::Int(*i),
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Double(d) => Value::Float(*d),
    }
}

pub fn from_value(v: Value) -> ParamValue {
    match v {
        Value::String(s) => ParamValue::String(s),
        Value::Int(i) => ParamValue::Int(i),
        Value::Bool(b) => ParamValue::Bool(b),
        Value::Float(d) => ParamValue::Double(d),
    }
}

/// A request's parameters checked against the declaration: each declared one
/// in its declared type, missing ones set to their defaults, undeclared ones
/// passed through (or refused when the model does not allow unknown ones).
/// Declared parameters come first, in declaration order. The error is
/// INVALID_ARG and names the model, the parameter and the rule.
pub fn apply(
    model: &str,
    decl: &Declaration,
    params: &[(String, ParamValue)],
) -> Result<Vec<(String, ParamValue)>> {
    let invalid =
        |msg: String| Error::new(ErrorCode::InvalidArg, format!("model '{model}': {msg}"));
    let mut out = Vec::with_capacity(decl.params.len() + params.len());
    for (name, _) in params {
        if decl.get(name).is_none() && !decl.allow_unknown {
            return Err(invalid(format!(
                "unknown request parameter '{name}' (the model accepts: {})",
                decl.names().join(", ")
            )));
        }
    }
    for p in &decl.params {
        match params.iter().find(|(name, _)| *name == p.name) {
            Some((_, value)) => {
                let typed = p.accept(&to_value(value)).map_err(|why| {
                    invalid(format!(
                        "request parameter '{}' {why} (declared: {})",
                        p.name,
                        p.rule()
                    ))
                })?;
                out.push((p.name.clone(), from_value(typed)));
            }
            None => match &p.default {
                Some(d) => out.push((p.name.clone(), from_value(d.clone()))),
                None if p.required => {
                    return Err(invalid(format!(
                        "missing required request parameter '{}' (declared: {})",
                        p.name,
                        p.rule()
                    )))
                }
                None => {}
            },
        }
    }
    out.extend(
        params
            .iter()
            .filter(|(name, _)| decl.get(name).is_none())
            .cloned(),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(allow_unknown: bool) -> Declaration {
        let text = format!(
            r#"{{"allow_unknown": {allow_unknown}, "parameters": [
                {{"name": "temperature", "type": "float", "default": 0.7, "min": 0, "max": 2}},
                {{"name": "max_tokens", "type": "int", "default": 16, "min": 1}},
                {{"name": "key", "type": "string", "required": true}}]}}"#
        );
        parse_declaration(&text).unwrap()
    }

    fn p(name: &str, v: ParamValue) -> (String, ParamValue) {
        (name.to_string(), v)
    }

    #[test]
    fn fills_defaults_and_types_values() {
        let got = apply(
            "m",
            &decl(true),
            &[
                p("extra", ParamValue::Bool(true)),
                p("temperature", ParamValue::Int(1)),
                p("key", ParamValue::String("k".into())),
            ],
        )
        .unwrap();
        assert_eq!(
            got,
            [
                p("temperature", ParamValue::Double(1.0)),
                p("max_tokens", ParamValue::Int(16)),
                p("key", ParamValue::String("k".into())),
                p("extra", ParamValue::Bool(true)),
            ]
        );
    }

    #[test]
    fn errors_name_model_parameter_and_rule() {
        let key = p("key", ParamValue::String("k".into()));
        let err = apply(
            "m",
            &decl(true),
            &[key.clone(), p("temperature", ParamValue::Double(3.0))],
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArg);
        assert_eq!(
            err.message,
            "model 'm': request parameter 'temperature' is 3.0, above the maximum 2 (declared: float in [0, 2], default 0.7)"
        );
        let err = apply(
            "m",
            &decl(true),
            &[key.clone(), p("max_tokens", ParamValue::String("x".into()))],
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("'max_tokens' must be of type int, got string \"x\""),
            "{err}"
        );
        let err = apply(
            "m",
            &decl(false),
            &[key.clone(), p("foo", ParamValue::Int(1))],
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "model 'm': unknown request parameter 'foo' (the model accepts: temperature, max_tokens, key)"
        );
        let err = apply("m", &decl(true), &[]).unwrap_err();
        assert!(
            err.message
                .contains("missing required request parameter 'key'"),
            "{err}"
        );
    }
}
