//! The one place where errors become gRPC status codes.
//!
//! Zeebe clients act on status codes: they retry RESOURCE_EXHAUSTED and UNAVAILABLE, give up on
//! INVALID_ARGUMENT and NOT_FOUND, and show the message to the user. Keeping the whole mapping here
//! makes it reviewable at a glance and keeps every RPC consistent. Messages pass the broker's reason
//! through unchanged, because that reason says what to fix.

use tonic::{body::Body, codegen::http, Code, Status};
use waggle_protocol::{command::BrokerError, record::RejectionType};

use crate::{dispatch::DispatchError, service::ServiceError, translate::TranslateError};

/// The status code for an engine rejection.
pub fn rejection_code(kind: RejectionType) -> Code {
    match kind {
        RejectionType::InvalidArgument => Code::InvalidArgument,
        RejectionType::NotFound => Code::NotFound,
        RejectionType::AlreadyExists => Code::AlreadyExists,
        RejectionType::InvalidState => Code::FailedPrecondition,
        RejectionType::ProcessingError => Code::Internal,
        // The command would produce more data than fits one log entry: only a smaller request
        // can succeed, so retrying (as clients do on RESOURCE_EXHAUSTED) would not help.
        RejectionType::ExceededBatchRecordSize => Code::InvalidArgument,
    }
}

/// The status code for a broker that could not hand the command to its engine.
pub fn broker_error_code(error: &BrokerError) -> Code {
    match error {
        BrokerError::Backpressure { .. } | BrokerError::DiskSpaceLow { .. } | BrokerError::LogSpaceLow { .. } => {
            Code::ResourceExhausted
        }
        BrokerError::Timeout { .. } => Code::DeadlineExceeded,
        BrokerError::NotLeader { .. } | BrokerError::PartitionNotFound { .. } | BrokerError::ShuttingDown => {
            Code::Unavailable
        }
        BrokerError::Malformed(_) | BrokerError::Internal(_) => Code::Internal,
    }
}

impl From<TranslateError> for Status {
    fn from(error: TranslateError) -> Status {
        match error {
            TranslateError::Rejected { kind, reason } => Status::new(rejection_code(kind), reason),
            TranslateError::Invalid { .. } => Status::invalid_argument(error.to_string()),
            TranslateError::Unsupported { .. } => Status::unimplemented(error.to_string()),
            TranslateError::UnexpectedResult { .. } => Status::internal(error.to_string()),
        }
    }
}

