//! Models by spec, each loaded at most once per process. Generation and judge workers of one
//! process share a cache, so `herd run` with the default model as generator and judge loads
//! it once. A model that failed to load is remembered with its reason: every job naming it
//! is dead-lettered at once instead of reloading it job after job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herd_engine::{LoadOptions, Model, Placement};
use tokio::sync::OnceCell;

/// Why a job's model is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model {model} cannot be loaded: {reason}")]
pub struct ModelUnavailable {
    pub model: String,
    pub reason: String,
}

type Slot = Arc<OnceCell<Result<Arc<Model>, ModelUnavailable>>>;

/// Loaded models by the spec string jobs name them with. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct ModelCache {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    options: LoadOptions,
    placement: Placement,
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
        Self { slots: Arc::default(), options, placement }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot(&self, spec: &str) -> Slot {
        self.lock().entry(spec.to_string()).or_default().clone()
    }

    /// The model `spec` names (built-in name, `.gguf` file or Hugging Face folder), loaded
    /// on a blocking thread the first time it is asked for.
    pub async fn get(&self, spec: &str) -> Result<Arc<Model>, ModelUnavailable> {
        let slot = self.slot(spec);
        slot.get_or_init(|| {
            let spec = spec.to_string();
            let options = self.options.clone();
            let placement = self.placement.clone();
            async move {
                let loaded = tokio::task::spawn_blocking({
                    let spec = spec.clone();
                    move || Model::load_on(&spec, &options, &placement)
                })
                .await;
                match loaded {
                    Ok(Ok(model)) => Ok(Arc::new(model)),
                    Ok(Err(e)) => Err(ModelUnavailable { model: spec, reason: e.to_string() }),
                    Err(join) => Err(ModelUnavailable { model: spec, reason: format!("loading panicked: {join}") }),
                }
            }
        })
        .await
        .clone()
    }

    /// Whether `spec` is loaded already (a later `get` returns at once).
    pub fn is_loaded(&self, spec: &str) -> bool {
        self.lock().get(spec).and_then(|slot| slot.get()).is_some_and(Result::is_ok)
    }
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
}
