//! From what the operator observed to `status.conditions`, without I/O.
//!
//! Every resource reports the same three conditions, derived from one [`Health`] so they never
//! contradict each other: exactly one of Ready, Progressing and Degraded is `True`. A condition keeps
//! its `lastTransitionTime` while its status stays the same, so the time says when it last flipped,
//! not when the operator last looked. Significant flips become Kubernetes Events ([`transition`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// The one state a resource is in, with a machine-readable reason and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Ready { reason: String, message: String },
    Progressing { reason: String, message: String },
    Degraded { reason: String, message: String },
}

impl Health {
    pub fn ready(reason: &str, message: impl Into<String>) -> Self {
        Health::Ready { reason: reason.to_owned(), message: message.into() }
    }
    pub fn progressing(reason: &str, message: impl Into<String>) -> Self {
        Health::Progressing { reason: reason.to_owned(), message: message.into() }
    }
    pub fn degraded(reason: &str, message: impl Into<String>) -> Self {
        Health::Degraded { reason: reason.to_owned(), message: message.into() }
    }

    pub fn reason(&self) -> &str {
        match self {
            Health::Ready { reason, .. } | Health::Progressing { reason, .. } | Health::Degraded { reason, .. } => {
                reason
            }
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Health::Ready { message, .. } | Health::Progressing { message, .. } | Health::Degraded { message, .. } => {
                message
            }
        }
    }

    fn is(&self, condition: &str) -> bool {
        matches!(
            (self, condition),
            (Health::Ready { .. }, READY)
                | (Health::Progressing { .. }, PROGRESSING)
                | (Health::Degraded { .. }, DEGRADED)
        )
    }
}

/// The longest message the operator writes into a condition or an Event note, in bytes. Kubernetes
/// refuses Event notes above 1 KiB; condition messages may be longer, but a message that long is a
/// dump, not a sentence.
pub const MAX_MESSAGE: usize = 1024;

