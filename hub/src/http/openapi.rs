//! The OpenAPI 3.1 document of the REST API, served at `/api/openapi.json`. Built from one table
//! of endpoints ([`ENDPOINTS`]) that also names each one's WAMP procedure, so the two surfaces
//! are documented side by side.

use serde_json::{Map, Value as Json, json};

/// One endpoint: method, path, WAMP equivalent, summary, and what it takes.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub wamp: &'static str,
    pub summary: &'static str,
    /// `(name, description)` of query parameters.
    pub query: &'static [(&'static str, &'static str)],
    /// What the JSON body holds, if the endpoint takes one.
    pub body: Option<&'static str>,
    /// The success status.
    pub status: u16,
}

const TIMEOUT: (&str, &str) = (
    "timeout_ms",
    "How long to wait for the device, in milliseconds (the WAMP CALL's timeout option)",
);

/// Every endpoint of the REST API.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "get",
        path: "/api/things",
        wamp: "call brume.things.list",
        summary: "List things: id, type, online, info",
        query: &[
            ("type", "Only things of this type"),
            ("online", "true or false: only things online or offline"),
        ],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "post",
        path: "/api/things",
        wamp: "call brume.things.provision",
        summary: "Provision a thing; answered once the registry holds it on disk",
        query: &[],
        body: Some("{\"thing\": id, \"type\": type id, \"info\": {...}}"),
        status: 201,
    },
    Endpoint {
        method: "get",
        path: "/api/things/{thing}",
        wamp: "call brume.things.get",
        summary: "A thing with its info, reported state and desired values",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "delete",
        path: "/api/things/{thing}",
        wamp: "call brume.things.delete",
        summary: "Delete a thing",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/things/{thing}/properties/{property}",
        wamp: "call brume.things.get (thing, property)",
        summary: "One property: its value, when it was reported, its desired value",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "put",
        path: "/api/things/{thing}/properties/{property}",
        wamp: "call brume.things.set, or brume.things.update_info for an info property",
        summary: "Write one property (the body is the value); a state property waits for the device to confirm",
        query: &[TIMEOUT],
        body: Some("the value"),
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/things/{thing}/desired",
        wamp: "call brume.things.get (its desired part)",
        summary: "Desired values not yet confirmed by the device",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "put",
        path: "/api/things/{thing}/desired",
        wamp: "call brume.things.set",
        summary: "Set desired values; answered when the device confirms them (or with an error when it does not in time)",
        query: &[TIMEOUT],
        body: Some("{property: value, ...}"),
        status: 200,
    },
    Endpoint {
        method: "patch",
        path: "/api/things/{thing}/info",
        wamp: "call brume.things.update_info",
        summary: "Change writable info properties",
        query: &[],
        body: Some("{property: value, ...}"),
        status: 200,
    },
    Endpoint {
        method: "post",
        path: "/api/things/{thing}/actions/{action}",
        wamp: "call brume.thing.<thing>.action.<action>",
        summary: "Invoke an action; the body is its input (none for no input), the answer its output",
        query: &[TIMEOUT],
        body: Some("the action's input"),
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/things/{thing}/td",
        wamp: "call brume.things.describe",
        summary: "The thing's W3C WoT Thing Description, with WAMP and HTTP forms",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/types",
        wamp: "call brume.types.list",
        summary: "The thing types the hub knows",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/types/{type}",
        wamp: "call brume.types.get",
        summary: "One thing type: properties, actions, events",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/stats",
        wamp: "call brume.things.stats",
        summary: "The things service's counters and its ledger of drops by cause",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/uplink",
        wamp: "call brume.uplink.status",
        summary: "The uplink: link state, last round trip through the cloud router, queue and drops",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/whoami",
        wamp: "(the session's authid and authrole)",
        summary: "Who the credentials name, and their role",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/api/events",
        wamp: "subscribe brume.thing.<thing>.state, brume.thing.<thing>.event.*, brume.things.on_*",
        summary: "Server-Sent Events: `publication` with {topic, kwargs}; `lagged` with {missed} when the client fell behind",
        query: &[("thing", "Only this thing's publications")],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/status",
        wamp: "call brume.hub.status",
        summary: "The hub at a glance: readiness, gateways, uplink, memory, parts (what `brume status` prints)",
        query: &[],
        body: None,
        status: 200,
    },
    Endpoint {
        method: "get",
        path: "/metrics",
        wamp: "call brume.hub.status (authorization)",
        summary: "Prometheus text format",
        query: &[],
        body: None,
        status: 200,
    },
];

