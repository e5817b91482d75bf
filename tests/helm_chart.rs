//! The Helm chart (`helm/llmux`), checked with the real `helm`: `helm lint --strict` with the
//! default values and with every optional part on (`helm/llmux/ci/full-values.yaml`), then the
//! YAML that `helm template` renders, parsed and checked against what the binary and the image
//! expect — probes on `/health/live` and `/health/ready`, the security context, resources, the
//! config mounted where `llmux serve --config` reads it (as a directory, so hot reload sees
//! ConfigMap updates), the drain settings and the grace period derived from them, Secrets
//! referenced by the environment, the Ingress and NetworkPolicy when enabled — and
//! `values.schema.json` refusing bad values.
//!
//! `helm` is taken from PATH, `~/.local/bin` or `target/tools/bin`; when it is in none of them,
//! `.ci/install-helm.sh` installs it into `target/tools/bin` (from the npm registry). If that
//! fails the tests fail and say so: they never skip.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_yaml::Value;

const CHART: &str = "helm/llmux";
const FULL_VALUES: &str = "helm/llmux/ci/full-values.yaml";
/// Where the image's CMD (and the chart's args) point `--config`.
const CONFIG_FILE: &str = "/etc/llmux/config/llmux.yaml";
const CONFIG_DIR: &str = "/etc/llmux/config";
/// The longest the exit waits for spend rows, then for spans (`FLUSH_ON_EXIT`,
/// src/server/mod.rs), each bounded by min(shutdown_timeout, this).
const FLUSH_ON_EXIT_SECS: i64 = 10;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The helm binary: found, or installed once for the whole test binary.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(find_or_install_helm)
}

fn find_or_install_helm() -> PathBuf {
    let tools = root().join("target/tools/bin");
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.push(tools.clone());
    if let Some(found) = dirs
        .iter()
        .map(|d| d.join("helm"))
        .find(|p| is_executable(p))
    {
        return found;
    }
    let script = root().join(".ci/install-helm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("HELM_DIR", &tools)
        .output()
        .unwrap_or_else(|e| {
            panic!("helm is not installed, and `bash {script:?}` could not run: {e}")
        });
    let helm = tools.join("helm");
    assert!(
        out.status.success() && is_executable(&helm),
        "helm is not installed (looked on PATH, in ~/.local/bin and in {tools:?}), and \
         `HELM_DIR={tools:?} bash .ci/install-helm.sh` could not install it ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    helm
}

fn run_helm(args: &[&str]) -> Output {
    Command::new(helm())
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", helm()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` with these extra arguments; panics with helm's output if it fails.
fn render(extra: &[&str]) -> Rendered {
    let mut args = vec!["template", "t", CHART, "--namespace", "llmux-test"];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}",
        text(&out)
    );
    let yaml = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    let docs = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    Rendered { docs }
}

/// `helm template` that must fail; returns helm's output.
fn render_fails(extra: &[&str]) -> String {
    let mut args = vec!["template", "t", CHART];
    args.extend_from_slice(extra);
    let out = run_helm(&args);
    assert!(
        !out.status.success(),
        "helm {args:?} should have failed, but rendered:\n{}",
        text(&out)
    );
    text(&out)
}

struct Rendered {
    docs: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind).as_slice() {
            [one] => one,
            other => panic!("expected one {kind}, rendered {}", other.len()),
        }
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name} rendered"))
    }

    fn pod(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_sequence().expect("containers");
        containers
            .iter()
            .find(|c| c["name"] == "llmux")
            .expect("the llmux container")
    }

    /// The llmux config the pods read: the ConfigMap the `config` volume names, key llmux.yaml.
    fn config(&self) -> Value {
        let volume = seq(&self.pod()["volumes"])
            .iter()
            .find(|v| v["name"] == "config")
            .expect("a volume named config");
        let cm_name = str_of(&volume["configMap"]["name"]);
        let cm = self.named("ConfigMap", cm_name);
        let file = str_of(&cm["data"]["llmux.yaml"]);
        serde_yaml::from_str(file).expect("llmux.yaml in the ConfigMap parses")
    }
}

fn seq(v: &Value) -> &Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn int_of(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("expected an integer, got {v:?}"))
}

