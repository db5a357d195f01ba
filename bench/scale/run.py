#!/usr/bin/env python3
"""Scale benchmark of the distributed roles on one machine (a program, not a test).

Two parts, each a real `herd coordinator` with real `herd worker` / `herd judge-worker`
processes on the RabbitMQ at 127.0.0.1:5672:

1. model: N = 1, 2, 4 generation workers on the default model (CPU), a fixed number of
   instructions and max_new_tokens; the judge is herd's no-op benchmark model, so the run
   measures generation. Reports examples/s and what the coordinator adds per example.
2. no-op: the benchmark-only no-op model for generator and judge (an empty answer and a
   tie, at once), so every second spent is the broker's, the store's and the loops'. Reports
   the jobs per second moved through RabbitMQ + a file:// store and RabbitMQ + s3s-fs.

How the times are taken, from outside the processes:
- publish: when the coordinator's /metrics (polled every 20 ms) first counts published
  generation jobs; stored: each result file's mtime in the store's folder (a file:// store,
  or s3s-fs's folder, where a key is a path); recorded: when the coordinator's
  `herd_run_jobs_done{phase}` first reached k, for the k-th stored result.
- coordinator CPU: user + system seconds of the coordinator process (wait4), per example.

Prints a markdown table. Usage: python3 bench/scale/run.py [--help]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOOP = "bench-noop"  # herd_worker::NOOP_BENCHMARK_MODEL
DEFAULT_MODEL = "smollm2-135m-instruct"
S3_KEY, S3_SECRET, BUCKET = "bench-key", "bench-secret-0123456789", "bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {limit:.0f} s")


def s3s_fs_binary():
    found = shutil.which("s3s-fs") or str(Path.home() / ".cargo/bin/s3s-fs")
    if not os.access(found, os.X_OK):
        raise SystemExit("s3s-fs is not installed; run scripts/test-services.sh")
    return found


class Process:
    """One spawned herd role; logs to files; its rusage once reaped."""

    def __init__(self, name, argv, env, logs):
        self.name = name
        self.out = open(logs / f"{name}.log", "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.rusage = None
        self.status = None

    def log(self):
        return Path(self.out.name).read_text(errors="replace")

    def poll(self):
        if self.status is None:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.status, self.rusage = os.waitstatus_to_exitcode(status), rusage
        return self.status

    def wait(self, limit):
        deadline = time.time() + limit
        while self.poll() is None:
            if time.time() > deadline:
                self.proc.kill()
                raise SystemExit(f"{self.name} ran longer than {limit:.0f} s\n{self.log()[-3000:]}")
            time.sleep(0.02)
        return self.status

    def stop(self):
        if self.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.wait(60)

    def cpu_seconds(self):
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage else float("nan")


class MetricsFollower(threading.Thread):
    """Polls a role's /metrics and keeps when each value of a few series was first seen."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.published_at = None
        self.done = {"generation": [], "judging": []}  # time each count was first seen
        self.stop = threading.Event()

    def run(self):
        done_re = re.compile(r'^herd_run_jobs_done\{[^}]*phase="(\w+)"[^}]*\} (\d+)', re.M)
        published_re = re.compile(r'^herd_jobs_published_total\{[^}]*queue="[^"]*\.gen\.[^"]*"[^}]*\} (\d+)', re.M)
        while not self.stop.is_set():
            try:
                text = urllib.request.urlopen(self.url, timeout=1).read().decode()
            except OSError:
                time.sleep(0.02)
                continue
            now = time.time()
            if self.published_at is None and any(int(n) > 0 for n in published_re.findall(text)):
                self.published_at = now
            for phase, count in done_re.findall(text):
                seen = self.done.setdefault(phase, [])
                seen.extend([now] * (int(count) - len(seen)))
            time.sleep(0.02)


def stored_times(folder):
    return sorted(p.stat().st_mtime for p in Path(folder).glob("*.json"))


