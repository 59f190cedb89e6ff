//! Typed request parameters a model declares in `request_parameters.json`
//! next to its `config.pbtxt`.
//!
//! ```json
//! {
//!   "allow_unknown": false,
//!   "parameters": [
//!     {"name": "temperature", "type": "float", "default": 0.7, "min": 0, "max": 2,
//!      "description": "sampling temperature"},
//!     {"name": "mode", "type": "string", "default": "fast", "choices": ["fast", "exact"]}
//!   ]
//! }
//! ```
//!
//! This module parses and checks the declaration (`rustpy check`, model load)
//! and holds the rule each value must follow ([`ParamDecl::accept`]); the
//! execution core applies it to every request before `predict`.

use std::fmt;

use serde::Deserialize;

/// The file, in a model directory, that declares its request parameters.
pub const REQUEST_PARAMETERS_FILE: &str = "request_parameters.json";

/// The type of a declared parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Bool,
    Int,
    Float,
    String,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParamType::Bool => "bool",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::String => "string",
        })
    }
}

/// A parameter value (a request's, or a declared default/choice).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::String(_) => "string",
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// From a JSON scalar; `None` for null, arrays and objects.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        Some(match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64()?),
            },
            serde_json::Value::String(s) => Value::String(s.clone()),
            _ => return None,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDecl {
    pub name: String,
    pub ty: ParamType,
    /// Filled in when a request does not carry the parameter.
    pub default: Option<Value>,
    /// A request must carry it (only meaningful without a default).
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// When non-empty, the only values accepted.
    pub choices: Vec<Value>,
    pub description: String,
}

impl ParamDecl {
    /// Checks a value against this declaration and returns it in the declared
    /// type (an int is accepted for a float parameter). The error says which
    /// rule the value breaks, without naming the parameter.
    pub fn accept(&self, value: &Value) -> Result<Value, String> {
        let typed = match (self.ty, value) {
            (ParamType::Bool, Value::Bool(_))
            | (ParamType::Int, Value::Int(_))
            | (ParamType::Float, Value::Float(_))
            | (ParamType::String, Value::String(_)) => value.clone(),
            (ParamType::Float, Value::Int(i)) => Value::Float(*i as f64),
            _ => {
                return Err(format!(
                    "must be of type {}, got {} {value}",
                    self.ty,
                    value.kind()
                ))
            }
        };
        if let Some(x) = typed.as_f64() {
            if x.is_nan() {
                return Err("must be a number, got NaN".into());
            }
            if let Some(min) = self.min.filter(|&min| x < min) {
                return Err(format!("is {typed}, below the minimum {min}"));
            }
            if let Some(max) = self.max.filter(|&max| x > max) {
                return Err(format!("is {typed}, above the maximum {max}"));
            }
        }
        if !self.choices.is_empty() && !self.choices.contains(&typed) {
            let choices: Vec<String> = self.choices.iter().map(|c| c.to_string()).collect();
            return Err(format!(
                "is {typed}, not one of the allowed values [{}]",
                choices.join(", ")
            ));
        }
        Ok(typed)
    }

    /// Parses a command-line value (`--param name=value`) as this parameter's
    /// type, then applies [`ParamDecl::accept`].
    pub fn parse_text(&self, text: &str) -> Result<Value, String> {
        let value = match self.ty {
            ParamType::Bool => match text {
                "true" | "True" | "1" => Value::Bool(true),
                "false" | "False" | "0" => Value::Bool(false),
                _ => return Err(format!("must be of type bool (true/false), got {text:?}")),
            },
            ParamType::Int => Value::Int(
                text.parse()
                    .map_err(|_| format!("must be of type int, got {text:?}"))?,
            ),
            ParamType::Float => Value::Float(
                text.parse()
                    .map_err(|_| format!("must be of type float, got {text:?}"))?,
            ),
            ParamType::String => Value::String(text.to_string()),
        };
        self.accept(&value)
    }

    /// A one-line description of the rules, e.g. `float in [0, 2], default 0.7`.
    pub fn rule(&self) -> String {
        let mut s = self.ty.to_string();
        match (self.min, self.max) {
            (Some(a), Some(b)) => s += &format!(" in [{a}, {b}]"),
            (Some(a), None) => s += &format!(" >= {a}"),
            (None, Some(b)) => s += &format!(" <= {b}"),
            (None, None) => {}
        }
        if !self.choices.is_empty() {
            let c: Vec<String> = self.choices.iter().map(|c| c.to_string()).collect();
            s += &format!(" one of [{}]", c.join(", "));
        }
        if let Some(d) = &self.default {
            s += &format!(", default {d}");
        } else if self.required {
            s += ", required";
        }
        s
    }
}

/// A model's request parameter declaration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declaration {
    /// Whether requests may carry parameters that are not declared (passed
    /// through untouched). Defaults to true.
    pub allow_unknown: bool,
    pub params: Vec<ParamDecl>,
}

impl Declaration {
    pub fn get(&self, name: &str) -> Option<&ParamDecl> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }
}

