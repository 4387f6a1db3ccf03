//! The engine's driver on one partition replica: it processes commands while the replica leads.
//!
//! The driver is one task per replica. It takes commands from a bounded queue (a full queue is
//! backpressure), processes everything waiting as one batch on an overlay of the applied state, appends
//! the resulting records as one raft entry, and answers the clients once that entry is committed and
//! applied. Batching amortises the fsync of the raft log over every command that arrived meanwhile.
//! The overlay's changes go to the state machine with the entry, so that the leader does not apply its
//! own records a second time ([`crate::raft::handoff`]). Time-driven work (job time-outs, back-offs,
//! message expiry) enters the same queue as a tick. A retried client command that the partition has
//! already answered is answered again instead of being processed twice ([`crate::dedup`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use waggle_engine::processor::{Engine, Input, Involved, Output, PartitionMessage, ProcessingLimits, REPORT_AS_BUG};
use waggle_engine::state::{tables, Overlay};
use waggle_protocol::command::{self, BrokerError, BrokerReply, ClientCommand, CommandResult, RequestId};
use waggle_protocol::record::{Answer, RecordBatch, RejectionType};

use super::{leads_without_quorum, now_millis, JobAvailable, PartitionSetup};
use crate::dedup;
use crate::disk::DiskWatch;
use crate::metrics::Metrics;
use crate::raft::handoff::{self, Handoff};
use crate::raft::Raft;
use crate::relay::Relay;
use crate::storage::{Database, StateReader};

/// How many commands one batch takes at most.
const MAX_BATCH: usize = 512;
/// How long the driver sleeps when nothing is due: it re-checks for due work at least this often.
pub(super) const IDLE_TICK: Duration = Duration::from_millis(1000);
/// How often a follower checks whether it leads now.
pub(super) const FOLLOWER_POLL: Duration = Duration::from_millis(100);
/// How long the tick after a failed one waits at first, and at most (see [`Driver::pace_ticks`]).
const TICK_PAUSE_FIRST: Duration = Duration::from_secs(1);
const TICK_PAUSE_MAX: Duration = Duration::from_secs(16);
/// How long a deploy answer waits for the other partitions to have the deployment.
const DEPLOYMENT_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Submission {
    pub(super) input: Input,
    pub(super) reply: Option<oneshot::Sender<BrokerReply>>,
    /// The id the gateway gave the client request, the same on each of its retries.
    pub(super) request: Option<RequestId>,
    pub(super) received: Instant,
}

/// An input the engine has processed in the batch being built, waiting for the batch to commit.
struct Processed {
    reply: Option<oneshot::Sender<BrokerReply>>,
    request: Option<RequestId>,
    awaits: bool,
    name: &'static str,
    received: Instant,
    output: Output,
}

/// The clients waiting for one instance to complete.
struct Waiter {
    reply: oneshot::Sender<BrokerReply>,
    /// The id of the request that created the instance, whose remembered answer becomes the result.
    request: Option<RequestId>,
    /// Retries of that request that arrived while the first was still waiting.
    copies: Vec<oneshot::Sender<BrokerReply>>,
}

impl Waiter {
    fn new(reply: oneshot::Sender<BrokerReply>, request: Option<RequestId>) -> Waiter {
        Waiter { reply, request, copies: Vec::new() }
    }

    fn is_closed(&self) -> bool {
        self.reply.is_closed() && self.copies.iter().all(|copy| copy.is_closed())
    }

    fn send(self, result: CommandResult) {
        for copy in self.copies {
            let _ = copy.send(Ok(result.clone()));
        }
        let _ = self.reply.send(Ok(result));
    }
}

/// A client command whose request the partition has answered before, or is answering in the batch
/// being built: it is answered like the first copy and not processed.
struct Retry {
    reply: Option<oneshot::Sender<BrokerReply>>,
    request: RequestId,
    awaits: bool,
    name: &'static str,
}

