//! `llmux.tracing`: where and how spans are exported, resolved from the config file first and
//! then from the standard OpenTelemetry environment variables (and LiteLLM's `OTEL_EXPORTER`,
//! `OTEL_ENDPOINT`, `OTEL_HEADERS`, so that a LiteLLM deployment's settings carry over).

use std::path::Path;
use std::time::Duration;

use super::diag::Diagnostics;
use super::env::Env;
use super::locate::KeyPath;
use super::number::{Limit, Num};
use super::schema::{LitellmSettings, TracingSection};
use super::secrets;

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    Grpc,
}

/// The tracing settings of one snapshot. Compared on reload: the exporter is rebuilt only when
/// what it uses changed.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub enabled: bool,
    pub protocol: OtlpProtocol,
    /// The full URL spans are sent to.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Share of new traces recorded, 0 to 1 (parent-based: a client's sampled flag decides
    /// for the traces it continues).
    pub sampling_ratio: f64,
    pub service_name: String,
    /// Further resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource_attributes: Vec<(String, String)>,
    /// Record messages and answers (redacted) in the spans.
    pub capture_content: bool,
    pub max_queue_spans: usize,
    /// Spans sent in one export request, at most.
    pub max_export_batch: usize,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            protocol: OtlpProtocol::HttpProtobuf,
            endpoint: format!("http://localhost:4318{HTTP_TRACES_PATH}"),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            sampling_ratio: 1.0,
            service_name: "llmux".into(),
            resource_attributes: Vec::new(),
            capture_content: false,
            max_queue_spans: DEFAULT_QUEUE_SPANS,
            max_export_batch: DEFAULT_EXPORT_BATCH,
        }
    }
}

/// The OpenTelemetry batch processor's default queue.
const DEFAULT_QUEUE_SPANS: usize = 2048;
/// The batch processor's default export batch.
const DEFAULT_EXPORT_BATCH: usize = 512;
const HTTP_TRACES_PATH: &str = "/v1/traces";

/// Resolves `llmux.tracing`. Header values are secrets: they are added to `secrets` for
/// exact-value redaction.
pub fn build(
    t: &TracingSection,
    litellm: &LitellmSettings,
    env: &Env,
    base_dir: &Path,
    diag: &mut Diagnostics,
    secrets_seen: &mut Vec<String>,
) -> TracingSettings {
    let d = TracingSettings::default();
    let by_callback = litellm
        .callbacks
        .iter()
        .flatten()
        .any(|c| c.eq_ignore_ascii_case("otel"));
    let disabled_by_env = env
        .get("OTEL_SDK_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let enabled = t.enabled.unwrap_or(by_callback) && !disabled_by_env;

    let protocol = match protocol_name(t, env) {
        None => d.protocol,
        Some((name, from)) => match name.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" | "otlp_http" => OtlpProtocol::HttpProtobuf,
            "grpc" | "otlp_grpc" => OtlpProtocol::Grpc,
            other => {
                diag.error(
                    from,
                    format!("unknown OTLP protocol `{other}` (http/protobuf or grpc)"),
                );
                d.protocol
            }
        },
    };
    let endpoint = endpoint(t, env, protocol);

    let mut headers = Vec::new();
    if t.headers.is_empty() {
        let raw = env.first_nonblank(&[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_HEADERS",
        ]);
        headers.extend(raw.map(parse_header_list).unwrap_or_default());
    } else {
        for (k, v) in &t.headers {
            match secrets::resolve(v, base_dir, env) {
                Ok(v) => headers.push((k.clone(), v)),
                Err(e) => diag.error(
                    KeyPath::keys(&format!("llmux.tracing.headers.{k}")),
                    e.to_string(),
                ),
            }
        }
    }
    secrets_seen.extend(headers.iter().map(|(_, v)| v.clone()));

    let timeout = match &t.timeout {
        Some(n) => Duration::from_secs_f64(checked(
            diag,
            "llmux.tracing.timeout",
            n,
            Limit::SECONDS,
            10.0,
        )),
        None => env
            .first_nonblank(&[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ])
            .and_then(|ms| ms.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(d.timeout, Duration::from_millis),
    };
    let sampling_ratio = match &t.sampling_ratio {
        Some(n) => checked(diag, "llmux.tracing.sampling_ratio", n, RATIO, 1.0),
        None => ratio_from_env(env).unwrap_or(d.sampling_ratio),
    };
    let resource_attributes = env
        .get("OTEL_RESOURCE_ATTRIBUTES")
        .map(parse_header_list)
        .unwrap_or_default();
    let service_name = t
        .service_name
        .clone()
        .or_else(|| env.get("OTEL_SERVICE_NAME").map(str::to_owned))
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            resource_attributes
                .iter()
                .find(|(k, v)| k == "service.name" && !v.trim().is_empty())
                .map(|(_, v)| v.clone())
        })
        .unwrap_or(d.service_name);
    let max_queue_spans = count_setting(
        diag,
        "llmux.tracing.max_queue_spans",
        t.max_queue_spans.as_ref(),
        env.get("OTEL_BSP_MAX_QUEUE_SIZE"),
        Limit::count(64, 1 << 20),
        d.max_queue_spans,
    );
    let max_export_batch = count_setting(
        diag,
        "llmux.tracing.max_export_batch",
        t.max_export_batch.as_ref(),
        env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        Limit::count(1, 1 << 16),
        d.max_export_batch,
    );
    TracingSettings {
        enabled,
        protocol,
        endpoint,
        headers,
        timeout,
        sampling_ratio,
        service_name,
        // `service.name` is the setting above (the list's is its last resort).
        resource_attributes: resource_attributes
            .into_iter()
            .filter(|(k, _)| k != "service.name")
            .collect(),
        capture_content: t.capture_content.unwrap_or(false),
        max_queue_spans,
        max_export_batch,
    }
}

