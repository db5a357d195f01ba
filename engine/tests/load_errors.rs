//! Bad model inputs fail at load time with an error that names the problem.

mod common;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::{smollm2_gguf, temp_dir, TinyLlama};
use herd_engine::{EngineError, LoadOptions, Model, ModelSource};

fn load(path: &std::path::Path) -> Result<Model, EngineError> {
    Model::load(path, &LoadOptions::default())
}

#[test]
fn a_path_that_does_not_exist_is_model_not_found() {
    let err = load(std::path::Path::new("/nonexistent/herd/model.gguf")).unwrap_err();
    assert!(matches!(err, EngineError::ModelNotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/herd/model.gguf"));
}

#[test]
fn a_folder_without_config_json_is_rejected() {
    let dir = temp_dir("no-config");
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EngineError::MissingConfig { .. }), "{err}");
}

#[test]
fn a_folder_without_weights_is_rejected() {
    let dir = temp_dir("no-weights");
    TinyLlama::default().write(&dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EngineError::MissingWeights { .. }), "{err}");
}

#[test]
fn a_sharded_folder_with_a_missing_shard_is_rejected() {
    let dir = temp_dir("missing-shard");
    TinyLlama { shards: 2, ..Default::default() }.write(&dir);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(err.to_string().contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn a_folder_without_tokenizer_is_rejected() {
    let dir = temp_dir("no-tokenizer");
    TinyLlama::default().write(&dir);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EngineError::MissingTokenizer { .. }), "{err}");
}

#[test]
fn an_unsupported_architecture_in_config_json_is_rejected() {
    let dir = temp_dir("gpt2-config");
    TinyLlama::default().write(&dir);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config =
        config.replace("\"llama\"", "\"gpt2\"").replace("LlamaForCausalLM", "GPT2LMHeadModel");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let err = load(&dir).unwrap_err();
    match &err {
        EngineError::UnsupportedArchitecture { architecture, .. } => {
            assert_eq!(architecture, "gpt2")
        }
        other => panic!("expected UnsupportedArchitecture, got {other}"),
    }
}

#[test]
fn a_chat_template_that_cannot_render_fails_the_load() {
    let dir = temp_dir("bad-template");
    TinyLlama::default().write(&dir);
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.content }}"}"#,
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EngineError::ChatTemplate { .. }), "{err}");
}

#[test]
fn a_file_that_is_not_gguf_is_a_bad_gguf() {
    let dir = temp_dir("garbage-gguf");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"this is not a gguf file at all, just some text").unwrap();
    let err = load(&path).unwrap_err();
    assert!(matches!(err, EngineError::BadGguf { .. }), "{err}");
}

#[test]
fn a_truncated_gguf_is_a_bad_gguf_before_any_weight_is_read() {
    let ModelSource::Gguf(real) = ModelSource::from_path(smollm2_gguf()).unwrap() else {
        panic!("a file is a GGUF")
    };
    let bytes = std::fs::read(&real).unwrap();
    let dir = temp_dir("truncated-gguf");
    let path = dir.join("truncated.gguf");
    std::fs::write(&path, &bytes[..bytes.len() * 9 / 10]).unwrap();
    let err = load(&path).unwrap_err();
    match &err {
        EngineError::BadGguf { reason, .. } => {
            assert!(reason.contains("past the end of the file"), "{reason}")
        }
        other => panic!("expected BadGguf, got {other}"),
    }
    // Cut inside the header: still a clear BadGguf.
    std::fs::write(&path, &bytes[..1000]).unwrap();
    assert!(matches!(load(&path).unwrap_err(), EngineError::BadGguf { .. }));
}

#[test]
fn a_gguf_of_an_unsupported_architecture_is_rejected() {
    let dir = temp_dir("gpt2-gguf");
    let path = dir.join("gpt2.gguf");
    let weight = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(
        &mut file,
        &[("general.architecture", &gguf_file::Value::String("gpt2".into()))],
        &[("token_embd.weight", &weight)],
    )
    .unwrap();
    drop(file);
    let err = load(&path).unwrap_err();
    match &err {
        EngineError::UnsupportedArchitecture { architecture, .. } => {
            assert_eq!(architecture, "gpt2")
        }
        other => panic!("expected UnsupportedArchitecture, got {other}"),
    }
}
