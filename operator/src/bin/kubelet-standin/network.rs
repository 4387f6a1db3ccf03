//! Pod addresses and names: one loopback address per Pod, and one hosts file that maps the DNS names
//! Kubernetes would serve (`<hostname>.<subdomain>.<namespace>.svc`, `<service>.<namespace>.svc`, each
//! also under `.cluster.local`) to those addresses.
//!
//! Every Pod process sees this file as its `/etc/hosts` (a bind mount in its own mount namespace,
//! see [`crate::pod`]). The file is rewritten in place, never replaced, because a bind mount follows
//! the inode it was made from.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors of address management.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("--pod-network {0:?} is not three octets such as 127.0.100")]
    Prefix(String),
    #[error("all 253 Pod addresses of {0}.0/24 are in use")]
    Exhausted(String),
    #[error("cannot write the hosts file {path}: {source}")]
    Hosts { path: PathBuf, source: std::io::Error },
}

#[derive(Default)]
struct State {
    /// Last octet of each Pod's address, by Pod uid.
    addresses: HashMap<String, u8>,
    /// DNS names of each Pod, by Pod uid.
    pod_names: HashMap<String, Vec<String>>,
    /// The address a Service name resolves to (one ready endpoint), by `<service>.<namespace>`.
    services: BTreeMap<String, Ipv4Addr>,
}

/// The Pod network of one stand-in.
pub struct Network {
    prefix: [u8; 3],
    hosts: PathBuf,
    state: Mutex<State>,
}

impl Network {
    pub fn new(prefix: &str, hosts: &Path) -> Result<Self, NetworkError> {
        let octets: Vec<u8> = prefix
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| NetworkError::Prefix(prefix.to_owned()))?;
        let [a, b, c] = octets[..] else {
            return Err(NetworkError::Prefix(prefix.to_owned()));
        };
        if a != 127 {
            return Err(NetworkError::Prefix(prefix.to_owned()));
        }
        let network = Network { prefix: [a, b, c], hosts: hosts.to_owned(), state: Mutex::new(State::default()) };
        network.write(&network.state.lock().expect("network state lock"))?;
        Ok(network)
    }

    pub fn hosts_file(&self) -> &Path {
        &self.hosts
    }

    fn ip(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], octet)
    }

    /// Gives the Pod `uid` an address (the same one on every call) and publishes its DNS names.
    pub fn attach(&self, uid: &str, names: Vec<String>) -> Result<Ipv4Addr, NetworkError> {
        let mut state = self.state.lock().expect("network state lock");
        let octet = match state.addresses.get(uid) {
            Some(octet) => *octet,
            None => {
                let used: Vec<u8> = state.addresses.values().copied().collect();
                let octet = (2..=254u8).find(|o| !used.contains(o)).ok_or_else(|| {
                    NetworkError::Exhausted(self.prefix.iter().map(u8::to_string).collect::<Vec<_>>().join("."))
                })?;
                state.addresses.insert(uid.to_owned(), octet);
                octet
            }
        };
        state.pod_names.insert(uid.to_owned(), names);
        self.write(&state)?;
        Ok(self.ip(octet))
    }

    /// Frees the Pod's address and removes its names.
    pub fn detach(&self, uid: &str) -> Result<(), NetworkError> {
        let mut state = self.state.lock().expect("network state lock");
        state.addresses.remove(uid);
        state.pod_names.remove(uid);
        self.write(&state)
    }

    /// Points `<service>.<namespace>.svc` at `address`, or removes it when `None`.
    pub fn set_service(&self, service: &str, namespace: &str, address: Option<Ipv4Addr>) -> Result<(), NetworkError> {
        let mut state = self.state.lock().expect("network state lock");
        let key = format!("{service}.{namespace}");
        let changed = match address {
            Some(ip) => state.services.insert(key, ip) != Some(ip),
            None => state.services.remove(&key).is_some(),
        };
        if changed {
            self.write(&state)?;
        }
        Ok(())
    }

    fn write(&self, state: &State) -> Result<(), NetworkError> {
        let mut text = String::from(
            "# Written by kubelet-standin: the Pod network's DNS names.\n127.0.0.1 localhost\n::1 localhost\n",
        );
        let mut pods: Vec<(&String, &u8)> = state.addresses.iter().collect();
        pods.sort_by_key(|(_, octet)| **octet);
        for (uid, octet) in pods {
            for name in state.pod_names.get(uid).into_iter().flatten() {
                text.push_str(&format!("{} {name} {name}.cluster.local\n", self.ip(*octet)));
            }
        }
        for (service, ip) in &state.services {
            text.push_str(&format!("{ip} {service}.svc {service}.svc.cluster.local\n"));
        }
        let error = |source| NetworkError::Hosts { path: self.hosts.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&self.hosts).map_err(error)?;
        file.write_all(text.as_bytes()).map_err(error)
    }
}

/// The names under `.svc` a Pod is reachable by: `<hostname>.<subdomain>.<namespace>.svc` when the Pod
/// has a hostname and subdomain (StatefulSet Pods do), nothing otherwise (plain Pods are reached
/// through Services).
pub fn pod_dns_names(namespace: &str, hostname: Option<&str>, subdomain: Option<&str>) -> Vec<String> {
    match (hostname, subdomain) {
        (Some(host), Some(sub)) => vec![format!("{host}.{sub}.{namespace}.svc")],
        _ => Vec::new(),
    }
}

/// C source of the `LD_PRELOAD` library that moves wildcard binds onto the Pod's address.
///
/// In Kubernetes each Pod has its own network namespace, so three brokers can all listen on
/// `0.0.0.0:26502`. Here all Pods share the host's network; the library rewrites an IPv4 `bind` to
/// `0.0.0.0` into a bind to `$KUBELET_STANDIN_POD_IP`, so each process gets the ports it asked for on
/// its own address and the programs run unchanged.
pub const BIND_SHIM_SOURCE: &str = include_str!("bind_pod_ip.c");
