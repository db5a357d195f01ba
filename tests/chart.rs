//! The Helm chart (charts/herd), checked without a cluster but with the real helm: every
//! value set is rendered by `helm template` and linted by `helm lint --strict` (helm checks
//! the values against values.schema.json itself, and the tests make sure it refuses broken
//! ones); each rendered object is validated against Kubernetes v1.33 JSON schemas (strict:
//! unknown fields fail) and the custom resources (KEDA, Prometheus Operator) against their
//! CRD schemas through node (tests/chart/crd-validate); the dashboard may only query metrics herd exports, as
//! documented and as the roles serve them (a small run of the real roles, scraped:
//! tests/chart/live_roles.rs).
//!
//! helm, the Kubernetes schemas and the CRD validators come from scripts/test-services.sh
//! (pinned: helm v4.1.4, the schemas of the PyPI package kubernetes-validate 1.37.0, the npm
//! packages of tests/chart/crd-validate/package-lock.json), in
//! `${HERD_TOOLS_DIR:-~/.cache/herd/tools}`; `HERD_HELM`, `HERD_K8S_SCHEMAS` and
//! `HERD_CRD_VALIDATE_MODULES` name others. Without them the tests fail: never skipped.

#[path = "chart/live_roles.rs"]
mod live_roles;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value as Json};

const RELEASE: &str = "eval";
const NAMESPACE: &str = "herd";
/// The Kubernetes version the chart is rendered for and validated against.
const KUBERNETES: &str = "v1.33.0";
/// The helm scripts/test-services.sh installs; another one is used, with a note.
const HELM_VERSION: &str = "v4.1.4";
/// Where scripts/test-services.sh unpacks the schemas, under the tools folder.
const K8S_SCHEMAS: &str = "kubernetes-validate-1.37.0/v1.33.0-local-strict";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    root().join("charts/herd")
}

fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("HERD_TOOLS_DIR").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/herd/tools"))
    })
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_to_json(text: &str) -> Json {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

/// A values file of tests/chart/.
fn values_file(name: &str) -> Json {
    let path = root().join("tests/chart").join(name);
    yaml_to_json(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// The chart's own values.yaml.
fn chart_values() -> Json {
    yaml_to_json(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
}

/// The helm binary: $HERD_HELM, else the one scripts/test-services.sh installs, else `helm`
/// on PATH. None of them: the test fails, saying how to get one.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let version = |candidate: &Path| {
            Command::new(candidate)
                .args(["version", "--template", "{{.Version}}"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let candidates: Vec<PathBuf> = std::env::var_os("HERD_HELM")
            .map(PathBuf::from)
            .into_iter()
            .chain(tools_dir().map(|dir| dir.join("helm")))
            .chain([PathBuf::from("helm")])
            .collect();
        for candidate in &candidates {
            if let Some(v) = version(candidate) {
                if v != HELM_VERSION {
                    eprintln!(
                        "note: {} is helm {v}; scripts/test-services.sh pins {HELM_VERSION}",
                        candidate.display()
                    );
                }
                return candidate.clone();
            }
        }
        panic!(
            "no helm binary (tried {candidates:?}): the chart tests need the real helm. Run \
             scripts/test-services.sh, which installs helm {HELM_VERSION} into \
             ${{HERD_TOOLS_DIR:-~/.cache/herd/tools}}, or set HERD_HELM"
        )
    })
}

/// Runs helm with `args`, then the value overrides as `--values` files (in order, later
/// ones win as with `-f a -f b`). Ok: stdout; Err: stderr.
fn run_helm(args: &[&str], overrides: &[Json]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(helm());
    command.args(args);
    for (i, values) in overrides.iter().enumerate() {
        let path = dir.path().join(format!("values-{i}.yaml"));
        // JSON is YAML.
        std::fs::write(&path, values.to_string()).unwrap();
        command.arg("--values").arg(path);
    }
    let out = command.output().unwrap_or_else(|e| panic!("{}: {e}", helm().display()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template`: each rendered object with the template it comes from (`# Source:`).
fn helm_template(overrides: &[Json]) -> Result<Vec<(String, Json)>, String> {
    let chart = chart_dir().display().to_string();
    let args =
        ["template", RELEASE, &chart, "--namespace", NAMESPACE, "--kube-version", KUBERNETES];
    Ok(split_manifests(&run_helm(&args, overrides)?))
}

/// Splits helm's multi-document output into its objects, each with its `# Source:` template.
fn split_manifests(text: &str) -> Vec<(String, Json)> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            documents.push(String::new());
        } else {
            let last = documents.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    documents
        .iter()
        .filter_map(|doc| {
            let object = yaml_to_json(doc);
            if object.is_null() {
                return None;
            }
            let source = doc
                .lines()
                .find_map(|l| l.strip_prefix("# Source: "))
                .unwrap_or_else(|| panic!("no `# Source:` line in\n{doc}"));
            Some((source.to_string(), object))
        })
        .collect()
}

/// Renders `overrides` with `helm template`; a failure fails the test with helm's words.
fn render(overrides: &[Json]) -> Vec<(String, Json)> {
    helm_template(overrides).unwrap_or_else(|e| panic!("helm template fails: {e}"))
}

fn render_files(files: &[&str]) -> Vec<(String, Json)> {
    render(&files.iter().map(|f| values_file(f)).collect::<Vec<_>>())
}

/// The NOTES helm prints after an install (a client-side dry run: no cluster needed).
fn helm_notes(overrides: &[Json]) -> String {
    let chart = chart_dir().display().to_string();
    let args =
        ["install", RELEASE, &chart, "--namespace", NAMESPACE, "--dry-run=client", "-o", "json"];
    let out = run_helm(&args, overrides).unwrap_or_else(|e| panic!("helm install fails: {e}"));
    let release: Json = serde_json::from_str(&out).expect("helm prints the release as JSON");
    release["info"]["notes"].as_str().expect("the release has NOTES").to_string()
}

/// `helm lint --strict` (warnings fail too).
fn helm_lint(overrides: &[Json]) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    run_helm(&["lint", &chart, "--strict", "--kube-version", KUBERNETES], overrides)
}

/// Value sets the tests render, each a list of overrides of values.yaml.
fn value_sets() -> Vec<(&'static str, Vec<Json>)> {
    let gpu = values_file("gpu-values.yaml");
    vec![
        ("default values", vec![]),
        ("gpu-values.yaml", vec![gpu.clone()]),
        (
            "gpu-values.yaml, credentials from env and files, an in-cluster broker",
            vec![gpu.clone(), env_and_file_credentials_values()],
        ),
        ("gpu-values.yaml, private CAs for the broker and the store", vec![gpu, tls_ca_values()]),
        ("the README's example", vec![readme_example()]),
    ]
}

fn env_and_file_credentials_values() -> Json {
    json!({
        "amqp": {"credentialsAs": "env", "inCluster": {"enabled": true}},
        "storage": {"credentialsAs": "file", "pathStyle": false}
    })
}

fn tls_ca_values() -> Json {
    json!({
        "amqp": {"url": "amqps://herd@rabbitmq.example.com:5671/%2f", "tlsCa": {"secretName": "broker-ca"}},
        "storage": {"endpoint": "https://minio.storage.svc:9000", "tlsCa": {"secretName": "minio-ca", "key": "public.crt"}}
    })
}

/// The example values file of charts/herd/README.md.
fn readme_example() -> Json {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let block = regex::Regex::new(r"(?s)```yaml\n(run:.*?)```").unwrap();
    let example =
        block.captures(&readme).expect("charts/herd/README.md has an example values file");
    yaml_to_json(&example[1])
}

fn kind(m: &Json) -> (&str, &str) {
    (m["apiVersion"].as_str().unwrap_or(""), m["kind"].as_str().unwrap_or(""))
}

fn of_kind<'a>(manifests: &'a [(String, Json)], k: &str) -> Vec<&'a Json> {
    manifests.iter().map(|(_, m)| m).filter(|m| kind(m).1 == k).collect()
}

/// The Kubernetes JSON schemas: $HERD_K8S_SCHEMAS, else where scripts/test-services.sh
/// unpacks them. Missing: the test fails, saying how to get them.
fn k8s_schema_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("HERD_K8S_SCHEMAS")
            .map(PathBuf::from)
            .or_else(|| tools_dir().map(|tools| tools.join(K8S_SCHEMAS)));
        match dir {
            Some(dir) if dir.join("_definitions.json").is_file() => dir,
            _ => panic!(
                "no Kubernetes JSON schemas at {dir:?}: run scripts/test-services.sh (it \
                 unpacks those of the PyPI package kubernetes-validate 1.37.0 into \
                 ${{HERD_TOOLS_DIR:-~/.cache/herd/tools}}/{K8S_SCHEMAS}) or set HERD_K8S_SCHEMAS"
            ),
        }
    })
}

