//! A `--generator` value: `key=value` settings laid over the run's defaults.
//!
//! `name=NAME,model=PATH_OR_BUILTIN,template=chat|raw|alpaca_sft|zero_shot_system,
//! max_new_tokens=N,stop=TEXT,endpoint=URL,api=chat|completions,temperature=T,top_p=P,
//! seed=N`: every key is optional,
//! `stop` may repeat, any other key may not; `\n`, `\t`, `\,` and `\\` are escapes. With
//! `endpoint`, the model is served there (an OpenAI-compatible API) and `model` is the
//! name that server knows it by. `temperature`, `top_p` or `seed` make the generator sample
//! (defaults 1, 1, 0) instead of decoding greedily; temperature=0 is greedy.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context};
use herd_core::jobs::{GeneratorSpec, PromptTemplate, RemoteApi, RemoteEndpoint, SamplingSpec};
use herd_runtime::DEFAULT_MODEL;

use crate::args::STORE_FOLDER;

/// The settings one `--generator` (or `--baseline`) value gives; what it leaves out comes
/// from the defaults it is applied to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneratorSettings {
    pub name: Option<String>,
    pub model: Option<String>,
    pub template: Option<PromptTemplate>,
    pub max_new_tokens: Option<usize>,
    /// Empty: the defaults' stop strings.
    pub stop: Vec<String>,
    /// An OpenAI-compatible API's base URL serving the model.
    pub endpoint: Option<String>,
    /// Default: `chat` for the chat template, `completions` for the text templates.
    pub api: Option<RemoteApi>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
}

impl FromStr for GeneratorSettings {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut settings = GeneratorSettings::default();
        let mut seen = BTreeSet::new();
        for pair in split_unescaped(text, ',') {
            if pair.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = pair.split_once('=') else {
                bail!("{pair:?} is not key=value");
            };
            let key = key.trim();
            let value = unescape(value);
            if key != "stop" && !seen.insert(key.to_string()) {
                bail!("{key} is given twice");
            }
            match key {
                "name" => settings.name = Some(value),
                "model" => {
                    if value.trim().is_empty() {
                        bail!("model is empty");
                    }
                    settings.model = Some(value)
                }
                "template" => {
                    settings.template = Some(PromptTemplate::parse(&value).with_context(|| {
                        let names: Vec<&str> =
                            PromptTemplate::ALL.iter().map(|t| t.as_str()).collect();
                        format!("template {value:?} is not one of {}", names.join(", "))
                    })?)
                }
                "max_new_tokens" => {
                    let count: usize = value
                        .parse()
                        .with_context(|| format!("max_new_tokens {value:?} is not a count"))?;
                    if count == 0 {
                        bail!("max_new_tokens is 0: every answer would be empty");
                    }
                    settings.max_new_tokens = Some(count)
                }
                "stop" => settings.stop.push(value),
                "endpoint" => {
                    let url = value.trim();
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        bail!("endpoint {url:?} is not an http:// or https:// URL");
                    }
                    settings.endpoint = Some(url.trim_end_matches('/').to_string())
                }
                "api" => {
                    settings.api = Some(match value.as_str() {
                        "chat" => RemoteApi::Chat,
                        "completions" => RemoteApi::Completions,
                        other => bail!("api {other:?} is not chat or completions"),
                    })
                }
                "temperature" => {
                    let t: f64 =
                        value.parse().ok().filter(|t: &f64| (0.0..=2.0).contains(t)).with_context(
                            || format!("temperature {value:?} is not a number in [0, 2]"),
                        )?;
                    settings.temperature = Some(t)
                }
                "top_p" => {
                    let p: f64 =
                        value.parse().ok().filter(|p: &f64| *p > 0.0 && *p <= 1.0).with_context(
                            || format!("top_p {value:?} is not a number in (0, 1]"),
                        )?;
                    settings.top_p = Some(p)
                }
                "seed" => {
                    settings.seed = Some(
                        value
                            .parse()
                            .with_context(|| format!("seed {value:?} is not a whole number"))?,
                    )
                }
                other => {
                    bail!("unknown key {other:?} (name, model, template, max_new_tokens, stop, endpoint, api, temperature, top_p, seed)")
                }
            }
        }
        Ok(settings)
    }
}

