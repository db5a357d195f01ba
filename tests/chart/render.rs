//! Renders the Helm chart without a helm binary: Go's text/template through the gtmpl crate,
//! plus the Sprig/Helm functions the chart uses, written here after their Go sources.
//!
//! Faithful where the chart needs it, and strict elsewhere: an unknown function is a parse
//! error, a misused one an execution error. What differs from Helm, and how the chart
//! stays clear of it:
//! - gtmpl walks a `range … else` branch even after iterating: the chart has no `range … else`.
//! - gtmpl cannot re-assign a variable (`$x = …`): the chart declares each variable once.
//! - gtmpl fails to range over a missing value (Go ranges zero times): the chart ranges over
//!   optional lists inside `with`.
//! - gtmpl ranges over maps in hash order (Go sorts keys): the chart ranges over
//!   `keys $m | sortAlpha` instead.
//! - Helm holds values' numbers as float64 and prints 1e+06 for a million; this renderer
//!   prints 1000000: the chart prints numbers through `int`, as Helm charts should.
//! - `.Files.Get "x"` is a method call gtmpl cannot make: it is rewritten to `filesGet "x"`
//!   before parsing (the only rewrite).
//! - gtmpl's `urlquery` is not Go's: it is replaced by a port of Go's url.QueryEscape.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use gtmpl::{Context, FuncError, Template, Value};
use serde_json::Value as Json;

/// A chart read from disk: metadata, values, templates and the files `.Files.Get` reads.
pub struct Chart {
    pub metadata: Json,
    pub default_values: Json,
    /// (name relative to the chart, text), e.g. ("templates/_helpers.tpl", …).
    pub templates: Vec<(String, String)>,
    pub files: BTreeMap<String, String>,
}

/// What a render produced: each template's output, by name.
pub struct Rendered {
    pub outputs: BTreeMap<String, String>,
}

impl Rendered {
    /// Every manifest (all templates but NOTES.txt), parsed, empty documents dropped.
    pub fn manifests(&self) -> Vec<(String, Json)> {
        let mut out = Vec::new();
        for (name, text) in &self.outputs {
            if name.ends_with("NOTES.txt") {
                continue;
            }
            for doc in split_documents(text) {
                let value: serde_norway::Value = serde_norway::from_str(&doc)
                    .unwrap_or_else(|e| panic!("{name} rendered invalid YAML: {e}\n{doc}"));
                let json = serde_json::to_value(value)
                    .unwrap_or_else(|e| panic!("{name}: YAML not representable as JSON: {e}"));
                if !json.is_null() {
                    out.push((name.clone(), json));
                }
            }
        }
        out
    }

    pub fn notes(&self) -> &str {
        self.outputs.get("templates/NOTES.txt").map(String::as_str).unwrap_or("")
    }
}

/// Splits a rendered file into YAML documents the way Helm does (on `---` lines).
fn split_documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().unwrap();
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

