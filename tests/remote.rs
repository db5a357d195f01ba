//! Remote generators (`--generator endpoint=…`) end to end: `herd run` against `herd serve`
//! gives the answers of the same model loaded in-process, through a proxy that injects 429s
//! with Retry-After, 500s, a stall past the timeout and a connection cut mid-answer; a wrong
//! key fails at once and appears nowhere.

#[path = "serve/served.rs"]
mod served;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use herd_core::formats::read_model_outputs;
use served::Served;

const LIMIT: &str = "3";
const GENERATOR: &str = "smollm2-135m-instruct";
/// The in-process judge of the generator tests: quick on two cores.
const LOGPROB_JUDGE: [&str; 4] = ["--judge-mode", "logprob", "--judge-max-context", "600"];

fn herd_run(out: &Path, cache: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .args(["run", "--limit", LIMIT, "--max-new-tokens", "24", "--threads", "2"])
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("HERD_JUDGE_CACHE", cache)
        .env("HERD_LOG", "info")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_API_KEY_FILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("herd runs")
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| Served::start(&[], &[]))
}

/// The in-process run's folder, made once.
fn local_run() -> &'static tempfile::TempDir {
    static LOCAL: OnceLock<tempfile::TempDir> = OnceLock::new();
    LOCAL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = herd_run(&dir.path().join("run"), &dir.path().join("cache"), &LOGPROB_JUDGE, &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stored_outputs(run: &Path) -> usize {
    let dir = run.join("store");
    walk(&dir).iter().filter(|p| p.to_string_lossy().contains("/outputs/")).count()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_served_generator_gives_the_in_process_answers_and_verdicts() {
    let local = local_run().path().join("run");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let spec = format!("endpoint={},model={GENERATOR}", served().base);
    let args = [&LOGPROB_JUDGE[..], &["--generator", &spec]].concat();
    let out = herd_run(&run, &dir.path().join("cache"), &args, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["model_outputs.json", "annotations.json"] {
        assert_eq!(
            read(&run.join(GENERATOR).join(file)),
            read(&local.join(GENERATOR).join(file)),
            "{file} differs between the served and the in-process model"
        );
    }
    let rows = read_model_outputs(run.join(GENERATOR).join("model_outputs.json")).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().any(|r| !r.output.is_empty()));
}

/// What the proxy does with the n-th generation request (counting from 0).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    TooMany,
    ServerError,
    Stall,
    CutMidAnswer,
    Pass,
}

const SCHEDULE: [Fault; 5] =
    [Fault::TooMany, Fault::ServerError, Fault::Stall, Fault::CutMidAnswer, Fault::TooMany];

struct Proxy {
    upstream: String,
    requests: AtomicUsize,
    forwarded: AtomicUsize,
    faults: Mutex<Vec<Fault>>,
    http: reqwest::Client,
}

async fn proxy(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = if method == Method::POST {
        let n = proxy.requests.fetch_add(1, Ordering::SeqCst);
        SCHEDULE.get(n).copied().unwrap_or(Fault::Pass)
    } else {
        Fault::Pass
    };
    proxy.faults.lock().unwrap().push(fault);
    let status = |code: StatusCode, text: &str| {
        Response::builder().status(code).body(Body::from(text.to_string())).unwrap()
    };
    match fault {
        Fault::TooMany => {
            let mut r =
                status(StatusCode::TOO_MANY_REQUESTS, r#"{"error": {"message": "slow down"}}"#);
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
            return r;
        }
        Fault::ServerError => return status(StatusCode::INTERNAL_SERVER_ERROR, "upstream broke"),
        Fault::Stall => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return status(StatusCode::OK, "{}");
        }
        Fault::CutMidAnswer | Fault::Pass => {}
    }
    let path = uri.path().trim_start_matches("/v1");
    let url = format!("{}{path}", proxy.upstream);
    let mut request = proxy.http.request(method, url).body(body);
    if let Some(auth) = headers.get("authorization") {
        request = request.header("authorization", auth);
    }
    if let Some(kind) = headers.get("content-type") {
        request = request.header("content-type", kind);
    }
    let answer = request.send().await.unwrap();
    proxy.forwarded.fetch_add(1, Ordering::SeqCst);
    let code = answer.status();
    let bytes = answer.bytes().await.unwrap();
    if fault == Fault::CutMidAnswer {
        // Half the answer, then the connection breaks.
        let half = bytes.slice(..bytes.len() / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(half), Err(std::io::Error::other("cut"))];
        return Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .header("content-length", bytes.len().to_string())
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
    }
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap()
}

/// A proxy to `upstream` on a free port, on its own runtime thread; returns its base URL.
fn start_proxy(upstream: &str) -> (String, Arc<Proxy>) {
    let state = Arc::new(Proxy {
        upstream: upstream.to_string(),
        requests: AtomicUsize::new(0),
        forwarded: AtomicUsize::new(0),
        faults: Mutex::new(Vec::new()),
        http: reqwest::Client::new(),
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = state.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(proxy).with_state(shared);
            axum::serve(listener, app).await.unwrap();
        });
    });
    let address = rx.recv().unwrap();
    (format!("http://{address}/v1"), state)
}

