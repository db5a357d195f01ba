//! Where a report's generators come from: run folders (`<run>/<generator>/annotations.json`),
//! one generator's folder, annotations files named directly, or alpaca_eval's results
//! layout (`results/<model>/<annotator>/annotations.json`, from the `results` folder or a
//! model's folder).

use std::path::{Path, PathBuf};

use crate::ReportError;

const ANNOTATIONS_NAMES: [&str; 2] = ["annotations.json", "annotations.json.gz"];
const THROUGHPUT_NAME: &str = "throughput.json";

/// One generator's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorSource {
    pub annotations: PathBuf,
    /// `throughput.json` beside the annotations, when the run wrote one.
    pub throughput: Option<PathBuf>,
    /// The name used when no row names its generator: the folder's name.
    pub fallback_name: String,
    /// For a generator folder found inside a run folder: its name, which is the
    /// generator's name in the run and where its `errors.md` goes.
    pub run_folder_name: Option<String>,
}

impl GeneratorSource {
    fn of_file(annotations: PathBuf) -> Self {
        let folder = annotations.parent().map(Path::to_path_buf).unwrap_or_default();
        let throughput = Some(folder.join(THROUGHPUT_NAME)).filter(|p| p.is_file());
        let fallback_name = folder
            .file_name()
            .or_else(|| annotations.file_stem())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "generator".to_string());
        Self { annotations, throughput, fallback_name, run_folder_name: None }
    }
}

fn annotations_in(folder: &Path) -> Option<PathBuf> {
    ANNOTATIONS_NAMES.iter().map(|name| folder.join(name)).find(|p| p.is_file())
}

/// The generators of one input: a file is one generator; a folder with an annotations
/// file is one generator; otherwise each sub-folder with one is (a run), in name order.
pub fn find_generators(input: &Path) -> Result<Vec<GeneratorSource>, ReportError> {
    if input.is_file() {
        return Ok(vec![GeneratorSource::of_file(input.to_path_buf())]);
    }
    if let Some(annotations) = annotations_in(input) {
        return Ok(vec![GeneratorSource::of_file(annotations)]);
    }
    let mut sources = Vec::new();
    for folder in sub_folders(input)? {
        if let Some(annotations) = annotations_in(&folder) {
            let mut source = GeneratorSource::of_file(annotations);
            source.run_folder_name = folder.file_name().map(|n| n.to_string_lossy().into_owned());
            sources.push(source);
            continue;
        }
        // alpaca_eval's `results/<model>/<annotator>/`: the model's folder names it.
        for annotator in sub_folders(&folder)? {
            if let Some(annotations) = annotations_in(&annotator) {
                let mut source = GeneratorSource::of_file(annotations);
                if let Some(model) = folder.file_name() {
                    source.fallback_name = model.to_string_lossy().into_owned();
                }
                sources.push(source);
            }
        }
    }
    if sources.is_empty() {
        return Err(ReportError::NoAnnotations { path: input.to_path_buf() });
    }
    Ok(sources)
}

/// The folders in `folder`, in name order.
fn sub_folders(folder: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let entries = std::fs::read_dir(folder).map_err(|source| ReportError::Io {
        path: folder.to_path_buf(),
        action: "read",
        source,
    })?;
    let mut folders: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    folders.sort();
    Ok(folders)
}
