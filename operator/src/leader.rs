//! Leader election through a `coordination.k8s.io/v1` Lease, so several operator replicas can run and
//! exactly one reconciles.
//!
//! The API server's optimistic concurrency does the hard part: every write of the Lease carries the
//! `resourceVersion` that was read, so when two replicas race, one gets `409 Conflict` and simply is
//! not the leader this round. A leader renews well within the lease duration; a replica that cannot
//! renew before its lease runs out stops itself (the process exits and is restarted as a candidate),
//! because another replica may already be reconciling.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {name}: {source}")]
    Api { name: String, source: kube::Error },
    #[error("could not renew Lease {0} before it expired; another replica may lead now")]
    Lost(String),
}

/// One replica's handle on the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseLock { api, name: name.to_owned(), identity: identity.to_owned(), duration }
    }

    fn error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api { name: self.name.clone(), source }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Takes the Lease if it is free or expired, or renews it if this replica holds it. Returns
    /// whether this replica leads after the call. Losing a race (409) is not an error.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, LeaderError> {
        let current = match self.api.get(&self.name).await {
            Ok(lease) => lease,
            Err(e) if is_not_found(&e) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(now, None, 0)),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_conflict(&e) => Ok(false),
                    Err(e) => Err(self.error(e)),
                };
            }
            Err(e) => return Err(self.error(e)),
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.identity {
            self.spec(now, spec.acquire_time.clone(), transitions)
        } else if holder.is_empty() || expired(&spec, now) {
            self.spec(now, None, transitions + 1)
        } else {
            return Ok(false);
        };
        let mut updated = current;
        updated.spec = Some(new_spec);
        match self.api.replace(&self.name, &PostParams::default(), &updated).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby takes over without waiting for expiry.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let mut lease = self.api.get(&self.name).await.map_err(|e| self.error(e))?;
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Waits until this replica leads (or `shutdown` is cancelled: then returns false).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => return true,
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads; waiting"),
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.duration / 3) => {}
            }
        }
    }

    /// Renews the Lease every third of its duration until `shutdown` is cancelled. Returns an error
    /// once renewal has failed for a whole lease duration.
    pub async fn keep(&self, shutdown: &CancellationToken) -> Result<(), LeaderError> {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.duration / 3) => {}
            }
            match self.try_acquire_or_renew(Timestamp::now()).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return Err(LeaderError::Lost(self.name.clone())),
                Err(error) => tracing::warn!(%error, "renewing the lease failed; retrying"),
            }
            if last_renewed.elapsed() >= self.duration {
                return Err(LeaderError::Lost(self.name.clone()));
            }
        }
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0.checked_add(duration).map(|end| end <= now).unwrap_or(true)
}
