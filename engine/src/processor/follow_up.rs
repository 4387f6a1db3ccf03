//! Bounded processing runs: long runs of element activations yield, endless ones raise incidents.
//!
//! Follow-up work (activating the next element, completing a scope) normally runs to the end inside
//! the command that caused it (see the module docs of [`super`]). A process whose elements never
//! wait (a loop through gateways and tasks without jobs) would make that run endless: the partition
//! would process one command forever while its memory grows. So a run counts its steps, and after
//! [`ProcessingLimits::max_steps_per_run`] it stops activating elements: each activation still
//! queued is written to the log as an `ACTIVATE_ELEMENT` command (Zeebe's follow-up command, with
//! the key of the element instance it will create) and kept in the `follow_ups` table. The run
//! finishes its other steps, its batch commits, and the next tick takes the deferred activations up
//! again, so other commands interleave with a long run just as in Zeebe's log-based processing.
//!
//! A deferred activation counts as a waiting token in its flow scope, so the scope does not complete
//! while one is pending. Each deferral also lengthens the instance's chain (reset when the instance
//! waits: a job, a message subscription, an incident, its end). An instance whose chain reaches
//! [`ProcessingLimits::max_deferrals_without_wait`] most likely loops endlessly: its next deferred
//! activation raises an incident instead of going on, which stops the loop, makes it visible and
//! lets a person fix the model or the variables and resolve the incident to go on.

use waggle_protocol::record::{
    ErrorType, Intent, ProcessInstanceIntent, ProcessInstanceRecord, RecordType, RecordValue, Rejection, RejectionType,
};

use super::element::Failure;
use super::{Ctx, Step};
use crate::model::ProcessModel;
use crate::state::tables::elements::{self, Lifecycle};
use crate::state::tables::follow_ups;

/// How much one processing run may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessingLimits {
    /// Limits of every FEEL evaluation.
    pub feel: crate::feel::Limits,
    /// Steps (element activations and completions) one run takes before it defers further
    /// activations to a later run.
    pub max_steps_per_run: u32,
    /// Deferrals in a row of one process instance without a wait state before its next deferred
    /// activation raises an incident. With the defaults an instance may take 100 000 steps in a row.
    pub max_deferrals_without_wait: u32,
}

impl Default for ProcessingLimits {
    fn default() -> Self {
        ProcessingLimits {
            feel: crate::feel::Limits::default(),
            max_steps_per_run: 1_000,
            max_deferrals_without_wait: 100,
        }
    }
}

/// Deferred activations taken up per tick at most; each may run up to `max_steps_per_run` steps.
pub(super) const FOLLOW_UPS_PER_TICK: usize = 64;

const ACTIVATE: Intent = Intent::ProcessInstance(ProcessInstanceIntent::ActivateElement);

impl Ctx<'_> {
    /// Whether this run has used up its steps, so that activations are deferred.
    pub(super) fn out_of_steps(&self) -> bool {
        self.steps >= self.limits.max_steps_per_run
    }

    /// Writes an `ACTIVATE_ELEMENT` command for an activation that this run will not take.
    pub(super) fn defer(&mut self, step: Step) {
        let Step::Activate { model, element, flow_scope_key, template } = step else { return };
        let key = if element == ProcessModel::ROOT { template.process_instance_key } else { self.new_key() };
        let record = Self::element_record(&model, element, flow_scope_key, &template);
        self.write(RecordType::Command, key, ACTIVATE, RecordValue::ProcessInstance(record), None);
        self.out.deferred_activations += 1;
    }

    /// Takes up deferred activations, oldest first, while this run has steps left.
    pub(super) fn continue_follow_ups(&mut self) {
        for key in follow_ups::oldest(&*self.kv, FOLLOW_UPS_PER_TICK) {
            if self.out_of_steps() {
                break;
            }
            self.continue_follow_up(key);
            self.run_queue();
        }
    }

    pub(super) fn continue_follow_up(&mut self, key: i64) {
        let Some(record) = follow_ups::get(&*self.kv, key) else { return };
        let model = self.model(record.process_definition_key);
        let element = model.as_ref().and_then(|m| m.find(&record.element_id));
        let (Some(model), Some(element)) = (model, element) else {
            return self.drop_follow_up(key, record, "its process definition is gone");
        };
        if element != ProcessModel::ROOT
            && !elements::get(&*self.kv, record.flow_scope_key).is_some_and(|s| s.lifecycle == Lifecycle::Activated)
        {
            return self.drop_follow_up(key, record, "its flow scope is no longer active");
        }
        let chain = follow_ups::chain(&*self.kv, record.process_instance_key);
        let endless = chain >= self.limits.max_deferrals_without_wait;
        let steps = u64::from(chain) * u64::from(self.limits.max_steps_per_run);
        if !endless {
            return self.activate_element_as(&model, element, record.flow_scope_key, &record, key);
        }
        let message = format!(
            "Expected the process instance to reach a wait state, but it took more than {steps} element steps \
             without one ({chain} deferred runs, the limit max_deferrals_without_wait); it probably loops \
             endlessly. Fix the loop's condition or variables, then resolve this incident to go on"
        );
        self.out.loop_incidents += 1;
        self.hold_follow_up(key, record, message);
    }

    /// Starts a deferred activation and holds it there with an incident carrying `message`:
    /// resolving the incident goes on with the activation.
    pub(super) fn hold_follow_up(&mut self, key: i64, record: ProcessInstanceRecord, message: String) {
        self.event(
            key,
            Intent::ProcessInstance(ProcessInstanceIntent::ElementActivating),
            RecordValue::ProcessInstance(record),
        );
        let Some(instance) = elements::get(&*self.kv, key) else { return };
        self.raise_incident(&instance, Failure { error_type: ErrorType::Unknown, message }, -1);
    }

    /// Rejects a deferred activation that cannot be taken up any more.
    fn drop_follow_up(&mut self, key: i64, record: ProcessInstanceRecord, why: &str) {
        let reason = format!("Expected to activate element '{}', but {why}", record.element_id);
        let rejection = Rejection { kind: RejectionType::InvalidState, reason };
        self.write(RecordType::CommandRejection, key, ACTIVATE, RecordValue::ProcessInstance(record), Some(rejection));
    }
}
