use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::thing_type::PropertyKind;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("brume-models-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn type_toml(id: &str, title: &str) -> String {
    format!(
        "id = \"{id}\"\ntitle = \"{title}\"\nversion = \"1\"\n[properties.x]\ntype = \"number\"\n"
    )
}

#[test]
fn builtin_types_load() {
    let catalog = TypeCatalog::builtin().expect("built-in types are valid");
    let ids: Vec<&str> = catalog.list().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "alarm",
            "modbus_drive",
            "modbus_meter",
            "relay",
            "tasmota_plug",
            "temperature_sensor",
            "thermostat"
        ]
    );
    for ty in catalog.list() {
        assert_eq!(catalog.origin(&ty.id), Some(&TypeOrigin::Builtin));
        let firmware = ty
            .property("firmware")
            .expect("every built-in has firmware");
        assert_eq!(
            (firmware.kind, firmware.writable),
            (PropertyKind::Info, false)
        );
        let location = ty
            .property("location")
            .expect("every built-in has location");
        assert_eq!(
            (location.kind, location.writable),
            (PropertyKind::Info, true)
        );
        let again = ThingType::from_toml(&ty.to_toml().expect("serializes"), "again.toml")
            .expect("round trip");
        assert_eq!(**ty, again);
    }
}

#[test]
fn builtin_type_contents() {
    let catalog = TypeCatalog::builtin().expect("valid");
    let get = |id| catalog.get(id).expect("built-in present");

    let sensor = get("temperature_sensor");
    for name in ["temperature", "humidity", "battery"] {
        let p = sensor.property(name).expect(name);
        assert_eq!((p.kind, p.writable), (PropertyKind::State, false), "{name}");
    }
    assert_eq!(
        sensor
            .property("temperature")
            .and_then(|p| p.schema.unit.as_deref()),
        Some("°C")
    );

    let thermostat = get("thermostat");
    assert!(
        !thermostat
            .property("temperature")
            .expect("temperature")
            .writable
    );
    let setpoint = thermostat.property("setpoint").expect("setpoint");
    assert!(
        setpoint.writable && setpoint.schema.minimum.is_some() && setpoint.schema.maximum.is_some()
    );
    let mode = thermostat.property("mode").expect("mode");
    assert!(mode.writable);
    assert_eq!(
        mode.schema.enum_values,
        Some(vec![
            "off".into(),
            "heat".into(),
            "cool".into(),
            "auto".into()
        ])
    );

    let relay = get("relay");
    assert!(relay.property("on").expect("on").writable);
    for action in ["on", "off", "toggle"] {
        let a = relay.action(action).expect(action);
        assert_eq!(
            a.output.as_ref().map(|s| s.schema_type),
            Some(crate::SchemaType::Boolean)
        );
    }

    let alarm = get("alarm");
    assert!(alarm.property("armed").is_some());
    assert!(alarm.action("arm").and_then(|a| a.input.as_ref()).is_some());
    assert!(alarm.action("disarm").is_some());
    assert!(
        alarm
            .event("triggered")
            .and_then(|e| e.payload.as_ref())
            .is_some()
    );
}

#[test]
fn user_types_load_and_override_builtins() {
    let dir = TempDir::new("override");
    let mine = dir.write("my_relay.toml", &type_toml("relay", "Site relay"));
    dir.write("pump.toml", &type_toml("pump", "Pump"));
    dir.write("notes.txt", "not a type");
    dir.write(".hidden.toml", "not even toml [");
    fs::create_dir(dir.0.join("sub.toml")).expect("mkdir");

    let catalog = TypeCatalog::with_dir(&dir.0).expect("loads");
    assert_eq!(
        catalog.get("relay").map(|t| t.title.as_str()),
        Some("Site relay")
    );
    assert_eq!(catalog.origin("relay"), Some(&TypeOrigin::File(mine)));
    assert!(catalog.get("pump").is_some());
    assert_eq!(catalog.origin("thermostat"), Some(&TypeOrigin::Builtin));
    assert_eq!(catalog.len(), 8, "7 built-in types, one replaced, and pump");
}

#[test]
fn two_user_files_with_one_id_are_an_error() {
    let dir = TempDir::new("dup");
    dir.write("a.toml", &type_toml("pump", "A"));
    let b = dir.write("b.toml", &type_toml("pump", "B"));
    let mut catalog = TypeCatalog::builtin().expect("valid");
    let error = catalog.load_dir(&dir.0).expect_err("duplicate");
    assert!(matches!(&error, LoadError::DuplicateId { id, .. } if id == "pump"));
    assert!(
        error.to_string().starts_with(&b.display().to_string()),
        "{error}"
    );
    assert!(catalog.get("pump").is_none(), "nothing loaded on error");

    let other = TempDir::new("dup2");
    other.write("a.toml", &type_toml("pump", "A"));
    catalog.load_dir(&other.0).expect("first load");
    let again = TempDir::new("dup3");
    again.write("c.toml", &type_toml("pump", "C"));
    assert!(matches!(
        catalog.load_dir(&again.0),
        Err(LoadError::DuplicateId { .. })
    ));
    assert_eq!(catalog.get("pump").map(|t| t.title.as_str()), Some("A"));
}

#[test]
fn a_bad_file_names_itself_and_loads_nothing() {
    let dir = TempDir::new("bad");
    dir.write("a.toml", &type_toml("pump", "Pump"));
    let bad = dir.write(
        "thermostat.toml",
        "id = \"thermostat\"\ntitle = \"T\"\nversion = \"1\"\n[properties.setpoint]\ntype = \"number\"\nminimum = 35\nmaximum = 5\n",
    );
    let mut catalog = TypeCatalog::builtin().expect("valid");
    let error = catalog.load_dir(&dir.0).expect_err("bad file");
    assert_eq!(
        error.to_string(),
        format!(
            "{}:6: properties.setpoint.minimum: must be <= maximum (35 > 5)",
            bad.display()
        )
    );
    assert!(catalog.get("pump").is_none());
    assert_eq!(catalog.origin("thermostat"), Some(&TypeOrigin::Builtin));
}

#[test]
fn unreadable_inputs() {
    let missing = std::env::temp_dir().join("brume-models-no-such-dir");
    let error = TypeCatalog::new()
        .load_dir(&missing)
        .expect_err("missing dir");
    assert!(matches!(error, LoadError::ReadDir { .. }), "{error}");

    let dir = TempDir::new("io");
    fs::write(dir.0.join("bin.toml"), [0xff, 0xfe, 0x00]).expect("write");
    let error = TypeCatalog::new().load_dir(&dir.0).expect_err("not utf-8");
    assert!(matches!(error, LoadError::Read { .. }), "{error}");

    let big = TempDir::new("big");
    let padding = "# padding\n".repeat((MAX_TYPE_FILE_BYTES / 10 + 1) as usize);
    big.write("big.toml", &format!("{}{padding}", type_toml("big", "Big")));
    let error = TypeCatalog::new().load_dir(&big.0).expect_err("too large");
    assert!(matches!(error, LoadError::TooLarge { .. }), "{error}");
}

#[test]
fn insert_validates() {
    let mut catalog = TypeCatalog::new();
    let mut ty = ThingType::from_toml(&type_toml("pump", "Pump"), "pump.toml").expect("valid");
    assert_eq!(catalog.insert(ty.clone(), TypeOrigin::Builtin), Ok(None));
    ty.id = "Bad Id".into();
    assert!(catalog.insert(ty, TypeOrigin::Builtin).is_err());
    assert_eq!(catalog.len(), 1);
}
