//! Jobs: the work a BPMN task hands to a worker, and everything a worker may say about it.

use serde_json::Value as Json;
use waggle_protocol::command::{ActivateJobs, ActivatedJob, CommandResult, DEFAULT_TENANT};
use waggle_protocol::record::{
    ErrorType, Intent, JobBatchIntent, JobBatchRecord, JobIntent, JobRecord, RecordValue, RejectionType,
};

use super::element::Failure;
use super::variables::ScopeView;
use super::{parse_document, Ctx, Rejected, Step, TICK_LIMIT};
use crate::state::tables::elements;
use crate::state::tables::jobs::{self, Job, JobState};

/// Upper bound for the variables of one activation batch, below gRPC's default 4 MiB message limit.
const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;

fn not_found(action: &str, job_key: i64) -> Rejected {
    (RejectionType::NotFound, format!("Expected to {action} job with key '{job_key}', but no such job was found"))
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Activatable => "ACTIVATABLE",
        JobState::Activated => "ACTIVATED",
        JobState::BackingOff => "FAILED (waiting for its retry back-off)",
        JobState::Failed => "FAILED",
    }
}

impl Ctx<'_> {
    /// Looks a job up for a command, writing the command record and a rejection if it is missing or
    /// in a state the command does not accept.
    fn job_for(&mut self, job_key: i64, intent: JobIntent, action: &str, accepted: &[JobState]) -> Option<Job> {
        let intent_of = Intent::Job(intent);
        let Some(job) = jobs::get(&*self.kv, job_key) else {
            self.command(job_key, intent_of, RecordValue::Job(JobRecord::default()));
            self.reject(job_key, intent_of, RecordValue::Job(JobRecord::default()), not_found(action, job_key));
            return None;
        };
        self.command(job_key, intent_of, RecordValue::Job(job.record.clone()));
        if !accepted.contains(&job.state) {
            let reason = format!(
                "Expected to {action} job with key '{job_key}', but it is in state '{}'",
                state_name(job.state)
            );
            self.reject(job_key, intent_of, RecordValue::Job(job.record), (RejectionType::InvalidState, reason));
            return None;
        }
        Some(job)
    }

    pub(super) fn activate_jobs(&mut self, request: ActivateJobs) {
        let tenants: Vec<String> =
            if request.tenant_ids.is_empty() { vec![DEFAULT_TENANT.to_string()] } else { request.tenant_ids.clone() };
        let max = request.max_jobs_to_activate.max(0) as usize;
        let deadline = self.now.saturating_add(request.timeout);
        let mut batch = JobBatchRecord {
            job_type: request.job_type.clone(),
            worker: request.worker.clone(),
            timeout: request.timeout,
            max_jobs_to_activate: request.max_jobs_to_activate,
            fetch_variables: request.fetch_variables.clone(),
            tenant_ids: tenants.clone(),
            ..Default::default()
        };
        let mut activated = Vec::new();
        let mut bytes = 0;
        for job_key in jobs::activatable(&*self.kv, &request.job_type, max.saturating_mul(4).max(max)) {
            if activated.len() == max {
                break;
            }
            let Some(job) = jobs::get(&*self.kv, job_key) else { continue };
            if !tenants.contains(&job.record.tenant_id) {
                continue;
            }
            let variables = Json::Object(
                ScopeView::new(&*self.kv, job.record.element_instance_key, None).fetch(&request.fetch_variables),
            )
            .to_string();
            if !activated.is_empty() && bytes + variables.len() > MAX_BATCH_BYTES {
                batch.truncated = true;
                break;
            }
            bytes += variables.len();
            let record = JobRecord {
                deadline,
                worker: request.worker.clone(),
                variables,
                timeout: request.timeout,
                ..job.record
            };
            activated.push(ActivatedJob {
                key: job_key,
                job_type: record.job_type.clone(),
                process_instance_key: record.process_instance_key,
                bpmn_process_id: record.bpmn_process_id.clone(),
                process_definition_version: record.process_definition_version,
                process_definition_key: record.process_definition_key,
                element_id: record.element_id.clone(),
                element_instance_key: record.element_instance_key,
                custom_headers: record.custom_headers.clone(),
                worker: record.worker.clone(),
                retries: record.retries,
                deadline,
                variables: record.variables.clone(),
                tenant_id: record.tenant_id.clone(),
            });
            batch.job_keys.push(job_key);
            batch.jobs.push(record);
        }
        if !activated.is_empty() {
            // An empty poll changes nothing, so it writes nothing: idle workers cost no log space.
            let key = self.new_key();
            self.command(
                key,
                Intent::JobBatch(JobBatchIntent::Activate),
                RecordValue::JobBatch(JobBatchRecord { jobs: vec![], job_keys: vec![], ..batch.clone() }),
            );
            self.event(key, Intent::JobBatch(JobBatchIntent::Activated), RecordValue::JobBatch(batch));
        }
        self.out.result = Some(CommandResult::JobsActivated { jobs: activated });
    }

    pub(super) fn complete_job(&mut self, job_key: i64, variables: String) {
        let Some(job) =
            self.job_for(job_key, JobIntent::Complete, "complete", &[JobState::Activatable, JobState::Activated])
        else {
            return;
        };
        let document = match parse_document(&variables) {
            Ok(d) => d,
            Err(rejection) => {
                return self.reject(job_key, Intent::Job(JobIntent::Complete), RecordValue::Job(job.record), rejection)
            }
        };
        let element_key = job.record.element_instance_key;
        self.event(
            job_key,
            Intent::Job(JobIntent::Completed),
            RecordValue::Job(JobRecord { variables, ..job.record.clone() }),
        );
        if let Some(model) = self.model(job.record.process_definition_key) {
            self.apply_payload(&model, element_key, &document);
        }
        self.queue.push_back(Step::Complete { key: element_key });
        self.out.result = Some(CommandResult::Done { key: job_key });
    }

    pub(super) fn fail_job(
        &mut self,
        job_key: i64,
        retries: i32,
        error_message: String,
        retry_backoff: i64,
        variables: String,
    ) {
        let intent = Intent::Job(JobIntent::Fail);
        let Some(job) = self.job_for(job_key, JobIntent::Fail, "fail", &[JobState::Activated]) else { return };
        if retry_backoff < 0 {
            let reason = format!(
                "Expected the retry back-off of job '{job_key}' to be zero or positive, but it was {retry_backoff} ms"
            );
            return self.reject(
                job_key,
                intent,
                RecordValue::Job(job.record),
                (RejectionType::InvalidArgument, reason),
            );
        }
        let document = match parse_document(&variables) {
            Ok(d) => d,
            Err(rejection) => return self.reject(job_key, intent, RecordValue::Job(job.record), rejection),
        };
        let retries = retries.max(0);
        let recurring_time = if retries > 0 && retry_backoff > 0 { self.now.saturating_add(retry_backoff) } else { -1 };
        let failed = JobRecord {
            retries,
            error_message: error_message.clone(),
            retry_backoff,
            recurring_time,
            variables,
            ..job.record.clone()
        };
        self.event(job_key, Intent::Job(JobIntent::Failed), RecordValue::Job(failed));
        self.merge_local(job.record.element_instance_key, &document);
        if retries == 0 {
            if let Some(instance) = elements::get(&*self.kv, job.record.element_instance_key) {
                let message =
                    if error_message.is_empty() { "No more retries left.".to_string() } else { error_message };
                self.raise_incident(&instance, Failure { error_type: ErrorType::JobNoRetries, message }, job_key);
            }
        } else if retry_backoff == 0 {
            self.out.jobs_available.push(job.record.job_type);
        }
        self.out.result = Some(CommandResult::Done { key: job_key });
    }

    pub(super) fn throw_job_error(
        &mut self,
        job_key: i64,
        error_code: String,
        error_message: String,
        variables: String,
    ) {
        let intent = Intent::Job(JobIntent::ThrowError);
        let Some(job) = self.job_for(
            job_key,
            JobIntent::ThrowError,
            "throw an error for",
            &[JobState::Activatable, JobState::Activated],
        ) else {
            return;
        };
        if error_code.is_empty() {
            let reason = "Expected an error code to throw, but it was empty".to_string();
            return self.reject(
                job_key,
                intent,
                RecordValue::Job(job.record),
                (RejectionType::InvalidArgument, reason),
            );
        }
        let document = match parse_document(&variables) {
            Ok(d) => d,
            Err(rejection) => return self.reject(job_key, intent, RecordValue::Job(job.record), rejection),
        };
        let thrown = JobRecord {
            error_code: error_code.clone(),
            error_message: error_message.clone(),
            variables,
            ..job.record.clone()
        };
        self.event(job_key, Intent::Job(JobIntent::ErrorThrown), RecordValue::Job(thrown));
        let element_key = job.record.element_instance_key;
        if !self.throw_error(element_key, &error_code, &error_message, &document) {
            if let Some(instance) = elements::get(&*self.kv, element_key) {
                let message = format!(
                    "Expected to throw an error event with the code '{error_code}' with message '{error_message}', but it was not caught. No error events are available in the scope."
                );
                self.raise_incident(
                    &instance,
                    Failure { error_type: ErrorType::UnhandledErrorEvent, message },
                    job_key,
                );
            }
        }
        self.out.result = Some(CommandResult::Done { key: job_key });
    }

    pub(super) fn update_job_retries(&mut self, job_key: i64, retries: i32) {
        let intent = Intent::Job(JobIntent::UpdateRetries);
        let all = [JobState::Activatable, JobState::Activated, JobState::BackingOff, JobState::Failed];
        let Some(job) = self.job_for(job_key, JobIntent::UpdateRetries, "update retries of", &all) else { return };
        if retries < 1 {
            let reason = format!("Expected to update retries for job with key '{job_key}' with a positive amount of retries, but the amount given was '{retries}'");
            return self.reject(
                job_key,
                intent,
                RecordValue::Job(job.record),
                (RejectionType::InvalidArgument, reason),
            );
        }
        self.event(
            job_key,
            Intent::Job(JobIntent::RetriesUpdated),
            RecordValue::Job(JobRecord { retries, ..job.record }),
        );
        self.out.result = Some(CommandResult::Done { key: job_key });
    }

    pub(super) fn update_job_timeout(&mut self, job_key: i64, timeout: i64) {
        let intent = Intent::Job(JobIntent::UpdateTimeout);
        let Some(job) =
            self.job_for(job_key, JobIntent::UpdateTimeout, "update the timeout of", &[JobState::Activated])
        else {
            return;
        };
        if timeout < 0 {
            let reason = format!("Expected a timeout of zero or more ms for job '{job_key}', but it was {timeout}");
            return self.reject(
                job_key,
                intent,
                RecordValue::Job(job.record),
                (RejectionType::InvalidArgument, reason),
            );
        }
        let deadline = self.now.saturating_add(timeout);
        self.event(
            job_key,
            Intent::Job(JobIntent::TimeoutUpdated),
            RecordValue::Job(JobRecord { deadline, timeout, ..job.record }),
        );
        self.out.result = Some(CommandResult::Done { key: job_key });
    }

    pub(super) fn time_out_jobs(&mut self) {
        for job_key in jobs::timed_out(&*self.kv, self.now, TICK_LIMIT) {
            self.time_out_job(job_key);
        }
    }

    pub(super) fn time_out_job(&mut self, job_key: i64) {
        let Some(job) = jobs::get(&*self.kv, job_key) else { return };
        self.command(job_key, Intent::Job(JobIntent::TimeOut), RecordValue::Job(job.record.clone()));
        self.event(job_key, Intent::Job(JobIntent::TimedOut), RecordValue::Job(job.record.clone()));
        self.out.jobs_available.push(job.record.job_type);
    }

    pub(super) fn recur_jobs_after_backoff(&mut self) {
        for job_key in jobs::backoff_over(&*self.kv, self.now, TICK_LIMIT) {
            self.recur_job_after_backoff(job_key);
        }
    }

    pub(super) fn recur_job_after_backoff(&mut self, job_key: i64) {
        let Some(job) = jobs::get(&*self.kv, job_key) else { return };
        self.command(job_key, Intent::Job(JobIntent::RecurAfterBackoff), RecordValue::Job(job.record.clone()));
        self.event(job_key, Intent::Job(JobIntent::RecurredAfterBackoff), RecordValue::Job(job.record.clone()));
        self.out.jobs_available.push(job.record.job_type);
    }
}