/// The definitions every kind's schema refers to (`/api/_definitions.json#/$defs/…`,
/// relative to the schemas' `https://kubernetes.io/api/…` ids), served from the folder.
struct Definitions(Arc<Json>);

impl jsonschema::Retrieve for Definitions {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Json, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str() == "https://kubernetes.io/api/_definitions.json" {
            Ok(Json::clone(&self.0))
        } else {
            Err(format!("no schema {uri} in {}", k8s_schema_dir().display()).into())
        }
    }
}

/// The validator of one kind (`deployment-apps-v1.json`), compiled once; None when the
/// folder has no schema of that name.
fn k8s_validator(api_version: &str, kind: &str) -> Option<Arc<jsonschema::Validator>> {
    static DEFINITIONS: OnceLock<Arc<Json>> = OnceLock::new();
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let kind = kind.to_lowercase();
    let name = match api_version.split_once('/') {
        Some((group, version)) => {
            format!("{kind}-{}-{version}.json", group.split('.').next().unwrap())
        }
        None => format!("{kind}-{api_version}.json"),
    };
    let path = k8s_schema_dir().join(&name);
    if !path.is_file() {
        return None;
    }
    let mut validators = VALIDATORS.get_or_init(Default::default).lock().unwrap();
    let validator = validators.entry(name).or_insert_with(|| {
        let definitions = DEFINITIONS
            .get_or_init(|| Arc::new(read_json(&k8s_schema_dir().join("_definitions.json"))));
        let validator = jsonschema::options()
            .with_retriever(Definitions(definitions.clone()))
            .build(&read_json(&path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Arc::new(validator)
    });
    Some(validator.clone())
}

const CUSTOM_RESOURCES: [(&str, &str); 4] = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
];

/// Validates every manifest: built-in kinds with the jsonschema crate against the Kubernetes
/// schemas, custom resources with the CRD validators run by node. Returns the kinds seen.
fn validate_manifests(manifests: &[(String, Json)]) -> BTreeSet<String> {
    let mut failures = Vec::new();
    let mut custom = Vec::new();
    let mut seen = BTreeSet::new();
    for (template, m) in manifests {
        let (api_version, k) = kind(m);
        let name = m["metadata"]["name"].as_str().unwrap_or("?");
        seen.insert(k.to_string());
        assert!(
            name.len() <= 63 && !name.ends_with('-'),
            "{template}: {k} name {name:?} is not a valid DNS label"
        );
        if CUSTOM_RESOURCES.contains(&(api_version, k)) {
            custom.push((template.clone(), m.clone()));
            continue;
        }
        let Some(validator) = k8s_validator(api_version, k) else {
            failures.push(format!("{template}: no Kubernetes schema for {api_version} {k}"));
            continue;
        };
        for e in validator.iter_errors(m) {
            failures.push(format!("{template}: {k} {name}: {e} at {}", e.instance_path()));
        }
    }
    if !custom.is_empty() {
        failures.extend(validate_custom_resources(&custom));
    }
    assert!(failures.is_empty(), "manifests fail their schemas:\n{}", failures.join("\n"));
    seen
}
fn validate_custom_resources(objects: &[(String, Json)]) -> Vec<String> {
    let script = root().join("tests/chart/crd-validate/validate.mjs");
    let modules = std::env::var_os("HERD_CRD_VALIDATE_MODULES")
        .map(PathBuf::from)
        .or_else(|| tools_dir().map(|tools| tools.join("crd-validate/node_modules")))
        .filter(|dir| dir.join("@kubernetes-models/keda").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no CRD validators: run scripts/test-services.sh (it installs the npm packages \
                 of tests/chart/crd-validate/package-lock.json into \
                 ${{HERD_TOOLS_DIR:-~/.cache/herd/tools}}/crd-validate) or set \
                 HERD_CRD_VALIDATE_MODULES to their node_modules"
            )
        });
    let input = Json::Array(objects.iter().map(|(_, m)| m.clone()).collect());
    let mut child = Command::new("node")
        .arg(&script)
        .arg(&modules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node runs the CRD validators (Debian's nodejs package)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "CRD validator failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Json> = serde_json::from_slice(&out.stdout).expect("validator prints JSON");
    assert_eq!(results.len(), objects.len());
    objects
        .iter()
        .zip(results)
        .filter(|(_, r)| r["ok"] != json!(true))
        .map(|((template, m), r)| {
            format!("{template}: {} {}: {}", kind(m).1, m["metadata"]["name"], r["error"])
        })
        .collect()
}

fn containers(pod_owner: &Json) -> Vec<&Json> {
    pod_owner["spec"]["template"]["spec"]["containers"].as_array().unwrap().iter().collect()
}

fn env_map(container: &Json) -> BTreeMap<String, Json> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter().map(|e| (e["name"].as_str().unwrap().to_string(), e.clone())).collect()
        })
        .unwrap_or_default()
}

fn workloads(manifests: &[(String, Json)]) -> Vec<&Json> {
    manifests
        .iter()
        .map(|(_, m)| m)
        .filter(|m| matches!(kind(m).1, "Deployment" | "Job" | "StatefulSet"))
        .collect()
}

#[test]
fn default_values_render_manifests_valid_for_kubernetes() {
    let manifests = render_files(&[]);
    let kinds = validate_manifests(&manifests);
    let expected: BTreeSet<String> =
        ["Deployment", "Job", "Service", "ServiceAccount"].iter().map(|s| s.to_string()).collect();
    assert_eq!(kinds, expected, "default values render the core objects only");
    // The default generator runs on CPU with the CPU image; the judge on the CUDA image.
    let deployments = of_kind(&manifests, "Deployment");
    assert_eq!(deployments.len(), 2);
    let worker =
        deployments.iter().find(|d| d["metadata"]["name"] == "eval-herd-gen-smollm2-135m").unwrap();
    assert_eq!(containers(worker)[0]["image"], "herd:0.1.0");
    assert!(containers(worker)[0]["resources"]["limits"].get("nvidia.com/gpu").is_none());
    // helm prints how to follow the run.
    let notes = helm_notes(&[]);
    assert!(notes.contains("job/eval-herd-coordinator-demo"), "{notes}");
    assert!(notes.contains("eval-herd-gen-smollm2-135m"), "{notes}");
}

#[test]
fn gpu_values_render_manifests_valid_for_kubernetes_keda_and_prometheus_operator() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let kinds = validate_manifests(&manifests);
    for k in [
        "ScaledObject",
        "TriggerAuthentication",
        "ServiceMonitor",
        "PodMonitor",
        "ConfigMap",
        "Secret",
    ] {
        assert!(kinds.contains(k), "gpu-values.yaml renders a {k}");
    }
    let deployments = of_kind(&manifests, "Deployment");
    // Three generators and the judge.
    assert_eq!(deployments.len(), 4);
    for d in &deployments {
        // KEDA owns the replica count.
        assert!(
            d["spec"].get("replicas").is_none(),
            "{}: replicas set under KEDA",
            d["metadata"]["name"]
        );
    }
    let scaled = of_kind(&manifests, "ScaledObject");
    assert_eq!(scaled.len(), 4, "one ScaledObject per worker Deployment");
    let targets: BTreeSet<&str> =
        scaled.iter().map(|s| s["spec"]["scaleTargetRef"]["name"].as_str().unwrap()).collect();
    let names: BTreeSet<&str> =
        deployments.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(targets, names);
}

