//! A `herd serve` process for tests: started on a free port, its address read from its
//! first line, waited for until healthy, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Servers kept in statics are never dropped: they are killed when the test process exits.
fn kill_at_exit(pid: u32) {
    static PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn kill_all() {
        if let Ok(pids) = PIDS.lock() {
            for &pid in pids.iter() {
                // SAFETY: kill(2) with a pid this process spawned; errors are ignored.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
    PIDS.lock().unwrap().push(pid);
    // SAFETY: registers a plain function with no captured state.
    REGISTER.call_once(|| unsafe {
        libc::atexit(kill_all);
    });
}

/// A `herd serve` process on a free port, killed when dropped (or at exit).
pub struct Served {
    child: Child,
    pub base: String,
    pub stderr: Arc<Mutex<String>>,
}

impl Served {
    /// `herd serve` on the default model with `args` added and `env` set.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        command
            .args(["serve", "--port", "0", "--batch-size", "4", "--threads", "2"])
            .args(args)
            .env("HERD_LOG", "info")
            .env_remove("HERD_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("herd serve starts");
        kill_at_exit(child.id());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let base = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let served = Served { child, base, stderr };
        served.wait_healthy();
        served
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let health = self.base.trim_end_matches("/v1").to_string() + "/health";
        loop {
            if let Ok(r) = client().get(&health).send() {
                if r.status() == 200 {
                    return;
                }
                assert_eq!(r.status(), 503, "loading answers 503");
            }
            assert!(Instant::now() < deadline, "herd serve not healthy in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_with_key(path, body, None)
    }

    pub fn post_with_key(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = client().post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap())
    }

    /// The `data:` payloads of a streamed answer.
    pub fn stream(&self, path: &str, body: Value) -> Vec<String> {
        let response = client().post(format!("{}{path}", self.base)).json(&body).send().unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = response.text().unwrap();
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
    })
}
