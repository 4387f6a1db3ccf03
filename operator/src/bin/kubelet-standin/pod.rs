//! One Pod, run as one local process: what a kubelet and its container runtime do for a Pod with a
//! single container, reduced to what Waggle's Pods use.
//!
//! - Volumes become directories under the state directory: `configMap` and `secret` volumes are
//!   written at start, `emptyDir` is per Pod, and a `persistentVolumeClaim` is a directory per claim
//!   that outlives the Pod (so a broker restarted by its StatefulSet finds its data again).
//! - The process runs in its own mount namespace (`unshare --mount`), where each volume is
//!   bind-mounted at its `mountPath` and the stand-in's hosts file at `/etc/hosts`. Mount points that
//!   do not exist on the host are created inside an overlay of their nearest existing parent, so the
//!   host's file system is never changed.
//! - Environment: `value` with `$(VAR)` expansion, `fieldRef` (metadata, labels, annotations, node
//!   name, Pod IP), `secretKeyRef` and `configMapKeyRef`. A missing Secret or ConfigMap keeps the
//!   container waiting with `CreateContainerConfigError`, as a kubelet does.
//! - The container's `command` (or the image's entrypoint, from `--image`) and `args` are run with
//!   `$(VAR)` expansion; `HOSTNAME` is the Pod's hostname, as container runtimes set it.
//! - Readiness comes from the container's own readiness probe (`httpGet` or `tcpSocket`) against
//!   the Pod's address, on the probe's period and thresholds. An exited process is restarted with
//!   back-off (restartPolicy Always) and counted in `restartCount`.
//! - Deleting the Pod sends SIGTERM to the process group, SIGKILL after the grace period (capped,
//!   see [`MAX_GRACE`]), and then removes the Pod object, which is the kubelet's part of deletion.
//!
//! Not done: init and sidecar containers, more than one container, liveness and startup probes,
//! resource limits, users and security contexts (processes run as the stand-in's user), image
//! pulls, `kubectl logs`/`exec` (logs are files in the Pod's directory).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Probe, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::network::{pod_dns_names, Network};