#[test]
fn generation_workers_get_their_gpus_node_placement_and_model_volume() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let by_name = |n: &str| {
        of_kind(&manifests, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == n)
            .unwrap()
            .clone()
    };
    let llama = by_name("eval-herd-gen-llama-3-1-8b");
    let c = &containers(&llama)[0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], 1);
    assert_eq!(c["image"], "registry.example.com/herd-cuda:0.1.0");
    let spec = &llama["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"]["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");
    assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu");
    let models =
        spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "models").unwrap();
    assert_eq!(models["hostPath"]["path"], "/mnt/models");
    let args: Vec<&str> =
        c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        &args[..5],
        ["worker", "--generator", "llama-3.1-8b", "--model", "/models/Llama-3.1-8B-Instruct"]
    );
    // A generator may bring its own model volume (a PVC here).
    let qwen = by_name("eval-herd-gen-qwen2-5-7b");
    let models = qwen["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "models")
        .cloned()
        .unwrap();
    assert_eq!(models["persistentVolumeClaim"]["claimName"], "qwen-weights");
    // The coordinator gets every generator with its template.
    let job = of_kind(&manifests, "Job")[0];
    let args: Vec<&str> = containers(job)[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let generators: Vec<&str> =
        args.windows(2).filter(|w| w[0] == "--generator").map(|w| w[1]).collect();
    assert_eq!(generators.len(), 3);
    assert!(generators.contains(
        &"name=llama-3.1-8b,model=/models/Llama-3.1-8B-Instruct,template=chat,max_new_tokens=2048"
    ));
    assert!(generators.contains(
        &"name=alpaca-7b,model=/models/alpaca-7b,template=alpaca_sft,max_new_tokens=1024"
    ));
    assert!(args.windows(2).any(|w| w == ["--judge-mode", "logprob"]));
}

fn judge_deployment(manifests: &[(String, Json)]) -> Json {
    of_kind(manifests, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "judge-worker")
        .expect("a judge Deployment")
        .clone()
}

fn volume<'a>(pod_owner: &'a Json, name: &str) -> Option<&'a Json> {
    pod_owner["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
}

/// The value of an env entry set with `value:` (None when unset or from a Secret).
fn env_value(container: &Json, name: &str) -> Option<String> {
    env_map(container).get(name).and_then(|e| e["value"].as_str()).map(str::to_string)
}

#[test]
fn judge_pods_take_their_tensor_parallel_degree_in_gpus_with_shared_memory_and_nccl_env() {
    // judge.tensorParallel: 2 by default, 4 in gpu-values.yaml; one value for both.
    for (files, ranks) in [(&[][..], 2), (&["gpu-values.yaml"][..], 4)] {
        let manifests = render_files(files);
        let judge = judge_deployment(&manifests);
        let c = &containers(&judge)[0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], ranks);
        assert_eq!(c["resources"]["requests"]["nvidia.com/gpu"], ranks);
        assert!(c["image"].as_str().unwrap().contains("herd-cuda:"), "{}", c["image"]);
        assert_eq!(env_value(c, "HERD_TENSOR_PARALLEL"), Some(ranks.to_string()));
        assert_eq!(env_value(c, "HERD_DEVICE").as_deref(), Some("cuda"));
        let args: Vec<&str> =
            c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(!args.contains(&"--tensor-parallel"), "one source for the degree: {args:?}");
        let shm = volume(&judge, "shm").unwrap();
        assert_eq!(shm["emptyDir"]["medium"], "Memory");
        assert!(shm["emptyDir"]["sizeLimit"].is_string());
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "shm" && m["mountPath"] == "/dev/shm"));
        assert_eq!(env_value(c, "NCCL_NVLS_ENABLE").as_deref(), Some("0"));
    }
    // NCCL variables come from values, in a stable order.
    let manifests = render_files(&["gpu-values.yaml"]);
    let judge = judge_deployment(&manifests);
    let c = containers(&judge)[0];
    assert_eq!(env_value(c, "NCCL_IB_DISABLE").as_deref(), Some("1"));
    assert_eq!(env_value(c, "NCCL_DEBUG").as_deref(), Some("INFO"));
    // One GPU: no NCCL, so no /dev/shm.
    let judge = judge_deployment(&render(&[json!({"judge": {"tensorParallel": 1}})]));
    let c = containers(&judge)[0];
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(env_value(c, "HERD_TENSOR_PARALLEL").as_deref(), Some("1"));
    assert!(volume(&judge, "shm").is_none());
    assert!(c["volumeMounts"].as_array().unwrap().iter().all(|m| m["name"] != "shm"));
    // A CPU judge (a small model): the CPU image, no GPU, no NCCL.
    let manifests = render(&[json!({"judge": {"device": "cpu", "tensorParallel": 1}})]);
    validate_manifests(&manifests);
    let judge = judge_deployment(&manifests);
    let c = containers(&judge)[0];
    assert_eq!(c["image"], "herd:0.1.0");
    assert!(c["resources"]["limits"].get("nvidia.com/gpu").is_none());
    assert_eq!(env_value(c, "HERD_DEVICE").as_deref(), Some("cpu"));
    assert_eq!(env_value(c, "HERD_BATCH_SIZE").as_deref(), Some("16"));
    assert!(env_value(c, "NCCL_NVLS_ENABLE").is_none());
}

/// The engine variables of every worker container: a role with GPUs computes on them
/// (HERD_DEVICE cuda, tensor-parallel over all of them, GPU-sized batches), one without on
/// the CPU with herd's CPU batching; values override the batching.
#[test]
fn gpu_roles_compute_on_their_gpus_with_gpu_sized_batches() {
    // (device, tensor parallel, batch size, step tokens, GPU memory fraction, KV cache tokens)
    type Engine<'a> = (&'a str, usize, &'a str, &'a str, &'a str, Option<&'a str>);
    let engine = |c: &Json| {
        let get = |n: &str| env_value(c, n).unwrap_or_else(|| panic!("{n} is not set"));
        (
            get("HERD_DEVICE"),
            get("HERD_TENSOR_PARALLEL").parse::<usize>().unwrap(),
            get("HERD_BATCH_SIZE"),
            get("HERD_STEP_TOKENS"),
            get("HERD_GPU_MEMORY_FRACTION"),
            env_value(c, "HERD_KV_CACHE_TOKENS"),
        )
    };
    let check = |manifests: &[(String, Json)], name: &str, want: Engine| {
        let d = of_kind(manifests, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let c = containers(d)[0];
        let got = engine(c);
        let got = (
            got.0.as_str(),
            got.1,
            got.2.as_str(),
            got.3.as_str(),
            got.4.as_str(),
            got.5.as_deref(),
        );
        assert_eq!(got, want, "{name}");
        let gpus = c["resources"]["limits"]["nvidia.com/gpu"].as_u64().unwrap_or(0) as usize;
        assert_eq!(gpus > 0, want.0 == "cuda", "{name}: GPUs {gpus} on {}", want.0);
        if gpus > 0 {
            assert_eq!(gpus, want.1, "{name}: one rank per GPU");
            assert!(c["image"].as_str().unwrap().contains("herd-cuda:"), "{name}");
        }
        let shm = volume(d, "shm").is_some();
        assert_eq!(shm, want.0 == "cuda" && want.1 > 1, "{name}: /dev/shm for NCCL");
    };
    let manifests = render(&[]);
    check(&manifests, "eval-herd-gen-smollm2-135m", ("cpu", 1, "16", "512", "0.9", None));
    check(&manifests, "eval-herd-judge", ("cuda", 2, "256", "16384", "0.9", None));
    let manifests = render_files(&["gpu-values.yaml"]);
    check(&manifests, "eval-herd-gen-llama-3-1-8b", ("cuda", 1, "256", "8192", "0.9", None));
    check(&manifests, "eval-herd-gen-qwen2-5-7b", ("cuda", 1, "128", "4096", "0.85", None));
    check(&manifests, "eval-herd-gen-alpaca-7b", ("cuda", 2, "256", "8192", "0.9", None));
    check(&manifests, "eval-herd-judge", ("cuda", 4, "256", "16384", "0.9", None));
    let alpaca = of_kind(&manifests, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "eval-herd-gen-alpaca-7b")
        .unwrap();
    assert_eq!(volume(alpaca, "shm").unwrap()["emptyDir"]["sizeLimit"], "4Gi");
    let manifests = render(&[json!({
        "generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "gpus": 1,
                        "kvCacheTokens": 65536, "batchSize": 512}],
        "judge": {"kvCacheTokens": 32768, "stepTokens": 8192, "gpuMemoryFraction": 0.95}
    })]);
    check(&manifests, "eval-herd-gen-g", ("cuda", 1, "512", "8192", "0.9", Some("65536")));
    check(&manifests, "eval-herd-judge", ("cuda", 2, "256", "8192", "0.95", Some("32768")));
    // A generator without maxNewTokens gets herd's default, never 0.
    let job = of_kind(&manifests, "Job")[0];
    let args = containers(job)[0]["args"].to_string();
    assert!(args.contains("name=g,model=/m,template=chat,max_new_tokens=512"), "{args}");
    assert!(!args.contains("max_new_tokens=0"), "{args}");
}

