//! Holds Waggle's `gateway.proto` to the protos that real Zeebe clients ship.
//!
//! A client encodes requests from its own copy of the proto, so any drift in a name, number, type,
//! label, oneof or streaming flag breaks it silently on the wire. Each proto is reduced to a flat
//! map from a path (`field ActivateJobsRequest.type`) to what the wire depends on
//! (`= 1 string`), and the maps are compared entry by entry, listing every difference.
//!
//! The clients come from npm into `tests/clients/node_modules` (see `scripts/setup.sh`).

use std::{collections::BTreeMap, fmt::Write as _, path::PathBuf};

use prost::Message as _;
use prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
};
use protox::file::{File, FileResolver};

const PACKAGE: &str = "gateway_protocol";

/// Everything about a proto file that a peer's encoder and decoder depend on.
type Contract = BTreeMap<String, String>;

/// How strictly `ours` must follow a client's proto.
#[derive(Clone, Copy)]
enum Rule {
    /// The same contract: nothing missing, nothing extra, nothing different.
    Identical,
    /// Everything the client uses, unchanged; `ours` may add more (newer protos only add).
    Covers,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the protocol crate lives inside the workspace")
        .to_path_buf()
}

/// Reads a client's proto from tests/clients/node_modules, failing loudly when it isn't installed.
fn client_proto(relative: &str) -> String {
    let path = workspace_root().join("tests/clients/node_modules").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read the client proto {}: {err}\n\
             The real Zeebe clients are not installed: run scripts/setup.sh",
            path.display()
        )
    })
}