/// One problem in a declaration, at a 1-based line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for DeclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}:{}: ", self.column.unwrap_or(1))?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    #[serde(default = "yes")]
    allow_unknown: bool,
    #[serde(default)]
    parameters: Vec<RawParam>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    name: String,
    #[serde(rename = "type")]
    ty: ParamType,
    #[serde(default)]
    default: Option<serde_json::Value>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    choices: Vec<serde_json::Value>,
    #[serde(default)]
    description: String,
}

const FORMAT_HINT: &str = "write {\"allow_unknown\": bool, \"parameters\": [{\"name\", \"type\": bool|int|float|string, \"default\", \"min\", \"max\", \"choices\", \"required\", \"description\"}]}";

/// Parses and checks a declaration, reporting every problem found.
pub fn parse_declaration(text: &str) -> Result<Declaration, Vec<DeclError>> {
    let raw: RawDeclaration = serde_json::from_str(text).map_err(|e| vec![json_error(&e)])?;
    let mut errors = Vec::new();
    let mut params: Vec<ParamDecl> = Vec::new();
    for (i, p) in raw.parameters.into_iter().enumerate() {
        let line = name_line(text, &p.name, i);
        let mut err = |message: String, hint: &str| {
            errors.push(DeclError {
                line,
                column: None,
                message,
                hint: hint.into(),
            })
        };
        if let Some(decl) = param_decl(p, i, &params, &mut err) {
            params.push(decl);
        }
    }
    if errors.is_empty() {
        Ok(Declaration {
            allow_unknown: raw.allow_unknown,
            params,
        })
    } else {
        Err(errors)
    }
}

/// A declaration that is not JSON of the expected form, at serde's position.
fn json_error(e: &serde_json::Error) -> DeclError {
    DeclError {
        line: Some(e.line()).filter(|&l| l > 0),
        column: Some(e.column()).filter(|&c| c > 0),
        // serde_json appends " at line L column C"; the position has its own fields.
        message: {
            let text = e.to_string();
            match text.rsplit_once(" at line ") {
                Some((message, _)) => message.to_string(),
                None => text,
            }
        },
        hint: FORMAT_HINT.into(),
    }
}

/// The `index`-th declared parameter, checked against itself and the ones
/// before it (`seen`); every problem goes to `err`. None when it cannot be
/// declared at all (no name, a duplicate).
fn param_decl(
    p: RawParam,
    index: usize,
    seen: &[ParamDecl],
    err: &mut impl FnMut(String, &str),
) -> Option<ParamDecl> {
    let name = p.name.clone();
    if name.is_empty() {
        err(
            format!("parameter {} has an empty name", index + 1),
            "give every parameter a name",
        );
        return None;
    }
    if seen.iter().any(|q| q.name == name) {
        err(
            format!("parameter '{name}' is declared more than once"),
            "remove or rename the duplicate",
        );
        return None;
    }
    let numeric = matches!(p.ty, ParamType::Int | ParamType::Float);
    if !numeric && (p.min.is_some() || p.max.is_some()) {
        err(
            format!("parameter '{name}' of type {} has min/max", p.ty),
            "min and max apply to int and float parameters only",
        );
    }
    if let (Some(a), Some(b)) = (p.min, p.max) {
        if a > b {
            err(
                format!("parameter '{name}' has min {a} greater than max {b}"),
                "swap min and max",
            );
        }
    }
    let mut decl = ParamDecl {
        name: name.clone(),
        ty: p.ty,
        default: None,
        required: p.required,
        min: p.min,
        max: p.max,
        choices: Vec::new(),
        description: p.description,
    };
    // Choices must themselves be valid values of the type (ignoring the
    // choices rule itself).
    let mut choices = Vec::new();
    for c in &p.choices {
        match Value::from_json(c)
            .ok_or_else(|| format!("must be of type {}, got {c}", p.ty))
            .and_then(|v| decl.accept(&v))
        {
            Ok(v) => choices.push(v),
            Err(why) => err(
                format!("parameter '{name}': choice {c} {why}"),
                "list values of the parameter's type, within min/max",
            ),
        }
    }
    decl.choices = choices;
    if let Some(d) = &p.default {
        match Value::from_json(d)
            .ok_or_else(|| format!("must be of type {}, got {d}", p.ty))
            .and_then(|v| decl.accept(&v))
        {
            Ok(v) => decl.default = Some(v),
            Err(why) => err(
                format!("parameter '{name}': default {why}"),
                "make the default a value the parameter accepts",
            ),
        }
        if p.required {
            err(
                format!("parameter '{name}' is required but has a default"),
                "drop \"required\" (the default is used when missing) or the default",
            );
        }
    }
    Some(decl)
}