#[test]
fn roles_take_a_runtime_class_a_priority_class_and_extra_volumes() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let qwen = of_kind(&manifests, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "eval-herd-gen-qwen2-5-7b")
        .unwrap();
    let pod = &qwen["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], "nvidia");
    assert_eq!(pod["priorityClassName"], "herd-gpu");
    let judge = judge_deployment(&manifests);
    assert_eq!(judge["spec"]["template"]["spec"]["runtimeClassName"], "nvidia");
    assert!(judge["spec"]["template"]["spec"].get("priorityClassName").is_none());
    assert_eq!(volume(&judge, "nccl-topology").unwrap()["configMap"]["name"], "nccl-topology");
    let mounts = containers(&judge)[0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "nccl-topology" && m["mountPath"] == "/etc/nccl"));
    // The coordinator too; a mount naming no volume stops the render with the chart's words.
    let values = json!({"coordinator": {
        "runtimeClassName": "kata", "priorityClassName": "batch-low",
        "extraVolumes": [{"name": "plan", "configMap": {"name": "herd-plan"}}],
        "extraVolumeMounts": [{"name": "plan", "mountPath": "/etc/herd/plan", "readOnly": true}]
    }});
    let manifests = render(std::slice::from_ref(&values));
    validate_manifests(&manifests);
    let job = of_kind(&manifests, "Job")[0];
    assert_eq!(job["spec"]["template"]["spec"]["runtimeClassName"], "kata");
    assert_eq!(job["spec"]["template"]["spec"]["priorityClassName"], "batch-low");
    assert!(volume(job, "plan").is_some());
    let bad = json!({"coordinator": {
        "extraVolumeMounts": [{"name": "nowhere", "mountPath": "/x"}]
    }});
    let error = helm_template(&[bad]).expect_err("helm fails");
    assert!(!error.contains(SCHEMA_ERROR), "{error}");
    assert!(error.contains("\"nowhere\" is neither in extraVolumes"), "{error}");
}

#[test]
fn every_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities() {
    for files in [&[][..], &["gpu-values.yaml"][..]] {
        let manifests = render_files(files);
        for w in workloads(&manifests) {
            let name = &w["metadata"]["name"];
            let pod = &w["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
            for c in containers(w) {
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
                let mounts: Vec<&str> = c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["mountPath"].as_str().unwrap())
                    .collect();
                assert!(
                    mounts.contains(&"/tmp") && mounts.contains(&"/var/cache/herd"),
                    "{name}: writable /tmp and cache"
                );
                for probe in ["livenessProbe", "readinessProbe"] {
                    assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{name} {probe}");
                    assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{name} {probe}");
                }
                let env: Vec<&str> = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["name"].as_str().unwrap())
                    .collect();
                let unique: BTreeSet<&str> = env.iter().copied().collect();
                assert_eq!(env.len(), unique.len(), "{name}: an environment variable is set twice");
                assert!(c["resources"]["requests"]["memory"].is_string(), "{name}: memory request");
                assert!(c["resources"]["limits"]["memory"].is_string(), "{name}: memory limit");
            }
        }
    }
}

#[test]
fn credentials_come_from_secrets_never_from_args_or_plain_env() {
    let values = values_file("gpu-values.yaml");
    let secrets = [
        values["amqp"]["password"].as_str().unwrap(),
        values["storage"]["secretAccessKey"].as_str().unwrap(),
        values["storage"]["accessKeyId"].as_str().unwrap(),
    ];
    let manifests = render_files(&["gpu-values.yaml"]);
    for (template, m) in &manifests {
        if kind(m).1 == "Secret" {
            continue;
        }
        let text = m.to_string();
        for s in secrets {
            assert!(!text.contains(s), "{template}: a credential appears in a {}", kind(m).1);
        }
    }
    for w in workloads(&manifests) {
        let env = env_map(containers(w)[0]);
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            assert!(
                env[key]["valueFrom"]["secretKeyRef"]["key"].is_string(),
                "{key} from a Secret"
            );
        }
    }
    // The created broker Secret holds what the pods and KEDA read.
    let secret = of_kind(&manifests, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "eval-herd-amqp")
        .unwrap();
    let decode = |k: &str| {
        let b64 = secret["data"][k].as_str().unwrap();
        String::from_utf8(base64_decode(b64)).unwrap()
    };
    assert_eq!(decode("password"), "s3cr3t p@ss");
    assert_eq!(decode("url"), "amqp://herd:s3cr3t%20p%40ss@rabbitmq.messaging.svc:5672/%2f");
    assert_eq!(
        decode("management-url"),
        "http://herd:s3cr3t%20p%40ss@rabbitmq.messaging.svc:15672/%2f"
    );
}

