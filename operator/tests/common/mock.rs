//! A scripted API server for kube's mock-service pattern: the test answers each request the
//! operator makes, in order, and asserts on it.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// A client whose requests go to the returned [`ApiServer`].
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub struct ApiServer(Handle);

pub struct Call {
    pub method: String,
    pub uri: String,
    pub body: Value,
    pub respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl ApiServer {
    pub async fn next(&mut self) -> Call {
        let (request, respond) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .expect("the operator made no further request")
            .expect("the client was dropped");
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Call { method, uri, body, respond }
    }

    /// The next request, which must be `method` on a URI starting with `path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(call.method, method, "unexpected request {} {}", call.method, call.uri);
        assert!(call.uri.starts_with(path), "expected {method} {path}, got {} {}", call.method, call.uri);
        call
    }

    /// A server-side apply by the operator's field manager, answered with the applied object
    /// (plus `status`, when given). Returns the applied body.
    pub async fn expect_apply(&mut self, path: &str, status: Option<Value>) -> Value {
        let call = self.expect("PATCH", path).await;
        assert!(call.uri.contains("fieldManager=waggle-operator"), "{}", call.uri);
        assert!(call.uri.contains("force=true"), "{}", call.uri);
        let mut object = call.body.clone();
        object["metadata"]["generation"] = json!(1);
        if let Some(status) = status {
            object["status"] = status;
        }
        let body = call.body.clone();
        call.reply(200, object);
        body
    }

    /// Asserts the operator is done: it dropped its client without another request.
    pub async fn expect_done(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await.unwrap();
        assert!(next.is_none(), "unexpected request {:?}", next.map(|(r, _)| r.uri().to_string()));
    }
}

impl Call {
    pub fn reply(self, code: u16, body: Value) {
        let response = Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap();
        self.respond.send_response(response);
    }

    pub fn fail(self, code: u16, reason: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (scripted)"), "reason": reason, "code": code,
        });
        self.reply(code, status);
    }
}
