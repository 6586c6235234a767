//! The fuzz targets without libFuzzer: each runs on its seeds, on mutations of them and on random
//! bytes for a bounded time. No coverage guidance, so it finds less than `cargo fuzz`, but it
//! builds with any toolchain. A panicking input is saved under `artifacts/<target>/` and makes
//! the exit status 1.
//!
//! ```text
//! smoke [--seconds N] [--write-seeds DIR] [TARGET...]
//! ```
//! `--write-seeds DIR` writes each target's seeds to `DIR/<target>/` (a libFuzzer corpus) and
//! exits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use brume_fuzz::{TARGETS, Target};

// Built with the libFuzzer targets (`fuzz/run`), every crate carries the coverage instrumentation,
// whose callbacks libFuzzer defines: link it in too, with an empty target (this binary's `main`
// stays the smoke runner's, so libFuzzer never runs here).
#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

/// xorshift64*: enough randomness to fuzz with, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A random change to `input`: flip, replace, insert, delete, duplicate or truncate.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    let len = input.len();
    match rng.below(7) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = [0x00, 0xff, 0x7f, 0x80, b'\n', b'=', b';', b'"', rng.byte()][rng.below(9)];
        }
        2 => {
            let i = rng.below(len + 1);
            input.insert(i, rng.byte());
        }
        3 if len > 0 => {
            input.remove(rng.below(len));
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + rng.below(16) + 1).min(len);
            let piece = input[start..end].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, piece);
        }
        5 if len > 0 => input.truncate(rng.below(len)),
        _ => input.push(rng.byte()),
    }
}

/// Runs `input`; on a panic saves it and returns false.
fn run_one(name: &str, target: Target, input: &[u8]) -> bool {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_ok() {
        return true;
    }
    let dir = Path::new("artifacts").join(name);
    let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
    let file = dir.join(format!("crash-{:016x}", fnv(input)));
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&file, input).is_ok() {
        eprintln!("{name}: crashing input saved to {}", file.display());
    }
    eprintln!("{name}: crashing input (hex): {hex}");
    false
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn fuzz(
    name: &str,
    target: Target,
    seeds: &[Vec<u8>],
    budget: Duration,
    rng: &mut Rng,
) -> (u64, bool) {
    let started = Instant::now();
    let mut runs = 0u64;
    for seed in seeds {
        runs += 1;
        if !run_one(name, target, seed) {
            return (runs, false);
        }
    }
    while started.elapsed() < budget {
        let mut input = if seeds.is_empty() || rng.below(4) == 0 {
            (0..rng.below(256)).map(|_| rng.byte()).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..=rng.below(8) {
            mutate(rng, &mut input);
        }
        runs += 1;
        if !run_one(name, target, &input) {
            return (runs, false);
        }
    }
    (runs, true)
}

fn write_seeds(dir: &Path, wanted: &[String]) -> std::io::Result<()> {
    for (name, _, seeds) in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let target_dir = dir.join(name);
        std::fs::create_dir_all(&target_dir)?;
        for (i, seed) in seeds().iter().enumerate() {
            std::fs::write(target_dir.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut seconds = 20u64;
    let mut seeds_dir: Option<PathBuf> = None;
    let mut wanted = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--write-seeds" => seeds_dir = args.next().map(PathBuf::from),
            "--list" => {
                for (name, _, _) in TARGETS {
                    println!("{name}");
                }
                return ExitCode::SUCCESS;
            }
            _ => wanted.push(arg),
        }
    }
    brume_fuzz::check_codecs();
    if let Some(dir) = seeds_dir {
        return match write_seeds(&dir, &wanted) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write seeds to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut rng = Rng(seed);
    let mut failed = Vec::new();
    for (name, target, seeds) in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let (runs, ok) = fuzz(
            name,
            *target,
            &seeds(),
            Duration::from_secs(seconds),
            &mut rng,
        );
        println!("{name}: {runs} inputs, {}", if ok { "ok" } else { "CRASH" });
        if !ok {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("crashed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
