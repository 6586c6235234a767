//! The benchmark's report without any I/O: samples per system and round, their medians, the
//! markdown rows and the lost-message tally.

use super::cpu::CpuUse;

/// One measurement of one system in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The figure, higher is better (medians and ratios use it).
    pub score: f64,
    /// How the figure is shown.
    pub text: String,
    /// CPU over the measured interval of this round.
    pub cpu: CpuUse,
    /// Messages sent and lost in this round, where losses are counted (pub/sub, telemetry).
    pub loss: Option<Loss>,
}

/// Messages sent (accepted for delivery) and lost (not delivered after the drain).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Loss {
    pub sent: u64,
    pub lost: u64,
}

impl std::ops::AddAssign for Loss {
    fn add_assign(&mut self, other: Loss) {
        self.sent += other.sent;
        self.lost += other.lost;
    }
}

/// Every round of one system in one scenario: one column of a row.
#[derive(Clone, Debug, Default)]
pub struct Column {
    pub samples: Vec<Sample>,
}

impl Column {
    /// The round with the median score (the upper one of an even count); its CPU goes with it.
    pub fn median(&self) -> Option<&Sample> {
        median_by(&self.samples, |s| s.score)
    }

    /// Messages sent and lost over all rounds, if this column counts losses.
    pub fn loss(&self) -> Option<Loss> {
        self.samples
            .iter()
            .filter_map(|s| s.loss)
            .reduce(|mut a, b| {
                a += b;
                a
            })
    }
}

/// The element with the median key: the middle of an odd count, the upper middle of an even one.
pub fn median_by<T>(items: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    let mut sorted: Vec<&T> = items.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len() / 2).copied()
}

/// A markdown table row.
pub fn row<S: AsRef<str>>(cells: &[S]) -> String {
    let mut out = String::from("|");
    for c in cells {
        out.push(' ');
        out.push_str(c.as_ref());
        out.push_str(" |");
    }
    out
}

/// A markdown header row and its separator.
pub fn header(cells: &[&str]) -> String {
    format!("{}\n{}", row(cells), row(&vec!["---"; cells.len()]))
}

const NONE: &str = "–";

fn text(s: Option<&Sample>) -> String {
    s.map_or(NONE.into(), |s| s.text.clone())
}

/// `a ÷ z` with `digits` decimals, or "–" when either is missing.
pub fn ratio(a: Option<&Sample>, z: Option<&Sample>, digits: usize) -> String {
    match (a, z) {
        (Some(a), Some(z)) if z.score > 0.0 => format!("{:.digits$}×", a.score / z.score),
        _ => NONE.into(),
    }
}

/// "generator% / system%" of a sample.
pub fn cpu(s: Option<&Sample>) -> String {
    s.map_or(NONE.into(), |s| {
        format!("{:.0}% / {:.0}%", s.cpu.generator, s.cpu.system)
    })
}