#[test]
fn credentials_are_mounted_files_or_env_from_a_secret() {
    // File mode (the default): the password key is mounted, the URL carries no password.
    let manifests = render(&[]);
    for w in workloads(&manifests) {
        let c = containers(w)[0];
        let env = env_map(c);
        assert_eq!(env["HERD_AMQP_PASSWORD_FILE"]["value"], "/etc/herd/amqp/password");
        assert_eq!(env["HERD_AMQP_URL"]["value"], "amqp://herd@rabbitmq.example.com:5672/%2f");
        let vol = w["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "amqp-credentials")
            .unwrap();
        assert_eq!(vol["secret"]["secretName"], "herd-amqp");
        assert_eq!(vol["secret"]["items"][0]["path"], "password");
    }
    // Env mode: HERD_AMQP_URL comes whole from the Secret.
    let manifests = render(&[json!({"amqp": {"credentialsAs": "env"}})]);
    validate_manifests(&manifests);
    for w in workloads(&manifests) {
        let env = env_map(containers(w)[0]);
        assert_eq!(env["HERD_AMQP_URL"]["valueFrom"]["secretKeyRef"]["key"], "url");
        assert!(!env.contains_key("HERD_AMQP_PASSWORD_FILE"));
    }
    // S3 keys as mounted files, read through the store's *_FILE variables.
    let manifests =
        render(&[values_file("gpu-values.yaml"), json!({"storage": {"credentialsAs": "file"}})]);
    validate_manifests(&manifests);
    for w in workloads(&manifests) {
        let c = containers(w)[0];
        let env = env_map(c);
        assert_eq!(env["AWS_SECRET_ACCESS_KEY_FILE"]["value"], "/etc/herd/s3/secret-access-key");
        assert!(!env.contains_key("AWS_SECRET_ACCESS_KEY"));
        let vol = w["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "s3-credentials")
            .unwrap();
        assert_eq!(vol["secret"]["secretName"], "eval-herd-storage");
        assert!(c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/herd/s3"));
    }
    // In-cluster broker: URLs point at its Service.
    let manifests = render(&[
        json!({"amqp": {"inCluster": {"enabled": true, "serviceName": "mq", "namespace": "infra"}}}),
    ]);
    let env = env_map(containers(workloads(&manifests)[0])[0]);
    assert_eq!(env["HERD_AMQP_URL"]["value"], "amqp://herd@mq.infra.svc:5672/%2f");
    // No Secret and no password: helm stops with a message saying what to set.
    let error = helm_template(&[json!({"amqp": {"existingSecret": ""}})]).expect_err("helm fails");
    assert!(error.contains("amqp.password"), "{error}");
}

/// The `checksum/secrets` annotation of each Deployment's pods, by Deployment name.
fn secret_checksums(manifests: &[(String, Json)]) -> BTreeMap<String, Json> {
    of_kind(manifests, "Deployment")
        .into_iter()
        .map(|d| {
            let annotations = &d["spec"]["template"]["metadata"]["annotations"];
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                annotations["checksum/secrets"].clone(),
            )
        })
        .collect()
}

#[test]
fn worker_pods_roll_when_the_secrets_the_chart_creates_change() {
    // Secrets the user made: nothing to follow.
    for (name, checksum) in secret_checksums(&render(&[])) {
        assert!(checksum.is_null(), "{name}: a checksum without a Secret of the chart");
    }
    let gpu = values_file("gpu-values.yaml");
    let before = secret_checksums(&render(std::slice::from_ref(&gpu)));
    assert_eq!(before.len(), 4);
    let first = before.values().next().unwrap().clone();
    assert!(first.is_string() && before.values().all(|c| c == &first), "{before:?}");
    // A new password rolls every worker; the coordinator's Job (its pod template cannot
    // change) carries no checksum.
    let after = secret_checksums(&render(&[gpu.clone(), json!({"amqp": {"password": "new"}})]));
    for (name, checksum) in &after {
        assert!(checksum.is_string() && checksum != &before[name], "{name}: {checksum}");
    }
    let job = render(&[gpu]).into_iter().find(|(_, m)| kind(m).1 == "Job").unwrap().1;
    let annotations = &job["spec"]["template"]["metadata"]["annotations"];
    assert!(annotations.get("checksum/secrets").is_none(), "{annotations}");
}

#[test]
fn private_cas_are_mounted_from_secrets_and_passed_as_ca_files() {
    // Nothing set: no CA variable and no CA volume anywhere.
    let manifests = render(&[]);
    for w in workloads(&manifests) {
        let env = env_map(containers(w)[0]);
        assert!(!env.contains_key("HERD_AMQP_CA_FILE") && !env.contains_key("HERD_S3_CA_FILE"));
        let volumes = w["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(volumes.iter().all(|v| v["name"] != "amqp-ca" && v["name"] != "s3-ca"));
    }
    let manifests = render(&[values_file("gpu-values.yaml"), tls_ca_values()]);
    validate_manifests(&manifests);
    let roles = workloads(&manifests);
    assert!(roles.len() >= 3, "coordinator, generation and judge workers");
    for w in roles {
        let c = containers(w)[0];
        let env = env_map(c);
        let volumes = w["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        let mounts = c["volumeMounts"].as_array().unwrap();
        for (variable, volume, secret, key) in [
            ("HERD_AMQP_CA_FILE", "amqp-ca", "broker-ca", "ca.crt"),
            ("HERD_S3_CA_FILE", "s3-ca", "minio-ca", "public.crt"),
        ] {
            // The variable names a file inside the volume's mount, made from the Secret's key.
            let file =
                env[variable]["value"].as_str().unwrap_or_else(|| panic!("{variable} is set"));
            let mount = mounts
                .iter()
                .find(|m| m["name"] == volume)
                .unwrap_or_else(|| panic!("{volume} is mounted"));
            assert_eq!(mount["readOnly"], true);
            let dir = mount["mountPath"].as_str().unwrap();
            let vol = volumes.iter().find(|v| v["name"] == volume).unwrap();
            assert_eq!(vol["secret"]["secretName"], secret);
            assert_eq!(vol["secret"]["items"][0]["key"], key);
            let path = vol["secret"]["items"][0]["path"].as_str().unwrap();
            assert_eq!(file, format!("{dir}/{path}"));
        }
    }
    // A Secret name that is no Kubernetes name fails the schema.
    let bad = json!({"storage": {"tlsCa": {"secretName": "Not A Name"}}});
    let error = helm_template(&[bad]).expect_err("helm refuses the values");
    assert!(error.contains(SCHEMA_ERROR) && error.contains("/storage/tlsCa/secretName"), "{error}");
}

#[test]
fn generators_whose_names_collide_stop_the_render() {
    let values = json!({"generators": [
        {"name": "llama-3.1", "model": {"path": "/m"}, "template": "chat"},
        {"name": "llama-3-1", "model": {"path": "/n"}, "template": "raw"}]});
    let error = helm_template(&[values]).expect_err("helm fails");
    // The values are valid: the chart itself stops the render.
    assert!(!error.contains(SCHEMA_ERROR), "{error}");
    assert!(error.contains("would share the worker Deployment"), "{error}");
}

#[test]
fn keda_scales_each_worker_on_its_queue_counting_unacked_messages() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let auth = of_kind(&manifests, "TriggerAuthentication")[0];
    let auth_name = auth["metadata"]["name"].as_str().unwrap();
    assert_eq!(auth["spec"]["secretTargetRef"][0]["parameter"], "host");
    assert_eq!(auth["spec"]["secretTargetRef"][0]["key"], "management-url");
    let mut queues = BTreeSet::new();
    for so in of_kind(&manifests, "ScaledObject") {
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "rabbitmq");
        // The management API's message count includes unacknowledged deliveries.
        assert_eq!(trigger["metadata"]["protocol"], "http");
        assert_eq!(trigger["metadata"]["mode"], "QueueLength");
        assert!(trigger["metadata"]["value"].is_string());
        assert!(trigger["metadata"].get("host").is_none(), "no credentials in metadata");
        assert_eq!(trigger["authenticationRef"]["name"], auth_name);
        let scale_down =
            &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"];
        assert_eq!(scale_down["stabilizationWindowSeconds"], 600);
        assert_eq!(scale_down["policies"][0]["value"], 1, "one worker at a time");
        queues.insert(trigger["metadata"]["queueName"].as_str().unwrap().to_string());
    }
    let expected: BTreeSet<String> = [
        "herd.gpu-sweep.gen.llama-3_1-8b",
        "herd.gpu-sweep.gen.qwen2_5-7b",
        "herd.gpu-sweep.gen.alpaca-7b",
        "herd.gpu-sweep.judge.llama-3_3-70b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(queues, expected);
    // Per-generator overrides win over the defaults, including a 0.
    let alpaca = of_kind(&manifests, "ScaledObject")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "eval-herd-gen-alpaca-7b")
        .unwrap();
    assert_eq!(alpaca["spec"]["maxReplicaCount"], 1);
    assert_eq!(alpaca["spec"]["minReplicaCount"], 0);
    let llama = of_kind(&manifests, "ScaledObject")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "eval-herd-gen-llama-3-1-8b")
        .unwrap();
    assert_eq!(llama["spec"]["maxReplicaCount"], 8);
    assert_eq!(llama["spec"]["triggers"][0]["metadata"]["value"], "32");
}

#[test]
fn dashboard_configmap_ships_the_dashboard_for_the_grafana_sidecar() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let cm = of_kind(&manifests, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == "eval-herd-dashboard")
        .unwrap();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Json = serde_json::from_str(cm["data"]["herd.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, read_json(&root().join("charts/herd/dashboards/herd.json")));
}

#[test]
fn every_value_set_lints_and_renders_objects_valid_for_kubernetes() {
    for (case, overrides) in value_sets() {
        if let Err(e) = helm_lint(&overrides) {
            panic!("{case}: helm lint --strict fails:\n{e}");
        }
        let manifests =
            helm_template(&overrides).unwrap_or_else(|e| panic!("{case}: helm fails: {e}"));
        assert!(!workloads(&manifests).is_empty(), "{case}: no workloads");
        validate_manifests(&manifests);
        // Every object is a release's object: labelled with the release and the run.
        for (template, m) in &manifests {
            let labels = &m["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{case}: {template}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{case}: {template}");
            assert!(labels["herd.dev/run"].is_string(), "{case}: {template}");
        }
    }
}

/// The image the chart runs: built as `herd`, run by user 10001 (the chart's runAsUser)
/// with `herd` as the entrypoint; the CUDA image runs on the runtime image matching its
/// devel image. (The images are not built here: there is no Docker engine.)
#[test]
fn dockerfiles_build_herd_and_run_it_as_the_charts_non_root_user() {
    let values = chart_values();
    let uid = values["security"]["runAsUser"].as_i64().unwrap();
    for (file, features) in
        [("docker/Dockerfile.cpu", ""), ("docker/Dockerfile.cuda", "--features cuda,nccl")]
    {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        assert_eq!(froms.len(), 2, "{file}: a build stage and a runtime stage");
        assert!(text.contains("cargo build --release"), "{file}");
        assert!(text.contains(features), "{file}: builds with {features}");
        assert!(text.contains(&format!("USER {uid}:{uid}")), "{file}: runs as {uid}");
        assert!(text.contains(&format!("--uid {uid}")), "{file}: creates user {uid}");
        assert!(text.contains(r#"ENTRYPOINT ["/usr/local/bin/herd"]"#), "{file}");
        assert!(
            text.contains(&format!("EXPOSE {}", values["metrics"]["port"])),
            "{file}: the metrics port"
        );
    }
    let cpu = std::fs::read_to_string(root().join("docker/Dockerfile.cpu")).unwrap();
    assert!(
        cpu.contains("FROM rust:1.95-bookworm AS build")
            && cpu.contains("FROM debian:bookworm-slim")
    );
    let cuda = std::fs::read_to_string(root().join("docker/Dockerfile.cuda")).unwrap();
    assert!(cuda.contains("ARG CUDA_COMPUTE_CAP=90"));
    assert!(cuda.contains("FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build"));
    assert!(cuda.contains("FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}"));
    assert!(cuda.contains("libnccl2"), "NCCL in the runtime image");
    // The CUDA image computes on the GPU by default, the CPU image on the CPU.
    assert_eq!(
        image_env("docker/Dockerfile.cuda").get("HERD_DEVICE").map(String::as_str),
        Some("cuda")
    );
    assert_eq!(image_env("docker/Dockerfile.cpu").get("HERD_DEVICE"), None);
}

/// The `ENV` of a Dockerfile's last stage (the image that runs): what a container starts
/// with before the pod's env is applied.
fn image_env(dockerfile: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join(dockerfile)).unwrap();
    let runtime = &text[text.rfind("\nFROM ").expect("a FROM line")..];
    // Continuation lines joined: one instruction per line.
    let joined = runtime.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{dockerfile}: ENV {kv}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn bad_values_cases() -> Vec<(&'static str, Json)> {
    vec![
        ("unknown judge mode", json!({"judge": {"mode": "pairwise"}})),
        (
            "unknown template",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "vicuna"}]}),
        ),
        ("misspelt top-level key", json!({"generator": []})),
        ("misspelt nested key", json!({"judge": {"shm": {"size": "1Gi"}}})),
        ("run id is not a DNS label", json!({"run": {"id": "Run_1"}})),
        ("generator without a model", json!({"generators": [{"name": "g", "template": "chat"}]})),
        (
            "negative GPUs",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "gpus": -1}]}),
        ),
        (
            "GPU count in resources",
            json!({"judge": {"resources": {"limits": {"nvidia.com/gpu": 4}}}}),
        ),
        ("unknown model volume type", json!({"modelVolume": {"type": "nfs"}})),
        ("unknown credentials mode", json!({"amqp": {"credentialsAs": "inline"}})),
        ("NCCL value that is not a string", json!({"judge": {"ncclEnv": {"NCCL_NVLS_ENABLE": 0}}})),
        ("no generators", json!({"generators": []})),
        (
            "extra env overriding one the chart sets",
            json!({"judge": {"extraEnv": [{"name": "HERD_STORE", "value": "s3://x"}]}}),
        ),
        ("storage URL instead of bucket", json!({"storage": {"bucket": "s3://bucket/prefix"}})),
        (
            "GPUs left idle by a CPU device",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "gpus": 1, "device": "cpu"}]}),
        ),
        (
            "cuda without GPUs",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "device": "cuda"}]}),
        ),
        (
            "unknown device",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "device": "cuda:1"}]}),
        ),
        (
            "no new tokens",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "maxNewTokens": 0}]}),
        ),
        (
            "batch of 0",
            json!({"generators": [{"name": "g", "model": {"path": "/m"}, "template": "chat", "batchSize": 0}]}),
        ),
        ("judge without ranks", json!({"judge": {"tensorParallel": 0}})),
        ("GPU memory fraction above 1", json!({"judge": {"gpuMemoryFraction": 1.5}})),
        ("step tokens as a string", json!({"judge": {"stepTokens": "16k"}})),
        (
            "extra env overriding the engine's",
            json!({"judge": {"extraEnv": [{"name": "HERD_DEVICE", "value": "cpu"}]}}),
        ),
        (
            "extra volume named like the chart's",
            json!({"judge": {"extraVolumes": [{"name": "models", "emptyDir": {}}]}}),
        ),
        ("extra mount without a path", json!({"judge": {"extraVolumeMounts": [{"name": "x"}]}})),
        (
            "runtime class that is not a name",
            json!({"coordinator": {"runtimeClassName": "Kata_QEMU"}}),
        ),
    ]
}

