//! The generators' fixed prompt templates (`data/prompts/`): how a [`PromptTemplate`] turns
//! an AlpacaEval instruction into what the model reads, either a finished text prompt or a
//! user message for the model's own chat template (which only the engine can render).

use crate::jobs::PromptTemplate;

/// The Alpaca instruction-tuning template; the prompt ends where `{response}` starts.
pub const ALPACA_SFT_TEMPLATE: &str = include_str!("../../data/prompts/alpaca_sft.prompt");
/// The zero-shot system prompt (URIAL style); the model continues after the opening fence.
pub const ZERO_SHOT_SYSTEM_TEMPLATE: &str =
    include_str!("../../data/prompts/zero_shot_system_prompt.prompt");

/// What the model is given for one instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Plain text, tokenized with the tokenizer's own special tokens (BOS).
    Text(String),
    /// The content of one user message, rendered with the model's chat template (with its
    /// generation prompt); the rendering carries its own special tokens.
    ChatUser(String),
}

/// `instruction` under `template`.
pub fn render(template: PromptTemplate, instruction: &str) -> Prompt {
    match template {
        PromptTemplate::Raw => Prompt::Text(instruction.to_string()),
        PromptTemplate::AlpacaSft => {
            let (head, _) =
                ALPACA_SFT_TEMPLATE.split_once("{response}").unwrap_or((ALPACA_SFT_TEMPLATE, ""));
            Prompt::Text(head.replacen("{instruction}", instruction, 1))
        }
        PromptTemplate::ZeroShotSystem => {
            Prompt::Text(ZERO_SHOT_SYSTEM_TEMPLATE.replacen("{instruction}", instruction, 1))
        }
        PromptTemplate::Chat => Prompt::ChatUser(instruction.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(template: PromptTemplate, instruction: &str) -> String {
        match render(template, instruction) {
            Prompt::Text(text) => text,
            other => panic!("{template:?} gave {other:?}"),
        }
    }

    #[test]
    fn alpaca_prompt_ends_where_the_response_starts() {
        let p = text(PromptTemplate::AlpacaSft, "Name a color.");
        assert!(p.starts_with("Below is an instruction that describes a task."));
        assert!(p.contains("### Instruction:\nName a color.\n\n### Response:\n"));
        assert!(p.ends_with("### Response:\n"), "{p:?}");
    }

    #[test]
    fn zero_shot_prompt_puts_the_instruction_in_the_query_fence() {
        let p = text(PromptTemplate::ZeroShotSystem, "Name a color.");
        assert!(p.starts_with("# Instruction\n"));
        assert!(p.contains("# Query:\n```Name a color.```\n\n# Answer:\n```"));
        assert!(!p.contains("{instruction}"));
    }

    #[test]
    fn raw_prompt_is_the_instruction() {
        assert_eq!(text(PromptTemplate::Raw, "  x {response} "), "  x {response} ");
    }

    #[test]
    fn chat_prompt_is_the_instruction_as_the_user_message() {
        assert_eq!(render(PromptTemplate::Chat, " x "), Prompt::ChatUser(" x ".into()));
    }

    #[test]
    fn instruction_braces_are_not_template_fields() {
        let p = text(PromptTemplate::AlpacaSft, "print {response} and {instruction}");
        assert!(p.contains("print {response} and {instruction}\n\n### Response:\n"));
    }
}