#[test]
fn faults_between_client_and_server_lose_and_duplicate_nothing() {
    let local = local_run().path().join("run");
    let (base, proxy) = start_proxy(&served().base);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let spec = format!("endpoint={base},model={GENERATOR}");
    let started = Instant::now();
    let out = herd_run(
        &run,
        &dir.path().join("cache"),
        &[
            &LOGPROB_JUDGE[..],
            &["--generator", &spec, "--remote-timeout", "3", "--remote-backoff", "0.2"],
        ]
        .concat(),
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let faults = proxy.faults.lock().unwrap().clone();
    for fault in [Fault::TooMany, Fault::ServerError, Fault::Stall, Fault::CutMidAnswer] {
        assert!(faults.contains(&fault), "the proxy never injected {fault:?}: {faults:?}");
    }
    assert!(stderr.contains("retrying"), "retries are logged: {stderr}");
    assert!(started.elapsed() >= Duration::from_secs(3), "the stall waited for the timeout");
    assert_eq!(stored_outputs(&run), 3, "one stored answer per instruction");
    assert_eq!(
        read(&run.join(GENERATOR).join("model_outputs.json")),
        read(&local.join(GENERATOR).join("model_outputs.json")),
    );
    // Every answer was asked for until it landed: 3 answers, one of them cut after it was
    // generated, so 4 forwarded requests (plus the /models check).
    assert_eq!(proxy.forwarded.load(Ordering::SeqCst), 3 + 1 + 1);
}

#[test]
fn a_wrong_key_fails_before_any_work_and_is_never_shown() {
    let key = "sk-herd-right-5b1e";
    let guarded = Served::start(&[], &[("HERD_API_KEY", key)]);
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("endpoint={},model={GENERATOR}", guarded.base);
    let started = Instant::now();
    let wrong = "sk-herd-wrong-77c0";
    let out = herd_run(
        &dir.path().join("wrong"),
        &dir.path().join("cache"),
        &[&LOGPROB_JUDGE[..], &["--generator", &spec]].concat(),
        &[("OPENAI_API_KEY", wrong)],
    );
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30), "it failed at once");
    let printed =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("API key was refused"), "{printed}");
    assert!(!printed.contains(wrong) && !printed.contains(key), "a key was printed: {printed}");
    assert_eq!(stored_outputs(&dir.path().join("wrong")), 0);

    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let out = herd_run(
        &dir.path().join("right"),
        &dir.path().join("cache"),
        &[&LOGPROB_JUDGE[..], &["--generator", &spec]].concat(),
        &[("OPENAI_API_KEY_FILE", key_file.to_str().unwrap())],
    );
    let printed =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains(key));
    assert!(!guarded.stderr.lock().unwrap().contains(key), "the server logged the key");
}

#[test]
fn a_served_ranking_judge_gives_the_in_process_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let ranking =
        ["--judge-mode", "ranking", "--judge-max-new-tokens", "40", "--judge-max-context", "7000"];
    let local = herd_run(&dir.path().join("local"), &dir.path().join("cache-local"), &ranking, &[]);
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let served_judge =
        [&ranking[..], &["--judge-endpoint", &served().base, "--judge-model", GENERATOR]].concat();
    let remote =
        herd_run(&dir.path().join("remote"), &dir.path().join("cache-remote"), &served_judge, &[]);
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    let annotations =
        |run: &str| read(&dir.path().join(run).join(GENERATOR).join("annotations.json"));
    assert_eq!(annotations("remote"), annotations("local"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&annotations("remote")).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["annotator"], "smollm2-135m-instruct_ranking");
}