/// A count from the file (checked against `limit`), else from the variable (ignored unless a
/// whole number within it, as the SDKs do), else `default`.
fn count_setting(
    diag: &mut Diagnostics,
    path: &str,
    from_file: Option<&Num>,
    from_env: Option<&str>,
    limit: Limit,
    default: usize,
) -> usize {
    match from_file {
        Some(n) => checked(diag, path, n, limit, default as f64) as usize,
        None => from_env
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|v| (limit.min..=limit.max).contains(&(*v as f64)))
            .unwrap_or(default),
    }
}

const RATIO: Limit = Limit {
    min: 0.0,
    max: 1.0,
    whole: false,
    unit: "",
};

fn checked(diag: &mut Diagnostics, path: &str, n: &Num, limit: Limit, default: f64) -> f64 {
    limit.check(n).unwrap_or_else(|m| {
        diag.error(KeyPath::keys(path), m);
        default
    })
}

fn protocol_name<'a>(t: &'a TracingSection, env: &'a Env) -> Option<(&'a str, KeyPath)> {
    if let Some(p) = &t.protocol {
        return Some((p, KeyPath::keys("llmux.tracing.protocol")));
    }
    env.first_nonblank(&[
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER",
    ])
    .map(|p| (p, KeyPath::default()))
}

/// The URL spans go to. As the OTLP exporter specification has it, the signal-specific
/// variable is used as it is and the general one gets the signal's path; a config endpoint
/// without a path gets it too (for HTTP), which is what people mean by it.
fn endpoint(t: &TracingSection, env: &Env, protocol: OtlpProtocol) -> String {
    let with_path = |base: &str| match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf => {
            format!("{}{HTTP_TRACES_PATH}", base.trim_end_matches('/'))
        }
    };
    if let Some(e) = t.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        let e = e.trim();
        let has_path = e
            .split_once("://")
            .map_or(e, |(_, rest)| rest)
            .trim_end_matches('/')
            .contains('/');
        return if has_path { e.to_owned() } else { with_path(e) };
    }
    if let Some(e) = env
        .get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .filter(|e| !e.trim().is_empty())
    {
        return e.trim().to_owned();
    }
    if let Some(e) = env.first_nonblank(&["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_ENDPOINT"]) {
        return with_path(e.trim());
    }
    match protocol {
        OtlpProtocol::Grpc => "http://localhost:4317".into(),
        OtlpProtocol::HttpProtobuf => format!("http://localhost:4318{HTTP_TRACES_PATH}"),
    }
}

/// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, for the samplers this one can be.
fn ratio_from_env(env: &Env) -> Option<f64> {
    let sampler = env.get("OTEL_TRACES_SAMPLER")?.trim().to_ascii_lowercase();
    match sampler.as_str() {
        "always_on" | "parentbased_always_on" => Some(1.0),
        "always_off" | "parentbased_always_off" => Some(0.0),
        "traceidratio" | "parentbased_traceidratio" => Some(
            env.get("OTEL_TRACES_SAMPLER_ARG")
                .and_then(|a| a.trim().parse::<f64>().ok())
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(1.0),
        ),
        _ => None,
    }
}