/// Serves one proto source from memory, so tests can compile altered copies.
struct InMemory {
    name: String,
    source: String,
}

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == self.name {
            File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Parses and links one proto source, so that type references come out fully qualified.
fn compile(name: &str, source: &str) -> FileDescriptorProto {
    let mut compiler =
        protox::Compiler::with_file_resolver(InMemory { name: name.to_owned(), source: source.to_owned() });
    compiler.open_file(name).unwrap_or_else(|err| panic!("{name} does not compile: {err:?}"));
    compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .find(|file| file.name() == name)
        .expect("the compiled set holds the opened file")
}

/// The gateway descriptor that this crate's generated code was built from.
fn built_gateway_descriptor() -> FileDescriptorProto {
    FileDescriptorSet::decode(waggle_protocol::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET decodes")
        .file
        .into_iter()
        .find(|file| file.package() == PACKAGE)
        .expect("the crate is built from a gateway_protocol proto")
}

fn our_gateway_source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto/gateway.proto");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `.gateway_protocol.Partition.PartitionBrokerRole` -> `Partition.PartitionBrokerRole`.
fn short_type_name(name: &str) -> &str {
    name.strip_prefix('.')
        .and_then(|name| name.strip_prefix(PACKAGE))
        .and_then(|name| name.strip_prefix('.'))
        .unwrap_or(name)
}

fn contract(file: &FileDescriptorProto) -> Contract {
    let mut contract = Contract::new();
    contract.insert("package".to_owned(), file.package().to_owned());
    for message in &file.message_type {
        add_message(&mut contract, "", message);
    }
    for enumeration in &file.enum_type {
        add_enum(&mut contract, "", enumeration);
    }
    for service in &file.service {
        contract.insert(format!("service {}", service.name()), String::new());
        for method in &service.method {
            let stream = |yes: bool| if yes { "stream " } else { "" };
            let mut shape = format!(
                "({}{}) returns ({}{})",
                stream(method.client_streaming()),
                short_type_name(method.input_type()),
                stream(method.server_streaming()),
                short_type_name(method.output_type()),
            );
            if method.options.as_ref().is_some_and(|o| o.deprecated()) {
                shape.push_str(" [deprecated]");
            }
            contract.insert(format!("rpc {}.{}", service.name(), method.name()), shape);
        }
    }
    contract
}

fn add_message(contract: &mut Contract, scope: &str, message: &DescriptorProto) {
    let name = format!("{scope}{}", message.name());
    let deprecated = message.options.as_ref().is_some_and(|o| o.deprecated());
    contract.insert(format!("message {name}"), if deprecated { "[deprecated]" } else { "" }.to_owned());
    for oneof in &message.oneof_decl {
        // proto3 `optional` fields get a synthetic oneof; the field's label already says it.
        if !oneof.name().starts_with('_') {
            contract.insert(format!("oneof {name}.{}", oneof.name()), String::new());
        }
    }
    for field in &message.field {
        let mut shape = format!("= {} ", field.number());
        if field.label() == Label::Repeated {
            shape.push_str("repeated ");
        } else if field.proto3_optional() {
            shape.push_str("optional ");
        }
        match field.r#type() {
            Type::Message | Type::Enum => shape.push_str(short_type_name(field.type_name())),
            scalar => shape.push_str(scalar.as_str_name().trim_start_matches("TYPE_").to_lowercase().as_str()),
        }
        if let Some(oneof) = field
            .oneof_index
            .filter(|_| !field.proto3_optional())
            .and_then(|index| message.oneof_decl.get(index as usize))
        {
            let _ = write!(shape, " in oneof {}", oneof.name());
        }
        contract.insert(format!("field {name}.{}", field.name()), shape);
    }
    let scope = format!("{name}.");
    for nested in &message.nested_type {
        add_message(contract, &scope, nested);
    }
    for enumeration in &message.enum_type {
        add_enum(contract, &scope, enumeration);
    }
}

fn add_enum(contract: &mut Contract, scope: &str, enumeration: &EnumDescriptorProto) {
    let name = format!("{scope}{}", enumeration.name());
    contract.insert(format!("enum {name}"), String::new());
    for value in &enumeration.value {
        contract.insert(format!("enum value {name}.{}", value.name()), format!("= {}", value.number()));
    }
}

/// Every way `ours` departs from `theirs` under `rule`, one readable line each.
fn differences(theirs: &Contract, ours: &Contract, rule: Rule) -> Vec<String> {
    let mut found = Vec::new();
    for (path, expected) in theirs {
        match ours.get(path) {
            None => found.push(format!("missing: {path} {expected}")),
            Some(actual) if actual != expected => {
                found.push(format!("different: {path}: theirs `{expected}`, ours `{actual}`"))
            }
            Some(_) => {}
        }
    }
    if let Rule::Identical = rule {
        for (path, actual) in ours {
            if !theirs.contains_key(path) {
                found.push(format!("extra: {path} {actual}"));
            }
        }
    }
    found
}

fn assert_compatible(client: &str, theirs: &Contract, ours: &Contract, rule: Rule) {
    let found = differences(theirs, ours, rule);
    assert!(
        found.is_empty(),
        "protocol/proto/gateway.proto departs from {client} in {} place(s):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn gateway_proto_matches_the_camunda8_sdk_proto() {
    let sdk = client_proto("@camunda8/sdk/dist/proto/zeebe.proto");
    let theirs = contract(&compile("zeebe.proto", &sdk));
    let ours = contract(&built_gateway_descriptor());
    assert_compatible("@camunda8/sdk's zeebe.proto", &theirs, &ours, Rule::Identical);
}

#[test]
fn gateway_proto_serves_everything_zeebe_node_uses() {
    let zeebe_node = client_proto("zeebe-node/proto/zeebe.proto");
    let theirs = contract(&compile("zeebe.proto", &zeebe_node));
    let ours = contract(&built_gateway_descriptor());
    assert_compatible("zeebe-node's zeebe.proto", &theirs, &ours, Rule::Covers);
}

#[test]
fn built_descriptor_is_the_gateway_proto_source() {
    let from_source = contract(&compile("gateway.proto", &our_gateway_source()));
    let built = contract(&built_gateway_descriptor());
    assert_compatible("its own compiled descriptor", &from_source, &built, Rule::Identical);
}

/// The check itself must catch drift, or the tests above could pass without checking anything.
#[test]
fn compatibility_check_reports_every_kind_of_drift() {
    let original = our_gateway_source();
    let baseline = contract(&compile("gateway.proto", &original));
    let declared = |keyword: &str| original.lines().filter(|line| line.trim_start().starts_with(keyword)).count();
    let entries = |kind: &str| baseline.keys().filter(|path| path.starts_with(kind)).count();
    assert_eq!(entries("rpc "), declared("rpc "), "every rpc is in the contract");
    assert_eq!(entries("message "), declared("message "), "every message is in the contract");
    assert!(differences(&baseline, &baseline, Rule::Identical).is_empty());

    let drifts = [
        (
            "int32 maxJobsToActivate = 4;",
            "int32 maxJobsToActivate = 40;",
            "field ActivateJobsRequest.maxJobsToActivate",
        ),
        ("int64 deadline = 12;", "int32 deadline = 12;", "field ActivatedJob.deadline"),
        ("repeated string tenantIds = 7;", "string tenantIds = 7;", "field ActivateJobsRequest.tenantIds"),
        (
            "optional uint64 operationReference = 2;\n}\n\nmessage CancelProcessInstanceResponse",
            "uint64 operationReference = 2;\n}\n\nmessage CancelProcessInstanceResponse",
            "field CancelProcessInstanceRequest.operationReference",
        ),
        ("    FormMetadata form = 4;\n  }", "  }\n  FormMetadata form = 4;", "field Deployment.form"),
        ("    DEAD = 2;", "    DEAD = 3;", "enum value Partition.PartitionBrokerHealth.DEAD"),
        ("returns (stream ActivatedJob)", "returns (ActivatedJob)", "rpc Gateway.StreamActivatedJobs"),
        (
            "  rpc BroadcastSignal (BroadcastSignalRequest) returns (BroadcastSignalResponse) {\n  }\n",
            "",
            "rpc Gateway.BroadcastSignal",
        ),
        (
            "string scopeId = 2;",
            "string scope_id = 2;",
            "field ModifyProcessInstanceRequest.VariableInstruction.scopeId",
        ),
    ];
    for (from, to, path) in drifts {
        assert!(original.contains(from), "the drift source `{from}` is not in gateway.proto");
        let drifted = contract(&compile("gateway.proto", &original.replacen(from, to, 1)));
        for rule in [Rule::Identical, Rule::Covers] {
            let found = differences(&baseline, &drifted, rule);
            assert!(
                found.iter().any(|line| line.contains(path)),
                "changing `{from}` to `{to}` went unreported for {path}: {found:?}"
            );
        }
    }

    let added = original.replacen("  string tenantId = 2;\n}", "  string tenantId = 2;\n  bool extra = 99;\n}", 1);
    let widened = contract(&compile("gateway.proto", &added));
    assert!(differences(&baseline, &widened, Rule::Covers).is_empty());
    assert!(differences(&baseline, &widened, Rule::Identical)
        .iter()
        .any(|line| line.starts_with("extra: field") && line.contains(".extra")));
}
