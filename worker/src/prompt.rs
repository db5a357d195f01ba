//! A generator's prompt as token ids: the domain's template ([`herd_core::prompts`]) around
//! the instruction, tokenized by the engine.

use herd_core::jobs::PromptTemplate;
use herd_core::prompts::{render, Prompt};
use herd_engine::{ChatMessage, Model};

/// Token ids of `instruction` under `template`. Fixed templates are plain text and get the
/// tokenizer's special tokens (BOS); the chat template writes its own.
pub fn prompt_tokens(
    model: &Model,
    template: PromptTemplate,
    instruction: &str,
) -> herd_engine::Result<Vec<u32>> {
    match render(template, instruction) {
        Prompt::Text(text) => model.encode(&text, true),
        Prompt::ChatUser(content) => model.chat_prompt(&[ChatMessage::new("user", content)]),
    }
}

#[cfg(test)]
mod tests {
    use herd_engine::LoadOptions;
    use herd_runtime::model_files::{resolve, DEFAULT_MODEL};

    use super::*;

    #[test]
    fn fixed_templates_are_text_with_the_tokenizers_specials_chat_the_models_format() {
        let model = Model::load(resolve(DEFAULT_MODEL).unwrap(), &LoadOptions::default()).unwrap();
        let alpaca = prompt_tokens(&model, PromptTemplate::AlpacaSft, "Name a color.").unwrap();
        let text = model.tokenizer.decode(&alpaca).unwrap();
        assert!(text.ends_with("### Instruction:\nName a color.\n\n### Response:\n"), "{text:?}");
        let raw = prompt_tokens(&model, PromptTemplate::Raw, "Hello world").unwrap();
        assert_eq!(raw, model.encode("Hello world", true).unwrap());
        let chat = prompt_tokens(&model, PromptTemplate::Chat, "Name a color.").unwrap();
        let user = [ChatMessage::new("user", "Name a color.")];
        assert_eq!(chat, model.chat_prompt(&user).unwrap());
        assert_eq!(chat[0], 1, "<|im_start|>, written by the template");
        assert_eq!(*chat.last().unwrap(), 198, "ends with the newline after 'assistant'");
    }
}
