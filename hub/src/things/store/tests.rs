use serde_json::json;

use super::*;

fn id(s: &str) -> ThingId {
    ThingId::new(s).unwrap()
}

fn stamped(v: Value, at_ms: u64) -> Stamped {
    Stamped { value: v, at_ms }
}

fn flush(store: &Store) {
    let (tx, rx) = oneshot::channel();
    store.sender().blocking_send(StoreOp::Flush(tx)).unwrap();
    rx.blocking_recv().unwrap();
}

fn put_thing(store: &Store, name: &str) {
    store
        .sender()
        .blocking_send(StoreOp::PutThing {
            id: id(name),
            type_id: "thermostat".into(),
            info: json!({"location": "hall"}).as_object().cloned().unwrap(),
            created_ms: 5,
            secret: None,
        })
        .unwrap();
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("things.db");
    let (store, loaded) = Store::open(&path, 64, 100).unwrap();
    assert!(loaded.things.is_empty());
    assert_eq!(schema_version(&path).unwrap(), Some(SCHEMA_VERSION));
    let tx = store.sender();
    put_thing(&store, "t1");
    put_thing(&store, "gone");
    tx.blocking_send(StoreOp::PutReported {
        thing: id("t1"),
        values: vec![
            ("temperature".into(), stamped(json!(20.5), 10)),
            ("mode".into(), stamped(json!("heat"), 10)),
        ],
    })
    .unwrap();
    tx.blocking_send(StoreOp::PutReported {
        thing: id("t1"),
        values: vec![("temperature".into(), stamped(json!(21), 11))],
    })
    .unwrap();
    tx.blocking_send(StoreOp::PutDesired {
        thing: id("t1"),
        values: vec![
            ("setpoint".into(), stamped(json!(22), 12)),
            ("mode".into(), stamped(json!("cool"), 12)),
        ],
    })
    .unwrap();
    tx.blocking_send(StoreOp::ClearDesired {
        thing: id("t1"),
        names: vec!["mode".into()],
    })
    .unwrap();
    tx.blocking_send(StoreOp::SetInfo {
        id: id("t1"),
        info: json!({"location": "attic"}).as_object().cloned().unwrap(),
    })
    .unwrap();
    tx.blocking_send(StoreOp::DeleteThing { id: id("gone") })
        .unwrap();
    drop(tx);
    store.close();

    let (store, loaded) = Store::open(&path, 64, 100).unwrap();
    assert_eq!(loaded.things.len(), 1);
    let t = &loaded.things[0];
    assert_eq!(t.id.as_str(), "t1");
    assert_eq!(t.type_id, "thermostat");
    assert_eq!(t.created_ms, 5);
    assert_eq!(t.info.get("location"), Some(&json!("attic")));
    assert_eq!(t.reported.get("temperature"), Some(&stamped(json!(21), 11)));
    assert_eq!(t.reported.get("mode"), Some(&stamped(json!("heat"), 10)));
    assert_eq!(t.desired.len(), 1);
    assert_eq!(t.desired.get("setpoint"), Some(&stamped(json!(22), 12)));
    store.close();
}

#[test]
fn queued_ops_are_committed_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let (store, _) = Store::open(&path, 8192, 100).unwrap();
    put_thing(&store, "t1");
    let n = 5000;
    for i in 0..n {
        store
            .sender()
            .blocking_send(StoreOp::PutReported {
                thing: id("t1"),
                values: vec![("temperature".into(), stamped(json!(i), i))],
            })
            .unwrap();
    }
    flush(&store);
    let batches = store.stats().batches.load(Ordering::Relaxed);
    let ops = store.stats().ops.load(Ordering::Relaxed);
    assert!(ops > n, "{ops} ops committed");
    assert!(
        batches < ops / 4,
        "{ops} ops took {batches} transactions: not batched"
    );
    store.close();
    let (store, loaded) = Store::open(&path, 16, 100).unwrap();
    assert_eq!(
        loaded.things[0].reported.get("temperature"),
        Some(&stamped(json!(n - 1), n - 1))
    );
    store.close();
}

