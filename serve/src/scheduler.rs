//! The engine thread: one `Model::run_generation` fed by a channel, its events routed to
//! the HTTP request that asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use herd_engine::{
    BatchOptions, GeneratedToken, GenerationEvents, GenerationOutput, GenerationRequest, Model,
    TokenLogprob,
};
use tokio::sync::mpsc as tokio_mpsc;

use crate::metrics::ServeMetrics;

/// What one request hears from the engine.
#[derive(Debug)]
pub enum Event {
    /// A token was generated: the text it settled (often empty) and its log-probability.
    Token { text: String, logprob: Option<TokenLogprob> },
    /// The sequence ended.
    Finished(GenerationOutput),
    /// The engine refused the request.
    Refused(String),
    /// The engine stopped with an error; no more tokens will come.
    Failed(String),
}

struct Route {
    events: tokio_mpsc::UnboundedSender<Event>,
    /// Bytes of the settled text already sent.
    sent: usize,
    submitted: Instant,
    first_token: bool,
}

type Routes = Arc<Mutex<HashMap<usize, Route>>>;

/// The engine, shared by every request: continuous batching over all of them.
pub struct Scheduler {
    model: Arc<Model>,
    requests: Mutex<Option<mpsc::Sender<GenerationRequest>>>,
    routes: Routes,
    next_id: AtomicUsize,
    metrics: ServeMetrics,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Scheduler {
    /// Starts the engine thread for `model`.
    pub fn start(model: Arc<Model>, options: BatchOptions, metrics: ServeMetrics) -> Arc<Self> {
        let (sender, mut receiver) = mpsc::channel::<GenerationRequest>();
        let routes: Routes = Arc::default();
        let thread = {
            let (model, routes, metrics) = (model.clone(), routes.clone(), metrics.clone());
            std::thread::Builder::new()
                .name("engine".into())
                .spawn(move || {
                    let mut router = Router { routes: routes.clone(), metrics };
                    if let Err(error) = model.run_generation(&mut receiver, &options, &mut router) {
                        tracing::error!(%error, "the engine stopped");
                        let message = error.to_string();
                        for (_, route) in lock(&routes).drain() {
                            let _ = route.events.send(Event::Failed(message.clone()));
                        }
                    }
                })
                .expect("the engine thread starts")
        };
        Arc::new(Self {
            model,
            requests: Mutex::new(Some(sender)),
            routes,
            next_id: AtomicUsize::new(0),
            metrics,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Queues `request` (its id is replaced) and returns the stream of its events. Dropping
    /// the receiver cancels the sequence at its next token.
    pub fn submit(
        &self,
        mut request: GenerationRequest,
    ) -> Result<tokio_mpsc::UnboundedReceiver<Event>, String> {
        let (events, receiver) = tokio_mpsc::unbounded_channel();
        request.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let route = Route { events, sent: 0, submitted: Instant::now(), first_token: false };
        lock(&self.routes).insert(request.id, route);
        self.metrics.waiting.inc();
        let sent = match &*lock(&self.requests) {
            Some(sender) => sender.send(request).map_err(|_| "the engine has stopped".to_string()),
            None => Err("the server is shutting down".to_string()),
        };
        if sent.is_err() {
            self.metrics.waiting.dec();
        }
        sent.map(|()| receiver)
    }

    /// Stops taking requests and waits for the engine to finish the ones it has.
    pub fn shutdown(&self) {
        lock(&self.requests).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// The engine's events, routed to their requests (runs on the engine thread).
struct Router {
    routes: Routes,
    metrics: ServeMetrics,
}

impl GenerationEvents for Router {
    fn streams_text(&self) -> bool {
        true
    }

    fn token(&mut self, token: &GeneratedToken<'_>) -> bool {
        let mut routes = lock(&self.routes);
        let Some(route) = routes.get_mut(&token.id) else { return false };
        if !route.first_token {
            route.first_token = true;
            self.metrics.waiting.dec();
            self.metrics.running.inc();
            self.metrics.time_to_first_token.observe(route.submitted.elapsed().as_secs_f64());
        }
        self.metrics.generated_tokens.inc();
        let text = token.settled_text.get(route.sent..).unwrap_or_default().to_string();
        route.sent = token.settled_text.len().max(route.sent);
        let event = Event::Token { text, logprob: token.logprob.cloned() };
        if route.events.send(event).is_err() {
            // The client went away: free the sequence.
            routes.remove(&token.id);
            self.metrics.running.dec();
            self.metrics.cancelled.inc();
            return false;
        }
        true
    }

    fn finished(&mut self, output: GenerationOutput) {
        let Some(route) = lock(&self.routes).remove(&output.id) else { return };
        if route.first_token {
            self.metrics.running.dec();
        } else {
            self.metrics.waiting.dec();
        }
        self.metrics.prompt_tokens.inc_by(output.prompt_tokens as u64);
        let _ = route.events.send(Event::Finished(output));
    }

    fn refused(&mut self, id: usize, error: herd_engine::EngineError) {
        if let Some(route) = lock(&self.routes).remove(&id) {
            self.metrics.waiting.dec();
            let _ = route.events.send(Event::Refused(error.to_string()));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
