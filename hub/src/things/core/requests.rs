//! How [`Core`] answers the API: reads, provisioning and lifecycle, types, descriptions, and
//! the calls that wait on a device (`set` and actions).

use device_models::{DeviceCommand, Stamped, Thing, ThingId};
use serde_json::{Map, Value as Json, json};
use tokio::time::Instant;

use super::*;

impl Core {
    /// Handles one API request; the reply is sent now or, for `set` and actions, when the device
    /// answers or the deadline passes.
    pub fn handle_request(&mut self, req: Request, reply: Reply, now: Instant, now_ms: u64) {
        let answer = match req {
            Request::List { type_id, online } => Ok(self.list(type_id.as_deref(), online)),
            Request::Get { thing, property } => self.get(&thing, property.as_deref()),
            // Changes are answered once the writes that hold them are committed.
            Request::Provision {
                thing,
                type_id,
                info,
            } => {
                let answer = self.provision(thing, &type_id, info, now_ms);
                return self.after_commit(reply, answer);
            }
            Request::Delete { thing } => {
                let answer = self.delete(&thing);
                return self.after_commit(reply, answer);
            }
            Request::UpdateInfo { thing, values } => {
                let answer = self.update_info(&thing, &values);
                return self.after_commit(reply, answer);
            }
            Request::TypesList => Ok(self.types_list()),
            Request::TypesGet { type_id } => self.types_get(&type_id),
            Request::Describe { thing } => self.describe(&thing),
            // The service answers it (it sees the writer); a core alone has no writer.
            Request::Stats => Ok(self
                .stats
                .to_json(&super::super::store::StoreStats::default(), 0)),
            Request::Canceled => {
                self.forget_canceled(now_ms);
                Ok(Json::Null)
            }
            Request::Set {
                thing,
                values,
                timeout,
            } => {
                self.stats.sets.called.fetch_add(1, Ordering::Relaxed);
                return self.set(thing, values, timeout, reply, now, now_ms);
            }
            Request::Action {
                thing,
                action,
                input,
                timeout,
            } => {
                self.stats.actions.called.fetch_add(1, Ordering::Relaxed);
                return self.invoke(thing, action, input, timeout, reply, now, now_ms);
            }
        };
        let _ = reply.send(answer);
    }

    /// Answers a change once the database holds it: a success waits behind the writes it made,
    /// in the writer's queue; an error (nothing written) is answered now.
    fn after_commit(&mut self, reply: Reply, answer: Result<Json, ApiError>) {
        if answer.is_ok() && !self.out.store.is_empty() {
            self.out.store.push(StoreOp::Reply { reply, answer });
        } else {
            let _ = reply.send(answer);
        }
    }

    fn entry(&self, thing: &ThingId) -> Result<&Entry, ApiError> {
        self.things
            .get(thing)
            .ok_or_else(|| ApiError::no_such_thing(thing))
    }

    fn summary(e: &Entry) -> Map<String, Json> {
        let mut m = Map::new();
        m.insert("thing".into(), Json::from(e.thing.id.as_str()));
        m.insert("type".into(), Json::from(e.thing.type_id.as_str()));
        m.insert("online".into(), Json::Bool(e.online));
        m.insert("info".into(), Json::Object(e.thing.info.clone()));
        m.insert("created".into(), Json::from(e.thing.created_ms));
        m
    }

    fn list(&self, type_id: Option<&str>, online: Option<bool>) -> Json {
        let mut found: Vec<&Entry> = self
            .things
            .values()
            .filter(|e| type_id.is_none_or(|t| e.thing.type_id == t))
            .filter(|e| online.is_none_or(|o| e.online == o))
            .collect();
        found.sort_by(|a, b| a.thing.id.cmp(&b.thing.id));
        Json::Array(
            found
                .into_iter()
                .map(|e| Json::Object(Self::summary(e)))
                .collect(),
        )
    }

