//! The thing types of the simulated raw devices, as TOML files compiled into the simulator.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use device_models::frames::{FrameBinding, FrameCodec};
use device_models::{ThingType, TypeCatalog, TypeOrigin};

/// The UDP beacon's type (`udp_beacon`).
pub const UDP_BEACON: &str = include_str!("../../types/raw/udp_beacon.toml");
/// The TCP thermostat's type (`tcp_thermostat`).
pub const TCP_THERMOSTAT: &str = include_str!("../../types/raw/tcp_thermostat.toml");
/// The serial meter's type (`serial_meter`).
pub const SERIAL_METER: &str = include_str!("../../types/raw/serial_meter.toml");

/// Every type: (file name, TOML text).
pub const ALL: [(&str, &str); 3] = [
    ("udp_beacon.toml", UDP_BEACON),
    ("tcp_thermostat.toml", TCP_THERMOSTAT),
    ("serial_meter.toml", SERIAL_METER),
];

/// Parses one of the types above.
pub fn thing_type(text: &str) -> anyhow::Result<ThingType> {
    Ok(ThingType::from_toml(text, "firmware-sim raw type")?)
}

/// The built-in catalog plus the raw device types.
pub fn catalog() -> anyhow::Result<TypeCatalog> {
    let mut catalog = TypeCatalog::builtin()?;
    for (file, text) in ALL {
        let ty = ThingType::from_toml(text, file)?;
        catalog.insert(ty, TypeOrigin::Builtin)?;
    }
    Ok(catalog)
}

/// The compiled `[bindings.frame]` of a type.
pub fn codec(text: &str) -> anyhow::Result<Arc<FrameCodec>> {
    let ty = thing_type(text)?;
    let table = ty
        .binding("frame")
        .with_context(|| format!("type `{}` has no [bindings.frame]", ty.id))?;
    let binding = FrameBinding::from_toml(table)?;
    Ok(Arc::new(FrameCodec::new(&binding)?))
}

/// Writes the type files into `dir` (a hub's type directory).
pub fn write_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (file, text) in ALL {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_loads_and_compiles() -> anyhow::Result<()> {
        let catalog = catalog()?;
        for (_, text) in ALL {
            let id = thing_type(text)?.id;
            assert!(catalog.get(&id).is_some());
            codec(text)?;
        }
        Ok(())
    }
}
