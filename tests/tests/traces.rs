//! One trace per action across processes: an operator's `troop attack` through `troop
//! serve` to a dial-in host and a directly dialled one, exported by all three processes
//! over OTLP/gRPC to a collector this test runs (the `opentelemetry-proto` crate's server
//! types) in the lab's network, and read back: one trace id, with each span's parent the
//! span that sent it on, and the fault's id, kind and target on the agents' spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;
use tokio_stream::wrappers::TcpListenerStream;
use troop_tests::lab::{Lab, output_text, wait_for};
use troop_tests::net::inside;

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

impl Collector {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().clone()
    }
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| text(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                spans.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: text(&span.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves the collector on a port of the lab's network namespace, on a runtime of its
/// own that ends with the returned guard.
fn start_collector(lab: &Lab, collector: Collector) -> (u16, tokio::runtime::Runtime) {
    let listener = inside(&lab.network_namespace().unwrap(), || {
        std::net::TcpListener::bind("0.0.0.0:0").expect("bind the collector")
    });
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (port, runtime)
}

#[test]
fn an_attack_through_serve_is_one_trace_across_cli_serve_and_agents() {
    let Some(mut lab) = Lab::networked("traces: an attack through serve") else {
        return;
    };
    let collector = Collector::default();
    let (port, _collector_runtime) = start_collector(&lab, collector.clone());
    lab.export_traces_to(port);
    let policy = "allow = [\"disk\"]";
    lab.add_host("direct-1", &[("role", "web")], policy, Vec::new());
    let alice = lab.add_operator("alice", Some("operator"));
    let _serve = lab.start_serve();
    lab.start_dial_in_host("nat-1", &[("role", "web")], policy, Vec::new());
    let attached = wait_for(Duration::from_secs(30), || {
        let output = lab.troop_as(&alice, &["agents", "--output", "json"]);
        let agents: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        agents["agents"].as_array().is_some_and(|all| {
            all.iter()
                .any(|a| a["agent"] == "nat-1" && a["reachable"] == true)
        })
    });
    assert!(attached, "nat-1 never attached:\n{}", lab.serve_log());

    let disk = lab.hosts["nat-1"].disk.display().to_string();
    let attack = lab.troop_as(
        &alice,
        &[
            "attack", "disk", "--select", "role=web", "--path", &disk, "--fill", "30", "--for",
            "1s", "--output", "json",
        ],
    );
    assert_eq!(attack.status.code(), Some(0), "{}", output_text(&attack));
    let results: Value = serde_json::from_slice(&attack.stdout).unwrap();
    let fault_ids: HashMap<String, String> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["agent"].as_str().unwrap().to_string(),
                r["receipt"]["fault_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(fault_ids.len(), 2, "{results}");

    // The CLI flushed at exit; serve and the agents export within their batch delay.
    let count = |spans: &[Span], service: &str, name: &str| {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .count()
    };
    let complete = wait_for(Duration::from_secs(20), || {
        let spans = collector.spans();
        count(&spans, "troop-agent", "troop-agent start") >= 2
            && count(&spans, "troop-serve", "troop serve send") >= 1
            && count(&spans, "troop", "troop attack disk") >= 1
    });
    let spans = collector.spans();
    assert!(complete, "not every process's span arrived: {spans:#?}");

    let cli = spans
        .iter()
        .find(|s| s.service == "troop" && s.name == "troop attack disk")
        .unwrap_or_else(|| panic!("no CLI span: {spans:#?}"));
    assert_eq!(cli.parent_span_id, "", "the CLI's span is the root");
    let serve = spans
        .iter()
        .find(|s| s.service == "troop-serve" && s.name == "troop serve send")
        .unwrap_or_else(|| panic!("no serve span: {spans:#?}"));
    assert_eq!(serve.trace_id, cli.trace_id, "{spans:#?}");
    assert_eq!(serve.parent_span_id, cli.span_id, "{spans:#?}");
    assert_eq!(serve.attributes["troop.operator"], "alice");

    for (host, fault_id) in &fault_ids {
        let agent = spans
            .iter()
            .find(|s| {
                s.service == "troop-agent"
                    && s.attributes.get("troop.target") == Some(host)
                    && s.name == "troop-agent start"
            })
            .unwrap_or_else(|| panic!("no span from {host}: {spans:#?}"));
        assert_eq!(agent.trace_id, cli.trace_id, "{host}: {agent:#?}");
        assert_eq!(agent.parent_span_id, serve.span_id, "{host}: {agent:#?}");
        assert_eq!(&agent.attributes["troop.fault.id"], fault_id, "{agent:#?}");
        assert_eq!(agent.attributes["troop.fault.kind"], "disk", "{agent:#?}");
        assert_eq!(agent.attributes["troop.outcome"], "accepted", "{agent:#?}");
    }

    // A campaign step is one trace too: CLI, serve's call, the run, the step, the agents.
    // Its guardrails hold back hosts under fault, so first the attack's fills end.
    let ended = wait_for(Duration::from_secs(10), || {
        fault_ids
            .keys()
            .all(|host| troop_tests::lab::used_percent(&lab, host) < 5.0)
    });
    assert!(ended, "the attack's fills did not end on time");
    let campaign = lab.dir().join("fill-web.toml");
    std::fs::write(
        &campaign,
        format!(
            "name = \"fill-web\"\n[guardrails]\nmax_concurrent = 2\nmin_healthy_percent = 0\n\
             [[step]]\nselect = \"role=web\"\npick = \"all\"\n\
             fault = {{ kind = \"disk\", path = \"{disk}\", fill = 20 }}\nduration = \"1s\"\n"
        ),
    )
    .unwrap();
    let ran = lab.troop_as(
        &alice,
        &["campaign", "run", &campaign.display().to_string()],
    );
    assert_eq!(ran.status.code(), Some(0), "{}", output_text(&ran));
    let complete = wait_for(Duration::from_secs(20), || {
        let spans = collector.spans();
        count(&spans, "troop-serve", "campaign step 1") >= 1
            && count(&spans, "troop", "troop campaign run") >= 1
            && count(&spans, "troop-serve", "troop serve run a campaign") >= 1
            && spans
                .iter()
                .filter(|s| s.name == "troop-agent start")
                .count()
                >= 4
    });
    let spans = collector.spans();
    assert!(complete, "not every span of the run arrived: {spans:#?}");
    let named = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span from {service}: {spans:#?}"))
    };
    let cli = named("troop", "troop campaign run");
    let call = named("troop-serve", "troop serve run a campaign");
    let run = named("troop-serve", "campaign fill-web");
    let step = named("troop-serve", "campaign step 1");
    assert_eq!(cli.parent_span_id, "");
    assert_eq!(call.parent_span_id, cli.span_id, "{spans:#?}");
    assert_eq!(run.parent_span_id, call.span_id, "{spans:#?}");
    assert_eq!(step.parent_span_id, run.span_id, "{spans:#?}");
    let struck: Vec<&String> = spans
        .iter()
        .filter(|s| s.name == "troop-agent start" && s.parent_span_id == step.span_id)
        .map(|s| &s.attributes["troop.target"])
        .collect();
    assert_eq!(
        struck.len(),
        2,
        "both web hosts, in the step's trace: {spans:#?}"
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.parent_span_id == step.span_id)
            .all(|s| s.trace_id == cli.trace_id)
    );
}
