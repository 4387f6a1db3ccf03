//! A `Gateway` becomes a Deployment of stateless gateways and a Service in front of them.
//!
//! Gateways take their image and version from their Cluster unless they name their own, so upgrading
//! a Cluster upgrades its gateways too (after the brokers, once orchestration exists). The broker list
//! is derived from the Cluster's size, so scaling the Cluster rewrites the gateways' arguments.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::cluster::{
    broker_addresses, management_probes, pod_security_context, restricted_security_context, tmp_volume,
};
use super::meta::{gateway_selector_labels, object_meta, standard_labels, Defaults};
use super::ports;
use crate::crd::{Cluster, Gateway};

/// Why a Gateway cannot be turned into objects.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GatewayBuildError {
    #[error("the Gateway has no {0}; only stored objects can be built")]
    MissingMetadata(&'static str),
}

/// Everything a Gateway becomes.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayObjects {
    pub deployment: Deployment,
    pub service: Service,
}

impl GatewayObjects {
    pub fn build(gateway: &Gateway, cluster: &Cluster, defaults: &Defaults) -> Result<Self, GatewayBuildError> {
        Ok(GatewayObjects {
            deployment: build_deployment(gateway, cluster, defaults)?,
            service: build_service(gateway, cluster)?,
        })
    }
}

fn version<'a>(gateway: &'a Gateway, cluster: &'a Cluster) -> &'a str {
    gateway.spec.version.as_deref().unwrap_or(&cluster.spec.version)
}

fn meta(gateway: &Gateway, cluster: &Cluster) -> Result<ObjectMeta, GatewayBuildError> {
    let namespace = gateway.namespace().ok_or(GatewayBuildError::MissingMetadata("namespace"))?;
    let owner = gateway.controller_owner_ref(&()).ok_or(GatewayBuildError::MissingMetadata("name or uid"))?;
    let name = gateway.name_any();
    let mut labels = standard_labels(gateway_selector_labels(&name), version(gateway, cluster));
    labels.insert("waggle.dev/cluster".to_owned(), cluster.name_any());
    Ok(object_meta(name, &namespace, labels, owner))
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

pub fn build_deployment(
    gateway: &Gateway,
    cluster: &Cluster,
    defaults: &Defaults,
) -> Result<Deployment, GatewayBuildError> {
    let metadata = meta(gateway, cluster)?;
    let name = gateway.name_any();
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let selector = gateway_selector_labels(&name);
    let brokers = broker_addresses(&cluster.name_any(), &namespace, cluster.spec.brokers, ports::BROKER_COMMAND);
    let repository = gateway.spec.image.as_deref().or(cluster.spec.image.as_deref()).unwrap_or(&defaults.image);
    let pull_policy = gateway.spec.image_pull_policy.or(cluster.spec.image_pull_policy);
    let (startup, liveness, readiness) = management_probes();
    let (tmp, tmp_mount) = tmp_volume();

    let container = Container {
        name: "gateway".to_owned(),
        image: Some(format!("{repository}:{}", version(gateway, cluster))),
        image_pull_policy: pull_policy.map(|p| p.as_str().to_owned()),
        args: Some(vec!["gateway".to_owned(), "--brokers".to_owned(), brokers.join(",")]),
        ports: Some(vec![
            port("grpc", ports::GATEWAY_GRPC),
            port("rest", ports::GATEWAY_REST),
            port("management", ports::MANAGEMENT),
        ]),
        resources: gateway.spec.resources.clone(),
        startup_probe: Some(startup),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
        security_context: Some(restricted_security_context()),
        volume_mounts: Some(vec![tmp_mount]),
        ..Container::default()
    };
    let volumes: Vec<Volume> = vec![tmp];

    Ok(Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(gateway.spec.replicas),
            selector: LabelSelector { match_labels: Some(selector), ..LabelSelector::default() },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: metadata.labels.clone(), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security_context()),
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        metadata,
        ..Deployment::default()
    })
}

pub fn build_service(gateway: &Gateway, cluster: &Cluster) -> Result<Service, GatewayBuildError> {
    let mut metadata = meta(gateway, cluster)?;
    let svc = &gateway.spec.service;
    if !svc.annotations.is_empty() {
        metadata.annotations = Some(svc.annotations.clone());
    }
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(svc.type_.as_str().to_owned()),
            selector: Some(gateway_selector_labels(&gateway.name_any())),
            ports: Some(vec![port("grpc", svc.grpc_port), port("rest", svc.rest_port)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