/// The container's environment as name => EnvVar.
fn env(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| (str_of(&e["name"]).to_owned(), e.clone()))
        .collect()
}

/// Names of the Secrets the container loads whole (envFrom secretRef).
fn env_from_secrets(c: &Value) -> Vec<String> {
    c["envFrom"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| e["secretRef"]["name"].as_str().map(str::to_owned))
        .collect()
}

fn assert_secret_ref(env: &BTreeMap<String, Value>, var: &str, secret: &str, key: &str) {
    let e = env
        .get(var)
        .unwrap_or_else(|| panic!("{var} is not in the container's env: {env:?}"));
    let r = &e["valueFrom"]["secretKeyRef"];
    assert_eq!(r["name"], secret, "{var}: {e:?}");
    assert_eq!(r["key"], key, "{var}: {e:?}");
}

/// What both value sets must render: the probes, the security context, resources, the config
/// where the binary reads it, and a grace period past the drain deadline.
fn check_common(r: &Rendered) {
    let pod = r.pod();
    let c = r.container();

    // The config: `serve --config /etc/llmux/config/llmux.yaml`, from a ConfigMap mounted as the
    // whole directory (a subPath mount never sees the ConfigMap's updates).
    let args: Vec<&str> = seq(&c["args"]).iter().map(str_of).collect();
    assert_eq!(args.first(), Some(&"serve"), "args: {args:?}");
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    assert_eq!(args.get(at + 1), Some(&CONFIG_FILE), "args: {args:?}");
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "config")
        .expect("the config volume mounted");
    assert_eq!(mount["mountPath"], CONFIG_DIR);
    assert!(
        mount["subPath"].is_null(),
        "config mounted with subPath: {mount:?}"
    );
    assert_eq!(mount["readOnly"], true);
    let config = r.config();
    assert!(
        seq(&config["model_list"])
            .iter()
            .all(|m| m["model_name"].is_string()),
        "model_list in the rendered config: {config:?}"
    );

    // Probes, on the port named http, which is the container port llmux listens on.
    let port = seq(&c["ports"])
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| args[i + 1])
        .expect("--listen");
    assert_eq!(
        listen,
        format!("0.0.0.0:{}", int_of(&port["containerPort"])),
        "--listen and the container port differ"
    );
    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}: {:?}", c[probe]);
        assert_eq!(get["port"], "http", "{probe}: {:?}", c[probe]);
    }

    // Security: non-root, read-only root filesystem, no privilege escalation, every capability
    // dropped, seccomp on (RuntimeDefault or a Localhost profile, never Unconfined).
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    let seccomp = str_of(&psc["seccompProfile"]["type"]);
    assert!(
        seccomp == "RuntimeDefault" || seccomp == "Localhost",
        "seccomp profile {seccomp}"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], Value::from(vec!["ALL"]));
    assert_ne!(
        sc["privileged"].as_bool(),
        Some(true),
        "privileged container"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    // The one writable place.
    assert!(
        seq(&c["volumeMounts"])
            .iter()
            .any(|m| m["mountPath"] == "/tmp"),
        "no writable /tmp"
    );

    // Resources: requests and limits for CPU (the shard count follows limits.cpu) and memory.
    for part in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                !c["resources"][part][res].is_null(),
                "resources.{part}.{res} missing: {:?}",
                c["resources"]
            );
        }
    }

    // Drain: the config carries the shutdown settings, and the grace period exceeds the longest
    // a pod can take: preStop sleep + shutdown_delay + shutdown_timeout + both flushes.
    let server = &config["llmux"]["server"];
    let delay = int_of(&server["shutdown_delay"]);
    let timeout = int_of(&server["shutdown_timeout"]);
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap_or(0);
    let deadline = pre_stop + delay + timeout + 2 * timeout.min(FLUSH_ON_EXIT_SECS);
    let grace = int_of(&pod["terminationGracePeriodSeconds"]);
    assert!(
        grace > deadline,
        "terminationGracePeriodSeconds {grace} does not exceed the drain deadline {deadline}"
    );

    // The config's checksum rolls the pods on `helm upgrade` with a changed config.
    let ann = &r.one("Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(str_of(&ann["checksum/config"]).len(), 64, "{ann:?}");

    // The Service reaches the pods.
    let svc = r.one("Service");
    let selector = &svc["spec"]["selector"];
    let labels = &r.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_mapping().expect("service selector") {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "pod labels lack selector {k:?}"
        );
    }
    assert_eq!(seq(&svc["spec"]["ports"])[0]["targetPort"], "http");
}