    fn get(&self, thing: &ThingId, property: Option<&str>) -> Result<Json, ApiError> {
        let e = self.entry(thing)?;
        let Some(name) = property else {
            let mut m = Self::summary(e);
            m.insert("reported".into(), stamped_map(&e.state.reported));
            m.insert("desired".into(), stamped_map(&e.state.desired));
            return Ok(Json::Object(m));
        };
        let Some(p) = e.ty.property(name) else {
            return Err(ApiError::check(&device_models::CheckError {
                thing: thing.clone(),
                target: device_models::Target::Property(name.to_owned()),
                rule: device_models::CheckRule::Undefined {
                    type_id: e.ty.id.clone(),
                },
            }));
        };
        let mut m = Map::new();
        m.insert("thing".into(), Json::from(thing.as_str()));
        m.insert("property".into(), Json::from(name));
        match p.kind {
            device_models::PropertyKind::Info => {
                m.insert("kind".into(), Json::from("info"));
                m.insert(
                    "value".into(),
                    e.thing.info.get(name).cloned().unwrap_or(Json::Null),
                );
            }
            device_models::PropertyKind::State => {
                m.insert("kind".into(), Json::from("state"));
                match e.state.reported.get(name) {
                    Some(s) => {
                        m.insert("value".into(), s.value.clone());
                        m.insert("at".into(), Json::from(s.at_ms));
                    }
                    None => {
                        m.insert("value".into(), Json::Null);
                    }
                }
                if let Some(d) = e.state.desired.get(name) {
                    m.insert("desired".into(), stamped_json(d));
                }
            }
        }
        Ok(Json::Object(m))
    }