/// The line of the `index`-th parameter's `"name": "<name>"`, best effort.
fn name_line(text: &str, name: &str, index: usize) -> Option<usize> {
    let mut found = Vec::new();
    let mut rest = 0;
    while let Some(at) = text[rest..].find("\"name\"") {
        let start = rest + at;
        rest = start + 6;
        let after = text[rest..].trim_start();
        let Some(after) = after.strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start();
        if let Ok(serde_json::Value::String(s)) = serde_json::Deserializer::from_str(after)
            .into_iter::<serde_json::Value>()
            .next()
            .unwrap_or(Ok(serde_json::Value::Null))
        {
            found.push((start, s));
        }
    }
    let pos = found
        .iter()
        .filter(|(_, s)| s == name)
        .map(|(p, _)| *p)
        .nth(
            // A duplicate's second occurrence is the one to point at.
            found.iter().take(index).filter(|(_, s)| s == name).count(),
        )
        .or_else(|| found.get(index).map(|(p, _)| *p))?;
    Some(text[..pos].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "allow_unknown": false,
  "parameters": [
    {"name": "temperature", "type": "float", "default": 1, "min": 0, "max": 2},
    {"name": "top_k", "type": "int", "default": 5, "min": 1},
    {"name": "mode", "type": "string", "choices": ["fast", "exact"], "default": "fast"},
    {"name": "debug", "type": "bool", "default": false},
    {"name": "key", "type": "string", "required": true}
  ]
}"#;

    #[test]
    fn parses_a_good_declaration() {
        let d = parse_declaration(GOOD).unwrap();
        assert!(!d.allow_unknown);
        assert_eq!(d.names(), ["temperature", "top_k", "mode", "debug", "key"]);
        let t = d.get("temperature").unwrap();
        assert_eq!(t.default, Some(Value::Float(1.0)));
        assert_eq!(t.rule(), "float in [0, 2], default 1.0");
        assert!(d.get("key").unwrap().required);
        assert!(parse_declaration("{}").unwrap().allow_unknown);
    }

    #[test]
    fn accept_checks_type_range_and_choices() {
        let d = parse_declaration(GOOD).unwrap();
        let t = d.get("temperature").unwrap();
        assert_eq!(t.accept(&Value::Int(2)), Ok(Value::Float(2.0)));
        assert_eq!(t.accept(&Value::Float(2.0)), Ok(Value::Float(2.0)));
        assert_eq!(
            t.accept(&Value::Float(2.5)).unwrap_err(),
            "is 2.5, above the maximum 2"
        );
        assert_eq!(
            t.accept(&Value::Float(-0.1)).unwrap_err(),
            "is -0.1, below the minimum 0"
        );
        assert_eq!(
            t.accept(&Value::String("hot".into())).unwrap_err(),
            "must be of type float, got string \"hot\""
        );
        let k = d.get("top_k").unwrap();
        assert!(k.accept(&Value::Float(3.0)).is_err(), "no float for int");
        assert_eq!(k.accept(&Value::Int(1)), Ok(Value::Int(1)));
        assert!(k.accept(&Value::Int(0)).is_err());
        let m = d.get("mode").unwrap();
        assert_eq!(
            m.accept(&Value::String("slow".into())).unwrap_err(),
            "is \"slow\", not one of the allowed values [\"fast\", \"exact\"]"
        );
        let b = d.get("debug").unwrap();
        assert!(b.accept(&Value::Int(1)).is_err());
        assert_eq!(b.parse_text("true"), Ok(Value::Bool(true)));
        assert_eq!(k.parse_text("7"), Ok(Value::Int(7)));
        assert!(k.parse_text("7.5").is_err());
        assert_eq!(t.parse_text("0.5"), Ok(Value::Float(0.5)));
        assert!(t.parse_text("NaN").is_err());
    }

    #[test]
    fn reports_bad_declarations_with_lines() {
        let text = r#"{
  "parameters": [
    {"name": "a", "type": "int", "default": 10, "max": 5},
    {"name": "b", "type": "float", "min": 3, "max": 1},
    {"name": "a", "type": "int"},
    {"name": "c", "type": "bool", "min": 0},
    {"name": "d", "type": "string", "default": 3},
    {"name": "e", "type": "int", "choices": [1, "x"]}
  ]
}"#;
        let errs = parse_declaration(text).unwrap_err();
        let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            [
                "3:1: parameter 'a': default is 10, above the maximum 5",
                "4:1: parameter 'b' has min 3 greater than max 1",
                "5:1: parameter 'a' is declared more than once",
                "6:1: parameter 'c' of type bool has min/max",
                "7:1: parameter 'd': default must be of type string, got int 3",
                "8:1: parameter 'e': choice \"x\" must be of type int, got string \"x\"",
            ]
        );
    }

    #[test]
    fn syntax_and_unknown_fields_are_located() {
        let errs =
            parse_declaration("{\n \"parameters\": [\n {\"name\": \"a\", \"type\": \"number\"}]}")
                .unwrap_err();
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
        assert!(
            errs[0].message.contains("unknown variant `number`"),
            "{errs:?}"
        );
        let errs = parse_declaration(
            "{\"parameters\": [{\"name\": \"a\", \"type\": \"int\", \"maximum\": 3}]}",
        )
        .unwrap_err();
        assert!(
            errs[0].message.contains("unknown field `maximum`"),
            "{errs:?}"
        );
    }
}