/// What helm says when values fail values.schema.json.
const SCHEMA_ERROR: &str = "values don't meet the specifications of the schema";

#[test]
fn helm_refuses_values_that_break_values_schema_json() {
    // The shipped values pass (every value set is also linted and rendered above).
    for files in [&[][..], &["gpu-values.yaml"][..]] {
        let overrides: Vec<Json> = files.iter().map(|f| values_file(f)).collect();
        helm_template(&overrides).unwrap_or_else(|e| panic!("{files:?} rejected: {e}"));
    }
    for (case, bad) in bad_values_cases() {
        let error = helm_template(std::slice::from_ref(&bad))
            .err()
            .unwrap_or_else(|| panic!("helm template accepts {case}: {bad}"));
        assert!(error.contains(SCHEMA_ERROR), "{case}: not refused by the schema: {error}");
        let lint = helm_lint(&[bad]).err().unwrap_or_else(|| panic!("helm lint accepts {case}"));
        assert!(lint.contains(SCHEMA_ERROR), "{case}: helm lint: {lint}");
    }
}

/// Metric names a PromQL expression uses (histogram series mapped to their family).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bherd_[a-z0-9_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

fn dashboard_exprs() -> Vec<(String, String)> {
    let dashboard = read_json(&root().join("charts/herd/dashboards/herd.json"));
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable_with_a_run_variable() {
    let dashboard = read_json(&root().join("charts/herd/dashboards/herd.json"));
    assert!(dashboard["schemaVersion"].as_i64().unwrap() >= 39);
    assert!(dashboard.get("id").map(Json::is_null).unwrap_or(true), "no instance-specific id");
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let run = vars.iter().find(|v| v["name"] == "run").unwrap();
    assert_eq!(run["type"], "query");
    assert!(run["definition"].as_str().unwrap().starts_with("label_values("));
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_i64().unwrap()), "duplicate panel id");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty());
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{expr}");
        }
    }
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Run progress",
        "Examples/s per generator",
        "Output tokens/s per generator",
        "Judge throughput",
        "Judge latency",
        "Queue depth",
        "Redeliveries and dead letters",
        "Workers",
    ] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no panel {wanted:?}");
    }
}

/// Metric families in telemetry/README.md's table, with their labels.
fn telemetry_readme_metrics() -> Option<BTreeMap<String, BTreeSet<String>>> {
    let text = std::fs::read_to_string(root().join("telemetry/README.md")).ok()?;
    let row = regex::Regex::new(r"(?m)^\|\s*`(herd_[a-z0-9_]+)`\s*\|[^|]*\|([^|]*)\|").unwrap();
    let label = regex::Regex::new(r"`([a-z_]+)`").unwrap();
    let metrics: BTreeMap<String, BTreeSet<String>> = row
        .captures_iter(&text)
        .map(|c| (c[1].to_string(), label.captures_iter(&c[2]).map(|l| l[1].to_string()).collect()))
        .collect();
    (!metrics.is_empty()).then_some(metrics)
}

/// telemetry/README.md's table as it read when the dashboard was last aligned with it, for
/// a checkout where that file is not there yet.
const TELEMETRY_SNAPSHOT: [(&str, &[&str]); 19] = [
    ("herd_jobs_published_total", &["run", "queue"]),
    ("herd_jobs_completed_total", &["run", "role", "queue"]),
    ("herd_jobs_failed_total", &["run", "role", "queue"]),
    ("herd_jobs_redelivered_total", &["run", "role", "queue"]),
    ("herd_jobs_dead_lettered_total", &["run", "role", "queue"]),
    ("herd_results_rejected_total", &["run", "kind"]),
    ("herd_examples_generated_total", &["run", "generator"]),
    ("herd_output_tokens_total", &["run", "generator"]),
    ("herd_prompt_tokens_total", &["run", "generator"]),
    ("herd_judge_prompt_tokens_total", &["run", "judge"]),
    ("herd_annotations_total", &["run", "judge", "generator"]),
    ("herd_generation_duration_seconds", &["run", "generator"]),
    ("herd_judge_duration_seconds", &["run", "judge"]),
    ("herd_batch_size", &["role", "model"]),
    ("herd_queue_depth", &["run", "queue"]),
    ("herd_queue_consumers", &["run", "queue"]),
    ("herd_run_jobs_done", &["run", "phase"]),
    ("herd_run_jobs_expected", &["run", "phase"]),
    ("herd_worker_info", &["role", "model", "worker", "version"]),
];

