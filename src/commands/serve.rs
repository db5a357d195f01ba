//! `herd serve`: one model behind an OpenAI-compatible HTTP API (`herd-serve`). Listens at
//! once, answers 503 until the model has loaded, stops on SIGTERM/SIGINT after the running
//! requests finish.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use herd_runtime::model_files::DEFAULT_MODEL;
use herd_serve::{ApiKey, Server};

use crate::args::EngineArgs;
use crate::generator_spec::model_display_name;
use crate::process::{runtime, stop_signal};

#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, a Hugging Face model folder, or a built-in model's name.
    #[arg(long, env = "HERD_SERVE_MODEL", default_value = DEFAULT_MODEL, value_name = "PATH_OR_BUILTIN")]
    pub model: String,
    /// The name clients send in `model` (default: the file or folder name).
    #[arg(long, env = "HERD_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    #[arg(long, env = "HERD_SERVE_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on start).
    #[arg(long, env = "HERD_SERVE_PORT", default_value_t = 8000)]
    pub port: u16,
    /// A file holding the key clients must send as `Authorization: Bearer <key>`. The
    /// variable HERD_API_KEY holds it directly instead. With neither, no key is asked.
    #[arg(long, env = "HERD_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.engine.apply_threads();
    runtime()?.block_on(serve(args))
}

/// The key from --api-key-file, else HERD_API_KEY (never from a flag's value: it would be
/// in the process list and shell history).
fn api_key(args: &Args) -> anyhow::Result<Option<ApiKey>> {
    if let Some(file) = &args.api_key_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--api-key-file {}", file.display()))?;
        let key = ApiKey::new(&text);
        anyhow::ensure!(key.is_some(), "--api-key-file {}: the file is empty", file.display());
        return Ok(key);
    }
    Ok(std::env::var("HERD_API_KEY").ok().and_then(|k| ApiKey::new(&k)))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let name = args.served_model_name.clone().unwrap_or_else(|| model_display_name(&args.model));
    let server = Server::new(&name, api_key(&args)?)?;
    let models = args.engine.models()?;
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr()?;
    println!("herd serve: listening on http://{local}/v1 (model {name})");

    let (failed, load_failure) = tokio::sync::oneshot::channel::<anyhow::Error>();
    {
        let (server, spec, batch) = (server.clone(), args.model.clone(), args.engine.batch());
        tokio::spawn(async move {
            match models.get(&spec).await {
                Ok(model) => {
                    tracing::info!(model = %spec, "model loaded; serving");
                    eprintln!("herd serve: model {spec} loaded");
                    server.model_loaded(Arc::clone(&model), batch);
                }
                Err(error) => {
                    let _ = failed.send(anyhow::Error::new(error));
                }
            }
        });
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let shutdown = async move {
        tokio::select! {
            _ = stop_signal() => {}
            Ok(error) = load_failure => { let _ = stop.send(error); }
        }
    };
    axum::serve(listener, server.router()).with_graceful_shutdown(shutdown).await?;
    if let Ok(error) = stopped.await {
        return Err(error.context(format!("herd serve: model {}", args.model)));
    }
    tokio::task::spawn_blocking(move || server.shutdown()).await?;
    Ok(())
}
