//! The simulator's v1 responses against the published OpenAPI 1.2.0 spec, so simulator and
//! spec cannot drift apart. The spec is read from `../shared/reference/` when it is beside the
//! project, else from the facts of it the project keeps (`tests/it/openapi/`, written by
//! `scripts/openapi-facts.py`: paths, objects, fields, types, formats, enums, required keys);
//! the test says which it used. The check: every object served on every v1 path (and both introspection endpoints) is checked
//! against its schema: types, formats, enum values, required keys, and no key the schema
//! does not declare, except the few the reference documents as added to v1 responses later.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use op_events_forwarder::sim::{Simulator, V3Revision};
use op_events_forwarder::stream::Stream;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::Env;

/// The published spec, when it is beside the project.
const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/events-api-openapi-1.2.0.yaml"
);
/// The facts of the same spec, kept in the project.
const FACTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/it/openapi/events-api-1.2.0.json"
);

/// Keys the 1.2.0 schemas lack that the API documents in responses since (reference §7, §4, §13):
/// the user details of audit events (Aug 2023) and the account of the v2 introspection (1.4.1).
const DOCUMENTED_ADDITIONS: &[(&str, &str)] = &[
    ("AuditEvent", "actor_details"),
    ("AuditEvent", "object_details"),
    ("AuditEvent", "aux_details"),
    ("IntrospectionV2", "account_uuid"),
];

/// Values the 1.2.0 schemas do not allow that real responses carry (reference §7): sign-in
/// `details` is `null` when there are none.
const DOCUMENTED_NULLS: &[(&str, &str)] = &[("SignInAttempt", "details")];

/// Reads the spec as JSON values: the published one if it is there, else the project's facts
/// of it.
fn load_spec() -> Value {
    match std::fs::read_to_string(SPEC) {
        Ok(text) => {
            eprintln!("OpenAPI check against the published spec, {SPEC}");
            let docs =
                YamlLoader::load_from_str(&text).unwrap_or_else(|err| panic!("{SPEC}: {err}"));
            to_json(&docs[0])
        }
        Err(_) => {
            eprintln!("OpenAPI check against the project's facts of the spec, {FACTS}");
            let text =
                std::fs::read_to_string(FACTS).unwrap_or_else(|err| panic!("{FACTS}: {err}"));
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{FACTS}: {err}"))
        }
    }
}

/// The facts the project keeps are those of the published spec, where both are at hand.
#[test]
fn the_kept_facts_match_the_published_spec() {
    let Ok(text) = std::fs::read_to_string(SPEC) else {
        eprintln!("{SPEC} is not beside the project: nothing to compare the facts with");
        return;
    };
    let published = to_json(&YamlLoader::load_from_str(&text).unwrap()[0]);
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(FACTS).unwrap()).unwrap();
    for (name, schema) in kept["components"]["schemas"].as_object().unwrap() {
        let full = &published["components"]["schemas"][name];
        for key in ["type", "format", "enum", "required", "$ref"] {
            assert_eq!(
                schema.get(key),
                full.get(key).filter(|v| !v.is_null()),
                "{name}.{key}"
            );
        }
        let names = |s: &Value| -> BTreeSet<String> {
            s["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(names(schema), names(full), "{name}: properties");
    }
    let kept_schemas: BTreeSet<&String> = kept["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let published_schemas: BTreeSet<&String> = published["components"]["schemas"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(kept_schemas, published_schemas);
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text.clone()), Value::Number),
        Yaml::Integer(n) => Value::from(*n),
        Yaml::String(text) => Value::String(text.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(hash) => Value::Object(
            hash.iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(key) => key.clone(),
                        Yaml::Integer(n) => n.to_string(),
                        other => panic!("{SPEC}: a key that is not a string: {other:?}"),
                    };
                    (key, to_json(value))
                })
                .collect::<Map<_, _>>(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("{SPEC}: unsupported YAML node {other:?}"),
    }
}

/// Checks values against the spec's schemas, collecting every violation.
struct Validator<'a> {
    spec: &'a Value,
    errors: Vec<String>,
    /// Enum values seen per schema path, to show the check had something to check.
    enums_seen: BTreeMap<String, BTreeSet<String>>,
}