#[test]
fn dashboard_queries_only_metrics_and_labels_herd_exports() {
    // The documented table; `dashboard_queries_only_metrics_the_running_roles_serve` checks
    // the same against a live scrape of the roles, and the table against that scrape.
    let (source, exported) = match telemetry_readme_metrics() {
        Some(metrics) => ("telemetry/README.md", metrics),
        None => (
            "the snapshot of telemetry/README.md",
            TELEMETRY_SNAPSHOT
                .iter()
                .map(|(n, l)| (n.to_string(), l.iter().map(|s| s.to_string()).collect()))
                .collect(),
        ),
    };
    let problems = dashboard_problems(&exported);
    assert!(problems.is_empty(), "dashboard disagrees with {source}: {problems:#?}");
}

/// What the dashboard's queries ask of `exported` (metric family → label names) that it
/// does not have: a family, a label grouped by, or the `$run` filter on a run-labelled family.
fn dashboard_problems(exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let selector = regex::Regex::new(r"\b(herd_[a-z0-9_]+)(\{[^}]*\})?").unwrap();
    let grouping = regex::Regex::new(r"\bby \(([^)]*)\)").unwrap();
    let mut problems = Vec::new();
    for (title, expr) in dashboard_exprs() {
        let mut families = Vec::new();
        for c in selector.captures_iter(&expr) {
            let family = metric_names(&c[1]).into_iter().next().unwrap();
            let Some(labels) = exported.get(&family) else {
                problems.push(format!("{title}: {family} is not exported"));
                continue;
            };
            let filter = c.get(2).map(|m| m.as_str()).unwrap_or("");
            // A run-labelled metric follows the run variable; one without the label cannot.
            if labels.contains("run") != filter.contains("run=~\"$run\"") {
                problems.push(format!("{title}: {family}{filter} and the $run filter disagree"));
            }
            families.push((family, labels));
        }
        for g in grouping.captures_iter(&expr) {
            for label in g[1].split(',').map(str::trim).filter(|l| *l != "le") {
                for (family, labels) in &families {
                    if !labels.contains(label) {
                        problems.push(format!("{title}: {family} has no label {label}"));
                    }
                }
            }
        }
    }
    problems
}

#[test]
fn dashboard_queries_only_metrics_the_running_roles_serve() {
    let served = live_roles::scrape_a_small_run();
    let problems = dashboard_problems(&served);
    assert!(
        problems.is_empty(),
        "dashboard disagrees with what the running roles serve: {problems:#?}"
    );
    let documented = telemetry_readme_metrics().expect("telemetry/README.md has a metric table");
    assert_eq!(
        served, documented,
        "telemetry/README.md's table and what the running roles serve disagree"
    );
}

/// Long flags (`--x`) and `HERD_…` variables a `herd <role> --help` documents.
fn cli_surface(role: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_herd")).args([role, "--help"]).output().unwrap();
    assert!(out.status.success(), "herd {role} --help fails");
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let flags = regex::Regex::new(r"--[a-z][a-z0-9-]+").unwrap();
    let envs = regex::Regex::new(r"env: (HERD_[A-Z0-9_]+)").unwrap();
    (
        flags.find_iter(&help).map(|m| m.as_str().to_string()).filter(|f| f != "--help").collect(),
        envs.captures_iter(&help).map(|c| c[1].to_string()).collect(),
    )
}