pub(super) struct Driver {
    /// See [`super::Replica::driver_beat`].
    beat: Arc<AtomicU64>,
    id: u32,
    node_id: u64,
    raft: Raft,
    db: Arc<Database>,
    engine: Engine,
    partition_count: u32,
    receiver: mpsc::Receiver<Submission>,
    /// Clients waiting for an instance to complete, by process instance key, with their request ids.
    waiters: HashMap<i64, Waiter>,
    /// The term in which this replica caught up on everything before it started leading.
    ready_term: Option<u64>,
    metrics: Arc<Metrics>,
    jobs: broadcast::Sender<JobAvailable>,
    relay: Arc<Relay>,
    /// Deploy answers held until every partition has the deployment, by deployment key.
    deployments: HashMap<i64, (oneshot::Sender<BrokerReply>, CommandResult, Instant)>,
    limits: ProcessingLimits,
    disk: Arc<DiskWatch>,
    /// Whether this replica has given up leading because its disk is below the replication
    /// watermark (see [`Driver::yield_leadership_while_low_on_disk`]).
    yielding: bool,
    /// See [`PartitionSetup::dedup_window`].
    dedup_window_ms: i64,
    /// Hands the state changes of each processed batch to the state machine.
    handoff: Arc<Handoff>,
    /// How long ticks wait after the last failed one, and until when (see [`Driver::pace_ticks`]).
    tick_pause: Option<(Duration, Instant)>,
}

/// Runs `process` on the overlay; if it panics, undoes its writes and returns the panic's message.
fn guarded(overlay: &mut Overlay<'_>, process: impl FnOnce(&mut Overlay<'_>) -> Output) -> Result<Output, String> {
    overlay.checkpoint();
    let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(&mut *overlay)));
    match processed {
        Ok(output) => {
            overlay.release();
            Ok(output)
        }
        Err(panic) => {
            overlay.rollback();
            Err(panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into()))
        }
    }
}

