//! How [`Core`] handles what devices say: first contact and provisioning policy, online and
//! offline, reports (with settled desired values), info, events and action replies.

use std::sync::atomic::Ordering;

use device_models::{
    DeviceCommand, DeviceEvent, EventBatch, Stamped, Thing, ThingId, ThingState, ThingType,
};
use serde_json::{Map, Value as Json, json};
use tokio::time::Instant;

use super::*;

impl Core {
    /// Handles one event from gateway `gw`.
    pub fn handle_event(&mut self, gw: GatewayId, event: DeviceEvent, now: Instant, now_ms: u64) {
        // A barrier is the gateway asking for a commit, a batch holds events counted one by
        // one: neither is something a device said.
        if !matches!(event, DeviceEvent::Barrier(_) | DeviceEvent::Batch(_)) {
            self.stats.events_in.fetch_add(1, Ordering::Relaxed);
        }
        match event {
            DeviceEvent::Hello {
                thing,
                type_hint,
                info,
            } => {
                if self.things.contains_key(&thing) {
                    if !info.is_empty() {
                        self.device_info(&thing, &info);
                    }
                } else if !self.auto_provision(&thing, type_hint.as_deref(), &info, now, now_ms) {
                    self.unprovisioned.heard(&thing, gw, &info);
                    return;
                }
                self.heard_from(&thing, gw);
            }
            DeviceEvent::Online { thing } => {
                if self.known(&thing, gw, now, "online") {
                    self.heard_from(&thing, gw);
                }
            }
            DeviceEvent::Offline { thing } => {
                let from_its_gateway = self
                    .things
                    .get(&thing)
                    .is_some_and(|e| e.gateway == Some(gw));
                if from_its_gateway {
                    self.go_offline(&thing, "its gateway says so");
                }
                self.unprovisioned.gone(&thing, gw);
            }
            DeviceEvent::Reported {
                thing,
                values,
                at_ms,
            } => {
                if !self.things.contains_key(&thing)
                    && !self.auto_provision(&thing, None, &Map::new(), now, now_ms)
                {
                    self.unprovisioned.heard(&thing, gw, &Map::new());
                    return;
                }
                self.heard_from(&thing, gw);
                self.report(&thing, values, at_ms);
            }
            DeviceEvent::Info { thing, info } => {
                if self.known(&thing, gw, now, "info") {
                    self.heard_from(&thing, gw);
                    self.device_info(&thing, &info);
                } else {
                    self.unprovisioned.heard(&thing, gw, &info);
                }
            }
            DeviceEvent::Event {
                thing,
                name,
                payload,
                at_ms,
            } => {
                if self.known(&thing, gw, now, "event") {
                    self.heard_from(&thing, gw);
                    self.device_event(&thing, name, payload, at_ms);
                }
            }
            DeviceEvent::ActionReply {
                thing,
                correlation,
                outcome,
            } => self.action_reply(&thing, &correlation, outcome, now_ms),
            // Behind the writes of the events before it, in the writer's queue.
            DeviceEvent::Barrier(commit) => self.out.store.push(StoreOp::Barrier(commit)),
            DeviceEvent::Batch(batch) => self.batch(gw, *batch, now, now_ms),
            DeviceEvent::Raw { source, .. } => {
                self.stats.raw_messages.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%source, "raw device message ignored by the things service");
            }
        }
    }

    /// Handles a batch's events in order, marks the covered messages whose events the type
    /// check refused, and queues the batch's barrier behind their writes.
    fn batch(&mut self, gw: GatewayId, batch: EventBatch, now: Instant, now_ms: u64) {
        let EventBatch { events, covered } = batch;
        let (commit, ranges) = match covered {
            Some((commit, ranges)) => (Some(commit), ranges),
            None => (None, Vec::new()),
        };
        // The covered message the next refused event may belong to (ranges come in order).
        let mut member = 0;
        for (at, event) in (0u32..).zip(events) {
            if matches!(event, DeviceEvent::Barrier(_) | DeviceEvent::Batch(_)) {
                tracing::debug!("a barrier or batch inside a batch ignored");
                continue;
            }
            self.refusal = false;
            self.handle_event(gw, event, now, now_ms);
            if !self.refusal {
                continue;
            }
            while ranges.get(member).is_some_and(|r| r.end <= at) {
                member += 1;
            }
            if let (Some(commit), Some(range)) = (&commit, ranges.get(member))
                && range.contains(&at)
                && let Ok(ordinal) = u32::try_from(member)
            {
                commit.refuse(ordinal);
            }
        }
        self.refusal = false;
        if let Some(commit) = commit {
            self.out.store.push(StoreOp::Barrier(commit));
        }
    }

    /// True if the thing is provisioned; otherwise counts and (rate-limited) logs it, and
    /// remembers that it is present on `gw`.
    fn known(&mut self, thing: &ThingId, gw: GatewayId, now: Instant, what: &str) -> bool {
        if self.things.contains_key(thing) {
            return true;
        }
        self.unknown_device(thing, now, what);
        self.unprovisioned.heard(thing, gw, &Map::new());
        false
    }

    /// A thing just provisioned whose device a gateway reported present: online at once, on
    /// that gateway, with the info the device announced.
    pub(super) fn adopt_present(&mut self, thing: &ThingId) {
        let Some(present) = self.unprovisioned.take(thing) else {
            return;
        };
        if !self.gateways.contains_key(&present.gateway) {
            return;
        }
        if !present.info.is_empty() {
            self.device_info(thing, &present.info);
        }
        self.heard_from(thing, present.gateway);
    }

    fn unknown_device(&mut self, thing: &ThingId, now: Instant, why: &str) {
        self.stats.unknown_devices.fetch_add(1, Ordering::Relaxed);
        if let Some(unlogged) = self.unknown.should_log(thing, now) {
            tracing::warn!(thing = %thing, reason = why, unlogged, "message from an unknown device dropped (provision it with brume.things.provision)");
        }
    }

    /// Logs a message that broke its thing's type, at most once a minute per thing, and
    /// notes the refusal for the batch being handled, if any (see [`Core::batch`]).
    fn log_rejected(&mut self, thing: &ThingId, what: &str, error: &dyn std::fmt::Display) {
        self.refusal = true;
        if let Some(unlogged) = self.rejected.should_log(thing, Instant::now()) {
            tracing::warn!(thing = %thing, %error, unlogged, "device {what} rejected (further ones are counted and logged at most once a minute)");
        }
    }

    fn auto_provision(
        &mut self,
        thing: &ThingId,
        hint: Option<&str>,
        info: &Map<String, Json>,
        now: Instant,
        now_ms: u64,
    ) -> bool {
        if self.settings.provisioning == Provisioning::Explicit {
            self.unknown_device(thing, now, "provisioning is explicit");
            return false;
        }
        let ty = hint
            .and_then(|h| self.catalog.get(h))
            .or_else(|| {
                self.settings
                    .auto_type
                    .as_deref()
                    .and_then(|t| self.catalog.get(t))
            })
            .cloned();
        let Some(ty) = ty else {
            self.unknown_device(thing, now, "no known type hint and no things.auto_type");
            return false;
        };
        let mut t = Thing::new(thing.clone(), ty.id.clone(), now_ms);
        match ty.check_info_reported(thing, info) {
            Ok(()) => {
                t.apply_info(info);
            }
            Err(e) => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(thing = %thing, error = %e, "info of an auto-provisioned device ignored");
            }
        }
        tracing::info!(thing = %thing, r#type = %ty.id, "thing auto-provisioned");
        self.stats.auto_provisioned.fetch_add(1, Ordering::Relaxed);
        self.insert_thing(t, ty, None, true);
        true
    }

    pub(super) fn insert_thing(
        &mut self,
        thing: Thing,
        ty: Arc<ThingType>,
        secret: Option<SecretHash>,
        auto: bool,
    ) {
        let id = thing.id.clone();
        self.credentials.insert(id.clone(), secret.clone());
        self.followers.added(&id, &ty);
        self.out.store.push(StoreOp::PutThing {
            id: id.clone(),
            type_id: thing.type_id.clone(),
            info: thing.info.clone(),
            created_ms: thing.created_ms,
            secret: secret.clone(),
        });
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(id.as_str()));
        kwargs.insert("type".into(), Value::from(thing.type_id.as_str()));
        kwargs.insert("info".into(), Value::from(Json::Object(thing.info.clone())));
        kwargs.insert("created".into(), Value::from(thing.created_ms));
        kwargs.insert("auto".into(), Value::Bool(auto));
        self.publish(uris::things::ON_PROVISION.into(), kwargs);
        self.things.insert(
            id,
            Entry {
                thing,
                ty,
                state: ThingState::default(),
                online: false,
                gateway: None,
            },
        );
    }

    /// Marks a thing as reachable through `gw`; on the offline → online edge, publishes
    /// `on_online` and sends its pending desired values again.
    fn heard_from(&mut self, thing: &ThingId, gw: GatewayId) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        e.gateway = Some(gw);
        if e.online {
            return;
        }
        e.online = true;
        let pending = e.state.pending_desired();
        let type_id = e.thing.type_id.clone();
        tracing::debug!(thing = %thing, gateway = gw, "thing online");
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        kwargs.insert("type".into(), Value::from(type_id));
        kwargs.insert("gateway".into(), Value::from(gw));
        self.publish(uris::things::ON_ONLINE.into(), kwargs);
        if !pending.is_empty() {
            let cmd = DeviceCommand::SetDesired {
                thing: thing.clone(),
                values: pending,
            };
            // Best effort: what does not fit is sent again at the next online edge.
            let _ = self.send_command(Some(gw), cmd);
        }
    }

    pub(super) fn go_offline(&mut self, thing: &ThingId, why: &str) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if !e.online {
            return;
        }
        e.online = false;
        tracing::debug!(thing = %thing, reason = why, "thing offline");
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        self.publish(uris::things::ON_OFFLINE.into(), kwargs);
        let message = format!("thing {thing:?} went offline ({why})");
        self.fail_pending_of(thing, || {
            ApiError::new(errors::THING_OFFLINE, message.clone()).with("thing", thing.as_str())
        });
    }

    fn report(&mut self, thing: &ThingId, values: Map<String, Json>, at_ms: u64) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_reported(thing, &values) {
            self.stats.invalid_reports.fetch_add(1, Ordering::Relaxed);
            self.log_rejected(thing, "report", &err);
            return;
        }
        // One pass over the report: the rows to write, and the changed values for the event.
        let mut rows: Vec<(String, Stamped)> = Vec::with_capacity(values.len());
        let (mut vals, mut at) = (Dict::new(), Dict::new());
        let settled = e
            .state
            .merge_report(values, at_ms, |name, stored, changed| {
                rows.push((name.to_owned(), stored.clone()));
                if changed {
                    at.insert(name.to_owned(), Value::from(stored.at_ms));
                    vals.insert(name.to_owned(), Value::from(stored.value.clone()));
                }
            });
        if !rows.is_empty() {
            self.out.store.push(StoreOp::PutReported {
                thing: thing.clone(),
                values: rows,
            });
        }
        if !settled.is_empty() {
            self.out.store.push(StoreOp::ClearDesired {
                thing: thing.clone(),
                names: settled.clone(),
            });
            for name in settled {
                let stamped = self
                    .things
                    .get(thing)
                    .and_then(|e| e.state.reported.get(&name).cloned())
                    .unwrap_or(Stamped {
                        value: Json::Null,
                        at_ms,
                    });
                self.settle(thing, name, stamped);
            }
        }
        if !vals.is_empty() {
            let mut kwargs = Dict::new();
            kwargs.insert("thing".into(), Value::from(thing.as_str()));
            kwargs.insert("values".into(), Value::Dict(vals));
            kwargs.insert("at".into(), Value::Dict(at));
            self.stats.state_events.fetch_add(1, Ordering::Relaxed);
            self.publish(uris::things::state_topic(thing.as_str()), kwargs);
        }
    }

    fn settle(&mut self, thing: &ThingId, name: String, stamped: Stamped) {
        let Some(id) = self.set_by_property.remove(&(thing.clone(), name.clone())) else {
            return;
        };
        let Some(w) = self.sets.get_mut(&id) else {
            return;
        };
        w.waiting.remove(&name);
        w.settled.insert(name, stamped);
        if w.waiting.is_empty()
            && let Some(w) = self.sets.remove(&id)
        {
            let result = json!({ "thing": w.thing.as_str(), "settled": stamped_map(&w.settled) });
            Outcome::Succeeded.count(&self.stats.sets);
            let _ = w.reply.send(Ok(result));
        }
    }

    fn device_info(&mut self, thing: &ThingId, info: &Map<String, Json>) {
        let Some(e) = self.things.get_mut(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_info_reported(thing, info) {
            self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
            self.log_rejected(thing, "info", &err);
            return;
        }
        if !e.thing.apply_info(info).is_empty() {
            self.out.store.push(StoreOp::SetInfo {
                id: thing.clone(),
                info: e.thing.info.clone(),
            });
        }
    }

    fn device_event(&mut self, thing: &ThingId, name: String, payload: Json, at_ms: u64) {
        let Some(e) = self.things.get(thing) else {
            return;
        };
        if let Err(err) = e.ty.check_event_payload(thing, &name, &payload) {
            self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
            self.log_rejected(thing, "event", &err);
            return;
        }
        let mut kwargs = Dict::new();
        kwargs.insert("thing".into(), Value::from(thing.as_str()));
        kwargs.insert("event".into(), Value::from(name.as_str()));
        kwargs.insert("payload".into(), Value::from(payload));
        kwargs.insert("at".into(), Value::from(at_ms));
        self.publish(uris::things::event_topic(thing, name), kwargs);
    }

    fn action_reply(
        &mut self,
        thing: &ThingId,
        correlation: &str,
        outcome: Result<Json, String>,
        now_ms: u64,
    ) {
        let matches = self.actions.get(correlation).map(|w| &w.thing == thing);
        match matches {
            None => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(thing = %thing, correlation, "reply to an unknown or expired action call ignored");
                return;
            }
            Some(false) => {
                self.stats.invalid_messages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(thing = %thing, correlation, "action reply from a different thing ignored");
                return;
            }
            Some(true) => {}
        }
        let Some(w) = self.actions.remove(correlation) else {
            return;
        };
        let checked = match (&outcome, self.things.get(thing)) {
            (Ok(output), Some(e)) => match e.ty.check_action_output(thing, &w.action, output) {
                Ok(()) => Ok(()),
                Err(err) => {
                    // The device hears of it in the acknowledgement of its reply.
                    self.refusal = true;
                    Err(format!("the device's reply was rejected: {err}"))
                }
            },
            (Ok(_), None) => Err("the thing was deleted".to_owned()),
            (Err(message), _) => Err(format!("the device answered with an error: {message}")),
        };
        match (checked, outcome) {
            (Ok(()), Ok(output)) => {
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Done,
                    result: Some(output.clone()),
                    at_ms: now_ms,
                });
                Outcome::Succeeded.count(&self.stats.actions);
                let _ = w.reply.send(Ok(output));
            }
            (Err(message), _) | (Ok(()), Err(message)) => {
                tracing::info!(thing = %thing, action = %w.action, %message, "action failed");
                self.out.store.push(StoreOp::UpdateAction {
                    id: w.id,
                    status: ActionStatus::Failed,
                    result: Some(Json::String(message.clone())),
                    at_ms: now_ms,
                });
                let err = ApiError::new(errors::ACTION_FAILED, message)
                    .with("thing", thing.as_str())
                    .with("action", w.action.as_str());
                Outcome::Failed.count(&self.stats.actions);
                let _ = w.reply.send(Err(err));
            }
        }
    }
}
