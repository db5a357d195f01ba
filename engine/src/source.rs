//! Where a model is on disk: a GGUF file or a Hugging Face folder. The engine knows only
//! paths; naming and fetching models is the caller's business.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};

/// A model on disk, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    HuggingFaceFolder(PathBuf),
}

impl ModelSource {
    /// The model at `path`: a file is read as GGUF, a folder as a Hugging Face folder
    /// (config, tokenizer, safetensors); anything else is [`EngineError::ModelNotFound`].
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Ok(ModelSource::HuggingFaceFolder(path.into()))
        } else if path.is_file() {
            Ok(ModelSource::Gguf(path.into()))
        } else {
            Err(EngineError::ModelNotFound { path: path.into() })
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HuggingFaceFolder(p) => p,
        }
    }
}

/// The safetensors files of a Hugging Face folder: the shards named by
/// `model.safetensors.index.json`, else every `*.safetensors` file.
pub(crate) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|source| EngineError::Io { path: index.clone(), source })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| EngineError::BadWeights {
                path: index.clone(),
                tensor: "<index>".into(),
                reason: e.to_string(),
            })?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| {
            EngineError::BadWeights {
                path: index.clone(),
                tensor: "<index>".into(),
                reason: "no weight_map object".into(),
            }
        })?;
        let mut files: Vec<PathBuf> =
            map.values().filter_map(|v| v.as_str()).map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(EngineError::BadWeights {
                path: index,
                tensor: "<index>".into(),
                reason: format!("shard {} is missing", missing.display()),
            });
        }
        if files.is_empty() {
            return Err(EngineError::MissingWeights { dir: dir.into() });
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| EngineError::Io { path: dir.into(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::MissingWeights { dir: dir.into() });
    }
    Ok(files)
}