#[test]
fn lint_strict_passes_with_default_and_full_values() {
    for values in [None, Some(FULL_VALUES)] {
        let mut args = vec!["lint", "--strict", CHART];
        if let Some(file) = values {
            args.extend(["-f", file]);
        }
        let out = run_helm(&args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}",
            text(&out)
        );
    }
}

#[test]
fn default_values_render_what_the_binary_expects() {
    let r = render(&[]);
    check_common(&r);
    let c = r.container();
    let pod = r.pod();

    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // Drain defaults: 5 s delay, 45 s for in-flight requests, no preStop hook; 75 s grace.
    let server = &r.config()["llmux"]["server"];
    assert_eq!(server["shutdown_delay"], 5);
    assert_eq!(server["shutdown_timeout"], 45);
    assert!(c["lifecycle"].is_null(), "{:?}", c["lifecycle"]);
    assert_eq!(pod["terminationGracePeriodSeconds"], 75);
    assert_eq!(r.one("Deployment")["spec"]["replicas"], 2);

    // Nothing optional by default.
    for kind in [
        "Ingress",
        "NetworkPolicy",
        "Secret",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    ] {
        assert!(
            r.all(kind).is_empty(),
            "{kind} rendered with default values"
        );
    }
    assert_eq!(r.all("ConfigMap").len(), 1, "only the config ConfigMap");
    assert!(c["env"].is_null() && c["envFrom"].is_null(), "{c:?}");
}