/// `message` cut to [`MAX_MESSAGE`] bytes at a character boundary, marked with an ellipsis when cut.
pub fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// The three conditions for `health`, keeping transition times of unchanged conditions from `previous`.
pub fn conditions(previous: &[Condition], health: &Health, generation: Option<i64>, now: &Time) -> Vec<Condition> {
    [READY, PROGRESSING, DEGRADED]
        .into_iter()
        .map(|type_| {
            let status = if health.is(type_) { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: health.reason().to_owned(),
                message: bounded(health.message()),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether the condition of `type_` is `True` in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// A change worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// The Event for moving from `previous` conditions to `health`, if the move is significant: becoming
/// Ready, becoming Degraded, or changing the reason of being Degraded.
pub fn transition(previous: &[Condition], health: &Health) -> Option<Transition> {
    let was = |type_: &str| previous.iter().find(|c| c.type_ == type_ && c.status == "True");
    match health {
        Health::Ready { reason, message } if was(READY).is_none() => {
            Some(Transition { warning: false, reason: reason.clone(), note: bounded(message) })
        }
        Health::Degraded { reason, message } if was(DEGRADED).is_none_or(|c| &c.reason != reason) => {
            Some(Transition { warning: true, reason: reason.clone(), note: bounded(message) })
        }
        _ => None,
    }
}

/// Pods of a workload as its controller reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Replicas {
    /// What the spec asks for.
    pub desired: i32,
    /// What the workload has now.
    pub current: i32,
    /// How many pass their readiness probe.
    pub ready: i32,
    /// How many run the workload's current spec (pod template).
    pub updated: i32,
    /// Whether the workload's controller has seen its latest spec.
    pub observed: bool,
}

/// Whether the set was up before: Ready, or already Degraded for lack of pods (not for, say, a
/// missing reference, from which it is only now starting).
fn was_up(previous: &[Condition]) -> bool {
    is_true(previous, READY)
        || previous.iter().any(|c| c.type_ == DEGRADED && c.status == "True" && c.reason == "Unavailable")
}

/// Health of a set of pods called `noun` ("brokers", "gateways"). It is Ready only when every pod
/// passes its readiness probe and runs the current spec. A set that was Ready and lost pods without
/// being asked to change is Degraded; one that is still getting to its spec is Progressing.
pub fn replicas_health(replicas: Replicas, noun: &str, previous: &[Condition]) -> Health {
    let count = format!("{}/{} {noun} ready", replicas.ready, replicas.desired);
    let settled = replicas.observed && replicas.current == replicas.desired;
    if settled && replicas.ready >= replicas.desired && replicas.updated < replicas.desired {
        Health::progressing(
            "Outdated",
            format!(
                "{count}, but only {} of them run the current spec; the others take it when their pods restart",
                replicas.updated.max(0)
            ),
        )
    } else if settled && replicas.ready >= replicas.desired {
        Health::ready("AllReady", count)
    } else if settled && was_up(previous) {
        Health::degraded("Unavailable", count)
    } else if replicas.current != replicas.desired {
        Health::progressing("Scaling", format!("{count}, scaling from {} to {}", replicas.current, replicas.desired))
    } else {
        Health::progressing("Starting", count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: &str) -> Time {
        Time(s.parse::<Timestamp>().unwrap())
    }

    fn replicas(desired: i32, current: i32, ready: i32) -> Replicas {
        Replicas { desired, current, ready, updated: current, observed: true }
    }

    #[test]
    fn exactly_one_condition_is_true() {
        for health in [Health::ready("A", "a"), Health::progressing("B", "b"), Health::degraded("C", "c")] {
            let conditions = conditions(&[], &health, Some(3), &at("2026-01-01T00:00:00Z"));
            assert_eq!(conditions.iter().filter(|c| c.status == "True").count(), 1, "{health:?}");
            assert!(conditions.iter().all(|c| c.observed_generation == Some(3) && c.reason == health.reason()));
        }
    }

    #[test]
    fn transition_time_changes_only_when_the_status_flips() {
        let first = conditions(&[], &Health::progressing("Starting", "0/3"), None, &at("2026-01-01T00:00:00Z"));
        let still = conditions(&first, &Health::progressing("Starting", "1/3"), None, &at("2026-01-01T00:05:00Z"));
        assert_eq!(first, still.iter().map(|c| Condition { message: "0/3".into(), ..c.clone() }).collect::<Vec<_>>());
        let ready = conditions(&still, &Health::ready("AllReady", "3/3"), None, &at("2026-01-01T00:09:00Z"));
        let time = |cs: &[Condition], t: &str| cs.iter().find(|c| c.type_ == t).unwrap().last_transition_time.clone();
        assert_eq!(time(&ready, READY), at("2026-01-01T00:09:00Z"));
        assert_eq!(time(&ready, PROGRESSING), at("2026-01-01T00:09:00Z"));
        assert_eq!(time(&ready, DEGRADED), at("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn a_ready_set_that_loses_pods_is_degraded_but_a_new_one_is_progressing() {
        let ready = conditions(&[], &Health::ready("AllReady", ""), None, &at("2026-01-01T00:00:00Z"));
        assert_eq!(
            replicas_health(replicas(3, 3, 2), "brokers", &ready),
            Health::degraded("Unavailable", "2/3 brokers ready")
        );
        assert_eq!(
            replicas_health(replicas(3, 3, 2), "brokers", &[]),
            Health::progressing("Starting", "2/3 brokers ready")
        );
        assert_eq!(replicas_health(replicas(3, 3, 3), "brokers", &[]), Health::ready("AllReady", "3/3 brokers ready"));
        assert!(matches!(replicas_health(replicas(4, 3, 3), "brokers", &ready), Health::Progressing { .. }));
        let unobserved = Replicas { observed: false, ..replicas(3, 3, 3) };
        assert!(matches!(replicas_health(unobserved, "brokers", &ready), Health::Progressing { .. }));
    }

    #[test]
    fn a_set_whose_pods_run_an_old_spec_is_not_ready() {
        let outdated = Replicas { updated: 2, ..replicas(3, 3, 3) };
        let health = replicas_health(outdated, "brokers", &[]);
        assert_eq!(health.reason(), "Outdated", "{health:?}");
    }

    #[test]
    fn long_messages_are_cut_to_the_event_limit_at_a_character_boundary() {
        let long = "é".repeat(800);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MESSAGE && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(bounded("short"), "short");
        let transition = transition(&[], &Health::degraded("ApplyFailed", long)).unwrap();
        assert!(transition.note.len() <= MAX_MESSAGE);
    }

    #[test]
    fn events_are_recorded_on_becoming_ready_or_degraded_only() {
        let progressing = conditions(&[], &Health::progressing("Starting", ""), None, &at("2026-01-01T00:00:00Z"));
        assert!(transition(&progressing, &Health::progressing("Starting", "1/3")).is_none());
        let became_ready = transition(&progressing, &Health::ready("AllReady", "3/3")).unwrap();
        assert!(!became_ready.warning);
        let ready = conditions(&[], &Health::ready("AllReady", ""), None, &at("2026-01-01T00:00:00Z"));
        assert!(transition(&ready, &Health::ready("AllReady", "3/3")).is_none());
        assert!(transition(&ready, &Health::degraded("Unavailable", "2/3")).unwrap().warning);
        let degraded = conditions(&[], &Health::degraded("Unavailable", ""), None, &at("2026-01-01T00:00:00Z"));
        assert!(transition(&degraded, &Health::degraded("Unavailable", "1/3")).is_none());
        assert!(transition(&degraded, &Health::degraded("ApplyFailed", "boom")).is_some());
    }
}