impl<'a> Validator<'a> {
    fn resolve(&self, reference: &str) -> (&'a Value, String) {
        let name = reference
            .strip_prefix("#/components/")
            .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
        let mut node = &self.spec["components"];
        for part in name.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling $ref {reference}");
        (node, name.rsplit('/').next().unwrap().to_owned())
    }

    /// Checks `value` (at `at`) against `schema`, named `name` when it is a named schema.
    fn check(&mut self, schema: &'a Value, name: &str, value: &Value, at: &str) {
        self.check_part(schema, name, value, at, false);
    }

    /// [`Validator::check`]; `open` for a part of an `allOf`, whose caller checks the keys
    /// against every part together.
    fn check_part(&mut self, schema: &'a Value, name: &str, value: &Value, at: &str, open: bool) {
        if let Some(reference) = schema["$ref"].as_str() {
            let (target, target_name) = self.resolve(reference);
            return self.check_part(target, &target_name, value, at, open);
        }
        if let Some(parts) = schema["allOf"].as_array() {
            for part in parts {
                self.check_part(part, name, value, at, true);
            }
            // The union of the parts' properties is what the object may hold.
            if let (false, Value::Object(fields)) = (open, value) {
                let declared: BTreeSet<String> = parts
                    .iter()
                    .flat_map(|part| self.properties(part))
                    .collect();
                for key in fields.keys() {
                    if !declared.contains(key) {
                        self.errors
                            .push(format!("{at}: key {key:?} is not in {name}"));
                    }
                }
            }
            return;
        }
        let kind = schema["type"]
            .as_str()
            .or_else(|| schema.get("properties").map(|_| "object"));
        let type_ok = match kind {
            None => true,
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("integer") => value.is_i64() || value.is_u64(),
            Some("number") => value.is_number(),
            Some("boolean") => value.is_boolean(),
            Some(other) => panic!("unsupported schema type {other}"),
        };
        if !type_ok {
            self.errors.push(format!(
                "{at}: expected {} ({name}), got {value}",
                kind.unwrap()
            ));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                self.errors
                    .push(format!("{at}: {value} is not one of the {name} values"));
            }
            self.enums_seen
                .entry(format!("{name}@{}", strip_indexes(at)))
                .or_default()
                .insert(value.to_string());
        }
        match schema["format"].as_str() {
            Some("date-time") => {
                let text = value.as_str().unwrap_or_default();
                if OffsetDateTime::parse(text, &Rfc3339).is_err() {
                    self.errors.push(format!("{at}: {text:?} is not RFC 3339"));
                }
            }
            Some("email") if !value.as_str().unwrap_or_default().contains('@') => {
                self.errors
                    .push(format!("{at}: {value} is not an email address"));
            }
            _ => {}
        }
        if let Some(items) = schema.get("items") {
            for (idx, item) in value.as_array().into_iter().flatten().enumerate() {
                self.check(items, name, item, &format!("{at}[{idx}]"));
            }
        }
        if let (Some(properties), Value::Object(fields)) = (schema.get("properties"), value) {
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !fields.contains_key(key) {
                    self.errors.push(format!("{at}: required {key:?} missing"));
                }
            }
            for (key, field) in fields {
                let here = format!("{at}.{key}");
                match properties.get(key) {
                    Some(_) if field.is_null() && DOCUMENTED_NULLS.contains(&(name, key)) => {}
                    Some(property) => self.check(property, name, field, &here),
                    None if DOCUMENTED_ADDITIONS.contains(&(name, key)) => {}
                    None if open => {}
                    None => self.errors.push(format!("{here}: not in {name}")),
                }
            }
        }
    }

    /// The property names a schema (or the schema it refers to) declares.
    fn properties(&self, schema: &'a Value) -> Vec<String> {
        if let Some(reference) = schema["$ref"].as_str() {
            return self.properties(self.resolve(reference).0);
        }
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            names.extend(self.properties(part));
        }
        names
    }
}

