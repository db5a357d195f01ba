#!/usr/bin/env python3
"""Soak: the distributed roles over the whole eval set while faults are injected on a schedule.

A real `herd coordinator`, `--workers` `herd worker`s and one `herd judge-worker` run one
evaluation on the RabbitMQ at 127.0.0.1:5672 and an s3s-fs store, while this script:
- every `--kill-every` seconds kills a random role with SIGKILL and starts it again (the
  coordinator included, until it has finished);
- once, restarts the broker (`rabbitmqctl stop_app`, a pause, `start_app`);
- once, takes the store away (kills s3s-fs, a pause, starts it again on the same folder).
When the coordinator has written the run folder, it checks the store holds exactly one
answer and one verdict per planned instruction, every answer is the eval set's instruction at
its index and every verdict judges the stored answer; then it runs `herd run` with the same
settings and requires model_outputs.json and annotations.json to be byte-identical to its
(the CPU engine computes every position with the same arithmetic whatever shares its batch
or forward pass, so two runs whose batches were made differently give the same bits; rows
that differ are listed). Everything is logged (with times) to stdout and to `--log`.

A program, not a test: the whole eval set takes a long time on a small machine.
Usage: python3 bench/soak/run.py [--limit 805] [--judge logprob|noop] [--log FILE]
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
NOOP = "bench-noop"
S3_KEY, S3_SECRET, BUCKET = "soak-key", "soak-secret-0123456789", "soak"

LOG = None
STARTED = time.time()


def log(message):
    line = f"[{time.time() - STARTED:8.1f} s] {message}"
    print(line, flush=True)
    if LOG:
        LOG.write(line + "\n")
        LOG.flush()


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


class Store:
    """s3s-fs on a fixed port and folder, so it can be stopped and started again."""

    def __init__(self, work):
        self.binary = shutil.which("s3s-fs") or str(Path.home() / ".cargo/bin/s3s-fs")
        if not os.access(self.binary, os.X_OK):
            raise SystemExit("s3s-fs is not installed; run scripts/test-services.sh")
        self.data = work / "s3"
        (self.data / BUCKET).mkdir(parents=True)
        self.port = free_port()
        self.log = open(work / "logs" / "s3s-fs.log", "a")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--access-key", S3_KEY,
             "--secret-key", S3_SECRET, str(self.data)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"


class Role:
    def __init__(self, name, argv, env, logs):
        self.name, self.argv, self.env, self.logs = name, argv, env, logs
        self.proc = None
        self.lives = 0
        self.start()

    def start(self):
        self.lives += 1
        out = open(self.logs / f"{self.name}.{self.lives}.log", "w")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def listed(store, prefix):
    """Object keys under `prefix` in the s3s-fs folder (a key is a path there)."""
    root = store.data / BUCKET / prefix
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.json")) if root.exists() else []


def main():
    global LOG
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--herd", default=str(ROOT / "target/release/herd"))
    parser.add_argument("--limit", type=int, default=805)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--judge", choices=["logprob", "noop"], default="logprob")
    parser.add_argument("--judge-max-context", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=40.0, help="seconds between two SIGKILLs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.log:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        LOG = open(args.log, "w")
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="herd-soak-"))
    logs = work / "logs"
    logs.mkdir()
    run_id = f"soak{int(time.time()) % 100000}"
    judge_model = MODEL if args.judge == "logprob" else NOOP
    log(f"soak {run_id}: {args.limit} instructions, max_new_tokens {args.max_new_tokens}, judge "
        f"{judge_model} (logprob, context {args.judge_max_context}), {args.workers} generation workers, "
        f"SIGKILL every {args.kill_every:.0f} s, seed {args.seed}; herd {args.herd}; work {work}")

    store = Store(work)
    store.start()
    (work / "amqp-password").write_text("guest\n")
    (work / "s3-secret").write_text(S3_SECRET + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERD_", "AWS_"))}
    env.update(
        HERD_LOG="info", HERD_THREADS="1", HERD_RUN_ID=run_id,
        HERD_AMQP_URL="amqp://guest@127.0.0.1:5672/%2f", HERD_AMQP_PASSWORD_FILE=str(work / "amqp-password"),
        HERD_STORE=f"s3://{BUCKET}/{run_id}", HERD_S3_ENDPOINT=store.endpoint(), HERD_S3_REGION="us-east-1",
        AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY_FILE=str(work / "s3-secret"),
        HERD_STORE_RETRY_DEADLINE="600", HERD_RECONNECT_DEADLINE="600",
    )
    generator = f"name=smol,model={MODEL},max_new_tokens={args.max_new_tokens}"
    judge = ["--judge-name", "judge", "--judge-model", judge_model, "--judge-max-context", str(args.judge_max_context)]
    distributed = work / "distributed"
    herd = args.herd
    coordinator = Role("coordinator", [herd, "coordinator", "--generator", generator, *judge, "--limit",
                                       str(args.limit), "--out", str(distributed), "--poll-interval-ms", "500"],
                       env, logs)
    workers = [Role(f"worker{i}", [herd, "worker", "--generator", "smol", "--model", MODEL], env, logs)
               for i in range(args.workers)]
    judge_worker = Role("judge-worker", [herd, "judge-worker", "--judge-name", "judge", "--judge-model",
                                         judge_model, "--no-judge-cache"], env, logs)
    roles = [coordinator, *workers, judge_worker]

    faults = []
    done = threading.Event()
    answers_prefix = f"{run_id}/runs/{run_id}/outputs/smol"
    verdicts_prefix = f"{run_id}/runs/{run_id}/annotations/judge/smol"

    def progress():
        return len(listed(store, answers_prefix)), len(listed(store, verdicts_prefix))

    def inject():
        broker_done = store_done = False
        while not done.wait(args.kill_every):
            answers, verdicts = progress()
            share = (answers + verdicts) / (2 * args.limit)
            if not broker_done and share > 0.3:
                log(f"fault: broker restart (answers {answers}, verdicts {verdicts})")
                subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=False)
                time.sleep(10)
                subprocess.run(["rabbitmqctl", "-q", "start_app"], check=False)
                broker_done = True
                faults.append("broker restart")
                continue
            if not store_done and share > 0.6:
                log(f"fault: store outage, 20 s (answers {answers}, verdicts {verdicts})")
                store.stop()
                time.sleep(20)
                store.start()
                store_done = True
                faults.append("store outage")
                continue
            alive = [r for r in roles if r.proc.poll() is None]
            if not alive:
                continue
            role = rng.choice(alive)
            log(f"fault: SIGKILL {role.name} (life {role.lives}; answers {answers}, verdicts {verdicts})")
            role.kill()
            faults.append(f"kill {role.name}")
            time.sleep(2)
            if not done.is_set():
                role.start()

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    last = None
    while True:
        status = coordinator.proc.poll()
        if status == 0 and not done.is_set():
            break
        if status not in (None, 0, -9):
            log(f"coordinator exited with {status}; see {logs}")
            done.set()
            raise SystemExit(1)
        now = progress()
        if now != last and int(time.time()) % 30 == 0:
            log(f"progress: answers {now[0]}/{args.limit}, verdicts {now[1]}/{args.limit}")
            last = now
        time.sleep(0.5)
    done.set()
    injector.join(timeout=120)
    soak_seconds = time.time() - STARTED
    for role in roles:
        role.stop()
    answers, verdicts = progress()
    log(f"coordinator finished after {soak_seconds:.0f} s; faults injected: {len(faults)} "
        f"({', '.join(sorted(set(faults)))})")
    log(f"store: {answers} answers, {verdicts} verdicts (expected {args.limit} each, one object per key)")

    local = work / "local"
    log("herd run with the same settings (no faults) for comparison …")
    started = time.time()
    local_env = {k: v for k, v in os.environ.items() if not k.startswith(("HERD_", "AWS_"))}
    result = subprocess.run(
        [herd, "run", "--generator", generator, *judge, "--limit", str(args.limit), "--out", str(local),
         "--no-judge-cache"], env=local_env, capture_output=True, text=True)
    if result.returncode != 0:
        log(f"herd run failed:\n{result.stderr[-3000:]}")
        raise SystemExit(1)
    log(f"herd run took {time.time() - started:.0f} s")
    eval_set = json.loads((ROOT / "data" / "eval_set.json").read_text())
    rows = {}
    identical = True
    for name in ["model_outputs.json", "annotations.json"]:
        ours = json.loads((distributed / "smol" / name).read_text())
        theirs = json.loads((local / "smol" / name).read_text())
        rows[name] = ours
        same = (distributed / "smol" / name).read_bytes() == (local / "smol" / name).read_bytes()
        identical = identical and same
        differing = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        log(f"{name}: {'byte-identical to' if same else f'{len(differing)} of {len(ours)} rows differ from'} "
            f"herd run's{'' if same else f' (eval-set indices {differing[:20]})'}")
    answers_rows, verdict_rows = rows["model_outputs.json"], rows["annotations.json"]
    in_order = [r["instruction"] for r in answers_rows] == [r["instruction"] for r in eval_set[: args.limit]]
    paired = all(a["output_2"] == o["output"] and a["instruction"] == o["instruction"]
                 for a, o in zip(verdict_rows, answers_rows))
    log(f"every answer is the eval set's instruction at its index: {in_order}; every verdict judges "
        f"the stored answer: {paired}; annotations rows: {len(verdict_rows)}")
    log(f"leaderboard:\n{(distributed / 'leaderboard.csv').read_text()}")
    ok = identical and in_order and paired and answers == verdicts == len(verdict_rows) == args.limit
    log("RESULT: " + ("pass (exactly once, in order, consistent, byte-identical to herd run)" if ok else "FAIL"))
    if not args.keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
