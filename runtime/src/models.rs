//! Models by spec, each loaded at most once per process. Generation and judge workers of one
//! process share a cache, so `herd run` with the default model as generator and judge loads
//! it once. A model that failed to load is remembered with its reason: every job naming it
//! is dead-lettered at once instead of reloading it job after job.
//!
//! Models load one at a time. On a GPU each model's key/value cache takes what the memory
//! fraction leaves after its weights, so a process that holds several models at once says so
//! (`sharing_memory_among`): the k-th model resident gets k/n of the fraction, counted
//! cumulatively as the engine reads it, which leaves the later ones their share. A model that
//! is no longer needed can be `release`d so the next one gets the whole fraction again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herd_engine::{LoadOptions, Model, Placement};
use tokio::sync::OnceCell;

use crate::model_files;

/// Why a job's model is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {model} cannot be loaded: {reason}")]
pub struct ModelUnavailable {
    pub model: String,
    pub reason: String,
}

type Slot = Arc<OnceCell<Result<Arc<Model>, ModelUnavailable>>>;

/// How long `release` waits for jobs still holding a model before freeing what it can.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Loaded models by the spec string jobs name them with. Cheap to clone; clones share.
#[derive(Clone)]
pub struct ModelCache {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    options: LoadOptions,
    placement: Placement,
    /// Models expected resident at once; the memory fraction is split among them.
    resident_at_once: usize,
    /// Held while a model loads (one at a time); counts the models loaded and not released.
    resident: Arc<tokio::sync::Mutex<usize>>,
}

impl Default for ModelCache {
    fn default() -> Self {
        Self::new(LoadOptions::default())
    }
}

impl std::fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("ModelCache").field("models", &names).finish()
    }
}

impl ModelCache {
    /// Models loaded on the CPU.
    pub fn new(options: LoadOptions) -> Self {
        Self::on(options, Placement::default())
    }

    /// Models loaded onto `placement` (a GPU, or tensor-parallel ranks).
    pub fn on(options: LoadOptions, placement: Placement) -> Self {
        Self {
            slots: Arc::default(),
            options,
            placement,
            resident_at_once: 1,
            resident: Arc::default(),
        }
    }

    /// Splits the placement's GPU memory fraction among `models` held at once.
    pub fn sharing_memory_among(mut self, models: usize) -> Self {
        self.resident_at_once = models.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot(&self, spec: &str) -> Slot {
        self.lock().entry(spec.to_string()).or_default().clone()
    }

    /// The model `spec` names (built-in name, `.gguf` file or Hugging Face folder; see
    /// [`model_files::resolve`], which fetches a built-in model on first use), loaded on a
    /// blocking thread the first time it is asked for.
    pub async fn get(&self, spec: &str) -> Result<Arc<Model>, ModelUnavailable> {
        let slot = self.slot(spec);
        slot.get_or_init(|| {
            let spec = spec.to_string();
            let options = self.options.clone();
            let mut placement = self.placement.clone();
            let resident = self.resident.clone();
            let resident_at_once = self.resident_at_once;
            async move {
                let mut resident = resident.lock().await;
                placement.gpu_memory_fraction =
                    memory_fraction_for(placement.gpu_memory_fraction, *resident, resident_at_once);
                let loaded = tokio::task::spawn_blocking({
                    let spec = spec.clone();
                    move || {
                        let path = model_files::resolve(&spec).map_err(|e| e.to_string())?;
                        Model::load_on(path, &options, &placement).map_err(|e| e.to_string())
                    }
                })
                .await;
                match loaded {
                    Ok(Ok(model)) => {
                        *resident += 1;
                        Ok(Arc::new(model))
                    }
                    Ok(Err(reason)) => Err(ModelUnavailable { model: spec, reason }),
                    Err(join) => Err(ModelUnavailable {
                        model: spec,
                        reason: format!("loading panicked: {join}"),
                    }),
                }
            }
        })
        .await
        .clone()
    }

    /// Checks that `spec` can load here (fetching a built-in model's file if needed) without
    /// reading its weights: see [`Model::check_loadable`]. A loaded model passes at once.
    pub async fn check_loadable(&self, spec: &str) -> Result<(), ModelUnavailable> {
        if self.is_loaded(spec) {
            return Ok(());
        }
        let (model, options, placement) =
            (spec.to_string(), self.options.clone(), self.placement.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let path = model_files::resolve(&model).map_err(|e| e.to_string())?;
            Model::check_loadable(path, &options, &placement).map_err(|e| e.to_string())
        })
        .await;
        match checked {
            Ok(Ok(_config)) => Ok(()),
            Ok(Err(reason)) => Err(ModelUnavailable { model: spec.into(), reason }),
            Err(join) => Err(ModelUnavailable {
                model: spec.into(),
                reason: format!("checking panicked: {join}"),
            }),
        }
    }