def run_once(args, label, model, workers, limit, max_new_tokens, store_kind, threads):
    """One coordinator run; returns its measurements."""
    work = Path(tempfile.mkdtemp(prefix=f"herd-scale-{label}-"))
    logs = work / "logs"
    logs.mkdir()
    # Short ids: s3s-fs keeps each object's metadata in a file named after the base64 of
    # its whole key, so keys over ~160 bytes fail there (the file name exceeds 255 bytes).
    run_id = f"b{os.getpid() % 10000}-{int(time.time()) % 100000}-{label}"
    (work / "amqp-password").write_text("guest\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERD_", "AWS_"))}
    env.update(
        HERD_LOG="info",
        HERD_RUN_ID=run_id,
        HERD_AMQP_URL=args.amqp_url,
        HERD_AMQP_PASSWORD_FILE=str(work / "amqp-password"),
    )
    s3 = None
    if store_kind == "file":
        env["HERD_STORE"] = f"file://{work}/store"
        store_root = work / "store"
    else:
        data = work / "s3"
        (data / BUCKET).mkdir(parents=True)
        port = free_port()
        s3 = subprocess.Popen(
            [s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(port), "--access-key", S3_KEY,
             "--secret-key", S3_SECRET, str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        env.update(HERD_STORE=f"s3://{BUCKET}/r", HERD_S3_ENDPOINT=f"http://127.0.0.1:{port}",
                   HERD_S3_REGION="us-east-1", AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        store_root = data / BUCKET / "r"
    herd = str(args.herd)
    roles = []
    try:
        worker_env = dict(env, HERD_THREADS=str(threads))
        for i in range(workers):
            roles.append(Process(f"worker-{i}", [herd, "worker", "--generator", "g", "--model", model], worker_env, logs))
        roles.append(Process("judge-worker", [herd, "judge-worker", "--judge-name", "noop", "--judge-model", NOOP],
                             env, logs))
        if model != NOOP:
            # Model loads are not part of the run: wait until every worker has its model.
            deadline = time.time() + 300
            while not all("model loaded" in r.log() for r in roles if r.name.startswith("worker")):
                for r in roles:
                    if r.poll() is not None:
                        raise SystemExit(f"{r.name} exited early\n{r.log()[-3000:]}")
                if time.time() > deadline:
                    raise SystemExit("workers did not load the model within 300 s")
                time.sleep(0.1)
        metrics_port = free_port()
        follower = MetricsFollower(metrics_port)
        follower.start()
        started = time.time()
        coordinator = Process(
            "coordinator",
            [herd, "coordinator", "--generator",
             f"name=g,model={model},template=chat,max_new_tokens={max_new_tokens}",
             "--judge-name", "noop", "--judge-model", NOOP, "--judge-mode", "logprob", "--limit", str(limit),
             "--poll-interval-ms", str(args.poll_interval_ms), "--out", str(work / "out"),
             "--metrics-addr", f"127.0.0.1:{metrics_port}"],
            env, logs)
        status = coordinator.wait(args.run_limit)
        ended = time.time()
        follower.stop.set()
        if status != 0:
            raise SystemExit(f"the coordinator failed ({status})\n{coordinator.log()[-3000:]}")
        for r in roles:
            r.stop()
    finally:
        for r in roles:
            if r.poll() is None:
                r.proc.kill()
                r.wait(10)
        if s3 is not None:
            s3.kill()
            s3.wait()
    answers = list((store_root / "runs" / run_id / "outputs" / "g").glob("*.json"))
    per_worker = {}
    for path in answers:
        worker = json.loads(path.read_text()).get("worker", "?")
        per_worker[worker] = per_worker.get(worker, 0) + 1
    outputs = stored_times(store_root / "runs" / run_id / "outputs" / "g")
    verdicts = stored_times(store_root / "runs" / run_id / "annotations" / "noop" / "g")
    if len(outputs) != limit or len(verdicts) != limit:
        raise SystemExit(f"{label}: {len(outputs)} answers and {len(verdicts)} verdicts stored, expected {limit}")
    published = follower.published_at or started
    recorded = follower.done["generation"]
    lags = [r - s for r, s in zip(recorded, outputs)]
    throughput = json.loads(next((work / "out").glob("*/throughput.json")).read_text())
    model_outputs = json.loads(next((work / "out").glob("*/model_outputs.json")).read_text())
    tokens = sum(row.get("output_tokens", 0) for row in model_outputs)
    result = dict(
        label=label, workers=workers, threads=threads, store=store_kind, examples=limit,
        output_tokens=tokens,
        wall=ended - started,
        # generation: first job published -> last answer stored
        generation_span=outputs[-1] - published,
        # every job: first published -> last verdict stored (generation and judge jobs)
        jobs_span=verdicts[-1] - published,
        engine_examples_per_second=throughput.get("examples_per_second"),
        record_lag=sum(lags) / len(lags) if len(lags) == len(outputs) else float("nan"),
        publish_to_recorded=(sum(recorded) / len(recorded) - published) if recorded else float("nan"),
        coordinator_cpu=coordinator.cpu_seconds(),
        workers_cpu=sum(r.cpu_seconds() for r in roles if r.name.startswith("worker")),
        tail=ended - verdicts[-1],
        answers_per_worker=sorted(per_worker.values()),
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--herd", type=Path, default=ROOT / "target/release/herd")
    parser.add_argument("--amqp-url", default="amqp://guest@127.0.0.1:5672/%2f")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--workers", default="1,2,4", help="generation workers of the model runs")
    parser.add_argument("--limit", type=int, default=24, help="instructions of the model runs")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, help="inference threads per worker (default: cores / workers)")
    parser.add_argument("--noop-workers", default="1,2", help="generation workers of the no-op runs")
    parser.add_argument("--noop-limit", type=int, default=805, help="instructions of the no-op runs")
    parser.add_argument("--noop-stores", default="file,s3")
    parser.add_argument("--poll-interval-ms", type=int, default=250, help="the coordinator's store polling")
    parser.add_argument("--run-limit", type=float, default=900)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the median one is shown")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-noop", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders and logs")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if not args.herd.exists():
        raise SystemExit(f"{args.herd} is missing: cargo build --release")
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    configs = []
    if not args.skip_model:
        for n in [int(x) for x in args.workers.split(",")]:
            threads = args.threads or max(1, cores // n)
            configs.append((f"model-{n}", args.model, n, args.limit, args.max_new_tokens, "file", threads))
    if not args.skip_noop:
        for store in args.noop_stores.split(","):
            for n in [int(x) for x in args.noop_workers.split(",")]:
                configs.append((f"noop-{store}-{n}", NOOP, n, args.noop_limit, 1, store, 1))
    results, every = [], []
    for config in configs:
        runs = []
        for repeat in range(args.repeats):
            print(f"{config[0]}: run {repeat + 1} of {args.repeats}", file=sys.stderr)
            runs.append(run_once(args, *config))
        every.extend(runs)
        # The run with the median throughput stands for the configuration.
        rate = lambda r: (2 * r["examples"] / r["jobs_span"] if r["label"].startswith("noop")
                          else r["examples"] / r["generation_span"])
        runs.sort(key=rate)
        median = dict(runs[len(runs) // 2], spread=(rate(runs[0]), rate(runs[-1])))
        results.append(median)
    if args.json:
        args.json.write_text(json.dumps(every, indent=2))
    print_tables(args, cores, results)
    print(f"\n{args.repeats} run(s) per row, the median shown; load average (1 min) {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")


def print_tables(args, cores, results):
    model = [r for r in results if r["label"].startswith("model")]
    noop = [r for r in results if r["label"].startswith("noop")]
    if model:
        print(f"\nModel runs: {args.model} on CPU ({cores} cores), {args.limit} instructions, max_new_tokens "
              f"{args.max_new_tokens}, file:// store, RabbitMQ; no-op judge; poll {args.poll_interval_ms} ms\n")
        print("| gen. workers | threads each | output tokens | examples/s (publish → last answer) | min–max | "
              "examples/s (engine spans) | tokens/s | publish → recorded, mean | stored → recorded, mean | "
              "coordinator CPU / example | run folder after last verdict | answers per worker |")
        print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for r in model:
            eps = r["examples"] / r["generation_span"]
            engine = r["engine_examples_per_second"]
            low, high = r["spread"]
            print(f"| {r['workers']} | {r['threads']} | {r['output_tokens']} | {eps:.2f} | {low:.2f}–{high:.2f} | "
                  f"{engine:.2f} | {r['output_tokens'] / r['generation_span']:.1f} | "
                  f"{r['publish_to_recorded']:.2f} s | {r['record_lag'] * 1000:.0f} ms | "
                  f"{r['coordinator_cpu'] / r['examples'] * 1000:.1f} ms | {r['tail']:.2f} s | "
                  f"{'/'.join(map(str, r['answers_per_worker']))} |")
    if noop:
        print(f"\nNo-op model (generator and judge): {args.noop_limit} instructions = {2 * args.noop_limit} jobs "
              f"(generation + judge), 1 judge worker; poll {args.poll_interval_ms} ms\n")
        print("| store | gen. workers | generation jobs/s | all jobs/s (gen + judge) | min–max | stored → recorded, mean | "
              "coordinator CPU / job | workers' CPU / job |")
        print("|---|---:|---:|---:|---|---:|---:|---:|")
        for r in noop:
            store = "file://" if r["store"] == "file" else "s3s-fs"
            jobs = 2 * r["examples"]
            print(f"| {store} | {r['workers']} | {r['examples'] / r['generation_span']:.0f} | "
                  f"{jobs / r['jobs_span']:.0f} | {r['spread'][0]:.0f}–{r['spread'][1]:.0f} | "
                  f"{r['record_lag'] * 1000:.0f} ms | "
                  f"{r['coordinator_cpu'] / jobs * 1000:.2f} ms | {r['workers_cpu'] / r['examples'] * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