#[test]
fn the_action_log_is_pruned_and_unanswered_actions_expire_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let max = 20;
    let (store, _) = Store::open(&path, 16, max).unwrap();
    for i in 1..=100u64 {
        store
            .sender()
            .blocking_send(StoreOp::InsertAction {
                id: i,
                thing: id("r1"),
                action: "toggle".into(),
                input: Value::Null,
                status: ActionStatus::Queued,
                at_ms: i,
            })
            .unwrap();
        let status = if i == 100 {
            ActionStatus::Sent
        } else {
            ActionStatus::Done
        };
        store
            .sender()
            .blocking_send(StoreOp::UpdateAction {
                id: i,
                status,
                result: Some(json!(true)),
                at_ms: i,
            })
            .unwrap();
        // Flushing each time makes every insert its own batch, so pruning runs often.
        flush(&store);
    }
    store.close();
    let rows = read_action_log(&path).unwrap();
    assert!(
        rows.len() as u64 <= max + max / 10 && rows.len() as u64 >= max,
        "{} rows kept",
        rows.len()
    );
    assert_eq!(rows.last().unwrap().id, 100);
    assert_eq!(rows.last().unwrap().status, "sent");

    let (store, loaded) = Store::open(&path, 16, max).unwrap();
    assert_eq!(loaded.last_action_id, 100);
    assert_eq!(loaded.expired_at_start, 1);
    store.close();
    let rows = read_action_log(&path).unwrap();
    assert_eq!(rows.last().unwrap().status, "expired");
    assert!(rows[0].status == "done");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    std::fs::write(&path, b"this is not sqlite, just some text that is long enough to matter......................................................").unwrap();
    let err = Store::open(&path, 16, 100).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{text}");
    assert!(
        text.contains("things.db") && text.contains("not a Brume database"),
        "{text}"
    );
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let err = Store::open(&path, 16, 100).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_bad_row_names_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let (store, _) = Store::open(&path, 16, 100).unwrap();
    store.close();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO things (id, type, info, created_ms) VALUES ('bad id', 'relay', '{}', 1)",
            [],
        )
        .unwrap();
    }
    let err = Store::open(&path, 16, 100).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("table things") && text.contains("bad id"),
        "{text}"
    );
}

/// A barrier is answered once the writes before it are committed. A write the database refuses
/// is retried, then written alone: the others in its batch are kept, only it is lost and
/// counted, and the barriers of that batch say the write failed.
#[test]
fn barriers_follow_the_commit_and_a_refused_write_is_the_only_one_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let (store, _) = Store::open(&path, 64, 100).unwrap();
    put_thing(&store, "t1");
    put_thing(&store, "bad");
    let (commit, wait) = device_models::gateway::commit();
    store
        .sender()
        .blocking_send(StoreOp::Barrier(commit))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(wait), Ok(()));
    // Once the barrier is answered, its writes are on disk for any other reader.
    let other = Connection::open(&path).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM things", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
    // The database refuses every report of "bad" (as a full disk would refuse all of them).
    other
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON reported WHEN NEW.thing = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    drop(other);
    let tx = store.sender();
    for thing in ["t1", "bad"] {
        tx.blocking_send(StoreOp::PutReported {
            thing: id(thing),
            values: vec![("temperature".into(), stamped(json!(20), 1))],
        })
        .unwrap();
    }
    let (commit, wait) = device_models::gateway::commit();
    tx.blocking_send(StoreOp::Barrier(commit)).unwrap();
    assert_eq!(
        rt.block_on(wait),
        Err(device_models::CommitError::WriteFailed)
    );
    assert_eq!(store.stats().failed_ops.load(Ordering::Relaxed), 1);
    assert!(store.stats().retries.load(Ordering::Relaxed) >= u64::from(RETRIES));
    drop(tx);
    store.close();
    let (_, loaded) = Store::open(&path, 64, 100).unwrap();
    let t1 = loaded.things.iter().find(|t| t.id == id("t1")).unwrap();
    assert_eq!(t1.reported["temperature"].value, json!(20));
    let bad = loaded.things.iter().find(|t| t.id == id("bad")).unwrap();
    assert!(bad.reported.is_empty());
}

