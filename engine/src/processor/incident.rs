//! Incidents: raised where an instance cannot go on without a person, resolved when they fixed it.

use waggle_protocol::command::CommandResult;
use waggle_protocol::record::{IncidentIntent, IncidentRecord, Intent, RecordValue, RejectionType};

use super::element::Failure;
use super::Ctx;
use crate::state::tables::elements::ElementInstance;
use crate::state::tables::{incidents, jobs};

impl Ctx<'_> {
    /// Raises an incident on an element instance (and the job that failed, if `job_key` > 0).
    pub(super) fn raise_incident(&mut self, instance: &ElementInstance, failure: Failure, job_key: i64) {
        let r = &instance.record;
        let incident = IncidentRecord {
            error_type: failure.error_type,
            error_message: failure.message,
            bpmn_process_id: r.bpmn_process_id.clone(),
            process_definition_key: r.process_definition_key,
            process_instance_key: r.process_instance_key,
            element_id: r.element_id.clone(),
            element_instance_key: instance.key,
            job_key,
            variable_scope_key: instance.key,
            tenant_id: r.tenant_id.clone(),
        };
        let key = self.new_key();
        self.event(key, Intent::Incident(IncidentIntent::Created), RecordValue::Incident(incident));
    }

    /// Resolves the incidents of a terminated element instance: nobody can fix them any more.
    pub(super) fn resolve_incidents_of(&mut self, element_instance_key: i64) {
        for key in incidents::of_element(&*self.kv, element_instance_key) {
            if let Some(incident) = incidents::get(&*self.kv, key) {
                self.event(key, Intent::Incident(IncidentIntent::Resolved), RecordValue::Incident(incident));
            }
        }
    }

    pub(super) fn resolve_incident(&mut self, incident_key: i64) {
        let intent = Intent::Incident(IncidentIntent::Resolve);
        let Some(incident) = incidents::get(&*self.kv, incident_key) else {
            let reason =
                format!("Expected to resolve incident with key '{incident_key}', but no such incident was found");
            self.command(incident_key, intent, RecordValue::Incident(IncidentRecord::default()));
            return self.reject(
                incident_key,
                intent,
                RecordValue::Incident(IncidentRecord::default()),
                (RejectionType::NotFound, reason),
            );
        };
        self.command(incident_key, intent, RecordValue::Incident(incident.clone()));
        let job = (incident.job_key > 0).then(|| jobs::get(&*self.kv, incident.job_key)).flatten();
        if let Some(job) = &job {
            if job.record.retries <= 0 && incident.error_type == waggle_protocol::record::ErrorType::JobNoRetries {
                let reason = format!(
                    "Expected to resolve incident with key '{incident_key}', but job '{}' has no retries left; update its retries first (UpdateJobRetries)",
                    job.key
                );
                return self.reject(
                    incident_key,
                    intent,
                    RecordValue::Incident(incident),
                    (RejectionType::InvalidState, reason),
                );
            }
        }
        self.event(incident_key, Intent::Incident(IncidentIntent::Resolved), RecordValue::Incident(incident.clone()));
        match job {
            Some(job) => self.out.jobs_available.push(job.record.job_type),
            None => self.retry_element(incident.element_instance_key),
        }
        self.out.result = Some(CommandResult::Done { key: incident_key });
    }
}