    /// Whether `spec` is loaded already (a later `get` returns at once).
    pub fn is_loaded(&self, spec: &str) -> bool {
        self.lock().get(spec).and_then(|slot| slot.get()).is_some_and(Result::is_ok)
    }

    /// Forgets `spec` and frees its memory (on a GPU, handed back to the driver) once the
    /// last job holding it is done; a later `get` loads it again. Returns whether it was
    /// loaded.
    pub async fn release(&self, spec: &str) -> bool {
        let mut resident = self.resident.lock().await;
        let Some(slot) = self.lock().remove(spec) else { return false };
        let Some(model) = slot.get().and_then(|loaded| loaded.as_ref().ok()).cloned() else {
            return false;
        };
        drop(slot);
        *resident = resident.saturating_sub(1);
        // Jobs still running hold the model; the next load must wait for their memory.
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&model) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if Arc::strong_count(&model) > 1 {
            tracing::warn!(
                model = spec,
                "released while still in use: its memory is freed when that use ends"
            );
        }
        let placement = self.placement.clone();
        let returned = tokio::task::spawn_blocking(move || {
            drop(model);
            herd_engine::placement::return_pooled_memory(&placement)
        })
        .await;
        match returned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(model = spec, error = %e, "the released model's GPU memory stays pooled")
            }
            Err(join) => {
                tracing::warn!(model = spec, error = %join, "freeing the released model panicked")
            }
        }
        true
    }
}

/// The cumulative memory fraction the next model may fill when `resident` of `at_once`
/// models are loaded already: `fraction × (resident + 1) / at_once`, never above `fraction`.
fn memory_fraction_for(fraction: f64, resident: usize, at_once: usize) -> f64 {
    let at_once = at_once.max(1);
    fraction * ((resident + 1).min(at_once) as f64) / at_once as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_model_that_cannot_load_is_reported_with_its_reason_and_remembered() {
        let cache = ModelCache::default();
        let err = cache.get("/no/such/model.gguf").await.unwrap_err();
        assert_eq!(err.model, "/no/such/model.gguf");
        assert!(err.to_string().contains("no such file"), "{err}");
        assert_eq!(cache.get("/no/such/model.gguf").await.unwrap_err(), err);
        assert!(!cache.is_loaded("/no/such/model.gguf"));
    }

    #[test]
    fn models_held_at_once_split_the_memory_fraction_cumulatively() {
        assert_eq!(memory_fraction_for(0.9, 0, 1), 0.9);
        assert_eq!(memory_fraction_for(0.9, 3, 1), 0.9);
        assert!((memory_fraction_for(0.9, 0, 2) - 0.45).abs() < 1e-12);
        assert!((memory_fraction_for(0.9, 1, 2) - 0.9).abs() < 1e-12);
        assert!((memory_fraction_for(0.9, 1, 3) - 0.6).abs() < 1e-12);
        // More resident than announced: the last share is the whole fraction, not more.
        assert!((memory_fraction_for(0.9, 5, 3) - 0.9).abs() < 1e-12);
    }

    #[tokio::test]
    async fn a_released_model_is_dropped_and_loads_again_when_asked_for() {
        let cache = ModelCache::default();
        let spec = crate::model_files::DEFAULT_MODEL;
        let first = Arc::downgrade(&cache.get(spec).await.unwrap());
        assert_eq!(*cache.resident.lock().await, 1);
        assert!(cache.release(spec).await);
        assert!(!cache.is_loaded(spec));
        assert_eq!(*cache.resident.lock().await, 0);
        assert!(first.upgrade().is_none(), "the model was dropped by the time release returned");
        // Asked for again, it loads again.
        cache.get(spec).await.unwrap();
        assert!(cache.is_loaded(spec));
        assert_eq!(*cache.resident.lock().await, 1);
        assert!(!cache.release("never-loaded").await);
    }
}