    fn provision(
        &mut self,
        thing: ThingId,
        type_id: &str,
        info: Map<String, Json>,
        now_ms: u64,
    ) -> Result<Json, ApiError> {
        if let Some(e) = self.things.get(&thing) {
            return Err(ApiError::invalid(format!(
                "thing {:?} already exists (type {:?})",
                thing.as_str(),
                e.thing.type_id
            ))
            .with("thing", thing.as_str()));
        }
        let Some(ty) = self.catalog.get(type_id).cloned() else {
            return Err(
                ApiError::new(errors::NO_SUCH_TYPE, format!("no thing type {type_id:?}"))
                    .with("type", type_id),
            );
        };
        ty.check_info_reported(&thing, &info)
            .map_err(|e| ApiError::check(&e))?;
        let secret = secret::generate();
        let hash = SecretHash::new(&secret);
        let mut t = Thing::new(thing.clone(), ty.id.clone(), now_ms);
        t.apply_info(&info);
        tracing::info!(thing = %thing, r#type = %ty.id, "thing provisioned");
        self.insert_thing(t, ty, Some(hash), false);
        self.adopt_present(&thing);
        let summary = self
            .things
            .get(&thing)
            .map(Self::summary)
            .unwrap_or_default();
        Ok(json!({ "thing": summary, "secret": secret.expose() }))
    }

    fn delete(&mut self, thing: &ThingId) -> Result<Json, ApiError> {
        if !self.things.contains_key(thing) {
            return Err(ApiError::no_such_thing(thing));
        }
        let message = format!("thing {thing:?} was deleted");
        self.fail_pending_of(thing, || {
            ApiError::no_such_thing(thing).with("reason", message.as_str())
        });
        self.things.remove(thing);
        self.credentials.remove(thing);
        self.followers.removed(thing);
        tracing::info!(thing = %thing, "thing deleted");
        self.out
            .store
            .push(StoreOp::DeleteThing { id: thing.clone() });
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        self.publish(uris::things::ON_DELETE.into(), kwargs);
        Ok(json!({ "thing": thing.as_str(), "deleted": true }))
    }

    fn update_info(
        &mut self,
        thing: &ThingId,
        values: &Map<String, Json>,
    ) -> Result<Json, ApiError> {
        let e = self
            .things
            .get_mut(thing)
            .ok_or_else(|| ApiError::no_such_thing(thing))?;
        if values.is_empty() {
            return Err(ApiError::invalid("no info values given").with("thing", thing.as_str()));
        }
        e.ty.check_info_update(thing, values)
            .map_err(|err| ApiError::check(&err))?;
        if !e.thing.apply_info(values).is_empty() {
            self.out.store.push(StoreOp::SetInfo {
                id: thing.clone(),
                info: e.thing.info.clone(),
            });
        }
        Ok(json!({ "thing": thing.as_str(), "info": e.thing.info }))
    }

    fn types_list(&self) -> Json {
        Json::Array(
            self.catalog
                .list()
                .map(|t| {
                    let origin = match self.catalog.origin(&t.id) {
                        Some(TypeOrigin::File(_)) => "file",
                        _ => "builtin",
                    };
                    json!({
                        "id": t.id,
                        "title": t.title,
                        "description": t.description,
                        "version": t.version,
                        "origin": origin,
                    })
                })
                .collect(),
        )
    }

    fn types_get(&self, type_id: &str) -> Result<Json, ApiError> {
        let ty = self.catalog.get(type_id).ok_or_else(|| {
            ApiError::new(errors::NO_SUCH_TYPE, format!("no thing type {type_id:?}"))
                .with("type", type_id)
        })?;
        serde_json::to_value(&**ty)
            .map_err(|e| ApiError::new(uris::INVALID_ARGUMENT, format!("type {type_id:?}: {e}")))
    }

    fn describe(&self, thing: &ThingId) -> Result<Json, ApiError> {
        let e = self.entry(thing)?;
        Ok(device_models::thing_description(
            &e.thing,
            &e.ty,
            &self.settings.td,
        ))
    }

    fn offline_error(thing: &ThingId) -> ApiError {
        ApiError::new(
            errors::THING_OFFLINE,
            format!("thing {:?} is offline", thing.as_str()),
        )
        .with("thing", thing.as_str())
    }

    fn push_deadline(&mut self, now: Instant, timeout_ms: u64, key: Deadline) {
        self.deadlines
            .push(Reverse((now + Duration::from_millis(timeout_ms), key)));
    }

    fn set(
        &mut self,
        thing: ThingId,
        values: Map<String, Json>,
        call_timeout: Option<Duration>,
        reply: Reply,
        now: Instant,
        now_ms: u64,
    ) {
        let Some(e) = self.things.get_mut(&thing) else {
            Outcome::Refused.count(&self.stats.sets);
            let _ = reply.send(Err(ApiError::no_such_thing(&thing)));
            return;
        };
        if values.is_empty() {
            Outcome::Refused.count(&self.stats.sets);
            let _ = reply.send(Err(
                ApiError::invalid("no values to set").with("thing", thing.as_str())
            ));
            return;
        }
        if let Err(err) = e.ty.check_desired(&thing, &values) {
            Outcome::Refused.count(&self.stats.sets);
            let _ = reply.send(Err(ApiError::check(&err)));
            return;
        }
        let pending = e.state.set_desired(&values, now_ms);
        let put: Vec<(String, Stamped)> = pending
            .iter()
            .filter_map(|n| e.state.desired.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        let cleared: Vec<String> = values
            .keys()
            .filter(|k| !pending.contains(k))
            .cloned()
            .collect();
        let already: BTreeMap<String, Stamped> = cleared
            .iter()
            .filter_map(|n| e.state.reported.get(n).map(|s| (n.clone(), s.clone())))
            .collect();
        let online = e.online;
        let gateway = e.gateway;
        let desired_values: Map<String, Json> = put
            .iter()
            .map(|(n, s)| (n.clone(), s.value.clone()))
            .collect();
        if !put.is_empty() {
            self.out.store.push(StoreOp::PutDesired {
                thing: thing.clone(),
                values: put,
            });
        }
        if !cleared.is_empty() {
            self.out.store.push(StoreOp::ClearDesired {
                thing: thing.clone(),
                names: cleared,
            });
        }
        // A later set of a property supersedes the calls still waiting on it.
        for name in values.keys() {
            if let Some(id) = self
                .set_by_property
                .get(&(thing.clone(), name.clone()))
                .copied()
            {
                self.fail_set(
                    id,
                    ApiError::new(
                        uris::CANCELED,
                        format!(
                            "superseded by a later set of {name:?} on thing {:?}",
                            thing.as_str()
                        ),
                    )
                    .with("thing", thing.as_str())
                    .with("property", name.as_str()),
                );
            }
        }
        if pending.is_empty() {
            let result = json!({ "thing": thing.as_str(), "settled": stamped_map(&already) });
            Outcome::Succeeded.count(&self.stats.sets);
            let _ = reply.send(Ok(result));
            return;
        }
        if !online || gateway.is_none() {
            let names: Vec<Value> = pending.iter().map(|n| Value::from(n.as_str())).collect();
            let err = ApiError::new(
                errors::THING_OFFLINE,
                format!(
                    "thing {:?} is offline; the desired values stay pending and are sent when it comes back",
                    thing.as_str()
                ),
            )
            .with("thing", thing.as_str())
            .with("pending", Value::List(names));
            Outcome::Refused.count(&self.stats.sets);
            let _ = reply.send(Err(err));
            return;
        }
        let cmd = DeviceCommand::SetDesired {
            thing: thing.clone(),
            values: desired_values,
        };
        match self.send_command(gateway, cmd) {
            Ok(()) => {}
            Err(SendFailure::Full) => {
                Outcome::Refused.count(&self.stats.sets);
                let _ = reply.send(Err(ApiError::new(
                    uris::UNAVAILABLE,
                    format!(
                        "the gateway of thing {:?} is not taking commands; the desired values stay pending",
                        thing.as_str()
                    ),
                )
                .with("thing", thing.as_str())));
                return;
            }
            Err(SendFailure::Gone) => {
                Outcome::Refused.count(&self.stats.sets);
                let _ = reply.send(Err(Self::offline_error(&thing)));
                return;
            }
        }
        let timeout_ms = effective_timeout(self.settings.set_timeout, call_timeout);
        let id = self.next_set;
        self.next_set += 1;
        for name in &pending {
            self.set_by_property
                .insert((thing.clone(), name.clone()), id);
        }
        self.sets.insert(
            id,
            SetWaiter {
                thing,
                waiting: pending.into_iter().collect(),
                settled: already,
                timeout_ms,
                reply,
            },
        );
        self.push_deadline(now, timeout_ms, Deadline::Set(id));
    }

    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &mut self,
        thing: ThingId,
        action: String,
        input: Json,
        call_timeout: Option<Duration>,
        reply: Reply,
        now: Instant,
        now_ms: u64,
    ) {
        let Some(e) = self.things.get(&thing) else {
            Outcome::Refused.count(&self.stats.actions);
            let _ = reply.send(Err(ApiError::no_such_thing(&thing)));
            return;
        };
        let Some(def) = e.ty.action(&action) else {
            Outcome::Refused.count(&self.stats.actions);
            let _ = reply.send(Err(ApiError::new(
                errors::NO_SUCH_ACTION,
                format!(
                    "thing {:?} (type {:?}) has no action {action:?}",
                    thing.as_str(),
                    e.ty.id
                ),
            )
            .with("thing", thing.as_str())
            .with("action", action.as_str())));
            return;
        };
        if let Err(err) = e.ty.check_action_input(&thing, &action, &input) {
            Outcome::Refused.count(&self.stats.actions);
            let _ = reply.send(Err(ApiError::check(&err)));
            return;
        }
        if !e.online || e.gateway.is_none() {
            Outcome::Refused.count(&self.stats.actions);
            let _ = reply.send(Err(Self::offline_error(&thing)));
            return;
        }
        let gateway = e.gateway;
        let timeout_ms = effective_timeout(Duration::from_millis(def.timeout_ms), call_timeout);
        let id = self.next_action;
        self.next_action += 1;
        let correlation = id.to_string();
        let span = tracing::debug_span!("action", thing = %thing, action = %action, id);
        let _guard = span.enter();
        self.out.store.push(StoreOp::InsertAction {
            id,
            thing: thing.clone(),
            action: action.clone(),
            input: input.clone(),
            status: ActionStatus::Queued,
            at_ms: now_ms,
        });
        let cmd = DeviceCommand::InvokeAction {
            thing: thing.clone(),
            action: action.clone(),
            input,
            correlation: correlation.clone(),
            deadline_ms: now_ms + timeout_ms,
        };
        let failure = match self.send_command(gateway, cmd) {
            Ok(()) => None,
            Err(SendFailure::Full) => Some(
                ApiError::new(
                    uris::UNAVAILABLE,
                    format!(
                        "the gateway of thing {:?} is not taking commands",
                        thing.as_str()
                    ),
                )
                .with("thing", thing.as_str()),
            ),
            Err(SendFailure::Gone) => Some(Self::offline_error(&thing)),
        };
        if let Some(err) = failure {
            self.out.store.push(StoreOp::UpdateAction {
                id,
                status: ActionStatus::Failed,
                result: Some(Json::String(err.message.clone())),
                at_ms: now_ms,
            });
            Outcome::Refused.count(&self.stats.actions);
            let _ = reply.send(Err(err));
            return;
        }
        tracing::debug!("action sent");
        self.out.store.push(StoreOp::UpdateAction {
            id,
            status: ActionStatus::Sent,
            result: None,
            at_ms: now_ms,
        });
        self.actions.insert(
            correlation.clone(),
            ActionWaiter {
                id,
                thing,
                action,
                timeout_ms,
                reply,
            },
        );
        self.push_deadline(now, timeout_ms, Deadline::Action(correlation));
    }
}