#[test]
fn full_values_render_every_optional_part() {
    let r = render(&["-f", FULL_VALUES]);
    check_common(&r);
    let c = r.container();
    let pod = r.pod();
    let deployment = r.one("Deployment");
    let fullname = str_of(&deployment["metadata"]["name"]);

    // Secrets referenced by the environment: DATABASE_URL and REDIS_URL from existing Secrets,
    // provider keys from an existing Secret, and the chart's own Secret — which is rendered.
    let env = env(c);
    assert_secret_ref(&env, "DATABASE_URL", "llmux-database", "url");
    assert_secret_ref(&env, "REDIS_URL", "llmux-redis", "url");
    assert_eq!(env["LLMUX_WORKERS"]["value"], "2");
    assert_eq!(env["OTEL_SERVICE_NAME"]["value"], "llmux");
    let from = env_from_secrets(c);
    assert!(from.contains(&"llmux-provider-keys".to_owned()), "{from:?}");
    let secret = r.one("Secret");
    let secret_name = str_of(&secret["metadata"]["name"]);
    assert!(
        from.iter().any(|s| s == secret_name),
        "{from:?} lacks {secret_name}"
    );
    assert!(!secret["data"]["LLMUX_MASTER_KEY"].is_null());

    // Ingress: class, TLS, annotations, to the Service's port.
    let ing = r.one("Ingress");
    let svc = r.one("Service");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "llmux-tls");
    assert_eq!(ing["spec"]["tls"][0]["hosts"][0], "llmux.example.com");
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"],
        "off"
    );
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "llmux.example.com");
    let backend = &rule["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], svc["metadata"]["name"]);
    assert_eq!(backend["port"]["number"], svc["spec"]["ports"][0]["port"]);

    // NetworkPolicy: the pods, their port, from the allowed namespaces; egress DNS and HTTPS.
    let np = r.one("NetworkPolicy");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .expect("podSelector")
    {
        assert_eq!(&pod_labels[k.as_str().unwrap()], v);
    }
    let port = &seq(&c["ports"])[0]["containerPort"];
    assert_eq!(&np["spec"]["ingress"][0]["ports"][0]["port"], port);
    assert_eq!(seq(&np["spec"]["ingress"][0]["from"]).len(), 2);
    assert_eq!(
        np["spec"]["policyTypes"],
        Value::from(vec!["Ingress", "Egress"])
    );
    let egress_ports: Vec<i64> = seq(&np["spec"]["egress"])
        .iter()
        .flat_map(|rule| seq(&rule["ports"]).iter().map(|p| int_of(&p["port"])))
        .collect();
    for p in [53, 443, 5432, 6379] {
        assert!(
            egress_ports.contains(&p),
            "egress {egress_ports:?} lacks {p}"
        );
    }

    // io_uring: a Localhost seccomp profile instead of RuntimeDefault, never Unconfined.
    let seccomp = &pod["securityContext"]["seccompProfile"];
    assert_eq!(seccomp["type"], "Localhost");
    assert_eq!(seccomp["localhostProfile"], "profiles/llmux-io-uring.json");

    // Drain: preStop sleeps, the config carries the settings, the grace period is derived.
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    assert!(!c["lifecycle"]["postStart"].is_null(), "lifecycle merged");
    let server = &r.config()["llmux"]["server"];
    assert_eq!(server["shutdown_delay"], 10);
    assert_eq!(server["shutdown_timeout"], 120);
    assert_eq!(pod["terminationGracePeriodSeconds"], 5 + 10 + 120 + 20 + 10);

    // Scheduling.
    assert_eq!(pod["priorityClassName"], "high-priority");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(!pod["affinity"]["nodeAffinity"].is_null());
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["labelSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "the spread's default selector is the pods' own"
    );

    // Extra volumes and mounts, and the extra provider file beside the bundled ones.
    assert!(seq(&pod["volumes"]).iter().any(|v| v["name"] == "pricing"));
    let mounts = seq(&c["volumeMounts"]);
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == "/etc/llmux/pricing"));
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == "/etc/llmux/providers/mycorp.llmux"));

    // HPA instead of replicas; PDB; ServiceMonitor on /metrics at the port named http.
    assert!(deployment["spec"]["replicas"].is_null());
    let hpa = r.one("HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], fullname);
    assert_eq!(r.one("PodDisruptionBudget")["spec"]["minAvailable"], 2);
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"][0],
        "llmux-test"
    );

    // The Grafana dashboard, labelled for the sidecar, is the shipped JSON.
    let dash = r.named("ConfigMap", &format!("{fullname}-dashboard"));
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dash["metadata"]["annotations"]["grafana_folder"], "LLMux");
    let json: serde_json::Value =
        serde_json::from_str(str_of(&dash["data"]["llmux.json"])).expect("dashboard JSON");
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("helm/llmux/dashboards/llmux.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, shipped);
}

#[test]
fn redis_host_and_password_come_from_values_and_a_secret() {
    let r = render(&[
        "--set",
        "redis.host=redis.data.svc",
        "--set",
        "redis.port=6380",
        "--set",
        "redis.passwordSecret=redis-auth",
    ]);
    let env = env(r.container());
    assert_eq!(env["REDIS_HOST"]["value"], "redis.data.svc");
    assert_eq!(env["REDIS_PORT"]["value"], "6380");
    assert_secret_ref(&env, "REDIS_PASSWORD", "redis-auth", "REDIS_PASSWORD");
    assert!(!env.contains_key("REDIS_URL"));
}

