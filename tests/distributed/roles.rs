//! The three roles as separate processes over the real RabbitMQ and a real S3 server, on
//! the default model and the first few instructions: the same run folder as `herd run`, a
//! killed worker, a killed coordinator, poison jobs, and credentials kept out of sight.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use herd_core::eval_set::EvalSet;
use herd_core::formats::read_model_outputs;
use herd_queue::{JobQueue, QueueName};

use crate::common::*;

const GENERATOR: &str = "smol";
const GENERATOR_SPEC: &str = "name=smol,model=smollm2-135m-instruct,max_new_tokens=8";
const JUDGE: &str = "judge";
/// A whole small run: model loads, generation and judging, on two shared cores.
const RUN_LIMIT: Duration = Duration::from_secs(240);
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// `herd coordinator` for `generators` on the first `limit` instructions.
fn coordinator_args(generators: &[&str], limit: usize) -> Vec<String> {
    let mut args = vec!["coordinator".to_string()];
    for spec in generators {
        args.extend(["--generator".to_string(), spec.to_string()]);
    }
    args.extend(
        ["--judge-name", JUDGE, "--judge-model", MODEL, "--judge-mode", "logprob"]
            .iter()
            .chain(&[
                "--judge-max-context",
                JUDGE_MAX_CONTEXT,
                "--poll-interval-ms",
                "200",
                "--limit",
            ])
            .map(|s| s.to_string()),
    );
    args.push(limit.to_string());
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn worker_args<'a>(generator: &'a str, model: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec![
        "worker",
        "--generator",
        generator,
        "--model",
        model,
        "--batch-size",
        batch,
        "--prefetch",
        batch,
    ]
}

const JUDGE_WORKER_ARGS: &[&str] = &[
    "judge-worker",
    "--judge-name",
    JUDGE,
    "--judge-model",
    MODEL,
    "--tensor-parallel",
    "1",
    "--batch-size",
    "4",
];

/// report.html with the leaderboard's throughput cells (examples/s, output tok/s, wall
/// time: timings, which differ between any two runs) blanked; panics if there are none.
fn without_timings(html: &[u8]) -> String {
    let html = String::from_utf8_lossy(html);
    let cells = regex::Regex::new(r"<td>[0-9.]+</td><td>[0-9.]+</td><td>[^<]*</td></tr>").unwrap();
    assert!(cells.is_match(&html), "no throughput cells in report.html");
    let html = cells.replace_all(&html, "<td>timings</td></tr>");
    // The progress-over-time charts are drawn from the results' timings.
    let timeline = regex::Regex::new(r#"(?s)<section class="timeline">.*?</section>"#).unwrap();
    assert!(timeline.is_match(&html), "no progress chart in report.html");
    timeline.replace_all(&html, "<section>timings</section>").into_owned()
}

/// summary.md with its examples/s and tokens/s cells (and ratios to the baseline) blanked.
fn summary_without_timings(markdown: &[u8]) -> String {
    let markdown = String::from_utf8_lossy(markdown);
    let figure = r"[0-9.]+(?: \([0-9.]+× baseline\))?";
    let cells = regex::Regex::new(&format!(r"\| {figure} \| {figure} \|")).unwrap();
    assert!(cells.is_match(&markdown), "no throughput cells in summary.md");
    cells.replace_all(&markdown, "| timings |").into_owned()
}

/// Where two texts part, with some context of each.
fn first_difference(a: &str, b: &str) -> String {
    let at = a.bytes().zip(b.bytes()).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let excerpt =
        |s: &str| s.get(at.saturating_sub(120)..(at + 120).min(s.len())).unwrap_or("").to_string();
    format!("at byte {at}:\n  ours:   {:?}\n  theirs: {:?}", excerpt(a), excerpt(b))
}

fn logs(roles: &[&Role]) -> String {
    roles.iter().map(|r| r.logs()).collect::<Vec<_>>().join("\n")
}

fn published(role: &Role, queue: &QueueName) -> f64 {
    metric_sum(&role.metrics(), "herd_jobs_published_total", &[("queue", queue.as_str())])
}

/// Stops workers the way Kubernetes does and checks they exit cleanly.
fn stop_cleanly(roles: &[&Role]) {
    for role in roles {
        role.terminate();
    }
    for role in roles {
        let status = role.wait(EXIT_LIMIT);
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            role.name,
            role.logs()
        );
    }
}

/// A RabbitMQ user of its own with a recognisable password, so that a test can look for
/// that password in everything the roles print and serve.
struct RabbitUser {
    name: String,
}