#[test]
fn rendered_command_lines_use_flags_and_env_vars_the_cli_has() {
    let manifests = render_files(&["gpu-values.yaml"]);
    let mut unchecked = Vec::new();
    for w in workloads(&manifests) {
        let c = containers(w)[0];
        let args: Vec<&str> =
            c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let role = args[0];
        let (flags, envs) = cli_surface(role);
        if flags.is_empty() {
            // The role is a stub with no flags yet: nothing to align with.
            unchecked.push(role.to_string());
            continue;
        }
        for arg in args.iter().filter(|a| a.starts_with("--")) {
            assert!(flags.contains(*arg), "herd {role} has no flag {arg}");
        }
        // HERD_LOG is read by main.rs for every subcommand, not by a role's flags.
        for name in env_map(c).keys().filter(|k| k.starts_with("HERD_") && *k != "HERD_LOG") {
            assert!(envs.contains(name), "herd {role} reads no {name}");
        }
    }
    if !unchecked.is_empty() {
        eprintln!(
            "TODO: herd {} take no flags yet; the chart's flags were not checked against them",
            unchecked.join(", ")
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = bits << 6 | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// Values as helm merges them: maps merged key by key, anything else (lists included)
/// replaced; a null deletes the key.
fn merged_values(overrides: &[Json]) -> Json {
    fn merge(base: &mut Json, over: &Json) {
        match (base, over) {
            (Json::Object(base), Json::Object(over)) => {
                for (k, v) in over {
                    if v.is_null() {
                        base.remove(k);
                    } else if let Some(b) = base.get_mut(k) {
                        merge(b, v);
                    } else {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
            (base, over) => *base = over.clone(),
        }
    }
    let mut values = chart_values();
    for o in overrides {
        merge(&mut values, o);
    }
    values
}

/// What a container's process sees: the image's `ENV` (Dockerfile.cuda for the `…-cuda`
/// repositories, Dockerfile.cpu otherwise), then the pod's env. `value:` entries as
/// written; Secret references (the broker URL in env mode, the S3 keys) get a stand-in,
/// since no Secret exists here. Files mounted from Secrets (`*_FILE`) are only named: a
/// role must not read them to print its configuration.
fn container_env(container: &Json) -> Vec<(String, String)> {
    let image = container["image"].as_str().unwrap();
    let repository = image.rsplit_once(':').map_or(image, |(r, _)| r);
    let dockerfile = if repository.ends_with("-cuda") {
        "docker/Dockerfile.cuda"
    } else {
        "docker/Dockerfile.cpu"
    };
    let mut env: Vec<(String, String)> = image_env(dockerfile).into_iter().collect();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            if name.ends_with("_URL") {
                "amqp://herd:stand-in-password@rabbitmq.invalid:5672/%2f".to_string()
            } else {
                format!("stand-in-{}", name.to_lowercase())
            }
        } else {
            panic!("{name}: an env entry neither a value nor a Secret reference: {e}")
        };
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    env
}

/// `herd <the container's args> --print-config` run with the container's environment (and
/// nothing else of this process's but PATH and HOME): the role's effective configuration,
/// computed without loading a model or connecting anywhere.
fn print_config(container: &Json) -> Json {
    // No `command`: the image's entrypoint, herd, gets the args.
    assert!(container.get("command").is_none(), "{}", container["command"]);
    let args: Vec<&str> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command.env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(container_env(container)).args(&args).arg("--print-config");
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "herd {} --print-config fails (needs the CLI's --print-config): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("herd {} --print-config: not one JSON object ({e}): {stdout}", args[0])
    })
}

/// The value sets of the print-config check, with overrides beyond the shipped files: the
/// broker URL from a Secret, S3 keys as files, engine settings of every kind, a CPU judge.
fn print_config_value_sets() -> Vec<(&'static str, Vec<Json>)> {
    let gpu = values_file("gpu-values.yaml");
    vec![
        ("default values", vec![]),
        ("gpu-values.yaml", vec![gpu.clone()]),
        (
            "gpu-values.yaml, credentials from env and files",
            vec![gpu.clone(), env_and_file_credentials_values()],
        ),
        (
            "engine settings and a generator without maxNewTokens",
            vec![json!({
                "generators": [
                    {"name": "big.model", "model": {"path": "/models/big"}, "template": "chat",
                     "gpus": 4, "batchSize": 64, "stepTokens": 2048, "kvCacheTokens": 200000,
                     "gpuMemoryFraction": 0.8},
                    {"name": "small", "model": {"path": "/models/small"}, "template": "raw"}
                ],
                "judge": {"tensorParallel": 8, "stepTokens": 32768, "kvCacheTokens": 65536}
            })],
        ),
        ("a CPU judge", vec![json!({"judge": {"device": "cpu", "tensorParallel": 1}})]),
        ("the README's example", vec![readme_example()]),
    ]
}

/// The GPUs a container requests (0 when none).
fn gpu_request(container: &Json) -> u64 {
    let requests = &container["resources"]["requests"]["nvidia.com/gpu"];
    assert_eq!(requests, &container["resources"]["limits"]["nvidia.com/gpu"]);
    requests.as_u64().unwrap_or(0)
}

/// What each rendered pod really runs: every role's command line and environment handed
/// to the real binary with `--print-config`. GPU pods compute on their GPUs, one rank per
/// GPU, with the configured batching; every generator answers with at least one token;
/// workers consume the queues the coordinator publishes to, for the models it names.
///
/// Needs `herd <role> --print-config` (the CLI change that adds it); until then this test
/// fails with "unexpected argument '--print-config'".
#[test]
fn every_pod_runs_the_role_configuration_its_values_ask_for() {
    for (case, overrides) in print_config_value_sets() {
        let values = merged_values(&overrides);
        let run_id = values["run"]["id"].as_str().unwrap();
        let generators = values["generators"].as_array().unwrap();
        let judge = &values["judge"];
        let manifests = render(&overrides);
        let mut configs = Vec::new();
        for w in workloads(&manifests) {
            let c = containers(w)[0];
            let config = print_config(c);
            let role = config["role"].as_str().unwrap_or_else(|| panic!("{case}: {config}"));
            assert_eq!(role, c["args"][0], "{case}");
            assert_eq!(config["run_id"], run_id, "{case}: {role}");
            let url = config["amqp_url"].as_str().unwrap();
            assert!(!url.contains("stand-in-password"), "{case}: {role}: password shown: {url}");
            assert!(config["store"].as_str().unwrap().starts_with("s3://"), "{case}: {config}");
            let port = values["metrics"]["port"].as_u64().unwrap();
            assert_eq!(config["metrics_addr"], format!("0.0.0.0:{port}"), "{case}: {role}");
            configs.push((w.clone(), c.clone(), config));
        }
        let of_role = |role: &str| {
            configs.iter().filter(|(_, _, config)| config["role"] == role).collect::<Vec<_>>()
        };
        // Every role of a run redeclares the same queues: same delivery limit.
        let limits: BTreeSet<String> =
            configs.iter().map(|(_, _, c)| c["delivery_limit"].to_string()).collect();
        assert_eq!(limits.len(), 1, "{case}: delivery limits {limits:?}");

        // The coordinator: every generator with tokens to generate, the judge of the values.
        let coordinator = of_role("coordinator");
        assert_eq!(coordinator.len(), 1, "{case}");
        let plan = &coordinator[0].2;
        let planned = plan["generators"].as_array().unwrap();
        assert_eq!(planned.len(), generators.len(), "{case}: {plan}");
        for (spec, gen) in planned.iter().zip(generators) {
            assert_eq!(spec["name"], gen["name"], "{case}");
            assert_eq!(spec["model"], gen["model"]["path"], "{case}");
            assert_eq!(spec["template"], gen["template"], "{case}");
            let tokens = spec["max_new_tokens"].as_u64().unwrap();
            assert!(tokens > 0, "{case}: {} answers with no token", spec["name"]);
            let wanted = gen["maxNewTokens"].as_u64().unwrap_or(512);
            assert_eq!(tokens, wanted, "{case}: {}", spec["name"]);
        }
        assert_eq!(plan["judge"]["name"], judge["name"], "{case}");
        assert_eq!(plan["judge"]["model"], judge["model"]["path"], "{case}");
        assert_eq!(plan["judge"]["mode"], judge["mode"], "{case}");
        assert!(plan["limit"].is_null(), "{case}: the whole eval set");

        // Generation workers: one per generator, on the coordinator's queue and model.
        let workers = of_role("worker");
        assert_eq!(workers.len(), generators.len(), "{case}");
        for (deployment, c, config) in workers {
            let name = config["generator"].as_str().unwrap();
            let gen = generators.iter().find(|g| g["name"] == name).unwrap();
            let spec = planned.iter().find(|s| s["name"] == name).unwrap();
            assert_eq!(config["model"], spec["model"], "{case}: {name} serves another model");
            let queue = herd_queue::QueueName::generation(run_id, name);
            assert_eq!(config["queue"], queue.as_str(), "{case}: {name}");
            let gpus = gpu_request(c);
            assert_eq!(gpus, gen["gpus"].as_u64().unwrap_or(0), "{case}: {name}");
            let cuda = gpus > 0;
            let default_step = if cuda { 8192 } else { 512 };
            check_engine(
                &format!("{case}: worker {name}"),
                &config["engine"],
                gpus,
                gen,
                default_step,
            );
            check_prefetch(&manifests, deployment, config, &values, &format!("{case}: {name}"));
        }

        // Judge workers: the judge the coordinator names, on its GPUs.
        let judges = of_role("judge-worker");
        assert_eq!(judges.len(), 1, "{case}");
        let (deployment, c, config) = judges[0];
        assert_eq!(config["judge_name"], plan["judge"]["name"], "{case}");
        assert_eq!(config["judge_model"], plan["judge"]["model"], "{case}");
        assert_eq!(config["judge_cache"], true, "{case}");
        let queue = herd_queue::QueueName::judge(run_id, judge["name"].as_str().unwrap());
        assert_eq!(config["queue"], queue.as_str(), "{case}");
        let gpus = gpu_request(c);
        // The chart's defaults: on cuda, over 2 ranks.
        let cuda = judge["device"] != "cpu";
        let ranks = judge["tensorParallel"].as_u64().unwrap_or(2);
        let default_step = if cuda { 16384 } else { 512 };
        check_engine(&format!("{case}: judge"), &config["engine"], gpus, judge, default_step);
        assert_eq!(gpus, if cuda { ranks } else { 0 }, "{case}: the judge's GPUs");
        assert_eq!(config["engine"]["tensor_parallel"], ranks, "{case}: the judge's ranks");
        check_prefetch(&manifests, deployment, config, &values, case);
    }
}

/// A worker's engine: on its GPUs (one rank each) when it has any, else on the CPU; the
/// batching of its values, or the defaults for its device.
fn check_engine(what: &str, engine: &Json, gpus: u64, values: &Json, default_step: u64) {
    let device = engine["device"].as_str().unwrap_or_else(|| panic!("{what}: {engine}"));
    if gpus > 0 {
        assert!(device.starts_with("cuda"), "{what}: holds {gpus} GPUs, computes on {device}");
        assert_eq!(engine["tensor_parallel"], gpus, "{what}: one rank per GPU");
    } else {
        assert_eq!(device, "cpu", "{what}: no GPU, yet {device}");
    }
    let default_batch = if gpus > 0 { 256 } else { 16 };
    let batch = values["batchSize"].as_u64().unwrap_or(default_batch);
    assert_eq!(engine["batch_size"], batch, "{what}");
    assert_eq!(
        engine["step_tokens"],
        values["stepTokens"].as_u64().unwrap_or(default_step),
        "{what}"
    );
    assert_eq!(engine["kv_cache_tokens"], values["kvCacheTokens"], "{what}");
    let fraction = values["gpuMemoryFraction"].as_f64().unwrap_or(0.9);
    let got = engine["gpu_memory_fraction"].as_f64().unwrap();
    assert!((got - fraction).abs() < 1e-9, "{what}: GPU memory fraction {got}");
}

/// With KEDA on, a worker holds at least the queue length one replica is scaled for
/// (autoscaling.*.queueLength): else KEDA adds replicas the held jobs keep idle.
fn check_prefetch(
    manifests: &[(String, Json)],
    deployment: &Json,
    config: &Json,
    values: &Json,
    what: &str,
) {
    let prefetch = config["prefetch"].as_u64().unwrap_or_else(|| panic!("{what}: {config}"));
    assert!(prefetch >= 1, "{what}");
    if values["autoscaling"]["enabled"] != true {
        return;
    }
    let name = &deployment["metadata"]["name"];
    let scaled = of_kind(manifests, "ScaledObject")
        .into_iter()
        .find(|s| &s["spec"]["scaleTargetRef"]["name"] == name)
        .unwrap_or_else(|| panic!("{what}: no ScaledObject"));
    let length: u64 =
        scaled["spec"]["triggers"][0]["metadata"]["value"].as_str().unwrap().parse().unwrap();
    assert!(
        length <= prefetch,
        "{what}: KEDA aims at {length} jobs a replica, it holds {prefetch}"
    );
}