impl GeneratorSettings {
    /// No key given (an empty `--generator` value).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `defaults` with these settings laid over; an empty name is derived from the model
    /// (and the template, when it is not the chat template).
    pub fn apply(&self, defaults: &GeneratorSpec) -> GeneratorSpec {
        let mut spec = defaults.clone();
        if let Some(name) = &self.name {
            spec.name = name.clone();
        }
        if let Some(model) = &self.model {
            spec.model = model.clone();
        }
        if let Some(template) = self.template {
            spec.template = template;
        }
        if let Some(max_new_tokens) = self.max_new_tokens {
            spec.max_new_tokens = max_new_tokens;
        }
        if !self.stop.is_empty() {
            spec.stop = self.stop.clone();
        }
        let api_for = |template| match template {
            PromptTemplate::Chat => RemoteApi::Chat,
            _ => RemoteApi::Completions,
        };
        if self.temperature.is_some() || self.top_p.is_some() || self.seed.is_some() {
            let temperature = self.temperature.unwrap_or(1.0);
            spec.sampling = (temperature > 0.0).then(|| SamplingSpec {
                temperature,
                top_p: self.top_p.unwrap_or(1.0),
                seed: self.seed.unwrap_or(0),
            });
        }
        if let Some(url) = &self.endpoint {
            let api = self.api.unwrap_or(api_for(spec.template));
            spec.endpoint = Some(RemoteEndpoint { url: url.clone(), api });
        } else if let Some(endpoint) = &mut spec.endpoint {
            // Inherited (the baseline of a remote generator): a new template picks its API.
            endpoint.api = self.api.unwrap_or(api_for(spec.template));
        }
        if spec.name.is_empty() {
            spec.name = default_name(&spec.model, spec.template);
        }
        spec
    }
}

/// The generator specs from the flags: the default model when none is given, then the
/// baseline (the first generator with the baseline's settings) when asked for.
pub fn generator_specs(
    generators: &[GeneratorSettings],
    baseline: Option<&GeneratorSettings>,
    max_new_tokens: usize,
) -> anyhow::Result<Vec<GeneratorSpec>> {
    if max_new_tokens == 0 {
        bail!("--max-new-tokens 0: every answer would be empty");
    }
    let defaults = GeneratorSpec {
        name: String::new(),
        model: DEFAULT_MODEL.into(),
        template: PromptTemplate::Chat,
        max_new_tokens,
        stop: Vec::new(),
        endpoint: None,
        sampling: None,
    };
    let mut specs: Vec<GeneratorSpec> =
        generators.iter().filter(|g| !g.is_empty()).map(|g| g.apply(&defaults)).collect();
    if specs.is_empty() {
        specs.push(GeneratorSettings::default().apply(&defaults));
    }
    if let Some(baseline) = baseline {
        let first = GeneratorSpec { name: String::new(), ..specs[0].clone() };
        specs.push(baseline.apply(&first));
    }
    let mut names = BTreeSet::new();
    for g in &specs {
        if !names.insert(g.name.clone()) {
            bail!("two generators are named {:?}; give one of them name=…", g.name);
        }
        if let Some(endpoint) = &g.endpoint {
            let chat_template = g.template == PromptTemplate::Chat;
            if chat_template != (endpoint.api == RemoteApi::Chat) {
                bail!(
                    "generator {:?}: template={} needs api={} (the chat template is the server's; text templates go to /completions)",
                    g.name,
                    g.template.as_str(),
                    if chat_template { "chat" } else { "completions" }
                );
            }
        }
        if herd_report::folder_name(&g.name) == STORE_FOLDER {
            bail!("a generator cannot be named {STORE_FOLDER:?}: the run folder keeps its results there");
        }
    }
    Ok(specs)
}

/// A model's short name: the built-in name, a GGUF file's stem or a folder's name.
pub fn model_display_name(model: &str) -> String {
    let path = Path::new(model);
    if model.eq_ignore_ascii_case(DEFAULT_MODEL) {
        DEFAULT_MODEL.to_string()
    } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| model.into())
    } else {
        path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| model.into())
    }
}

fn default_name(model: &str, template: PromptTemplate) -> String {
    let base = model_display_name(model);
    match template {
        PromptTemplate::Chat => base,
        other => format!("{base}-{}", other.as_str()),
    }
}