/// The errors every endpoint may answer.
fn error_responses() -> Map<String, Json> {
    let error = json!({"$ref": "#/components/responses/Error"});
    let mut m = Map::new();
    for (code, what) in [
        (
            "400",
            "wamp.error.invalid_argument: a malformed request or a value its type refuses",
        ),
        (
            "401",
            "wamp.error.authentication_failed: credentials missing or wrong",
        ),
        (
            "403",
            "wamp.error.not_authorized: the role may not call the WAMP procedure",
        ),
        (
            "404",
            "brume.error.no_such_thing, no_such_type, no_such_action",
        ),
        ("409", "brume.error.thing_offline"),
        (
            "502",
            "brume.error.action_failed: the device answered with an error",
        ),
        ("503", "wamp.error.unavailable, wamp.error.canceled"),
        (
            "504",
            "wamp.error.timeout: the device did not answer in time",
        ),
        (
            "507",
            "brume.error.write_failed: the database could not hold the change",
        ),
    ] {
        let mut e = error.clone();
        if let Json::Object(o) = &mut e {
            o.insert("description".into(), Json::from(what));
        }
        m.insert(code.into(), e);
    }
    m
}

/// The document, naming this hub.
pub fn document(hub_id: &str) -> Json {
    let mut paths: Map<String, Json> = Map::new();
    for e in ENDPOINTS {
        let mut parameters: Vec<Json> = path_params(e.path)
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(e.query.iter().map(|(name, description)| {
            json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
        }));
        let mut responses = error_responses();
        let content = if e.path == "/api/events" {
            json!({"text/event-stream": {"schema": {"type": "string"}}})
        } else if e.path == "/metrics" {
            json!({"text/plain": {"schema": {"type": "string"}}})
        } else {
            json!({"application/json": {"schema": {}}})
        };
        responses.insert(
            e.status.to_string(),
            json!({"description": "Success: the WAMP procedure's result value", "content": content}),
        );
        let mut op = json!({
            "summary": e.summary,
            "description": format!("WAMP equivalent: {}", e.wamp),
            "operationId": operation_id(e),
            "parameters": parameters,
            "responses": responses,
        });
        if let (Some(body), Json::Object(o)) = (e.body, &mut op) {
            o.insert(
                "requestBody".into(),
                json!({"required": false, "description": body, "content": {"application/json": {"schema": {}}}}),
            );
        }
        let item = paths
            .entry(e.path.to_owned())
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(item) = item {
            item.insert(e.method.to_owned(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Brume hub REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The things API of hub {hub_id:?} over HTTP: the same service, checks and errors as its WAMP procedures. \
                 Authenticate with a WAMP ticket as a bearer token, or Basic authid:ticket; roles are the realm's."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ticket": {"type": "http", "scheme": "bearer", "description": "A principal's WAMP ticket"},
                "basic": {"type": "http", "scheme": "basic", "description": "authid:ticket"},
            },
            "responses": {
                "Error": {
                    "description": "An error, named as the WAMP API names it",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["error", "message"],
                        "properties": {
                            "error": {"type": "string", "description": "wamp.error.* or brume.error.*"},
                            "message": {"type": "string"},
                            "details": {"type": "object"},
                        },
                    }}},
                },
            },
        },
        "security": [{"ticket": []}, {"basic": []}, {}],
    })
}

fn path_params(path: &'static str) -> impl Iterator<Item = &'static str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
}

fn operation_id(e: &Endpoint) -> String {
    let words: Vec<&str> = e
        .path
        .split('/')
        .filter(|s| !s.is_empty() && *s != "api")
        .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
        .collect();
    format!("{}_{}", e.method, words.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_documented_once_with_its_parameters() {
        let doc = document("h1");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = std::collections::HashSet::new();
        for e in ENDPOINTS {
            let op = &doc["paths"][e.path][e.method];
            assert!(op.is_object(), "{} {}", e.method, e.path);
            assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
            let n = op["parameters"].as_array().unwrap().len();
            assert_eq!(n, path_params(e.path).count() + e.query.len());
        }
        let put = &doc["paths"]["/api/things/{thing}/desired"]["put"];
        assert!(put["requestBody"].is_object());
        assert!(put["responses"]["504"].is_object());
    }
}