impl RabbitUser {
    fn create(name: &str, password: &str) -> Self {
        let ctl = |args: &[&str]| {
            Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl")
        };
        if !ctl(&["add_user", name, password]).status.success() {
            let changed = ctl(&["change_password", name, password]);
            assert!(
                changed.status.success(),
                "rabbitmqctl change_password: {}",
                String::from_utf8_lossy(&changed.stderr)
            );
        }
        let permitted = ctl(&["set_permissions", "-p", "/", name, ".*", ".*", ".*"]);
        assert!(
            permitted.status.success(),
            "rabbitmqctl set_permissions: {}",
            String::from_utf8_lossy(&permitted.stderr)
        );
        Self { name: name.to_string() }
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-q", "delete_user", &self.name]).output();
    }
}

#[test]
fn coordinator_two_workers_and_a_judge_worker_write_the_same_run_folder_as_herd_run() {
    let started = Instant::now();
    let password = format!("pw-{}", unique_run("secret"));
    let user = RabbitUser::create("herd-test-roles", &password);
    let mut cluster = Cluster::new("same").with_amqp_login(&user.name, &password);
    let limit = 4;

    // The in-process reference, with the same models and settings.
    let reference = cluster.path("reference");
    let mut run_args = coordinator_args(&[GENERATOR_SPEC], limit);
    run_args[0] = "run".into();
    run_args.retain(|a| a != "--poll-interval-ms" && a != "200");
    run_args.extend(["--batch-size", "2", "--no-judge-cache", "--out"].map(String::from));
    run_args.push(reference.to_string_lossy().into_owned());
    let (status, _, stderr) = cluster.run_to_end(&strs(&run_args), RUN_LIMIT);
    assert!(status.success(), "herd run failed: {stderr}");
    eprintln!("herd run: {:.1} s", started.elapsed().as_secs_f64());

    let distributed = cluster.path("distributed");
    let mut args = coordinator_args(&[GENERATOR_SPEC], limit);
    args.extend(["--out".to_string(), distributed.to_string_lossy().into_owned()]);
    let coordinator = cluster.spawn("coordinator", &strs(&args));
    let workers = [
        cluster.spawn("worker-1", &worker_args(GENERATOR, MODEL, "2")),
        cluster.spawn("worker-2", &worker_args(GENERATOR, MODEL, "2")),
    ];
    // The judge worker has the password in its URL instead of a file.
    let mut judge_command = cluster.command(JUDGE_WORKER_ARGS);
    judge_command
        .env_remove("HERD_AMQP_PASSWORD_FILE")
        .env("HERD_AMQP_URL", format!("amqp://{}:{password}@{AMQP_HOST}/%2f", user.name));
    let judge = cluster.spawn_command("judge-worker", &mut judge_command);

    let gen_queue = QueueName::generation(&cluster.run_id, GENERATOR);
    let mut coordinator_metrics = String::new();
    wait_until(
        RUN_LIMIT,
        "the coordinator to report its published jobs",
        || {
            coordinator_metrics = coordinator.metrics();
            published(&coordinator, &gen_queue) > 0.0 || coordinator.exited().is_some()
        },
        || coordinator.logs(),
    );
    assert_eq!(published(&coordinator, &gen_queue), limit as f64, "{coordinator_metrics}");
    coordinator.wait_success(RUN_LIMIT);
    eprintln!("distributed run done: {:.1} s", started.elapsed().as_secs_f64());

    // The run folder: every file as herd run wrote it; throughput.json holds timings only.
    let (expected, local, stored) =
        (folder_files(&reference), folder_files(&distributed), stored_report(&cluster));
    assert_eq!(local.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (file, bytes) in &expected {
        match file.as_str() {
            f if f.ends_with("throughput.json") => {}
            "report.html" => {
                let (ours, theirs) = (without_timings(&local[file]), without_timings(bytes));
                assert!(
                    ours == theirs,
                    "report.html differs from herd run's beyond the throughput columns: {}",
                    first_difference(&ours, &theirs)
                );
            }
            "summary.md" => {
                let (ours, theirs) =
                    (summary_without_timings(&local[file]), summary_without_timings(bytes));
                assert!(
                    ours == theirs,
                    "summary.md differs from herd run's beyond the throughput columns: {}",
                    first_difference(&ours, &theirs)
                );
            }
            _ => assert!(local[file] == *bytes, "{file} differs from herd run's"),
        }
    }
    assert_eq!(stored, local, "the run folder in the store is the one written locally");
    let outputs =
        read_model_outputs(distributed.join(GENERATOR).join("model_outputs.json")).unwrap();
    assert_eq!(outputs.len(), limit);

    // Metrics: each answer generated once over both workers, each verdict stored once.
    let worker_metrics: Vec<String> = workers.iter().map(Role::metrics).collect();
    let generated: f64 = worker_metrics
        .iter()
        .map(|m| metric_sum(m, "herd_examples_generated_total", &[("generator", GENERATOR)]))
        .sum();
    assert_eq!(generated, limit as f64, "{worker_metrics:#?}");
    let judge_metrics = judge.metrics();
    assert_eq!(
        metric_sum(&judge_metrics, "herd_annotations_total", &[("generator", GENERATOR)]),
        limit as f64
    );
    assert!(
        metric_sum(&judge_metrics, "herd_judge_prompt_tokens_total", &[]) > 0.0,
        "{judge_metrics}"
    );

    // Credentials: the AMQP password and the S3 secret appear in no log and no metric.
    stop_cleanly(&[&workers[0], &workers[1], &judge]);
    let everything = [
        logs(&[&coordinator, &workers[0], &workers[1], &judge]),
        coordinator_metrics,
        worker_metrics.join("\n"),
        judge_metrics,
    ]
    .join("\n");
    assert!(everything.contains("connected to RabbitMQ"), "the roles log their broker");
    for secret in [password.as_str(), SECRET_KEY] {
        assert!(!everything.contains(secret), "a secret shows in the roles' logs or metrics");
    }

    // The finished run's queues stay (they expire unused) until --cleanup deletes them all.
    assert!(!cluster.queues().is_empty(), "the run's queues are gone before --cleanup");
    let (status, stdout, stderr) =
        cluster.run_to_end(&["coordinator", "--cleanup"], Duration::from_secs(60));
    assert!(status.success(), "--cleanup failed: {stderr}");
    assert!(stdout.contains(&format!("deleted herd.{}.dlq", cluster.run_id)), "{stdout}");
    assert_eq!(cluster.queues(), Vec::<QueueName>::new(), "queues left after --cleanup");
    eprintln!("total: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_worker_killed_mid_batch_loses_no_example_and_stores_none_twice() {
    let mut cluster = Cluster::new("kill9");
    let limit = 6;
    // Long enough answers that a batch is still in the engine when the kill comes.
    let spec = "name=smol,model=smollm2-135m-instruct,max_new_tokens=64";
    let coordinator = cluster.spawn("coordinator", &strs(&coordinator_args(&[spec], limit)));
    let gen_queue = QueueName::generation(&cluster.run_id, GENERATOR);
    wait_until(
        RUN_LIMIT,
        "the generation jobs",
        || cluster.queue_stats(&gen_queue).is_some_and(|s| s.messages == limit as u32),
        || coordinator.logs(),
    );

    // The first worker holds up to two jobs (prefetch 2) and is killed while generating.
    let doomed = cluster.spawn("doomed-worker", &worker_args(GENERATOR, MODEL, "2"));
    wait_until(
        RUN_LIMIT,
        "the first worker to take a batch and load its model",
        || {
            cluster.queue_stats(&gen_queue).is_some_and(|s| s.messages < limit as u32)
                && doomed.stderr().contains("model loaded")
        },
        || doomed.logs(),
    );
    doomed.kill();
    let stored_at_kill = stored_indices(&cluster, GENERATOR);
    assert!(stored_at_kill.len() < limit, "{stored_at_kill:?}");

    let survivor = cluster.spawn("worker", &worker_args(GENERATOR, MODEL, "2"));
    let judge = cluster.spawn("judge-worker", JUDGE_WORKER_ARGS);
    coordinator.wait_success(RUN_LIMIT);

    assert_eq!(stored_indices(&cluster, GENERATOR), (0..limit).collect::<Vec<_>>());
    let report = stored_report(&cluster);
    let dir = cluster.path("report");
    std::fs::write(dir.join("model_outputs.json"), &report["smol/model_outputs.json"]).unwrap();
    let rows = read_model_outputs(dir.join("model_outputs.json")).unwrap();
    let eval_set = EvalSet::embedded();
    let instructions: Vec<&str> = rows.iter().map(|r| r.instruction.as_str()).collect();
    let expected: Vec<&str> =
        eval_set.rows()[..limit].iter().map(|r| r.instruction.as_str()).collect();
    assert_eq!(instructions, expected, "every example exactly once, in eval-set order");
    let survivor_metrics = survivor.metrics();
    assert!(
        metric_sum(&survivor_metrics, "herd_jobs_redelivered_total", &[]) >= 1.0,
        "the killed worker's jobs came back redelivered: {survivor_metrics}"
    );
    assert_eq!(
        metric_sum(&judge.metrics(), "herd_annotations_total", &[("generator", GENERATOR)]),
        limit as f64,
        "one verdict per example"
    );
    stop_cleanly(&[&survivor, &judge]);
}

#[test]
fn a_restarted_coordinator_resumes_and_republishes_only_what_the_store_lacks() {
    let mut cluster = Cluster::new("restart");
    let limit = 5;
    // Answers long enough that the stop comes before the first worker has answered all.
    let args =
        coordinator_args(&["name=smol,model=smollm2-135m-instruct,max_new_tokens=48"], limit);
    let first = cluster.spawn("coordinator-1", &strs(&args));
    let (gen_queue, judge_queue) = (
        QueueName::generation(&cluster.run_id, GENERATOR),
        QueueName::judge(&cluster.run_id, JUDGE),
    );
    wait_until(
        RUN_LIMIT,
        "the generation jobs",
        || cluster.queue_stats(&gen_queue).is_some_and(|s| s.messages == limit as u32),
        || first.logs(),
    );

    // A worker answers some, then is stopped; the coordinator crashes.
    let worker = cluster.spawn("worker-1", &worker_args(GENERATOR, MODEL, "1"));
    wait_until(
        RUN_LIMIT,
        "two answers",
        || stored_indices(&cluster, GENERATOR).len() >= 2,
        || worker.logs(),
    );
    stop_cleanly(&[&worker]);
    first.kill();
    let answered = stored_indices(&cluster, GENERATOR).len();
    assert!((2..limit).contains(&answered), "{answered} answers stored before the restart");

    let second = cluster.spawn("coordinator-2", &strs(&args));
    wait_until(
        RUN_LIMIT,
        "the restarted coordinator to publish",
        || second.stderr().contains("published what the store lacks") || second.exited().is_some(),
        || second.logs(),
    );
    let missing = (limit - answered) as f64;
    assert_eq!(published(&second, &gen_queue), missing, "only the missing answers are republished");
    assert_eq!(
        published(&second, &judge_queue),
        answered as f64,
        "a verdict job per stored answer"
    );
    let stats = cluster.queue_stats(&gen_queue).unwrap();
    assert_eq!(
        stats.messages as f64, missing,
        "the first coordinator's jobs were not queued twice"
    );

    let worker = cluster.spawn("worker-2", &worker_args(GENERATOR, MODEL, "2"));
    let judge = cluster.spawn("judge-worker", JUDGE_WORKER_ARGS);
    second.wait_success(RUN_LIMIT);
    assert_eq!(stored_indices(&cluster, GENERATOR), (0..limit).collect::<Vec<_>>());
    assert_eq!(
        metric_sum(&worker.metrics(), "herd_examples_generated_total", &[]),
        missing,
        "the second worker generated only what was missing"
    );
    let annotations =
        cluster.stored(&format!("runs/{}/annotations/{JUDGE}/{GENERATOR}/", cluster.run_id));
    assert_eq!(annotations.len(), limit);
    assert!(stored_report(&cluster).contains_key("leaderboard.csv"));
    stop_cleanly(&[&worker, &judge]);
}

#[test]
fn poison_jobs_end_in_the_dead_letter_queue_with_a_reason_and_the_rest_of_the_run_completes() {
    let mut cluster = Cluster::new("poison");
    let limit = 3;
    let broken_spec = "name=broken,model=/no/such/model.gguf,max_new_tokens=8";
    let coordinator = cluster
        .spawn("coordinator", &strs(&coordinator_args(&[GENERATOR_SPEC, broken_spec], limit)));
    let (gen_queue, broken_queue) = (
        QueueName::generation(&cluster.run_id, GENERATOR),
        QueueName::generation(&cluster.run_id, "broken"),
    );
    wait_until(
        RUN_LIMIT,
        "the generation jobs",
        || cluster.queue_stats(&gen_queue).is_some_and(|s| s.messages == limit as u32),
        || coordinator.logs(),
    );
    block_on(async {
        cluster
            .queue()
            .await
            .publish(&gen_queue, &[serde_json::json!({"not": "a job"})])
            .await
            .unwrap()
    });

    let worker = cluster.spawn("worker", &worker_args(GENERATOR, MODEL, "2"));
    let broken = cluster.spawn("broken-worker", &worker_args("broken", "/no/such/model.gguf", "2"));
    let judge = cluster.spawn("judge-worker", JUDGE_WORKER_ARGS);
    coordinator.wait_success(RUN_LIMIT);

    let said = coordinator.logs();
    assert!(
        said.contains("generator broken was dropped") && said.contains("cannot be loaded"),
        "{said}"
    );
    assert_eq!(stored_indices(&cluster, GENERATOR), (0..limit).collect::<Vec<_>>());
    assert!(stored_indices(&cluster, "broken").is_empty());
    let report = stored_report(&cluster);
    assert!(report.contains_key("smol/annotations.json") && report.contains_key("leaderboard.csv"));
    assert!(!report.keys().any(|k| k.starts_with("broken/")), "{:?}", report.keys());
    let leaderboard = String::from_utf8_lossy(&report["leaderboard.csv"]).into_owned();
    assert!(leaderboard.contains("smol") && !leaderboard.contains("broken"), "{leaderboard}");
    stop_cleanly(&[&worker, &broken, &judge]);

    // The dead letters, for whoever inspects the run: the broken model's jobs and the
    // malformed message, each with its source queue and reason.
    let dead = block_on(async {
        let queue = cluster.queue().await;
        let mut consumer = queue
            .consume::<serde_json::Value>(&QueueName::dead_letters(&cluster.run_id), 32)
            .await
            .unwrap();
        let mut dead = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(3), consumer.next()).await
        {
            let info =
                delivery.dead_letter_info.clone().expect("a dead letter says where it came from");
            dead.push((info.queue, info.reason, delivery.job.clone()));
            delivery.ack().await.unwrap();
        }
        consumer.close().await;
        dead
    });
    let from =
        |queue: &QueueName| dead.iter().filter(|(q, _, _)| q == queue.as_str()).collect::<Vec<_>>();
    let broken_jobs = from(&broken_queue);
    let indices: BTreeSet<u64> =
        broken_jobs.iter().filter_map(|(_, _, job)| job["index"].as_u64()).collect();
    assert_eq!(
        indices,
        (0..limit as u64).collect::<BTreeSet<u64>>(),
        "every job of the broken generator: {dead:#?}"
    );
    assert!(
        broken_jobs
            .iter()
            .all(|(_, reason, _)| reason.contains("/no/such/model.gguf cannot be loaded")),
        "{dead:#?}"
    );
    let malformed = from(&gen_queue);
    assert_eq!(malformed.len(), 1, "{dead:#?}");
    assert!(malformed[0].1.starts_with("malformed message"), "{dead:#?}");
    assert_eq!(malformed[0].2, serde_json::json!({"not": "a job"}));
}

#[test]
fn a_wrong_amqp_password_fails_every_role_fast_with_a_clear_message_and_no_secret() {
    let mut cluster = Cluster::new("badpw").with_amqp_login("guest", "not-the-guest-password-42");
    let roles: [(&str, Vec<String>); 3] = [
        ("coordinator", coordinator_args(&[GENERATOR_SPEC], 2)),
        ("worker", worker_args(GENERATOR, MODEL, "2").iter().map(|s| s.to_string()).collect()),
        ("judge-worker", JUDGE_WORKER_ARGS.iter().map(|s| s.to_string()).collect()),
    ];
    for (name, args) in &roles {
        let started = Instant::now();
        let role = cluster.spawn(name, &strs(args));
        let status = role.wait(Duration::from_secs(20));
        let elapsed = started.elapsed();
        let stderr = role.stderr();
        assert!(!status.success(), "{name} accepted a wrong password\n{stderr}");
        assert!(
            elapsed < Duration::from_secs(10),
            "{name} took {elapsed:?} to give up on refused credentials"
        );
        assert!(
            stderr.contains("RabbitMQ refused the credentials for user guest at 127.0.0.1:5672"),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("not-the-guest-password-42")
                && !role.stdout().contains("not-the-guest-password-42")
        );
    }
    // --help shows which variable holds the URL, never its value.
    let help = cluster
        .command(&["worker", "--help"])
        .env("HERD_AMQP_URL", "amqp://guest:url-secret-77@127.0.0.1:5672/%2f")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("HERD_AMQP_URL") && !help.contains("url-secret-77"), "{help}");
}