fn split_unescaped(text: &str, separator: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // Keep the escape for `unescape`; only an escaped separator stays in the part.
                let last = parts.last_mut().expect("one part");
                last.push('\\');
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            c if c == separator => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> GeneratorSpec {
        GeneratorSpec {
            name: String::new(),
            model: DEFAULT_MODEL.into(),
            template: PromptTemplate::Chat,
            max_new_tokens: 512,
            stop: vec![],
            endpoint: None,
            sampling: None,
        }
    }

    fn parse(text: &str) -> anyhow::Result<GeneratorSpec> {
        Ok(text.parse::<GeneratorSettings>()?.apply(&defaults()))
    }

    #[test]
    fn a_generator_spec_overrides_the_defaults_key_by_key() {
        let spec =
            parse(r"model=/m/My-Model.Q4.gguf,template=alpaca_sft,stop=###,stop=\n\n,stop=a\,b")
                .unwrap();
        assert_eq!(spec.name, "My-Model.Q4-alpaca_sft");
        assert_eq!(spec.template, PromptTemplate::AlpacaSft);
        assert_eq!(spec.stop, vec!["###".to_string(), "\n\n".into(), "a,b".into()]);
        assert_eq!(spec.max_new_tokens, 512);
        assert_eq!(parse("").unwrap().name, DEFAULT_MODEL);
        assert_eq!(parse("model=/models/my-sft/").unwrap().name, "my-sft");
        assert!(parse("template=fancy").unwrap_err().to_string().contains("not one of"));
        assert!(parse("colour=red").is_err());
        assert!(parse("max_new_tokens=many").is_err());
        assert!(parse("novalue").unwrap_err().to_string().contains("not key=value"));
    }

    #[test]
    fn a_repeated_key_or_an_empty_answer_length_is_refused() {
        let twice = parse("name=a,name=b").unwrap_err();
        assert!(twice.to_string().contains("name is given twice"), "{twice}");
        let zero = parse("max_new_tokens=0").unwrap_err();
        assert!(zero.to_string().contains("max_new_tokens is 0"), "{zero}");
        assert!(parse("model=").unwrap_err().to_string().contains("model is empty"));
        assert!(generator_specs(&[], None, 0).is_err());
    }

    #[test]
    fn an_endpoint_serves_the_model_and_the_template_picks_the_api() {
        let spec = parse("endpoint=http://host:8000/v1/,model=my-sft").unwrap();
        let endpoint = spec.endpoint.clone().unwrap();
        assert_eq!(endpoint.url, "http://host:8000/v1");
        assert_eq!(endpoint.api, RemoteApi::Chat);
        assert_eq!(spec.model, "my-sft");
        let text = parse("endpoint=https://h/v1,template=alpaca_sft").unwrap();
        assert_eq!(text.endpoint.unwrap().api, RemoteApi::Completions);
        assert!(parse("endpoint=host:8000").unwrap_err().to_string().contains("http"));
        assert!(parse("endpoint=http://h/v1,api=grpc").unwrap_err().to_string().contains("api"));
        // The baseline of a remote generator is served by the same endpoint, through the
        // API its template needs.
        let remote: GeneratorSettings = "endpoint=http://h/v1,model=m".parse().unwrap();
        let zero_shot: GeneratorSettings = "template=zero_shot_system".parse().unwrap();
        let specs = generator_specs(&[remote], Some(&zero_shot), 64).unwrap();
        assert_eq!(specs[1].endpoint.as_ref().unwrap().api, RemoteApi::Completions);
        assert_eq!(specs[1].endpoint.as_ref().unwrap().url, "http://h/v1");
        let mismatched: GeneratorSettings = "endpoint=http://h/v1,api=completions".parse().unwrap();
        let error = generator_specs(&[mismatched], None, 64).unwrap_err().to_string();
        assert!(error.contains("template=chat needs api=chat"), "{error}");
    }

    #[test]
    fn sampling_keys_make_a_sampling_generator_and_temperature_0_is_greedy() {
        let sampled = parse("temperature=0.7,seed=42").unwrap().sampling.unwrap();
        assert_eq!((sampled.temperature, sampled.top_p, sampled.seed), (0.7, 1.0, 42));
        assert_eq!(parse("top_p=0.9").unwrap().sampling.unwrap().temperature, 1.0);
        assert_eq!(parse("temperature=0").unwrap().sampling, None);
        assert_eq!(parse("").unwrap().sampling, None);
        assert!(parse("temperature=3").unwrap_err().to_string().contains("temperature"));
        assert!(parse("top_p=0").unwrap_err().to_string().contains("top_p"));
        assert!(parse("seed=-1").unwrap_err().to_string().contains("seed"));
        // Each answer's seed depends on its instruction, not on the batch it ran in.
        assert_ne!(sampled.seed_for(0), sampled.seed_for(1));
        assert_eq!(sampled.seed_for(5), sampled.seed_for(5));
        assert!(sampled.seed_for(9) < 1 << 31);
    }

    #[test]
    fn the_baseline_is_the_first_generator_without_its_chat_template() {
        let raw: GeneratorSettings = "template=raw".parse().unwrap();
        let specs = generator_specs(&[], Some(&raw), 64).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].name.as_str(), specs[1].name.as_str()),
            (DEFAULT_MODEL, "smollm2-135m-instruct-raw")
        );
        assert_eq!((specs[1].template, specs[1].max_new_tokens), (PromptTemplate::Raw, 64));
        let a: GeneratorSettings = "name=a".parse().unwrap();
        let same = generator_specs(std::slice::from_ref(&a), Some(&a), 64).unwrap_err();
        assert!(same.to_string().contains("two generators"), "{same}");
        let store: GeneratorSettings = "name=store".parse().unwrap();
        assert!(generator_specs(&[store], None, 64).is_err());
    }

    #[test]
    fn empty_values_stand_for_the_default_generator() {
        let empty: GeneratorSettings = " ".parse().unwrap();
        assert!(empty.is_empty());
        let specs = generator_specs(&[empty.clone(), empty], None, 64).unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, DEFAULT_MODEL);
    }
}
