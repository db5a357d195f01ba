//! `--annotator-config DIR`: an alpaca_eval annotator config folder (`configs.yaml` and the
//! prompt it names) read into `herd_core::judge::AnnotatorConfig`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use herd_core::judge::AnnotatorConfig;

/// Reads `dir/configs.yaml` and its prompt. alpaca_eval names the prompt relative to its
/// `evaluators_configs` folder (`alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`): it is
/// looked for beside `dir` (in that folder), then inside `dir` by its file name.
pub fn read(dir: &Path) -> anyhow::Result<AnnotatorConfig> {
    let file = dir.join("configs.yaml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("--annotator-config {}", file.display()))?;
    let configs: serde_json::Value = serde_norway::from_str(&text)
        .with_context(|| format!("--annotator-config {}: not YAML", file.display()))?;
    let (_, named) = AnnotatorConfig::prompt_path(&configs)
        .with_context(|| format!("--annotator-config {}", file.display()))?;
    let candidates: Vec<PathBuf> = [
        dir.parent().map(|root| root.join(&named)),
        Path::new(&named).file_name().map(|name| dir.join(name)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(prompt_file) = candidates.iter().find(|p| p.is_file()) else {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "--annotator-config {}: prompt_template {named:?} not found (tried {})",
            file.display(),
            tried.join(", ")
        );
    };
    let prompt = std::fs::read_to_string(prompt_file)
        .with_context(|| format!("--annotator-config: {}", prompt_file.display()))?;
    AnnotatorConfig::from_alpaca_eval(&configs, &prompt)
        .with_context(|| format!("--annotator-config {}: not supported", file.display()))
}

#[cfg(test)]
mod tests {
    use herd_core::judge::served::ALPACA_EVAL_CLF_TEMPLATE;
    use herd_core::judge::CompletionParser;

    use super::*;

    fn configs(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/prompts/alpaca_eval_configs").join(name)
    }

    #[test]
    fn alpaca_evals_official_annotator_reads_as_herds_built_in_one() {
        let config = read(&configs("weighted_alpaca_eval_gpt4_turbo")).unwrap();
        assert_eq!(config.name, "weighted_alpaca_eval_gpt4_turbo");
        assert_eq!(config.model.as_deref(), Some("gpt-4-1106-preview"));
        assert_eq!(config.prompt_template, ALPACA_EVAL_CLF_TEMPLATE);
        assert_eq!((config.max_tokens, config.top_logprobs, config.temperature), (1, Some(5), 1.0));
        let weighted = CompletionParser::Logprob {
            numerator: "m".into(),
            denominators: vec!["m".into(), "M".into()],
            binarize: false,
        };
        assert_eq!(config.parser, weighted);
        let binarised = read(&configs("alpaca_eval_clf_gpt4_turbo")).unwrap();
        assert!(matches!(binarised.parser, CompletionParser::Logprob { binarize: true, .. }));
    }

    #[test]
    fn the_vllm_ranking_annotator_reads_with_its_own_prompt_and_parser() {
        let config = read(&configs("alpaca_eval_vllm_llama3_70b_fn")).unwrap();
        assert_eq!(config.parser, CompletionParser::Ranking);
        assert_eq!((config.max_tokens, config.top_logprobs, config.temperature), (100, None, 0.0));
        assert!(config.prompt_template.contains("{output_2}"));
    }

    #[test]
    fn what_herd_cannot_run_is_named() {
        let error = format!("{:#}", read(&configs("alpaca_eval_gpt4_turbo_fn")).unwrap_err());
        assert!(error.contains("alpaca_eval_gpt4_turbo_fn.completions_kwargs.tool"), "{error}");
        let missing = format!("{:#}", read(Path::new("/nonexistent/annotator")).unwrap_err());
        assert!(missing.contains("/nonexistent/annotator/configs.yaml"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("configs.yaml"),
            "a:\n  prompt_template: p.txt\n  fn_completion_parser: pipeline_meta_parser\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("p.txt"), ALPACA_EVAL_CLF_TEMPLATE).unwrap();
        let error = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(error.contains("a.fn_completion_parser: pipeline_meta_parser"), "{error}");
    }
}
