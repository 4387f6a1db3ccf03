//! `kubelet-standin`: runs the Pods of a kubelet-less Kubernetes control plane as local processes, so
//! the operator's StatefulSets and Deployments turn into real `waggle broker` and `waggle gateway`
//! processes in tests and in `scripts/local-k8s.sh`.
//!
//! The test control plane of `../shared/kube` has an API server and the controllers, but no kubelet
//! and no scheduler: without help, every Pod stays Pending and the operator could never be seen to
//! produce a working Waggle. This binary plays the node. It registers a Node and keeps it Ready,
//! binds every unscheduled Pod to it, runs each Pod as a process (see [`pod`]) with its own loopback
//! address and the cluster DNS names in its `/etc/hosts` (see [`network`]), reports the Pod's status
//! from the container's own readiness probe, and stops the process when the Pod is deleted.
//!
//! It lives in the operator crate, as a second binary next to `crdgen`, because it exists only to
//! exercise the operator: it shares the crate's `kube` client and is built by the same
//! `cargo build -p waggle-operator`. It is test infrastructure, not something to deploy: it needs
//! `unshare` and mount namespaces (root, or unprivileged user namespaces) and a C compiler for the
//! small bind library.

mod network;
mod pod;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use network::Network;
use pod::Shared;

/// The worker of each Pod this node runs, by Pod uid: where its latest version goes, and its task.
type Workers = HashMap<String, (watch::Sender<Option<Arc<Pod>>>, tokio::task::JoinHandle<()>)>;

#[derive(Parser)]
#[command(name = "kubelet-standin", about = "Runs the Pods of a kubelet-less test cluster as local processes")]
struct Args {
    /// Name of the Node to register and bind Pods to.
    #[arg(long, default_value = "standin")]
    node_name: String,
    /// Directory for Pod volumes, logs, claims, the hosts file and the bind library.
    #[arg(long)]
    state_dir: PathBuf,
    /// Entrypoint of an image, `NAME=PATH`: a container whose image repository ends in NAME and that
    /// sets no command runs PATH; PATH's directory also heads every Pod's PATH.
    #[arg(long = "image", value_parser = parse_image)]
    images: Vec<(String, PathBuf)>,
    /// First three octets of the Pod addresses (loopback); Pods get .2 to .254.
    #[arg(long, default_value = "127.0.100")]
    pod_network: String,
}

fn parse_image(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=PATH"))?;
    let path = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
    Ok((name.to_owned(), path))
}

/// Errors that stop the stand-in at start-up.
#[derive(Debug, thiserror::Error)]
enum StandinError {
    #[error("{0}")]
    Network(#[from] network::NetworkError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("compiling the bind library with cc failed: {0}")]
    Compile(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "kubelet-standin stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), StandinError> {
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| StandinError::Io { path, source }
    };
    std::fs::create_dir_all(&args.state_dir).map_err(io(&args.state_dir))?;
    let preload = compile_bind_library(&args.state_dir)?;
    let network = Network::new(&args.pod_network, &args.state_dir.join("hosts"))?;
    let client = Client::try_default().await?;
    register_node(&client, &args.node_name).await?;

    let shared = Arc::new(Shared {
        client: client.clone(),
        node_name: args.node_name.clone(),
        state_dir: args.state_dir.clone(),
        images: args.images.into_iter().collect::<BTreeMap<_, _>>(),
        network,
        preload,
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tokio::spawn(heartbeat(client.clone(), args.node_name.clone(), shutdown.clone()));
    tokio::spawn(publish_services(shared.clone(), shutdown.clone()));
    tracing::info!(node = %args.node_name, state_dir = %args.state_dir.display(), "kubelet-standin running");

    let mut workers: Workers = HashMap::new();
    let mut seen_in_relist: Option<Vec<String>> = None;
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff();
    tokio::pin!(pods);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = pods.next() => event,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "pod watch failed; retrying");
                continue;
            }
        };
        match event {
            Event::Init => seen_in_relist = Some(Vec::new()),
            Event::InitApply(pod) | Event::Apply(pod) => {
                if let Some(seen) = seen_in_relist.as_mut() {
                    seen.push(pod.uid().unwrap_or_default());
                }
                handle(&shared, &mut workers, pod, &shutdown).await;
            }
            Event::Delete(pod) => {
                if let Some((sender, _)) = workers.get(&pod.uid().unwrap_or_default()) {
                    let _ = sender.send(None);
                }
            }
            Event::InitDone => {
                let seen = seen_in_relist.take().unwrap_or_default();
                for (uid, (sender, _)) in &workers {
                    if !seen.contains(uid) {
                        let _ = sender.send(None);
                    }
                }
            }
        }
        workers.retain(|_, (_, handle)| !handle.is_finished());
    }
    shutdown.cancel();
    for (_, (_, handle)) in workers {
        let _ = handle.await;
    }
    tracing::info!("kubelet-standin stopped; every pod process ended");
    Ok(())
}