fn strip_indexes(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for ch in path.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

/// One raw request to the simulator; returns status and body.
async fn call(sim: &Simulator, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let socket = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, sim.addr().to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// The schema of a path's response for `status`, from the spec.
fn response_schema<'a>(spec: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let response = &spec["paths"][path][method]["responses"][status]["$ref"];
    let name = response
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/responses/"))
        .unwrap_or_else(|| panic!("{path} {method} {status}: no response $ref"));
    &spec["components"]["responses"][name]["content"]["application/json"]["schema"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_v1_responses_conform_to_openapi_1_2_0() {
    let spec = load_spec();
    let env = Env::with_sim(3_000, 51, |sim| sim.v3_revision = V3Revision::Current).await;
    let mut validator = Validator {
        spec: &spec,
        errors: Vec::new(),
        enums_seen: BTreeMap::new(),
    };
    let start = (OffsetDateTime::now_utc() - time::Duration::days(2))
        .format(&Rfc3339)
        .unwrap();
    let mut served = 0;
    for stream in Stream::ALL {
        let path = format!("/api/v1/{stream}");
        assert!(
            spec["paths"][&path]["post"].is_object(),
            "{path} is in the spec"
        );
        let schema = response_schema(&spec, &path, "post", "200");
        let mut body = format!(r#"{{"limit":1000,"start_time":"{start}"}}"#);
        loop {
            let (status, text) = call(&env.sim, "POST", &path, &env.token, &body).await;
            assert_eq!(status, 200, "{path}: {text}");
            let page: Value = serde_json::from_str(&text).unwrap();
            validator.check(schema, "response", &page, &path);
            served += page["items"].as_array().unwrap().len();
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
            body = serde_json::json!({ "cursor": page["cursor"] }).to_string();
        }
        // The documented error shape, for a token the simulator does not know.
        let (status, text) = call(&env.sim, "POST", &path, "not-a-token", &body).await;
        assert_eq!(status, 401);
        let unauthorized = response_schema(&spec, &path, "post", "401");
        validator.check(
            unauthorized,
            "Error",
            &serde_json::from_str(&text).unwrap(),
            &path,
        );
    }
    assert_eq!(served, 9_000, "every event was checked");
    for path in ["/api/auth/introspect", "/api/v2/auth/introspect"] {
        let (status, text) = call(&env.sim, "GET", path, &env.token, "").await;
        assert_eq!(status, 200, "{path}: {text}");
        let schema = response_schema(&spec, path, "get", "200");
        validator.check(
            schema,
            "response",
            &serde_json::from_str(&text).unwrap(),
            path,
        );
    }
    assert!(
        validator.errors.is_empty(),
        "{} violations, e.g.:\n{}",
        validator.errors.len(),
        validator
            .errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The check saw the enums' variety, not a handful of values.
    let seen = |key: &str| {
        validator
            .enums_seen
            .iter()
            .filter(|(k, _)| k.ends_with(key))
            .map(|(_, values)| values.len())
            .sum::<usize>()
    };
    assert!(
        seen("/api/v1/auditevents.items.action") >= 40,
        "{:?}",
        validator.enums_seen.keys()
    );
    assert!(seen("/api/v1/auditevents.items.object_type") >= 20);
    assert!(seen("/api/v1/signinattempts.items.type") >= 25);
    assert!(seen("/api/v1/itemusages.items.action") >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_fails_on_v2_events() {
    // The same check applied to the v2 endpoint's events finds the v2-only fields and values,
    // so a simulator serving v2 shapes on v1 paths would fail the test above.
    let spec = load_spec();
    let env = Env::new(400, 52).await;
    let mut validator = Validator {
        spec: &spec,
        errors: Vec::new(),
        enums_seen: BTreeMap::new(),
    };
    let start = (OffsetDateTime::now_utc() - time::Duration::days(2))
        .format(&Rfc3339)
        .unwrap();
    let body = format!(r#"{{"limit":1000,"start_time":"{start}"}}"#);
    for (stream, flagged) in [
        (Stream::AuditEvents, &["actor_type", "account_uuid"][..]),
        (
            Stream::ItemUsages,
            &["user_type", "user_account_uuid", "\"other\""],
        ),
        (Stream::SignInAttempts, &["account_uuid", "\"federated\""]),
    ] {
        let schema = response_schema(&spec, &format!("/api/v1/{stream}"), "post", "200");
        let (status, text) = call(
            &env.sim,
            "POST",
            &format!("/api/v2/{stream}"),
            &env.token,
            &body,
        )
        .await;
        assert_eq!(status, 200);
        validator.errors.clear();
        validator.check(
            schema,
            "response",
            &serde_json::from_str(&text).unwrap(),
            "v2",
        );
        let joined = validator.errors.join("\n");
        for v2_only in flagged {
            assert!(
                joined.contains(v2_only),
                "{stream}: {v2_only} is flagged:\n{joined}"
            );
        }
    }
}