#[test]
fn the_official_annotator_reads_m_and_m_from_a_served_judges_top_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = herd_run(
        &run,
        &dir.path().join("cache"),
        &[
            "--annotator",
            "weighted_alpaca_eval_gpt4_turbo",
            "--judge-endpoint",
            &served().base,
            "--judge-model",
            GENERATOR,
            "--judge-price",
            "10,30",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&read(&run.join(GENERATOR).join("annotations.json"))).unwrap();
    assert_eq!(rows.len(), 3);
    let parser = herd_core::judge::TokenLogprobParser::weighted_m_over_m_or_capital_m();
    for row in &rows {
        assert_eq!(row["annotator"], "weighted_alpaca_eval_gpt4_turbo");
        let raw = row["raw_completion"].clone();
        assert!(raw.is_object(), "kept as alpaca_eval keeps it: {raw}");
        let top = raw["logprobs"]["content"][0]["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 5, "the annotator's config asks for the top 5");
        let shown = parser.parse(&raw).unwrap()[0];
        let instruction = row["instruction"].as_str().unwrap();
        let switched = herd_core::judge::SwapDecision::for_instruction(instruction).is_switched();
        let expected = shown.map(|p| if switched { 3.0 - p } else { p });
        assert_eq!(row["preference"].as_f64(), expected, "{row}");
        // GPT-4 Turbo's $10 per million prompt tokens (and $30 for the one answer token).
        let price = row["price_per_example"].as_f64().unwrap();
        assert!(
            price > 0.001 && price < 0.05,
            "price {price} for a prompt of a few hundred tokens"
        );
    }
    // The same annotator from alpaca_eval's own config folder gives the same file.
    let config_dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/prompts/alpaca_eval_configs/weighted_alpaca_eval_gpt4_turbo"
    );
    let from_config = dir.path().join("from-config");
    let out = herd_run(
        &from_config,
        &dir.path().join("cache"),
        &[
            "--annotator-config",
            config_dir,
            "--judge-endpoint",
            &served().base,
            "--judge-model",
            GENERATOR,
            "--judge-price",
            "10,30",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        read(&from_config.join(GENERATOR).join("annotations.json")),
        read(&run.join(GENERATOR).join("annotations.json"))
    );
    // Without an endpoint the official annotator is refused before any work.
    let refused = herd_run(
        &dir.path().join("refused"),
        &dir.path().join("cache"),
        &["--annotator", "weighted_alpaca_eval_gpt4_turbo"],
        &[],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--judge-endpoint"));
}

#[test]
fn a_sampling_generator_draws_the_same_answers_in_process_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let noop = ["--judge-model", "bench-noop"];
    let sampled = "name=sampled,temperature=0.8,top_p=0.95,seed=7";
    let local = herd_run(
        &dir.path().join("local"),
        &dir.path().join("c1"),
        &[&noop[..], &["--generator", sampled]].concat(),
        &[],
    );
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let spec = format!("{sampled},endpoint={},model={GENERATOR}", served().base);
    let remote = herd_run(
        &dir.path().join("remote"),
        &dir.path().join("c2"),
        &[&noop[..], &["--generator", &spec]].concat(),
        &[],
    );
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    let outputs =
        |run: &str| read(&dir.path().join(run).join("sampled").join("model_outputs.json"));
    assert_eq!(outputs("remote"), outputs("local"), "the answer's seed travels with the request");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&outputs("local")).unwrap();
    let seeds: Vec<u64> = rows.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(rows[0]["temperature"], 0.8);
    assert_eq!(rows[0]["top_p"], 0.95);
    assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2], "each instruction has its own seed");
    let greedy = read(&local_run().path().join("run").join(GENERATOR).join("model_outputs.json"));
    let greedy: Vec<serde_json::Value> = serde_json::from_str(&greedy).unwrap();
    assert!(
        rows.iter().zip(&greedy).any(|(s, g)| s["output"] != g["output"]),
        "sampling differs from greedy"
    );
}

#[test]
fn a_served_logprob_judge_gives_the_in_process_preferences_within_1e_4() {
    let dir = tempfile::tempdir().unwrap();
    let logprob = ["--judge-mode", "logprob", "--judge-max-context", "7000"];
    let local = herd_run(&dir.path().join("local"), &dir.path().join("c1"), &logprob, &[]);
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    let served_judge =
        [&logprob[..], &["--judge-endpoint", &served().base, "--judge-model", GENERATOR]].concat();
    let remote = herd_run(&dir.path().join("remote"), &dir.path().join("c2"), &served_judge, &[]);
    assert!(remote.status.success(), "{}", String::from_utf8_lossy(&remote.stderr));
    let rows = |run: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&read(&dir.path().join(run).join(GENERATOR).join("annotations.json")))
            .unwrap()
    };
    let (local, remote) = (rows("local"), rows("remote"));
    assert_eq!(local.len(), 3);
    for (l, r) in local.iter().zip(&remote) {
        let (pl, pr) = (l["preference"].as_f64().unwrap(), r["preference"].as_f64().unwrap());
        eprintln!("logprob judge: in-process {pl}, served {pr}, |diff| {:e}", (pl - pr).abs());
        assert!((pl - pr).abs() < 1e-4, "in-process {pl}, served {pr}");
        assert_eq!(l["output_2"], r["output_2"]);
        assert_eq!(l["is_switched_outputs"], r["is_switched_outputs"]);
    }
}