/// The lost-messages cell: "0" when no measured system lost anything, else each system's
/// count; "–" where losses are not counted.
pub fn lost(columns: &[(&str, &Column)]) -> String {
    let counted: Vec<(&str, u64)> = columns
        .iter()
        .filter_map(|(name, c)| c.loss().map(|l| (*name, l.lost)))
        .collect();
    if counted.is_empty() {
        NONE.into()
    } else if counted.iter().all(|(_, l)| *l == 0) {
        "0".into()
    } else {
        counted
            .iter()
            .map(|(name, l)| format!("{name} {l}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The Brume column with `/metrics` scraped, and its ratio to the one without, when scraping.
fn scraped_cells(scraped: Option<&Column>, brume: &Column, cells: &mut Vec<String>) {
    if let Some(s) = scraped {
        cells.push(text(s.median()));
        cells.push(ratio(s.median(), brume.median(), 2));
    }
}

/// The WAMP table's header; `scraped` adds the columns of Brume with `/metrics` scraped.
pub fn wamp_header(scraped: bool) -> String {
    let mut cells = vec!["scenario", "Brume"];
    if scraped {
        cells.extend(["Brume, /metrics scraped 1/s", "scraped ÷ not scraped"]);
    }
    cells.extend([
        "Crossbar.io",
        "Brume ÷ Crossbar.io",
        "loopback relay",
        "Brume ÷ relay",
        "CPU: generator / Brume",
    ]);
    if scraped {
        cells.push("CPU: generator / Brume, scraped");
    }
    cells.push("lost");
    header(&cells)
}

/// One WAMP row: "–" where a system was skipped or failed; the relay ratio only for pub/sub
/// (the relay does no RPC).
pub fn wamp_row(
    name: &str,
    pubsub: bool,
    brume: &Column,
    scraped: Option<&Column>,
    crossbar: &Column,
    relay: &Column,
) -> String {
    let (b, c, r) = (brume.median(), crossbar.median(), relay.median());
    let mut cells = vec![name.to_owned(), text(b)];
    scraped_cells(scraped, brume, &mut cells);
    cells.extend([
        text(c),
        ratio(b, c, 1),
        text(r),
        if pubsub { ratio(b, r, 1) } else { NONE.into() },
        cpu(b),
    ]);
    let mut named = vec![("Brume", brume)];
    if let Some(s) = scraped {
        cells.push(cpu(s.median()));
        named.push(("Brume scraped", s));
    }
    named.extend([("Crossbar.io", crossbar), ("relay", relay)]);
    cells.push(lost(&named));
    row(&cells)
}

/// The MQTT table's header; `scraped` adds the columns of Brume with `/metrics` scraped.
pub fn mqtt_header(devices: usize, scraped: bool) -> String {
    let first = format!("MQTT, {devices} devices → 1 subscriber");
    let mut cells = vec![
        first.as_str(),
        "Brume (MQTT → WAMP, registry writes included)",
    ];
    if scraped {
        cells.extend(["Brume, /metrics scraped 1/s", "scraped ÷ not scraped"]);
    }
    cells.extend([
        "mosquitto (MQTT → MQTT)",
        "Brume ÷ mosquitto",
        "CPU: generator / Brume",
    ]);
    if scraped {
        cells.push("CPU: generator / Brume, scraped");
    }
    cells.extend(["CPU: generator / mosquitto", "lost"]);
    header(&cells)
}

/// One MQTT telemetry row.
pub fn mqtt_row(
    name: &str,
    brume: &Column,
    scraped: Option<&Column>,
    mosquitto: &Column,
) -> String {
    let (b, m) = (brume.median(), mosquitto.median());
    let mut cells = vec![name.to_owned(), text(b)];
    scraped_cells(scraped, brume, &mut cells);
    cells.extend([text(m), ratio(b, m, 2), cpu(b)]);
    let mut named = vec![("Brume", brume)];
    if let Some(s) = scraped {
        cells.push(cpu(s.median()));
        named.push(("Brume scraped", s));
    }
    named.push(("mosquitto", mosquitto));
    cells.push(cpu(m));
    cells.push(lost(&named));
    row(&cells)
}

/// One idle-memory row of the MQTT table: KiB per connection of Brume and mosquitto.
pub fn memory_row(
    connections: usize,
    brume: Option<f64>,
    mosquitto: Option<f64>,
    scraped: bool,
) -> String {
    let kib = |v: Option<f64>| v.map_or(NONE.into(), |k| format!("{k:.2} KiB per connection"));
    let ratio = match (brume, mosquitto) {
        (Some(b), Some(m)) if m > 0.0 => format!("{:.1}× the memory", b / m),
        _ => NONE.into(),
    };
    let mut cells = vec![
        format!("{connections} idle connections, resident memory"),
        kib(brume),
    ];
    if scraped {
        cells.extend([NONE.into(), NONE.into()]);
    }
    cells.extend([kib(mosquitto), ratio, NONE.into()]);
    if scraped {
        cells.push(NONE.into());
    }
    cells.extend([NONE.into(), NONE.into()]);
    row(&cells)
}

/// The CoAP table's header.
pub fn coap_header(devices: usize, window: usize) -> String {
    let first = format!("CoAP, {devices} devices × {window} confirmable requests in flight");
    header(&[
        &first,
        "Brume (POST → registry commit → 2.04, and a WAMP state EVENT)",
        "libcoap coap-server (PUT kept in memory)",
        "Brume ÷ libcoap",
        "CPU: generator / Brume",
        "CPU: generator / libcoap",
        "lost",
    ])
}

/// The CoAP row.
pub fn coap_row(brume: &Column, libcoap: &Column) -> String {
    let (b, l) = (brume.median(), libcoap.median());
    row(&[
        "confirmable POSTs (PUTs to libcoap)".to_owned(),
        text(b),
        text(l),
        ratio(b, l, 2),
        cpu(b),
        cpu(l),
        lost(&[("Brume", brume), ("libcoap", libcoap)]),
    ])
}

/// The Modbus table's header, naming the pymodbus version measured (or "–").
pub fn modbus_header(pymodbus: &str) -> String {
    let peer = format!("pymodbus {pymodbus} (asyncio client, reads only)");
    header(&[
        "Modbus TCP, 100 holding registers per read, one request in flight per connection",
        "Brume (Modbus → WAMP state EVENT, registry writes included)",
        &peer,
        "Brume ÷ pymodbus",
        "CPU: generator / Brume",
        "CPU: generator / pymodbus",
    ])
}

/// One Modbus row: registers/s (higher is better), or with `latency` a p99 (p50) latency whose
/// ratio is pymodbus's p99 over Brume's.
pub fn modbus_row(name: &str, latency: bool, brume: &Column, pymodbus: &Column) -> String {
    let (b, p) = (brume.median(), pymodbus.median());
    row(&[
        name.to_owned(),
        text(b),
        text(p),
        ratio(b, p, if latency { 2 } else { 1 }),
        cpu(b),
        cpu(p),
    ])
}

/// Lost messages over the whole run, by scenario and system.
#[derive(Clone, Debug, Default)]
pub struct LossTally {
    entries: Vec<(String, Loss)>,
}

impl LossTally {
    /// Records a column's losses (nothing if it does not count them).
    pub fn add(&mut self, what: String, column: &Column) {
        if let Some(l) = column.loss() {
            self.entries.push((what, l));
        }
    }

    pub fn lost(&self) -> u64 {
        self.entries.iter().map(|(_, l)| l.lost).sum()
    }

    /// The report's note on losses.
    pub fn note(&self, drain: std::time::Duration) -> String {
        let sent: u64 = self.entries.iter().map(|(_, l)| l.sent).sum();
        let head = format!(
            "lost messages (accepted for delivery, not delivered within {} s after the measurement; every round counted): ",
            drain.as_secs()
        );
        let lossy: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, l)| l.lost > 0)
            .map(|(what, l)| format!("{what}: {} of {}", l.lost, l.sent))
            .collect();
        if lossy.is_empty() {
            format!(
                "{head}none of {sent} in {} measured columns",
                self.entries.len()
            )
        } else {
            format!("{head}{}; THE RUN FAILS", lossy.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(score: f64, lost: Option<u64>) -> Sample {
        Sample {
            score,
            text: format!("{score}"),
            cpu: CpuUse {
                generator: 40.0,
                system: 50.0,
            },
            loss: lost.map(|lost| Loss { sent: 1000, lost }),
        }
    }

    fn column(samples: &[(f64, Option<u64>)]) -> Column {
        Column {
            samples: samples.iter().map(|&(s, l)| sample(s, l)).collect(),
        }
    }

    #[test]
    fn median_is_the_middle_round_with_its_own_cpu() {
        let mut c = column(&[(300.0, None), (100.0, None), (200.0, None)]);
        c.samples[2].cpu.system = 77.0;
        let m = c.median().map(|s| (s.score, s.cpu.system));
        assert_eq!(m, Some((200.0, 77.0)));
        assert_eq!(median_by(&[4.0, 1.0, 3.0, 2.0], |x| *x), Some(&3.0));
        assert_eq!(median_by(&[5.0], |x| *x), Some(&5.0));
        assert_eq!(median_by(&[] as &[f64], |x| *x), None);
        assert!(Column::default().median().is_none());
    }

    #[test]
    fn the_coap_row_has_a_cell_per_header_column_and_names_losses() {
        let cells = |line: &str| line.matches('|').count();
        let header = coap_header(48, 4);
        let first = header.lines().next().unwrap_or_default();
        let brume = column(&[
            (80_000.0, Some(0)),
            (82_000.0, Some(0)),
            (81_000.0, Some(0)),
        ]);
        let libcoap = column(&[
            (160_000.0, Some(0)),
            (162_000.0, Some(3)),
            (164_000.0, None),
        ]);
        let row = coap_row(&brume, &libcoap);
        assert_eq!(cells(&row), cells(first));
        assert!(row.contains("| 0.50× |"), "{row}");
        assert!(row.ends_with("| Brume 0, libcoap 3 |"), "{row}");
        assert!(first.contains("48 devices × 4"));
    }

    #[test]
    fn losses_add_up_over_rounds() {
        let c = column(&[(1.0, Some(0)), (1.0, Some(3)), (1.0, Some(2))]);
        assert_eq!(
            c.loss(),
            Some(Loss {
                sent: 3000,
                lost: 5
            })
        );
        assert_eq!(column(&[(1.0, None)]).loss(), None);
        let ok = column(&[(1.0, Some(0))]);
        assert_eq!(lost(&[("Brume", &ok), ("relay", &ok)]), "0");
        assert_eq!(lost(&[("Brume", &c), ("relay", &ok)]), "Brume 5, relay 0");
        assert_eq!(lost(&[("Brume", &column(&[(1.0, None)]))]), "–");

        let mut tally = LossTally::default();
        tally.add("a, Brume".into(), &ok);
        tally.add("rpc, Brume".into(), &column(&[(1.0, None)]));
        assert_eq!(tally.lost(), 0);
        assert!(
            tally
                .note(std::time::Duration::from_secs(5))
                .ends_with("none of 1000 in 1 measured columns"),
        );
        tally.add("b, relay".into(), &c);
        assert_eq!(tally.lost(), 5);
        assert!(
            tally
                .note(std::time::Duration::from_secs(5))
                .ends_with(": b, relay: 5 of 3000; THE RUN FAILS"),
        );
    }

    #[test]
    fn a_skipped_system_leaves_its_column_empty() {
        let none = Column::default();
        assert_eq!(
            wamp_row(
                "s",
                true,
                &column(&[(400.0, Some(0))]),
                None,
                &none,
                &column(&[(1000.0, Some(0))])
            ),
            "| s | 400 | – | – | 1000 | 0.4× | 40% / 50% | 0 |"
        );
        assert_eq!(
            wamp_row(
                "s",
                false,
                &column(&[(30.0, None)]),
                None,
                &column(&[(10.0, None)]),
                &none
            ),
            "| s | 30 | 10 | 3.0× | – | – | 40% / 50% | – |"
        );
    }

    #[test]
    fn modbus_rows_fit_their_header() {
        let cols = |h: &str| h.lines().next().map_or(0, |l| l.matches('|').count() - 1);
        let h = modbus_header("3.11.4");
        assert!(h.contains("pymodbus 3.11.4 (asyncio client, reads only)"));
        let r = modbus_row(
            "x",
            false,
            &column(&[(400.0, None)]),
            &column(&[(100.0, None)]),
        );
        assert_eq!(r, "| x | 400 | 100 | 4.0× | 40% / 50% | 40% / 50% |");
        assert_eq!(cols(&h), cols(&r));
        assert_eq!(
            modbus_row("l", true, &column(&[(50.0, None)]), &Column::default()),
            "| l | 50 | – | – | 40% / 50% | – |"
        );
    }

    #[test]
    fn scraping_adds_its_columns_everywhere() {
        let brume = column(&[(400.0, Some(0))]);
        let scraped = column(&[(392.0, Some(1))]);
        let cols = |h: &str| h.lines().next().map_or(0, |l| l.matches('|').count() - 1);
        assert_eq!(
            wamp_row(
                "s",
                true,
                &brume,
                Some(&scraped),
                &Column::default(),
                &brume
            ),
            "| s | 400 | 392 | 0.98× | – | – | 400 | 1.0× | 40% / 50% | 40% / 50% | Brume 0, Brume scraped 1, relay 0 |"
        );
        assert_eq!(cols(&wamp_header(true)), 11);
        assert_eq!(cols(&wamp_header(false)), 8);
        let m = mqtt_row(
            "QoS 1",
            &brume,
            Some(&scraped),
            &column(&[(800.0, Some(0))]),
        );
        assert_eq!(
            m,
            "| QoS 1 | 400 | 392 | 0.98× | 800 | 0.50× | 40% / 50% | 40% / 50% | 40% / 50% | Brume 0, Brume scraped 1, mosquitto 0 |"
        );
        for scraped in [false, true] {
            let h = mqtt_header(100, scraped);
            assert_eq!(h.lines().count(), 2);
            assert_eq!(cols(&h), cols(&memory_row(10, Some(1.0), None, scraped)));
            let r = mqtt_row("x", &brume, scraped.then_some(&brume), &Column::default());
            assert_eq!(cols(&h), cols(&r));
        }
        assert_eq!(
            memory_row(2000, Some(9.0), Some(3.0), false),
            "| 2000 idle connections, resident memory | 9.00 KiB per connection | 3.00 KiB per connection | 3.0× the memory | – | – | – |"
        );
    }
}