/// Binds an unscheduled Pod to this node, or hands a bound one to its worker.
async fn handle(shared: &Arc<Shared>, workers: &mut Workers, pod: Pod, shutdown: &CancellationToken) {
    let uid = pod.uid().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    match node {
        None if pod.metadata.deletion_timestamp.is_none() => bind(shared, &pod).await,
        None => {}
        Some(node) if node == shared.node_name => {
            let pod = Arc::new(pod);
            match workers.get(&uid) {
                Some((sender, _)) => {
                    let _ = sender.send(Some(pod));
                }
                None => {
                    let (sender, receiver) = watch::channel(Some(pod));
                    let handle = tokio::spawn(pod::run(shared.clone(), receiver, shutdown.child_token()));
                    workers.insert(uid, (sender, handle));
                }
            }
        }
        Some(_) => {}
    }
}

/// What a scheduler does: `POST pods/<name>/binding` to this node.
async fn bind(shared: &Shared, pod: &Pod) {
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": { "name": pod.name_any(), "namespace": namespace, "uid": pod.uid() },
        "target": { "apiVersion": "v1", "kind": "Node", "name": shared.node_name },
    });
    match api
        .create_subresource::<_, serde_json::Value>("binding", &pod.name_any(), &PostParams::default(), &binding)
        .await
    {
        Ok(_) => tracing::info!(pod = %pod.name_any(), %namespace, "bound"),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
        Err(error) => tracing::warn!(%error, pod = %pod.name_any(), "binding failed"),
    }
}

async fn register_node(client: &Client, name: &str) -> Result<(), StandinError> {
    let api: Api<Node> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" } },
        }))
        .expect("a valid Node");
        api.create(&PostParams::default(), &node).await?;
    }
    report_node(&api, name).await?;
    Ok(())
}

async fn report_node(api: &Api<Node>, name: &str) -> Result<(), kube::Error> {
    let now = Timestamp::now().to_string();
    let status = json!({ "status": {
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "StandinReady",
            "message": "kubelet-standin runs this node's pods as local processes",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }, { "type": "Hostname", "address": name }],
        "capacity": { "cpu": "8", "memory": "16Gi", "pods": "250" },
        "allocatable": { "cpu": "8", "memory": "16Gi", "pods": "250" },
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&status)).await?;
    Ok(())
}

/// Keeps the Node Ready, so the node lifecycle controller does not evict the Pods.
async fn heartbeat(client: Client, name: String, shutdown: CancellationToken) {
    let api: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if let Err(error) = report_node(&api, &name).await {
            tracing::warn!(%error, "node heartbeat failed");
        }
    }
}

/// Keeps `<service>.<namespace>.svc` in the hosts file pointing at one ready Pod each Service selects.
///
/// A cluster's DNS answers from the Service's Endpoints, but those cannot exist here: the API server
/// refuses loopback addresses in Endpoints, so the endpoints controller fails to write any for these
/// Pods. The stand-in therefore matches each Service's selector against the Pods itself, as the
/// endpoints controller would, and takes the first ready one by name.
async fn publish_services(shared: Arc<Shared>, shutdown: CancellationToken) {
    let (services, services_writer) = reflector::store::<Service>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let service_events = reflector::reflector(
        services_writer,
        watcher::watcher(Api::<Service>::all(shared.client.clone()), watcher::Config::default()).default_backoff(),
    )
    .map(|event| warn_on_watch_error("service", event));
    let pod_events = reflector::reflector(
        pods_writer,
        watcher::watcher(Api::<Pod>::all(shared.client.clone()), watcher::Config::default()).default_backoff(),
    )
    .map(|event| warn_on_watch_error("pod", event));
    let events = futures::stream::select(service_events, pod_events);
    tokio::pin!(events);
    let mut published: BTreeMap<(String, String), Ipv4Addr> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => if event.is_none() { return },
        }
        let wanted = service_addresses(&services.state(), &pods.state());
        let gone = published.keys().filter(|key| !wanted.contains_key(*key));
        let changed = wanted.iter().filter(|(key, ip)| published.get(*key) != Some(*ip));
        for ((namespace, service), address) in gone.map(|key| (key, None)).chain(changed.map(|(k, ip)| (k, Some(*ip))))
        {
            if let Err(error) = shared.network.set_service(service, namespace, address) {
                tracing::warn!(%error, "could not publish a service name");
            }
        }
        published = wanted;
    }
}