impl From<DispatchError> for Status {
    fn from(error: DispatchError) -> Status {
        let code = match &error {
            DispatchError::Broker(broker) => broker_error_code(broker),
            DispatchError::Unavailable { .. } | DispatchError::NoTopology { .. } | DispatchError::ShuttingDown => {
                Code::Unavailable
            }
            DispatchError::Timeout { .. } => Code::DeadlineExceeded,
            // Neither retryable nor final: the client must check before it repeats the command.
            DispatchError::OutcomeUnknown { .. } => Code::Unknown,
            // The command is the likely cause of the failures, as with an engine's processing error.
            DispatchError::FailedTwice { .. } => Code::Internal,
            DispatchError::Rpc { .. } => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        match error {
            ServiceError::Translate(e) => e.into(),
            ServiceError::Dispatch(e) => e.into(),
            ServiceError::UnknownKey { .. } => Status::not_found(error.to_string()),
            ServiceError::Unimplemented { .. } => Status::unimplemented(error.to_string()),
            ServiceError::ResultTimeout { .. } => Status::deadline_exceeded(error.to_string()),
        }
    }
}

/// Rewrites two statuses that tonic gives to bad requests before any handler runs, so that clients
/// learn the request itself was wrong. It runs on every response, so it only looks at trailers-only
/// error responses.
///
/// - A request above the decoding limit gets OUT_OF_RANGE from tonic. gRPC's Java and Go
///   implementations (and so Zeebe's gateway) answer RESOURCE_EXHAUSTED, which is what Zeebe clients
///   expect, and the wording does not tell the user what to do.
/// - A request body that is not a valid message of the RPC's type (truncated, wrong wire types, a
///   string that is not UTF-8) gets INTERNAL, which clients retry as if the gateway were broken;
///   sending the same bytes again cannot succeed, so it is INVALID_ARGUMENT.
pub fn client_error_status(mut response: http::Response<Body>) -> http::Response<Body> {
    const TOO_LARGE: &str = "Error, decoded message length too large: ";
    const UNDECODABLE: &str = "failed to decode Protobuf message: ";
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let rewritten = match (status.code(), status.message()) {
        (Code::OutOfRange, message) if message.starts_with(TOO_LARGE) => Status::resource_exhausted(format!(
            "the request is larger than this gateway accepts ({}); send smaller variables or \
             resources, or raise the gateway's max_message_size",
            &message[TOO_LARGE.len()..]
        )),
        (Code::Internal, message) if message.starts_with(UNDECODABLE) => Status::invalid_argument(format!(
            "the request is not a valid message of this RPC's type ({}); check the client's \
             protocol version",
            &message[UNDECODABLE.len()..]
        )),
        _ => return response,
    };
    let headers = response.headers_mut();
    headers.remove("grpc-message");
    if rewritten.add_header(headers).is_err() {
        tracing::warn!("could not rewrite the status of a bad request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_the_codes_zeebe_clients_expect() {
        let cases = [
            (RejectionType::InvalidArgument, Code::InvalidArgument),
            (RejectionType::NotFound, Code::NotFound),
            (RejectionType::AlreadyExists, Code::AlreadyExists),
            (RejectionType::InvalidState, Code::FailedPrecondition),
            (RejectionType::ProcessingError, Code::Internal),
            (RejectionType::ExceededBatchRecordSize, Code::InvalidArgument),
        ];
        for (kind, code) in cases {
            let status = Status::from(TranslateError::Rejected { kind, reason: "because".into() });
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "because");
        }
    }

    #[test]
    fn broker_errors_map_to_retryable_or_final_codes() {
        let cases = [
            (BrokerError::Backpressure { partition_id: 1 }, Code::ResourceExhausted),
            (BrokerError::DiskSpaceLow { free_bytes: 1, watermark_bytes: 2 }, Code::ResourceExhausted),
            (BrokerError::LogSpaceLow { free_bytes: 1, watermark_bytes: 2 }, Code::ResourceExhausted),
            (BrokerError::Timeout { millis: 5 }, Code::DeadlineExceeded),
            (BrokerError::NotLeader { partition_id: 1, leader: None }, Code::Unavailable),
            (BrokerError::PartitionNotFound { partition_id: 1 }, Code::Unavailable),
            (BrokerError::ShuttingDown, Code::Unavailable),
            (BrokerError::Malformed("x".into()), Code::Internal),
            (BrokerError::Internal("disk".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(DispatchError::Broker(error));
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn exhausted_retries_and_timeouts_are_unavailable_and_deadline_exceeded() {
        let status = Status::from(DispatchError::Unavailable { partition: 2, cause: "cannot reach broker b:1".into() });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "partition 2 is unavailable: cannot reach broker b:1");
        let status =
            Status::from(DispatchError::Timeout { partition: 2, after: std::time::Duration::from_millis(1500) });
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status.message(),
            "partition 2 did not answer within 1500 ms; the command may or may not have been applied"
        );
        let status = Status::from(DispatchError::OutcomeUnknown { partition: 2, cause: "lost b:1".into() });
        assert_eq!(status.code(), Code::Unknown);
        assert!(status.message().starts_with("the outcome is unknown"), "{}", status.message());
        let status =
            Status::from(DispatchError::FailedTwice { partition: 2, first: "a:1".into(), second: "b:1".into() });
        assert_eq!(status.code(), Code::Internal);
    }

    #[test]
    fn oversized_request_becomes_resource_exhausted_with_advice() {
        let mut response = http::Response::new(Body::empty());
        Status::out_of_range("Error, decoded message length too large: found 10 bytes, the limit is: 5 bytes")
            .add_header(response.headers_mut())
            .unwrap();
        let status = Status::from_header_map(client_error_status(response).headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .starts_with("the request is larger than this gateway accepts (found 10 bytes, the limit is: 5 bytes)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn undecodable_request_becomes_invalid_argument() {
        let mut response = http::Response::new(Body::empty());
        Status::internal("failed to decode Protobuf message: invalid varint")
            .add_header(response.headers_mut())
            .unwrap();
        let status = Status::from_header_map(client_error_status(response).headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("(invalid varint)"), "{}", status.message());
    }

    #[test]
    fn other_responses_are_left_alone() {
        let mut response = http::Response::new(Body::empty());
        Status::out_of_range("index 7 is out of range").add_header(response.headers_mut()).unwrap();
        let status = Status::from_header_map(client_error_status(response).headers()).unwrap();
        assert_eq!(status.code(), Code::OutOfRange);
        let mut response = http::Response::new(Body::empty());
        Status::internal("the disk is full").add_header(response.headers_mut()).unwrap();
        let status = Status::from_header_map(client_error_status(response).headers()).unwrap();
        assert_eq!(status.code(), Code::Internal);
        let plain = client_error_status(http::Response::new(Body::empty()));
        assert!(Status::from_header_map(plain.headers()).is_none());
    }
}