/// The longest a deleted Pod's process is given to stop, whatever its grace period says, so that a
/// test environment never waits a minute for a broker.
pub const MAX_GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(20);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container could not be started; the reason and message go into its `waiting` state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Something the Pod refers to is missing or unsupported (kubelet: `CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// The process could not be started (kubelet: `RunContainerError`).
    #[error("{0}")]
    Run(String),
    #[error("{0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("reading {what}: {source}")]
    Api { what: String, source: kube::Error },
}

impl StartError {
    fn reason(&self) -> &'static str {
        match self {
            StartError::Config(_) | StartError::Api { .. } => "CreateContainerConfigError",
            StartError::Run(_) | StartError::Network(_) => "RunContainerError",
        }
    }
}

/// What every Pod worker shares.
pub struct Shared {
    pub client: Client,
    pub node_name: String,
    pub state_dir: PathBuf,
    /// Entrypoint of each image, by the last segment of its repository (`ghcr.io/x/waggle:1` → `waggle`).
    pub images: BTreeMap<String, PathBuf>,
    pub network: Network,
    /// The compiled bind library (see [`crate::network::BIND_SHIM_SOURCE`]).
    pub preload: PathBuf,
}

/// The running process of a Pod.
struct Running {
    child: tokio::process::Child,
    started_at: Timestamp,
}

/// What the worker knows about its container, from which the Pod status is computed.
#[derive(Default)]
struct Observed {
    ip: Option<Ipv4Addr>,
    started_at: Option<Timestamp>,
    ready: bool,
    ready_since: Option<Timestamp>,
    restarts: i32,
    waiting: Option<(String, String)>,
    last_exit: Option<(i32, Timestamp)>,
    pod_started: Option<Timestamp>,
}

/// Runs the Pod received on `pod` until it is deleted (then removes it) or `shutdown` (then only
/// stops its process, as a stopping kubelet would).
pub async fn run(shared: Arc<Shared>, mut pod: watch::Receiver<Option<Arc<Pod>>>, shutdown: CancellationToken) {
    let Some(first) = pod.borrow().clone() else { return };
    let uid = first.uid().unwrap_or_default();
    let name = first.name_any();
    let namespace = first.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let dir = shared.state_dir.join("pods").join(format!("{namespace}_{name}_{}", &uid[..uid.len().min(8)]));
    let mut observed = Observed { pod_started: Some(Timestamp::now()), ..Observed::default() };
    let mut process: Option<Running> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_start = Instant::now();
    let mut next_probe = Instant::now();
    let (mut successes, mut failures) = (0, 0);
    let mut reported: Option<serde_json::Value> = None;

    loop {
        let current = pod.borrow().clone();
        let Some(current) = current else {
            stop(&mut process, Duration::from_secs(2)).await;
            break;
        };
        if current.metadata.deletion_timestamp.is_some() {
            let grace = current.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0);
            stop(&mut process, Duration::from_secs(grace as u64).min(MAX_GRACE)).await;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => tracing::info!(pod = %name, %namespace, "pod stopped and removed"),
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                Err(error) => {
                    tracing::warn!(%error, pod = %name, "could not remove the deleted pod; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            }
            break;
        }

        if process.is_none() && Instant::now() >= next_start {
            match start(&shared, &current, &dir).await {
                Ok((running, ip)) => {
                    tracing::info!(pod = %name, %namespace, %ip, pid = running.child.id(), "container started");
                    observed.ip = Some(ip);
                    observed.started_at = Some(running.started_at);
                    observed.waiting = None;
                    observed.ready = false;
                    (successes, failures) = (0, 0);
                    next_probe = Instant::now() + probe_delay(readiness(&current));
                    process = Some(running);
                }
                Err(error) => {
                    tracing::warn!(pod = %name, %namespace, %error, "container not started");
                    observed.waiting = Some((error.reason().to_owned(), error.to_string()));
                    next_start = Instant::now() + Duration::from_secs(2);
                }
            }
        }

        let status = pod_status(&current, &observed);
        if reported.as_ref() != Some(&status) {
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&json!({ "status": status }))).await {
                Ok(_) => reported = Some(status),
                Err(error) => tracing::warn!(%error, pod = %name, "could not report the pod status"),
            }
        }

        let wake = match &process {
            Some(_) => next_probe,
            None => next_start.max(Instant::now() + Duration::from_millis(200)),
        };
        tokio::select! {
            changed = pod.changed() => {
                if changed.is_err() {
                    stop(&mut process, Duration::from_secs(2)).await;
                    break;
                }
            }
            exit = async {
                match process.as_mut() {
                    Some(running) => running.child.wait().await,
                    None => std::future::pending().await,
                }
            } => {
                let code = exit.ok().and_then(|s| s.code()).unwrap_or(-1);
                let lived = process.take().map(|r| r.started_at);
                tracing::warn!(pod = %name, %namespace, code, "container exited; restarting after {backoff:?}");
                observed.restarts += 1;
                observed.last_exit = Some((code, Timestamp::now()));
                observed.ready = false;
                observed.started_at = None;
                observed.waiting = Some(("CrashLoopBackOff".to_owned(), format!("back-off {}s restarting failed container", backoff.as_secs())));
                let long_lived = lived.is_some_and(|t| Timestamp::now().duration_since(t).as_secs() > 60);
                backoff = if long_lived { Duration::from_secs(1) } else { (backoff * 2).min(MAX_BACKOFF) };
                next_start = Instant::now() + backoff;
            }
            _ = tokio::time::sleep_until(wake) => {
                if process.is_some() {
                    if let (Some(probe), Some(ip)) = (readiness(&current), observed.ip) {
                        let ok = run_probe(probe, &current, ip).await;
                        if ok { successes += 1; failures = 0 } else { failures += 1; successes = 0 }
                        let now_ready = if ok { successes >= probe.success_threshold.unwrap_or(1) } else { failures < probe.failure_threshold.unwrap_or(3) && observed.ready };
                        if now_ready != observed.ready {
                            observed.ready = now_ready;
                            observed.ready_since = Some(Timestamp::now());
                        }
                        next_probe = Instant::now() + Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
                    } else {
                        if !observed.ready {
                            observed.ready = true;
                            observed.ready_since = Some(Timestamp::now());
                        }
                        next_probe = Instant::now() + Duration::from_secs(3600);
                    }
                }
            }
            _ = shutdown.cancelled() => {
                stop(&mut process, Duration::from_secs(5)).await;
                return;
            }
        }
    }
    if let Err(error) = shared.network.detach(&uid) {
        tracing::warn!(%error, "could not remove the pod's names");
    }
}

fn readiness(pod: &Pod) -> Option<&Probe> {
    pod.spec.as_ref()?.containers.first()?.readiness_probe.as_ref()
}

fn probe_delay(probe: Option<&Probe>) -> Duration {
    Duration::from_secs(probe.and_then(|p| p.initial_delay_seconds).unwrap_or(0).max(0) as u64)
}

/// SIGTERM to the process group, SIGKILL once `grace` has passed.
async fn stop(process: &mut Option<Running>, grace: Duration) {
    let Some(mut running) = process.take() else { return };
    let Some(pid) = running.child.id() else { return };
    let group = -(pid as i32);
    // SAFETY: kill(2) with a process group id we created (process_group(0) at spawn).
    unsafe { libc::kill(group, libc::SIGTERM) };
    if tokio::time::timeout(grace, running.child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = running.child.wait().await;
    }
}

fn container(pod: &Pod) -> Result<&Container, StartError> {
    let spec = pod.spec.as_ref().ok_or_else(|| StartError::Config("the Pod has no spec".into()))?;
    match spec.containers.as_slice() {
        [one] if spec.init_containers.as_ref().is_none_or(Vec::is_empty) => Ok(one),
        _ => Err(StartError::Config("the stand-in runs Pods with exactly one container and no init containers".into())),
    }
}

async fn start(shared: &Shared, pod: &Pod, dir: &Path) -> Result<(Running, Ipv4Addr), StartError> {
    let container = container(pod)?;
    let spec = pod.spec.as_ref().expect("checked by container()");
    let namespace = pod.namespace().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let names = pod_dns_names(&namespace, spec.hostname.as_deref(), spec.subdomain.as_deref());
    let ip = shared.network.attach(&pod.uid().unwrap_or_default(), names)?;

    let mounts = prepare_volumes(shared, pod, container, dir).await?;
    let env = resolve_env(shared, pod, container, ip).await?;
    let expand = |s: &String| expand_vars(s, &env);
    let mut argv: Vec<String> = match &container.command {
        Some(command) if !command.is_empty() => command.iter().map(expand).collect(),
        _ => {
            let image = container.image.clone().unwrap_or_default();
            let entrypoint = shared.images.get(image_name(&image)).ok_or_else(|| {
                StartError::Config(format!(
                    "image {image:?} has no entrypoint (start the stand-in with --image NAME=PATH)"
                ))
            })?;
            vec![entrypoint.display().to_string()]
        }
    };
    argv.extend(container.args.iter().flatten().map(expand));
    if let Some(mapped) =
        shared.images.get(Path::new(&argv[0]).file_name().and_then(|f| f.to_str()).unwrap_or_default())
    {
        argv[0] = mapped.display().to_string();
    }

    let scratch = dir.join("root");
    std::fs::create_dir_all(&scratch).map_err(|e| StartError::Run(format!("{}: {e}", scratch.display())))?;
    let workdir = container.working_dir.clone().unwrap_or_else(|| scratch.display().to_string());
    let script = mount_script(&mounts, &shared.state_dir, shared.network.hosts_file(), dir, &workdir)?;
    let log_path = dir.join(format!("{}.log", container.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| StartError::Run(format!("{}: {e}", log_path.display())))?;
    let log_err = log.try_clone().map_err(|e| StartError::Run(e.to_string()))?;

    let mut path =
        shared.images.values().filter_map(|p| p.parent()).map(|p| p.display().to_string()).collect::<Vec<_>>();
    path.push(DEFAULT_PATH.to_owned());
    let mut command = tokio::process::Command::new("unshare");
    command.args(["--mount", "--propagation", "private"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        command.arg("--map-root-user");
    }
    command
        .args(["--", "/bin/sh", "-c", &script, "kubelet-standin"])
        .args(&argv)
        .env_clear()
        .env("PATH", path.join(":"))
        .env("HOSTNAME", &hostname)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("LD_PRELOAD", &shared.preload)
        .env("KUBELET_STANDIN_POD_IP", ip.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it makes the process die with the stand-in.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| StartError::Run(format!("cannot run unshare: {e}")))?;
    if let Some(pid) = child.id() {
        let _ = std::fs::write(dir.join("pid"), pid.to_string());
    }
    Ok((Running { child, started_at: Timestamp::now() }, ip))
}

/// `ghcr.io/org/waggle:1.2` → `waggle`.
fn image_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split([':', '@']).next().unwrap_or(last)
}

/// One bind mount: a host path (directory or file) shown at `target` inside the Pod.
struct Mount {
    source: PathBuf,
    target: String,
    read_only: bool,
}

async fn prepare_volumes(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    dir: &Path,
) -> Result<Vec<Mount>, StartError> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().expect("checked by container()");
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| StartError::Run(format!("{path}: {e}"))
    };
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        let path = dir.join("volumes").join(&volume.name);
        if let Some(source) = &volume.config_map {
            let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &namespace);
            let found = api
                .get_opt(&source.name)
                .await
                .map_err(|e| StartError::Api { what: format!("ConfigMap {}", source.name), source: e })?;
            let Some(map) = found else {
                if source.optional == Some(true) {
                    std::fs::create_dir_all(&path).map_err(io(&path))?;
                    sources.insert(volume.name.clone(), path);
                    continue;
                }
                return Err(StartError::Config(format!("configmap \"{}\" not found", source.name)));
            };
            let files: Vec<(String, Vec<u8>)> =
                map.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            write_files(&path, files).map_err(io(&path))?;
        } else if let Some(source) = &volume.secret {
            let secret_name = source.secret_name.clone().unwrap_or_default();
            let api: Api<Secret> = Api::namespaced(shared.client.clone(), &namespace);
            let found = api
                .get_opt(&secret_name)
                .await
                .map_err(|e| StartError::Api { what: format!("Secret {secret_name}"), source: e })?;
            let Some(secret) = found else {
                return Err(StartError::Config(format!("secret \"{secret_name}\" not found")));
            };
            let files = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
            write_files(&path, files).map_err(io(&path))?;
        } else if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let path = shared.state_dir.join("claims").join(&namespace).join(&claim.claim_name);
            std::fs::create_dir_all(&path).map_err(io(&path))?;
            sources.insert(volume.name.clone(), path);
            continue;
        } else {
            return Err(StartError::Config(format!("volume {:?}: only configMap, secret, emptyDir and persistentVolumeClaim volumes are supported by the stand-in", volume.name)));
        }
        sources.insert(volume.name.clone(), path);
    }
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let base = sources
            .get(&mount.name)
            .ok_or_else(|| StartError::Config(format!("volume mount {:?} names no volume of the Pod", mount.name)))?;
        let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => base.join(sub),
            None => base.clone(),
        };
        if !source.exists() {
            std::fs::create_dir_all(&source).map_err(io(&source))?;
        }
        mounts.push(Mount { source, target: mount.mount_path.clone(), read_only: mount.read_only == Some(true) });
    }
    Ok(mounts)
}

fn write_files(dir: &Path, files: Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    for (key, bytes) in files {
        std::fs::write(dir.join(key), bytes)?;
    }
    Ok(())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell script that sets up the Pod's mount namespace and then `exec`s the container command.
fn mount_script(
    mounts: &[Mount],
    state_dir: &Path,
    hosts: &Path,
    dir: &Path,
    workdir: &str,
) -> Result<String, StartError> {
    if let Some(mount) = mounts.iter().find(|m| state_dir.starts_with(&m.target)) {
        return Err(StartError::Config(format!(
            "mount path {} would hide the stand-in's state directory {}; start kubelet-standin with a state directory outside the Pods' mount paths",
            mount.target,
            state_dir.display()
        )));
    }
    let mut script = String::from("set -e\n");
    let mut overlaid: Vec<PathBuf> = Vec::new();
    for mount in mounts {
        let target = Path::new(&mount.target);
        if target.exists() {
            continue;
        }
        let parent = target.ancestors().skip(1).find(|a| a.exists()).unwrap_or(Path::new("/"));
        if parent == Path::new("/") {
            return Err(StartError::Config(format!(
                "mount path {} has no existing parent directory below / to overlay",
                mount.target
            )));
        }
        if overlaid.iter().any(|o| o == parent) {
            continue;
        }
        let n = overlaid.len();
        let (upper, work) = (dir.join(format!("overlay/{n}/upper")), dir.join(format!("overlay/{n}/work")));
        std::fs::create_dir_all(&upper)
            .and_then(|()| std::fs::create_dir_all(&work))
            .map_err(|e| StartError::Run(e.to_string()))?;
        script.push_str(&format!(
            "mount -t overlay overlay -o lowerdir={p},upperdir={u},workdir={w} {p}\n",
            p = quote(&parent.display().to_string()),
            u = quote(&upper.display().to_string()),
            w = quote(&work.display().to_string()),
        ));
        overlaid.push(parent.to_owned());
    }
    for mount in mounts {
        let (source, target) = (quote(&mount.source.display().to_string()), quote(&mount.target));
        if mount.source.is_dir() {
            script.push_str(&format!("mkdir -p {target}\n"));
        } else {
            script.push_str(&format!("mkdir -p \"$(dirname {target})\"; [ -e {target} ] || : > {target}\n"));
        }
        script.push_str(&format!("mount --bind {source} {target}\n"));
        if mount.read_only {
            script.push_str(&format!("mount -o remount,ro,bind {target}\n"));
        }
    }
    script.push_str(&format!("mount --bind {} /etc/hosts\n", quote(&hosts.display().to_string())));
    script.push_str(&format!("cd {}\nexec \"$@\"\n", quote(workdir)));
    Ok(script)
}

/// The container's environment in order, each value with earlier variables expanded.
async fn resolve_env(
    shared: &Shared,
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, StartError> {
    let namespace = pod.namespace().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(StartError::Config("envFrom is not supported by the stand-in".into()));
    }
    for var in container.env.iter().flatten() {
        let value = env_value(shared, pod, &namespace, var, ip, &env).await?;
        if let Some(value) = value {
            env.retain(|(k, _)| k != &var.name);
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

async fn env_value(
    shared: &Shared,
    pod: &Pod,
    namespace: &str,
    var: &EnvVar,
    ip: Ipv4Addr,
    earlier: &[(String, String)],
) -> Result<Option<String>, StartError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand_vars(var.value.as_deref().unwrap_or_default(), earlier)));
    };
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path, ip).map(Some);
    }
    if let Some(key_ref) = &from.secret_key_ref {
        let api: Api<Secret> = Api::namespaced(shared.client.clone(), namespace);
        let secret = api
            .get_opt(&key_ref.name)
            .await
            .map_err(|e| StartError::Api { what: format!("Secret {}", key_ref.name), source: e })?;
        let optional = key_ref.optional == Some(true);
        return match secret {
            None if optional => Ok(None),
            None => Err(StartError::Config(format!("secret \"{}\" not found", key_ref.name))),
            Some(secret) => match secret.data.unwrap_or_default().remove(&key_ref.key) {
                Some(bytes) => Ok(Some(String::from_utf8_lossy(&bytes.0).into_owned())),
                None if optional => Ok(None),
                None => Err(StartError::Config(format!(
                    "couldn't find key {} in Secret {namespace}/{}",
                    key_ref.key, key_ref.name
                ))),
            },
        };
    }
    if let Some(key_ref) = &from.config_map_key_ref {
        let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), namespace);
        let map = api
            .get_opt(&key_ref.name)
            .await
            .map_err(|e| StartError::Api { what: format!("ConfigMap {}", key_ref.name), source: e })?;
        let optional = key_ref.optional == Some(true);
        return match map {
            None if optional => Ok(None),
            None => Err(StartError::Config(format!("configmap \"{}\" not found", key_ref.name))),
            Some(map) => match map.data.unwrap_or_default().remove(&key_ref.key) {
                Some(value) => Ok(Some(value)),
                None if optional => Ok(None),
                None => Err(StartError::Config(format!(
                    "couldn't find key {} in ConfigMap {namespace}/{}",
                    key_ref.key, key_ref.name
                ))),
            },
        };
    }
    Err(StartError::Config(format!(
        "env {}: only value, fieldRef, secretKeyRef and configMapKeyRef are supported by the stand-in",
        var.name
    )))
}

/// The downward API's value of `path`; a missing label or annotation is the empty string, as in Kubernetes.
fn field_value(pod: &Pod, path: &str, ip: Ipv4Addr) -> Result<String, StartError> {
    let quoted = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(str::to_owned);
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        _ => {
            if let Some(key) = quoted("metadata.labels['") {
                pod.labels().get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = quoted("metadata.annotations['") {
                pod.annotations().get(&key).cloned().unwrap_or_default()
            } else {
                return Err(StartError::Config(format!("fieldRef {path:?} is not supported by the stand-in")));
            }
        }
    })
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`, anything
/// else is left as written.
fn expand_vars(input: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[at..at + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn port_number(port: &IntOrString, pod: &Pod) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs `probe` once against the Pod's address: an HTTP GET that answers 200-399, or a TCP connect.
async fn run_probe(probe: &Probe, pod: &Pod, ip: Ipv4Addr) -> bool {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let port = port_number(&http.port, pod)?;
            let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
            let path = http.path.as_deref().unwrap_or("/");
            let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: kubelet-standin\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.take(64 * 1024).read_to_end(&mut answer).await.ok()?;
            let line = std::str::from_utf8(answer.split(|b| *b == b'\n').next()?).ok()?;
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((200..400).contains(&code))
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = port_number(&tcp.port, pod)?;
            Some(tokio::net::TcpStream::connect((ip, port)).await.is_ok())
        } else {
            Some(false)
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

fn time(t: Option<Timestamp>) -> serde_json::Value {
    t.map(|t| json!(t.to_string())).unwrap_or(serde_json::Value::Null)
}

/// The Pod status a kubelet would report for what was observed. Computed only from `observed`, so
/// an unchanged Pod produces the same value and is not written again.
fn pod_status(pod: &Pod, observed: &Observed) -> serde_json::Value {
    let ready = if observed.ready { "True" } else { "False" };
    let condition = |type_: &str, status: &str, since: Option<Timestamp>| json!({ "type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": time(since.or(observed.pod_started)) });
    let name = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()).unwrap_or_default();
    let image = pod.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default();
    let state = match (&observed.waiting, observed.started_at) {
        (Some((reason, message)), _) => json!({ "waiting": { "reason": reason, "message": message } }),
        (None, Some(started)) => json!({ "running": { "startedAt": time(Some(started)) } }),
        (None, None) => json!({ "waiting": { "reason": "ContainerCreating" } }),
    };
    let last_state = match observed.last_exit {
        Some((code, at)) => json!({ "terminated": {
            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "finishedAt": time(Some(at))
        } }),
        None => json!({}),
    };
    let running = observed.started_at.is_some();
    let mut status = json!({
        "phase": if running || observed.restarts > 0 { "Running" } else { "Pending" },
        "hostIP": "127.0.0.1",
        "startTime": time(observed.pod_started),
        "conditions": [
            condition("PodScheduled", "True", None),
            condition("Initialized", "True", None),
            condition("ContainersReady", ready, observed.ready_since),
            condition("Ready", ready, observed.ready_since),
        ],
        "containerStatuses": [{
            "name": name, "image": image, "imageID": "", "ready": observed.ready, "started": running,
            "restartCount": observed.restarts, "state": state, "lastState": last_state,
        }],
    });
    if let Some(ip) = observed.ip {
        status["podIP"] = json!(ip.to_string());
        status["podIPs"] = json!([{ "ip": ip.to_string() }]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        vec![("POD_NAME".into(), "c-broker-1".into())]
    }

    #[test]
    fn variables_are_expanded_the_kubernetes_way() {
        assert_eq!(expand_vars("$(POD_NAME).c-broker.ns.svc:26501", &vars()), "c-broker-1.c-broker.ns.svc:26501");
        assert_eq!(expand_vars("$(UNSET) $$(POD_NAME) $x", &vars()), "$(UNSET) $(POD_NAME) $x");
    }

    #[test]
    fn images_are_known_by_the_last_segment_of_their_repository() {
        assert_eq!(image_name("ghcr.io/waggle-dev/waggle:0.1.0"), "waggle");
        assert_eq!(image_name("waggle@sha256:abc"), "waggle");
    }
}
