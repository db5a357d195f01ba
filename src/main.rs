//! `herd`: AlpacaEval at cluster scale. One binary, one subcommand per file in `commands/`.

mod annotator_config;
mod args;
mod cluster;
mod commands;
mod effective_config;
mod generator_spec;
mod local_run;
mod process;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd", version, about = "AlpacaEval at cluster scale")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate answers, judge them against the reference and write the run folder, in one process.
    Run(commands::run::Args),
    /// Judge existing model_outputs.json files against the reference and write the run folder.
    Evaluate(commands::evaluate::Args),
    /// Run the generation worker role (distributed mode).
    Worker(commands::worker::Args),
    /// Run the judge worker role (distributed mode).
    JudgeWorker(commands::judge_worker::Args),
    /// Run the coordinator role (distributed mode).
    Coordinator(commands::coordinator::Args),
    /// alpaca_eval's metrics (win rate, length-controlled win rate) of an annotations file.
    Metrics(commands::metrics::Args),
    /// Sample the examples the judge held against the model, as Markdown.
    Errors(commands::errors::Args),
    /// leaderboard.csv, report.html, summary.md and errors.md from run folders or annotations files.
    Report(commands::report::Args),
    /// Two annotators on the same pairs: agreement, win-rate correlations, each one's leanings.
    Agreement(commands::agreement::Args),
    /// Serve a model over an OpenAI-compatible HTTP API (completions, chat, streaming, logprobs).
    Serve(commands::serve::Args),
}

fn main() -> std::process::ExitCode {
    // Library errors (candle's among them) capture a backtrace when RUST_BACKTRACE is set
    // and print it in their message: it would land in user-facing errors and in every
    // dead-letter reason. Panics still honour RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Evaluate(args) => commands::evaluate::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::JudgeWorker(args) => commands::judge_worker::run(args),
        Command::Coordinator(args) => commands::coordinator::run(args),
        Command::Metrics(args) => commands::metrics::run(args),
        Command::Errors(args) => commands::errors::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Agreement(args) => commands::agreement::run(args),
        Command::Serve(args) => commands::serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<process::Interrupted>().is_some() => {
            let code = err.downcast_ref::<process::Interrupted>().map(|i| i.signal.exit_code());
            eprintln!("herd: {err:#}");
            std::process::ExitCode::from(code.unwrap_or(1))
        }
        Err(err) => {
            eprintln!("herd: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