impl Chart {
    pub fn load(dir: &Path) -> Chart {
        let read = |p: &Path| {
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        };
        let metadata = yaml_to_json(&read(&dir.join("Chart.yaml")));
        let default_values = yaml_to_json(&read(&dir.join("values.yaml")));
        let mut templates = Vec::new();
        let mut entries: Vec<_> =
            std::fs::read_dir(dir.join("templates")).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = format!("templates/{}", path.file_name().unwrap().to_string_lossy());
            templates.push((name, read(&path)));
        }
        let mut files = BTreeMap::new();
        let dashboards = dir.join("dashboards");
        if dashboards.is_dir() {
            for entry in std::fs::read_dir(&dashboards).unwrap() {
                let path = entry.unwrap().path();
                let name = format!("dashboards/{}", path.file_name().unwrap().to_string_lossy());
                files.insert(name, read(&path));
            }
        }
        Chart { metadata, default_values, templates, files }
    }

    /// The chart's defaults with each override file coalesced on top, as `helm -f` does.
    pub fn values(&self, overrides: &[Json]) -> Json {
        let mut values = self.default_values.clone();
        for o in overrides {
            coalesce(&mut values, o);
        }
        values
    }

    /// Renders every template (`helm template`), or returns the first error.
    pub fn render(
        &self,
        values: &Json,
        release: &str,
        namespace: &str,
    ) -> Result<Rendered, String> {
        let context = self.context(values, release, namespace);
        let sources: Vec<(String, String)> = self
            .templates
            .iter()
            .map(|(name, text)| (name.clone(), rewrite_files_get(text)))
            .collect();
        STATE.with(|s| {
            *s.borrow_mut() = State { sources: sources.clone(), files: self.files.clone() };
        });
        let mut outputs = BTreeMap::new();
        for (name, _) in &sources {
            let base = name.rsplit('/').next().unwrap();
            if base.starts_with('_') {
                continue; // partials hold `define`s only
            }
            let mut ctx = context.clone();
            if let Value::Map(m) = &mut ctx {
                let mut t = HashMap::new();
                t.insert("Name".to_string(), Value::from(format!("herd/{name}")));
                t.insert("BasePath".to_string(), Value::from("herd/templates"));
                m.insert("Template".to_string(), Value::Map(t));
            }
            let out = execute(name, &sources, &ctx)?;
            outputs.insert(name.clone(), out);
        }
        Ok(Rendered { outputs })
    }

    fn context(&self, values: &Json, release: &str, namespace: &str) -> Value {
        let meta = &self.metadata;
        let s = |k: &str| Value::from(meta[k].as_str().unwrap_or("").to_string());
        let mut chart = HashMap::new();
        chart.insert("Name".to_string(), s("name"));
        chart.insert("Version".to_string(), s("version"));
        chart.insert("AppVersion".to_string(), s("appVersion"));
        chart.insert("Description".to_string(), s("description"));
        let mut rel = HashMap::new();
        rel.insert("Name".to_string(), Value::from(release.to_string()));
        rel.insert("Namespace".to_string(), Value::from(namespace.to_string()));
        rel.insert("Service".to_string(), Value::from("Helm"));
        rel.insert("IsInstall".to_string(), Value::Bool(true));
        rel.insert("IsUpgrade".to_string(), Value::Bool(false));
        rel.insert("Revision".to_string(), Value::from(1i64));
        let mut kube = HashMap::new();
        kube.insert("Version".to_string(), Value::from("v1.33.0"));
        kube.insert("Major".to_string(), Value::from("1"));
        kube.insert("Minor".to_string(), Value::from("33"));
        let mut caps = HashMap::new();
        caps.insert("KubeVersion".to_string(), Value::Map(kube));
        let mut root = HashMap::new();
        root.insert("Values".to_string(), json_to_value(values));
        root.insert("Chart".to_string(), Value::Map(chart));
        root.insert("Release".to_string(), Value::Map(rel));
        root.insert("Capabilities".to_string(), Value::Map(caps));
        Value::Map(root)
    }
}

pub fn yaml_to_json(text: &str) -> Json {
    let value: serde_norway::Value = serde_norway::from_str(text).expect("valid YAML");
    serde_json::to_value(value).expect("YAML representable as JSON")
}