/// A turn (the things service's operations of one turn, in one message) is taken apart in
/// order: its barrier is answered once the writes before it, in the same turn, are committed,
/// and the room its operations took in the queue is given back.
#[test]
fn a_turn_is_written_as_its_operations_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let (store, _) = Store::open(&path, 4, 100).unwrap();
    let (commit, wait) = device_models::gateway::commit();
    let report = |v: i64, at: u64| StoreOp::PutReported {
        thing: id("t1"),
        values: vec![("temperature".into(), stamped(json!(v), at))],
    };
    let put = StoreOp::PutThing {
        id: id("t1"),
        type_id: "thermostat".into(),
        info: Map::new(),
        created_ms: 5,
        secret: None,
    };
    let turn = StoreOp::Turn(vec![
        put,
        report(20, 1),
        StoreOp::Turn(vec![report(21, 2)]),
        StoreOp::Barrier(commit),
    ]);
    assert!(!turn.writes(), "something waits for a turn with a barrier");
    assert!(StoreOp::Turn(vec![report(1, 1)]).writes());
    store.room().try_acquire_many(4).unwrap().forget();
    store.sender().blocking_send(turn).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(wait), Ok(()));
    let other = Connection::open(&path).unwrap();
    let v: String = other
        .query_row(
            "SELECT value FROM reported WHERE thing = 't1' AND property = 'temperature'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "21", "the later report of the turn is the one kept");
    assert_eq!(store.room().available_permits(), 4);
    assert_eq!(store.stats().barriers.load(Ordering::Relaxed), 1);
    store.close();
}

#[test]
fn reports_in_one_batch_are_coalesced_without_crossing_other_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("things.db");
    let (store, _) = Store::open(&path, 16, 100).unwrap();
    store.close();
    let mut conn = Connection::open(&path).unwrap();
    let thing = |name: &str| StoreOp::PutThing {
        id: id(name),
        type_id: "thermostat".into(),
        info: Map::new(),
        created_ms: 1,
        secret: None,
    };
    let report = |name: &str, prop: &str, v: i64| StoreOp::PutReported {
        thing: id(name),
        values: vec![(prop.into(), stamped(json!(v), v as u64))],
    };
    let ops = vec![
        thing("t1"),
        thing("t2"),
        report("t1", "temperature", 1),
        report("t1", "humidity", 40),
        report("t2", "temperature", 7),
        report("t1", "temperature", 2),
        // The delete must remove what was reported before it, not be overtaken by it.
        StoreOp::DeleteThing { id: id("t1") },
        thing("t1"),
        report("t1", "temperature", 3),
        report("t2", "temperature", 8),
        report("t1", "temperature", 4),
    ];
    write_batch(&mut conn, &ops).unwrap();
    let mut rows: Vec<(String, String, String, i64)> = conn
        .prepare("SELECT thing, property, value, at_ms FROM reported ORDER BY thing, property")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.sort();
    assert_eq!(
        rows,
        vec![
            ("t1".into(), "temperature".into(), "4".into(), 4),
            ("t2".into(), "temperature".into(), "8".into(), 8),
        ]
    );
}

#[test]
fn a_turns_reports_merge_into_the_first_and_never_past_another_write() {
    let report = |name: &str, prop: &str, v: i64| StoreOp::PutReported {
        thing: id(name),
        values: vec![(prop.into(), stamped(json!(v), v as u64))],
    };
    let (commit, _wait) = device_models::gateway::commit();
    let mut ops = vec![
        report("t1", "temperature", 1),
        StoreOp::Barrier(commit),
        report("t2", "temperature", 7),
        report("t1", "humidity", 40),
        report("t1", "temperature", 2),
        StoreOp::DeleteThing { id: id("t2") },
        report("t2", "temperature", 8),
        report("t2", "temperature", 9),
    ];
    coalesce_reported(&mut ops);
    let shape: Vec<String> = ops
        .iter()
        .map(|op| match op {
            StoreOp::PutReported { thing, values } => format!(
                "{}:{}",
                thing.as_str(),
                values
                    .iter()
                    .map(|(n, s)| format!("{n}={}", s.value))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            StoreOp::Barrier(_) => "barrier".into(),
            StoreOp::DeleteThing { id } => format!("delete {}", id.as_str()),
            _ => "other".into(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "t1:temperature=2,humidity=40",
            "barrier",
            "t2:temperature=7",
            "delete t2",
            "t2:temperature=9",
        ]
    );
}