#[test]
fn ingress_without_hosts_routes_everything_to_the_service() {
    let r = render(&["--set", "ingress.enabled=true"]);
    let ing = r.one("Ingress");
    let rule = &ing["spec"]["rules"][0];
    assert!(rule["host"].is_null());
    assert_eq!(rule["http"]["paths"][0]["path"], "/");
    assert_eq!(rule["http"]["paths"][0]["pathType"], "Prefix");
    assert!(ing["spec"]["ingressClassName"].is_null());
    assert!(ing["spec"]["tls"].is_null());
    // Only ingress is restricted unless egress is asked for.
    let r = render(&["--set", "networkPolicy.enabled=true"]);
    let np = r.one("NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], Value::from(vec!["Ingress"]));
    assert!(np["spec"]["ingress"][0]["from"].is_null());
}

#[test]
fn values_schema_rejects_bad_values() {
    // (--set value, what helm's schema error names)
    for (set, names) in [
        ("replicaCount=two", "replicaCount"),
        ("replicas=3", "replicas"),
        ("ingress.enabled=yes", "enabled"),
        ("ingress.classname=nginx", "classname"),
        ("drain.shutdownTimeoutSeconds=-1", "shutdownTimeoutSeconds"),
        ("ioDriver=io_uring", "ioDriver"),
        ("service.type=Internal", "type"),
        ("resources.limits.cpu=lots", "cpu"),
        (
            "terminationGracePeriodSeconds=soon",
            "terminationGracePeriodSeconds",
        ),
    ] {
        let out = run_helm(&["lint", "--strict", CHART, "--set", set]);
        let msg = text(&out);
        assert!(!out.status.success(), "helm lint accepted {set}:\n{msg}");
        assert!(
            msg.contains("schema") && msg.contains(names),
            "helm lint refused {set}, but not by the schema naming {names}:\n{msg}"
        );
        let msg = render_fails(&["--set", set]);
        assert!(msg.contains(names), "{set}: {msg}");
    }
}

#[test]
fn the_chart_refuses_inconsistent_drain_and_redis_settings() {
    let msg = render_fails(&["--set", "terminationGracePeriodSeconds=30"]);
    assert!(msg.contains("must exceed the drain deadline"), "{msg}");
    let msg = render_fails(&["--set", "config.llmux.server.shutdown_delay=3"]);
    assert!(msg.contains("drain.shutdownDelaySeconds"), "{msg}");
    let msg = render_fails(&["--set", "redis.existingSecret=a", "--set", "redis.host=b"]);
    assert!(msg.contains("not both"), "{msg}");
    let msg = render_fails(&[
        "--set",
        "drain.preStopSleepSeconds=5",
        "--kube-version",
        "1.29.0",
    ]);
    assert!(msg.contains("Kubernetes >= 1.30"), "{msg}");
    // A grace period given explicitly and long enough is kept.
    let r = render(&["--set", "terminationGracePeriodSeconds=300"]);
    assert_eq!(r.pod()["terminationGracePeriodSeconds"], 300);
}

/// Every key of values.yaml is described by values.schema.json (a key the schema does not know
/// would make `helm lint` fail on the chart's own defaults, since the top level and the chart's
/// own objects set additionalProperties: false — this names the key instead).
#[test]
fn every_value_is_in_the_schema() {
    let values: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).unwrap(),
    )
    .expect("values.schema.json parses");
    assert_eq!(schema["additionalProperties"], false);

    fn resolve<'a>(
        schema: &'a serde_json::Value,
        node: &'a serde_json::Value,
    ) -> &'a serde_json::Value {
        if let Some(r) = node["$ref"].as_str() {
            let name = r.trim_start_matches("#/definitions/");
            return resolve(schema, &schema["definitions"][name]);
        }
        match node["allOf"].as_array() {
            Some(all) if all.len() == 1 => resolve(schema, &all[0]),
            _ => node,
        }
    }

    fn walk(
        schema: &serde_json::Value,
        node: &serde_json::Value,
        values: &Value,
        path: &str,
        missing: &mut Vec<String>,
    ) {
        let node = resolve(schema, node);
        let Some(map) = values.as_mapping() else {
            return;
        };
        let Some(props) = node["properties"].as_object() else {
            return;
        };
        for (k, v) in map {
            let k = k.as_str().expect("string keys");
            let p = if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            };
            match props.get(k) {
                Some(sub) => walk(schema, sub, v, &p, missing),
                None if node["additionalProperties"] == false => missing.push(p),
                None => {}
            }
        }
    }

    let mut missing = Vec::new();
    walk(&schema, &schema, &values, "", &mut missing);
    assert!(
        missing.is_empty(),
        "values.yaml keys not in values.schema.json: {missing:?}"
    );
    // And every top-level key of the schema is in values.yaml (no stale schema entries).
    for k in schema["properties"].as_object().unwrap().keys() {
        assert!(
            values.as_mapping().unwrap().contains_key(k.as_str()),
            "values.schema.json describes {k}, which values.yaml does not set"
        );
    }
}