/// Helm's coalescing of a values file onto the defaults: maps merge key by key, anything
/// else replaces, and a null deletes the default's key.
fn coalesce(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    if existing.is_object() && v.is_object() {
                        coalesce(existing, v);
                    } else {
                        *existing = v.clone();
                    }
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn rewrite_files_get(text: &str) -> String {
    let re = regex::Regex::new(r"\$?\.Files\.Get\b").unwrap();
    re.replace_all(text, "filesGet").into_owned()
}

#[derive(Default)]
struct State {
    sources: Vec<(String, String)>,
    files: BTreeMap<String, String>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Executes template `name` (a file or a `define`) with every source parsed alongside, as
/// Helm parses all of a chart's templates into one set.
fn execute(name: &str, sources: &[(String, String)], dot: &Value) -> Result<String, String> {
    let mut t = Template::with_name(name);
    t.add_funcs(&FUNCS);
    for (file, text) in sources {
        t.add_template(file.clone(), text.clone()).map_err(|e| format!("parsing {file}: {e}"))?;
    }
    if !t.tree_set.contains_key(name) {
        return Err(format!("no template named {name:?}"));
    }
    let out =
        t.render(&Context::from(dot.clone())).map_err(|e| format!("executing {name}: {e}"))?;
    // Helm renders missing values as "" rather than Go's "<no value>".
    Ok(out.replace("<no value>", ""))
}

type Func = fn(&[Value]) -> Result<Value, FuncError>;

const FUNCS: [(&str, Func); 30] = [
    ("include", include),
    ("required", required),
    ("fail", fail),
    ("default", default),
    ("empty", empty),
    ("quote", quote),
    ("toString", to_string),
    ("toYaml", to_yaml),
    ("toJson", to_json),
    ("indent", indent),
    ("nindent", nindent),
    ("trunc", trunc),
    ("trimSuffix", trim_suffix),
    ("trimPrefix", trim_prefix),
    ("hasPrefix", has_prefix),
    ("contains", contains),
    ("replace", replace),
    ("lower", lower),
    ("b64enc", b64enc),
    ("urlquery", urlquery),
    ("regexReplaceAll", regex_replace_all),
    ("dict", dict),
    ("list", list),
    ("hasKey", has_key),
    ("keys", keys),
    ("sortAlpha", sort_alpha),
    ("kindIs", kind_is),
    ("ternary", ternary),
    ("int", int),
    ("filesGet", files_get),
];

fn err(msg: impl Into<String>) -> FuncError {
    FuncError::Generic(msg.into())
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), FuncError> {
    if args.len() != n {
        return Err(err(format!("{name}: wants {n} arguments, got {}", args.len())));
    }
    Ok(())
}

/// Go's fmt %v of a value, as Sprig's strval gives it (nil is "").
fn strval(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Number(n) => num_f64(n) == 0.0,
        Value::Function(_) => false,
    }
}

fn num_f64(n: &gtmpl_value::Number) -> f64 {
    n.as_f64()
        .or_else(|| n.as_i64().map(|i| i as f64))
        .or_else(|| n.as_u64().map(|u| u as f64))
        .unwrap_or(f64::NAN)
}

fn include(args: &[Value]) -> Result<Value, FuncError> {
    arity("include", args, 2)?;
    let name = match &args[0] {
        Value::String(s) => s.clone(),
        other => return Err(err(format!("include: template name {other} is not a string"))),
    };
    let sources = STATE.with(|s| s.borrow().sources.clone());
    execute(&name, &sources, &args[1]).map(Value::from).map_err(err)
}

fn required(args: &[Value]) -> Result<Value, FuncError> {
    arity("required", args, 2)?;
    match &args[1] {
        Value::NoValue | Value::Nil => Err(err(strval(&args[0]))),
        Value::String(s) if s.is_empty() => Err(err(strval(&args[0]))),
        v => Ok(v.clone()),
    }
}

fn fail(args: &[Value]) -> Result<Value, FuncError> {
    arity("fail", args, 1)?;
    Err(err(format!("fail: {}", strval(&args[0]))))
}

fn default(args: &[Value]) -> Result<Value, FuncError> {
    // `default D` with no given value (a missing key yields no argument in Sprig).
    match args.len() {
        1 => Ok(args[0].clone()),
        2 => Ok(if is_empty(&args[1]) { args[0].clone() } else { args[1].clone() }),
        n => Err(err(format!("default: wants 2 arguments, got {n}"))),
    }
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    arity("empty", args, 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

/// Go's %q of a string.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let parts: Vec<String> = args
        .iter()
        .filter(|a| !matches!(a, Value::NoValue | Value::Nil))
        .map(|a| go_quote(&strval(a)))
        .collect();
    Ok(Value::from(parts.join(" ")))
}

fn to_string(args: &[Value]) -> Result<Value, FuncError> {
    arity("toString", args, 1)?;
    Ok(Value::from(strval(&args[0])))
}

/// A template value as JSON, maps with sorted keys (as Go's encoders write them).
pub fn value_to_json(v: &Value) -> Result<Json, FuncError> {
    Ok(match v {
        Value::NoValue | Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                let f = n.as_f64().ok_or_else(|| err("number out of range"))?;
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    Json::from(f as i64)
                } else {
                    Json::from(f)
                }
            }
        }
        Value::Array(a) => Json::Array(a.iter().map(value_to_json).collect::<Result<_, _>>()?),
        Value::Map(m) | Value::Object(m) => {
            let sorted: BTreeMap<_, _> = m.iter().collect();
            let mut out = serde_json::Map::new();
            for (k, v) in sorted {
                out.insert(k.clone(), value_to_json(v)?);
            }
            Json::Object(out)
        }
        Value::Function(_) => return Err(err("cannot serialise a function")),
    })
}