fn warn_on_watch_error<K>(what: &str, event: Result<Event<K>, watcher::Error>) {
    if let Err(error) = event {
        tracing::warn!(%error, "{what} watch failed; retrying");
    }
}

/// The address each Service name should resolve to, by (namespace, name): the first ready Pod, by
/// name, in the Service's namespace whose labels match its selector. Services without a selector,
/// or with no ready Pod, resolve to nothing.
fn service_addresses(services: &[Arc<Service>], pods: &[Arc<Pod>]) -> BTreeMap<(String, String), Ipv4Addr> {
    let mut ready: Vec<&Pod> = pods.iter().map(AsRef::as_ref).filter(|pod| pod_ready(pod)).collect();
    ready.sort_by_key(|pod| pod.name_any());
    let mut addresses = BTreeMap::new();
    for service in services {
        let Some(selector) = service.spec.as_ref().and_then(|spec| spec.selector.as_ref()).filter(|s| !s.is_empty())
        else {
            continue;
        };
        let namespace = service.namespace().unwrap_or_default();
        let chosen = ready.iter().find(|pod| {
            pod.namespace().as_deref() == Some(namespace.as_str())
                && selector.iter().all(|(key, value)| pod.labels().get(key) == Some(value))
        });
        if let Some(ip) = chosen.and_then(|pod| pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()) {
            addresses.insert((namespace, service.name_any()), ip);
        }
    }
    addresses
}

/// Whether the Pod runs, has an address and passes its readiness probe (and is not being deleted).
fn pod_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    pod.metadata.deletion_timestamp.is_none()
        && status.pod_ip.is_some()
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Compiles [`network::BIND_SHIM_SOURCE`] into the state directory.
fn compile_bind_library(state_dir: &std::path::Path) -> Result<PathBuf, StandinError> {
    let source = state_dir.join("bind_pod_ip.c");
    let library = state_dir.join("bind_pod_ip.so");
    std::fs::write(&source, network::BIND_SHIM_SOURCE)
        .map_err(|e| StandinError::Io { path: source.clone(), source: e })?;
    let output = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .map_err(|e| StandinError::Compile(e.to_string()))?;
    if !output.status.success() {
        return Err(StandinError::Compile(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    Ok(library)
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str, app: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
                "status": {
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                },
            }))
            .unwrap(),
        )
    }

    fn service(namespace: &str, name: &str, selector: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"selector": selector},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_service_name_resolves_to_the_first_ready_pod_its_selector_matches_in_its_namespace() {
        let pods = [
            pod("a", "gw-0", "gateway", "127.0.100.2", false),
            pod("b", "gw-1", "gateway", "127.0.100.3", true),
            pod("a", "gw-3", "gateway", "127.0.100.5", true),
            pod("a", "gw-2", "gateway", "127.0.100.4", true),
            pod("a", "broker-0", "broker", "127.0.100.6", true),
        ];
        let services = [
            service("a", "gw", json!({"app": "gateway"})),
            service("a", "nothing-ready", json!({"app": "missing"})),
            service("a", "selectorless", json!({})),
        ];
        let addresses = service_addresses(&services, &pods);
        let expected: BTreeMap<_, _> = [(("a".to_owned(), "gw".to_owned()), Ipv4Addr::new(127, 0, 100, 4))].into();
        assert_eq!(addresses, expected);
    }
}