impl Driver {
    pub(super) fn new(
        setup: &PartitionSetup,
        raft: Raft,
        db: Arc<Database>,
        handoff: Arc<Handoff>,
        receiver: mpsc::Receiver<Submission>,
        beat: Arc<AtomicU64>,
    ) -> Driver {
        let (id, partition_count) = (setup.partition_id, setup.partition_count);
        Driver {
            beat,
            id,
            node_id: setup.node_id,
            raft,
            db,
            engine: Engine::new(id, partition_count).with_limits(setup.processing),
            limits: setup.processing,
            partition_count,
            receiver,
            waiters: HashMap::new(),
            ready_term: None,
            metrics: setup.metrics.clone(),
            jobs: setup.jobs.clone(),
            relay: setup.relay.clone(),
            deployments: HashMap::new(),
            disk: setup.disk.clone(),
            yielding: false,
            dedup_window_ms: setup.dedup_window.as_millis() as i64,
            handoff,
            tick_pause: None,
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let label = self.id.to_string();
        loop {
            self.beat.store(now_millis() as u64, Ordering::Relaxed);
            self.yield_leadership_while_low_on_disk();
            // Only a leader has time-driven work; a follower just watches for becoming one.
            let leading = self.raft.metrics().borrow().current_leader == Some(self.node_id);
            let ticking = leading && !self.ticks_paused();
            let due = if ticking { self.engine.next_due(&StateReader::new(&self.db)) } else { None };
            let wait = match (leading, due) {
                (false, _) => FOLLOWER_POLL,
                (true, Some(due)) => Duration::from_millis((due - now_millis()).max(0) as u64).min(IDLE_TICK),
                (true, None) => IDLE_TICK,
            };
            let mut batch = Vec::new();
            let mut ticked = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.receiver.recv() => match received {
                    Some(submission) => batch.push(submission),
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {
                    if !leading {
                        self.ensure_leading().await;
                        continue;
                    }
                    self.waiters.retain(|_, waiter| !waiter.is_closed());
                    ticked = true;
                }
            }
            // Under steady load a command is always ready before the timer fires, so due work (job
            // time-outs, message expiry, resends, deferred activations) rides along with the batch
            // instead of waiting for a quiet moment that may never come.
            if (ticked && ticking) || due.is_some_and(|due| due <= now_millis()) {
                batch.push(Submission { input: Input::Tick, reply: None, request: None, received: Instant::now() });
            }
            while batch.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(submission) => batch.push(submission),
                    Err(_) => break,
                }
            }
            if !self.deployments.is_empty() {
                self.release_slow_deployments();
            }
            if !self.ensure_leading().await {
                self.refuse(batch);
                continue;
            }
            if let Err((free_bytes, watermark_bytes)) = self.disk.check_replication() {
                // Partition messages are resent by their source until acknowledged, and due work
                // stays due, so nothing is lost by not writing this batch.
                self.refuse_with(batch, BrokerError::LogSpaceLow { free_bytes, watermark_bytes });
                tokio::time::sleep(IDLE_TICK).await;
                continue;
            }
            self.process(batch, &label).await;
        }
        tracing::debug!(partition = self.id, "partition driver stopped");
    }

    /// A replica that may not write its log cannot serve as leader, while a replica with room could.
    /// openraft 0.9 has no leadership transfer, so a leader below the replication watermark stops
    /// sending heartbeats (its followers elect a new leader after an election timeout) and no
    /// replica below it stands for election; both resume once the disk has room again.
    fn yield_leadership_while_low_on_disk(&mut self) {
        let low = self.disk.check_replication().is_err();
        if low == self.yielding {
            return;
        }
        self.yielding = low;
        let config = self.raft.runtime_config();
        config.heartbeat(!low);
        config.elect(!low);
        if low {
            tracing::warn!(partition = self.id, "disk below the replication watermark: not leading this partition");
        } else {
            tracing::info!(partition = self.id, "disk has room again: may lead this partition");
        }
    }

    /// Appends a batch and waits until it is committed and applied, or until this replica stops
    /// leading the term it wrote in. openraft 0.9 leaves a write unanswered when its entries are
    /// replaced (a deposed leader that catches up by installing the new leader's snapshot), which
    /// would hang the driver for good. Giving up is safe: the entries commit under the next leader
    /// or never, and this replica processes again only after it leads a new term and has applied
    /// everything before it (see [`Driver::ensure_leading`]); a client's retry meets the request-id
    /// memory if the batch did commit.
    async fn write(&self, batch: RecordBatch) -> Result<(), String> {
        let mut metrics = self.raft.metrics();
        let term = metrics.borrow().current_term;
        let node_id = self.node_id;
        let deposed = metrics.wait_for(|m| m.current_term != term || m.current_leader != Some(node_id));
        tokio::select! {
            biased;
            written = self.raft.client_write(batch) => written.map(|_| ()).map_err(|e| e.to_string()),
            _ = deposed => Err(format!("this replica stopped leading term {term} before the batch committed")),
        }
    }

    /// Whether this replica leads and has applied everything committed before its term began.
    async fn ensure_leading(&mut self) -> bool {
        let (leader, term, cut_off) = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            (m.current_leader, m.current_term, leads_without_quorum(&m))
        };
        if leader != Some(self.node_id) || cut_off {
            self.ready_term = None;
            self.waiters.clear();
            self.deployments.clear();
            return false;
        }
        if self.ready_term == Some(term) {
            return true;
        }
        match self.raft.ensure_linearizable().await {
            Ok(_) => {
                // Models cached by a previous term may stem from batches that never committed.
                self.reset_engine();
                self.ready_term = Some(term);
                true
            }
            Err(e) => {
                tracing::info!(partition = self.id, error = %e, "not ready to lead yet");
                false
            }
        }
    }

    /// Answers deployments that some partition has not acknowledged within [`DEPLOYMENT_WAIT`]: the
    /// deployment is committed and will reach that partition when it is back, so the client need
    /// not wait for it.
    fn release_slow_deployments(&mut self) {
        let slow: Vec<i64> = self
            .deployments
            .iter()
            .filter(|(_, (.., since))| since.elapsed() >= DEPLOYMENT_WAIT)
            .map(|(k, _)| *k)
            .collect();
        for key in slow {
            if let Some((reply, result, _)) = self.deployments.remove(&key) {
                tracing::info!(
                    partition = self.id,
                    deployment = key,
                    "answering a deployment before every partition has it"
                );
                let _ = reply.send(Ok(result));
            }
        }
    }

    fn reset_engine(&mut self) {
        self.engine = Engine::new(self.id, self.partition_count).with_limits(self.limits);
    }

    fn refuse(&self, batch: Vec<Submission>) {
        let leader = self.raft.metrics().borrow().current_leader;
        self.refuse_with(batch, BrokerError::NotLeader { partition_id: self.id, leader });
    }

    fn refuse_with(&self, batch: Vec<Submission>, error: BrokerError) {
        for submission in batch {
            if let Some(reply) = submission.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }

    async fn process(&mut self, batch: Vec<Submission>, label: &str) {
        let now = now_millis();
        let mut outputs: Vec<Processed> = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        // The answers to remember, and where in them the latest answer to each request of this batch is.
        let mut answers: Vec<Answer> = Vec::new();
        let mut answered: HashMap<RequestId, usize> = HashMap::new();
        // Instances created in this batch for a client that waits for their result, with its request.
        let mut awaited: HashMap<i64, RequestId> = HashMap::new();
        // Retries with the encoded answer they get, and retries of requests first seen in this batch.
        let mut retries: Vec<(Retry, Vec<u8>)> = Vec::new();
        let mut repeated: Vec<Retry> = Vec::new();
        let base_position = self.handoff.applied_position();
        let db = self.db.clone();
        let processed_writes = {
            let reader = StateReader::new(&db);
            let mut overlay = Overlay::new(&reader);
            for submission in batch {
                let (awaits, name) = match &submission.input {
                    Input::Client(command @ ClientCommand::CreateProcessInstance(create)) => {
                        (create.await_result.is_some(), command.name())
                    }
                    Input::Client(command) => (false, command.name()),
                    Input::Partition(message) => (false, message.name()),
                    Input::Tick => (false, "Tick"),
                    Input::Due(due) => (false, due.name()),
                };
                let request = match &submission.input {
                    Input::Client(command) if dedup::applies_to(command) => submission.request,
                    _ => None,
                };
                if let Some(request) = request {
                    if answered.contains_key(&request) {
                        repeated.push(Retry { reply: submission.reply, request, awaits, name });
                        continue;
                    }
                    if let Some(answer) = dedup::remembered(&db, request, now) {
                        retries.push((Retry { reply: submission.reply, request, awaits, name }, answer));
                        continue;
                    }
                }
                let is_tick = matches!(submission.input, Input::Tick);
                let (mut output, failed) = self.process_guarded(&mut overlay, submission.input, name, label, now);
                if is_tick {
                    let still_failing = failed && !self.isolate_due_work(&mut overlay, &mut output, label, now);
                    self.pace_ticks(still_failing);
                }
                records.append(&mut output.records);
                if let (Some(request), Some(result)) = (request, &output.result) {
                    // A create whose client waits is answered when the instance completes, which
                    // may be in this very step.
                    let answer = match result {
                        CommandResult::ProcessInstanceCreated(created) if awaits => {
                            let key = created.process_instance_key;
                            match output.finished_instances.iter().find(|(instance, _)| *instance == key) {
                                Some((_, completed)) => completed,
                                None => {
                                    awaited.insert(key, request);
                                    result
                                }
                            }
                        }
                        result => result,
                    };
                    answered.insert(request, answers.len());
                    answers.push(Answer { request_id: request, result: command::encode(answer) });
                }
                for (instance, completed) in &output.finished_instances {
                    let waiting = awaited
                        .remove(instance)
                        .or_else(|| self.waiters.get(instance).and_then(|waiter| waiter.request));
                    if let Some(request) = waiting {
                        answered.insert(request, answers.len());
                        answers.push(Answer { request_id: request, result: command::encode(completed) });
                    }
                }
                let received = submission.received;
                outputs.push(Processed { reply: submission.reply, request, awaits, name, received, output });
            }
            overlay.into_writes()
        };
        for retry in repeated {
            // The latest answer: a waiting create's completion replaces its creation.
            let answer = answers[answered[&retry.request]].result.clone();
            retries.push((retry, answer));
        }
        if !records.is_empty() || !answers.is_empty() {
            self.metrics.batch_records.with_label_values(&[label]).observe(records.len() as f64);
            if let (Some(term), Some(base_position), Some(first)) = (self.ready_term, base_position, records.first()) {
                let first_position = first.position;
                self.handoff.offer(handoff::Processed {
                    term,
                    first_position,
                    base_position,
                    writes: processed_writes,
                });
            }
            let batch = RecordBatch::with_answers(records, now, now + self.dedup_window_ms, answers);
            let written = self.write(batch).await;
            self.handoff.withdraw();
            if let Err(e) = written {
                tracing::warn!(partition = self.id, error = %e, "could not commit a batch; its commands were not applied");
                self.reset_engine();
                self.ready_term = None;
                let leader = self.raft.metrics().borrow().current_leader;
                let replies =
                    outputs.into_iter().map(|p| p.reply).chain(retries.into_iter().map(|(retry, _)| retry.reply));
                for reply in replies.flatten() {
                    let _ = reply.send(Err(BrokerError::NotLeader { partition_id: self.id, leader }));
                }
                return;
            }
        }
        for Processed { reply, request, awaits, name, received, output } in outputs {
            let outcome = match &output.result {
                Some(CommandResult::Rejected { .. }) => "rejected",
                _ => "accepted",
            };
            self.metrics.commands.with_label_values(&[label, name, outcome]).inc();
            if output.deferred_activations > 0 {
                self.metrics
                    .deferred_activations
                    .with_label_values(&[label])
                    .inc_by(output.deferred_activations as u64);
            }
            if output.loop_incidents > 0 {
                self.metrics.loop_incidents.with_label_values(&[label]).inc_by(output.loop_incidents as u64);
            }
            self.metrics.processing_seconds.with_label_values(&[label]).observe(received.elapsed().as_secs_f64());
            if let (Some(reply), Some(result)) = (reply, output.result) {
                match (result, output.distributing) {
                    (CommandResult::ProcessInstanceCreated(created), _) if awaits => {
                        self.waiters.insert(created.process_instance_key, Waiter::new(reply, request));
                    }
                    (result @ CommandResult::Deployed { .. }, Some(deployment)) => {
                        self.deployments.insert(deployment, (reply, result, Instant::now()));
                    }
                    (result, _) => {
                        let _ = reply.send(Ok(result));
                    }
                }
            }
            for (instance, result) in output.finished_instances {
                if let Some(waiter) = self.waiters.remove(&instance) {
                    waiter.send(result);
                }
            }
            for job_type in output.jobs_available {
                let _ = self.jobs.send(JobAvailable { job_type, partition_id: self.id });
            }
            for (partition, message) in output.sends {
                self.metrics.partition_messages.with_label_values(&[label, &partition.to_string()]).inc();
                self.relay.send(partition, message);
            }
            for deployment in output.distributions_finished {
                if let Some((reply, result, _)) = self.deployments.remove(&deployment) {
                    let _ = reply.send(Ok(result));
                }
            }
        }
        for (retry, answer) in retries {
            self.metrics.commands.with_label_values(&[label, retry.name, "repeated"]).inc();
            self.answer_retry(retry, &answer);
        }
    }

    /// Processes one input on the overlay; whether processing failed is the second value.
    ///
    /// A panic in the engine (a bug that some command triggers) must not take the partition down,
    /// nor stop the inputs after it: the input's writes are undone, a client command is rejected
    /// saying so, and the batch goes on. An instance the input acted on is marked (a failed job, an
    /// incident), so that a person sees it instead of the instance waiting silently. A command from
    /// another partition is taken off its channel and held by an incident, so that the commands
    /// behind it go on (see [`Engine::hold_failed_partition_command`]).
    fn process_guarded(
        &mut self,
        overlay: &mut Overlay<'_>,
        input: Input,
        name: &'static str,
        label: &str,
        now: i64,
    ) -> (Output, bool) {
        let involved = Involved::of(&input);
        // Only the failure path needs the command again; partition commands are few beside clients'.
        let channel = match &input {
            Input::Partition(PartitionMessage::Command { source_partition, sequence, command }) => {
                Some((*source_partition, *sequence, command.clone()))
            }
            _ => None,
        };
        let engine = &mut self.engine;
        let cause = match guarded(overlay, |overlay| engine.process(overlay, input, now)) {
            Ok(output) => return (output, false),
            Err(cause) => cause,
        };
        // The engine's caches may hold what the failed input half-did.
        self.reset_engine();
        tracing::error!(partition = self.id, command = name, %cause, "processing failed; the command was rejected");
        self.metrics.processing_failures.with_label_values(&[label, name]).inc();
        if let Some((source, sequence, command)) = channel {
            let engine = &mut self.engine;
            let failure = format!("Processing the {name} command from partition {source} failed ({cause})");
            let held = guarded(overlay, |overlay| {
                engine.hold_failed_partition_command(overlay, source, sequence, command, &failure, now)
            });
            return (held.unwrap_or_default(), true);
        }
        let mut output = involved
            .and_then(|involved| {
                let engine = &mut self.engine;
                let message = format!(
                    "Processing the {name} command failed ({cause}); it was rejected and changed nothing. \
                     {REPORT_AS_BUG}"
                );
                guarded(overlay, |overlay| engine.record_processing_failure(overlay, involved, message, now)).ok()
            })
            .unwrap_or_default();
        let reason = format!(
            "Expected to process the {name} command, but processing failed ({cause}); the command was rejected \
             and changed nothing"
        );
        output.result = Some(CommandResult::Rejected { kind: RejectionType::ProcessingError, reason });
        (output, true)
    }

    /// After a tick failed: takes up each piece of its work on its own, so that the pieces that go
    /// through are done and the one that fails is marked (see `waggle_engine::processor`'s
    /// `incident` module) instead of failing every later tick. Whether every piece went through.
    fn isolate_due_work(&mut self, overlay: &mut Overlay<'_>, output: &mut Output, label: &str, now: i64) -> bool {
        let mut all = true;
        for due in self.engine.due_work(overlay, now) {
            let (isolated, failed) = self.process_guarded(overlay, Input::Due(due), due.name(), label, now);
            output.absorb(isolated);
            all &= !failed;
        }
        all
    }

    /// Work that keeps failing stays due, and would make every turn of the loop tick and fail: after
    /// such a tick the next waits [`TICK_PAUSE_FIRST`], doubling up to [`TICK_PAUSE_MAX`], and a tick
    /// that goes through ends the pause. The rest of the due work is still done on every tick, only
    /// later.
    fn pace_ticks(&mut self, failed: bool) {
        if !failed {
            self.tick_pause = None;
            return;
        }
        let pause = self.tick_pause.map_or(TICK_PAUSE_FIRST, |(pause, _)| (pause * 2).min(TICK_PAUSE_MAX));
        tracing::warn!(partition = self.id, ?pause, "due work keeps failing; the next tick waits");
        self.tick_pause = Some((pause, Instant::now() + pause));
    }

    /// Whether ticks wait after failing (see [`Driver::pace_ticks`]).
    fn ticks_paused(&self) -> bool {
        self.tick_pause.is_some_and(|(_, until)| Instant::now() < until)
    }

    /// Answers a retried request like its first copy, which is committed by now.
    fn answer_retry(&mut self, retry: Retry, answer: &[u8]) {
        let Some(reply) = retry.reply else { return };
        let answer = match command::decode::<CommandResult>(answer) {
            Ok(answer) => answer,
            Err(e) => {
                let _ = reply.send(Err(BrokerError::Internal(format!("the remembered answer is unreadable: {e}"))));
                return;
            }
        };
        match answer {
            // The first copy's client is still waiting for the instance, or its answer was lost:
            // this copy waits for the same instance.
            CommandResult::ProcessInstanceCreated(created) if retry.awaits => {
                let key = created.process_instance_key;
                if let Some(waiter) = self.waiters.get_mut(&key) {
                    waiter.copies.push(reply);
                } else if tables::elements::get(&StateReader::new(&self.db), key).is_some() {
                    self.waiters.insert(key, Waiter::new(reply, Some(retry.request)));
                } else {
                    let reason = format!(
                        "Expected to answer a retried request with the result of process instance {key}, which \
                         an earlier attempt of the same request created, but the instance has ended and its \
                         result is no longer known; no second instance was created"
                    );
                    let _ = reply.send(Ok(CommandResult::Rejected { kind: RejectionType::InvalidState, reason }));
                }
            }
            answer => {
                let _ = reply.send(Ok(answer));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use waggle_engine::state::{KvRead, KvWrite, MemKv};

    use super::*;

    #[test]
    fn a_panic_while_processing_one_input_undoes_its_writes_and_keeps_the_earlier_ones() {
        let base = MemKv::new();
        let mut overlay = Overlay::new(&base);
        let kept = guarded(&mut overlay, |kv| {
            kv.put(b"first", b"done");
            Output::default()
        });
        assert!(kept.is_ok());
        let failed = guarded(&mut overlay, |kv| {
            kv.put(b"second", b"half");
            kv.delete(b"first");
            panic!("the engine met a bug")
        });
        assert_eq!(failed.unwrap_err(), "the engine met a bug");
        assert_eq!(overlay.get(b"first"), Some(b"done".to_vec()));
        assert_eq!(overlay.get(b"second"), None);
        let after = guarded(&mut overlay, |kv| {
            kv.put(b"third", b"done");
            Output::default()
        });
        assert!(after.is_ok(), "the batch goes on after a failed input");
        assert_eq!(overlay.get(b"third"), Some(b"done".to_vec()));
    }
}