pub fn json_to_value(j: &Json) -> Value {
    match j {
        // Go prints a nil value as <no value>, which Helm blanks out; NoValue does the same.
        Json::Null => Value::NoValue,
        Json::Bool(b) => Value::Bool(*b),
        // Helm reads values through JSON: every number is a float64.
        Json::Number(n) => Value::from(n.as_f64().unwrap()),
        Json::String(s) => Value::from(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(json_to_value).collect()),
        Json::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect())
        }
    }
}

fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    arity("toYaml", args, 1)?;
    let json = value_to_json(&args[0])?;
    let text = serde_norway::to_string(&json).map_err(|e| err(format!("toYaml: {e}")))?;
    // Helm trims the encoder's final newline.
    Ok(Value::from(text.trim_end_matches('\n').to_string()))
}

fn to_json(args: &[Value]) -> Result<Value, FuncError> {
    arity("toJson", args, 1)?;
    let json = value_to_json(&args[0])?;
    Ok(Value::from(serde_json::to_string(&json).unwrap()))
}

fn number_arg(name: &str, v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| err(format!("{name}: bad number"))),
        other => Err(err(format!("{name}: {other} is not a number"))),
    }
}

fn indent_by(n: i64, s: &str) -> String {
    let pad = " ".repeat(n.max(0) as usize);
    format!("{pad}{}", s.replace('\n', &format!("\n{pad}")))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    arity("indent", args, 2)?;
    Ok(Value::from(indent_by(number_arg("indent", &args[0])?, &strval(&args[1]))))
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    arity("nindent", args, 2)?;
    Ok(Value::from(format!("\n{}", indent_by(number_arg("nindent", &args[0])?, &strval(&args[1])))))
}

fn trunc(args: &[Value]) -> Result<Value, FuncError> {
    arity("trunc", args, 2)?;
    let n = number_arg("trunc", &args[0])?;
    let s = strval(&args[1]);
    // Sprig counts bytes; the chart truncates ASCII names only.
    let out = if n >= 0 && s.len() > n as usize { s[..n as usize].to_string() } else { s };
    Ok(Value::from(out))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    arity("trimSuffix", args, 2)?;
    let (suffix, s) = (strval(&args[0]), strval(&args[1]));
    Ok(Value::from(s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_string()))
}

fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    arity("trimPrefix", args, 2)?;
    let (prefix, s) = (strval(&args[0]), strval(&args[1]));
    Ok(Value::from(s.strip_prefix(prefix.as_str()).unwrap_or(&s).to_string()))
}

fn has_prefix(args: &[Value]) -> Result<Value, FuncError> {
    arity("hasPrefix", args, 2)?;
    Ok(Value::Bool(strval(&args[1]).starts_with(&strval(&args[0]))))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    arity("contains", args, 2)?;
    Ok(Value::Bool(strval(&args[1]).contains(&strval(&args[0]))))
}

fn replace(args: &[Value]) -> Result<Value, FuncError> {
    arity("replace", args, 3)?;
    Ok(Value::from(strval(&args[2]).replace(&strval(&args[0]), &strval(&args[1]))))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    arity("lower", args, 1)?;
    Ok(Value::from(strval(&args[0]).to_lowercase()))
}

fn b64enc(args: &[Value]) -> Result<Value, FuncError> {
    arity("b64enc", args, 1)?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = strval(&args[0]).into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    Ok(Value::from(out))
}