/// `key1=value1,key2=value2` (the W3C Baggage-like list of the OTLP exporter spec; values are
/// percent-decoded).
fn parse_header_list(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), crate::util::percent_decode(v.trim(), false)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn env(vars: &[(&str, &str)]) -> Env {
        Env::from_maps(
            BTreeMap::new(),
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    fn build_with(
        t: &TracingSection,
        l: &LitellmSettings,
        e: &Env,
    ) -> (TracingSettings, Vec<String>) {
        let mut diag = Diagnostics::default();
        let mut secrets = Vec::new();
        let s = build(t, l, e, Path::new("."), &mut diag, &mut secrets);
        assert!(!diag.has_errors());
        (s, secrets)
    }

    #[test]
    fn off_by_default_and_on_by_litellm_callback() {
        let t = TracingSection::default();
        let (s, _) = build_with(&t, &LitellmSettings::default(), &env(&[]));
        assert!(!s.enabled);
        let l = LitellmSettings {
            callbacks: Some(vec!["prometheus".into(), "otel".into()]),
            ..Default::default()
        };
        let (s, _) = build_with(&t, &l, &env(&[]));
        assert!(s.enabled);
        let (s, _) = build_with(&t, &l, &env(&[("OTEL_SDK_DISABLED", "true")]));
        assert!(!s.enabled);
    }

    #[test]
    fn resource_attributes_from_the_environment() {
        let t = TracingSection::default();
        let l = LitellmSettings::default();
        let e = env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod, service.name=from-list,team=a%2Cb",
        )]);
        let (s, _) = build_with(&t, &l, &e);
        assert_eq!(s.service_name, "from-list");
        assert_eq!(
            s.resource_attributes,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a,b".into())
            ]
        );
        let e = env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-list"),
            ("OTEL_SERVICE_NAME", "from-variable"),
        ]);
        assert_eq!(build_with(&t, &l, &e).0.service_name, "from-variable");
    }

    #[test]
    fn endpoint_from_config_then_signal_then_general_variable() {
        let mut t = TracingSection::default();
        let l = LitellmSettings::default();
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=a%20b, tenant = t1"),
        ]);
        let (s, secrets) = build_with(&t, &l, &e);
        assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            s.headers,
            vec![
                ("x-token".into(), "a b".into()),
                ("tenant".into(), "t1".into())
            ]
        );
        assert!(secrets.contains(&"a b".to_string()));
        let e2 = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9/custom",
            ),
        ]);
        assert_eq!(build_with(&t, &l, &e2).0.endpoint, "http://other:9/custom");
        t.endpoint = Some("http://127.0.0.1:4318".into());
        assert_eq!(
            build_with(&t, &l, &e2).0.endpoint,
            "http://127.0.0.1:4318/v1/traces"
        );
        t.protocol = Some("grpc".into());
        assert_eq!(build_with(&t, &l, &e2).0.endpoint, "http://127.0.0.1:4318");
        assert_eq!(build_with(&t, &l, &e2).0.protocol, OtlpProtocol::Grpc);
    }

    #[test]
    fn litellm_variables_carry_over() {
        let e = env(&[
            ("OTEL_EXPORTER", "otlp_grpc"),
            ("OTEL_ENDPOINT", "http://collector:4317"),
            ("OTEL_HEADERS", "api-key=k123"),
        ]);
        let (s, _) = build_with(&TracingSection::default(), &LitellmSettings::default(), &e);
        assert_eq!(s.protocol, OtlpProtocol::Grpc);
        assert_eq!(s.endpoint, "http://collector:4317");
        assert_eq!(s.headers, vec![("api-key".into(), "k123".into())]);
    }

    #[test]
    fn sampler_variables() {
        let t = TracingSection::default();
        let l = LitellmSettings::default();
        let e = env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(build_with(&t, &l, &e).0.sampling_ratio, 0.25);
        let e = env(&[("OTEL_TRACES_SAMPLER", "always_off")]);
        assert_eq!(build_with(&t, &l, &e).0.sampling_ratio, 0.0);
    }

    #[test]
    fn batch_processor_sizes_from_config_then_variables() {
        let l = LitellmSettings::default();
        let (s, _) = build_with(&TracingSection::default(), &l, &env(&[]));
        assert_eq!((s.max_queue_spans, s.max_export_batch), (2048, 512));
        let e = env(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8192"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", " 1024 "),
        ]);
        let (s, _) = build_with(&TracingSection::default(), &l, &e);
        assert_eq!((s.max_queue_spans, s.max_export_batch), (8192, 1024));
        // The file wins; a variable that is not a whole number in range is ignored.
        let t = TracingSection {
            max_export_batch: Some(Num::Value(2048.0)),
            ..Default::default()
        };
        let e = env(&[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
        ]);
        let (s, _) = build_with(&t, &l, &e);
        assert_eq!((s.max_queue_spans, s.max_export_batch), (2048, 2048));
        let e = env(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0")]);
        let (s, _) = build_with(&TracingSection::default(), &l, &e);
        assert_eq!(s.max_export_batch, 512);
    }

    #[test]
    fn bad_values_are_errors() {
        let t = TracingSection {
            protocol: Some("carrier-pigeon".into()),
            sampling_ratio: Some(Num::Value(1.5)),
            max_export_batch: Some(Num::Value(0.0)),
            ..Default::default()
        };
        let mut diag = Diagnostics::default();
        build(
            &t,
            &LitellmSettings::default(),
            &env(&[]),
            Path::new("."),
            &mut diag,
            &mut Vec::new(),
        );
        assert_eq!(diag.error_count(), 3);
    }
}