/// Go's url.QueryEscape.
fn urlquery(args: &[Value]) -> Result<Value, FuncError> {
    let s: String = args.iter().map(strval).collect();
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    Ok(Value::from(out))
}

fn regex_replace_all(args: &[Value]) -> Result<Value, FuncError> {
    arity("regexReplaceAll", args, 3)?;
    let re =
        regex::Regex::new(&strval(&args[0])).map_err(|e| err(format!("regexReplaceAll: {e}")))?;
    // Go's Regexp.ReplaceAllString expands $1 / ${1} like the regex crate does.
    Ok(Value::from(re.replace_all(&strval(&args[1]), strval(&args[2]).as_str()).into_owned()))
}

fn dict(args: &[Value]) -> Result<Value, FuncError> {
    let mut m = HashMap::new();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or(Value::NoValue);
        m.insert(strval(&pair[0]), v);
    }
    Ok(Value::Map(m))
}

fn list(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Array(args.to_vec()))
}

fn has_key(args: &[Value]) -> Result<Value, FuncError> {
    arity("hasKey", args, 2)?;
    match &args[0] {
        Value::Map(m) | Value::Object(m) => Ok(Value::Bool(m.contains_key(&strval(&args[1])))),
        other => Err(err(format!("hasKey: {other} is not a map"))),
    }
}

fn keys(args: &[Value]) -> Result<Value, FuncError> {
    let mut out = Vec::new();
    for a in args {
        match a {
            Value::Map(m) | Value::Object(m) => {
                out.extend(m.keys().map(|k| Value::from(k.clone())))
            }
            other => return Err(err(format!("keys: {other} is not a map"))),
        }
    }
    Ok(Value::Array(out))
}

fn sort_alpha(args: &[Value]) -> Result<Value, FuncError> {
    arity("sortAlpha", args, 1)?;
    match &args[0] {
        Value::Array(a) => {
            let mut s: Vec<String> = a.iter().map(strval).collect();
            s.sort();
            Ok(Value::Array(s.into_iter().map(Value::from).collect()))
        }
        other => Ok(Value::Array(vec![Value::from(strval(other))])),
    }
}

/// Go's reflect kind of a value as Sprig's kindOf names it.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::NoValue | Value::Nil => "invalid",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Number(n) => {
            if n.as_i64().is_some() || n.as_u64().is_some() {
                "int"
            } else {
                "float64"
            }
        }
        Value::Array(_) => "slice",
        Value::Map(_) | Value::Object(_) => "map",
        Value::Function(_) => "func",
    }
}

fn kind_is(args: &[Value]) -> Result<Value, FuncError> {
    arity("kindIs", args, 2)?;
    Ok(Value::Bool(strval(&args[0]) == kind_of(&args[1])))
}

fn ternary(args: &[Value]) -> Result<Value, FuncError> {
    arity("ternary", args, 3)?;
    match &args[2] {
        Value::Bool(true) => Ok(args[0].clone()),
        Value::Bool(false) => Ok(args[1].clone()),
        other => Err(err(format!("ternary: condition {other} is not a bool"))),
    }
}

/// Sprig's int (spf13/cast ToInt): numbers truncate, numeric strings parse, nil is 0.
fn int(args: &[Value]) -> Result<Value, FuncError> {
    arity("int", args, 1)?;
    let i = match &args[0] {
        Value::Number(n) => n.as_i64().unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i64),
        Value::String(s) => s.trim().parse::<i64>().unwrap_or(0),
        Value::Bool(b) => *b as i64,
        _ => 0,
    };
    Ok(Value::from(i))
}

fn files_get(args: &[Value]) -> Result<Value, FuncError> {
    arity("Files.Get", args, 1)?;
    let name = strval(&args[0]);
    // Helm returns "" for a missing file; a test wants to know.
    STATE
        .with(|s| s.borrow().files.get(&name).cloned())
        .map(Value::from)
        .ok_or_else(|| err(format!("Files.Get: no file {name:?} in the chart")))
}
