//! Which request a bus sends next, without I/O: the poll groups of every device with their due
//! times, and each device's health (online, failures in a row, back-off).
//!
//! Rules:
//! - A group is due at its interval after its last cycle started; a late cycle is not caught up
//!   (the next is due one interval after it actually ran), so a slow bus degrades to polling as
//!   fast as it can, evenly, rather than bursting.
//! - The reads of a group run one after the other; the group's values go out as one report when
//!   its cycle completes.
//! - A device that failed `offline_after_failures` requests in a row is offline and is tried again
//!   only after a back-off that doubles from `backoff_min` to `backoff_max`; meanwhile its polls
//!   are skipped, so a dead device costs the others on the bus one timeout per back-off period at
//!   most.
//! - Among due groups, the one due earliest goes first (ties: config order), so no device starves.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::config::BusSettings;

/// One group of one device, as scheduled.
#[derive(Debug)]
pub(super) struct GroupState<R> {
    interval: Duration,
    /// Its reads, in order (a merged read that met an illegal-address exception is replaced by
    /// one read per property).
    pub reads: Vec<R>,
    next_due: Instant,
    /// Index of the next read of the current cycle.
    cursor: usize,
    /// Values read so far in this cycle.
    pub values: Map<String, Value>,
}

/// A device's health as its answers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// Not heard from yet.
    Unknown,
    /// Answering.
    Online,
    /// Failed too often; tried again at `retry_at`.
    Offline {
        /// Next try.
        retry_at: Instant,
        /// The delay that led there.
        backoff: Duration,
    },
}

/// What an answer (or its absence) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transition {
    /// Nothing to tell.
    None,
    /// The device now answers.
    WentOnline,
    /// The device stopped answering.
    WentOffline,
}

/// The schedule of one device.
#[derive(Debug)]
pub(super) struct DeviceSchedule<R> {
    /// Its groups.
    pub groups: Vec<GroupState<R>>,
    /// Its health.
    pub health: Health,
    failures: u32,
}

/// A poll to run now: device, group and read indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PollJob {
    pub device: usize,
    pub group: usize,
    pub read: usize,
}

/// The schedule of a bus; `R` is a read request (generic so that the rules can be tested
/// alone).
#[derive(Debug)]
pub(super) struct Schedule<R> {
    /// Per device, in config order.
    pub devices: Vec<DeviceSchedule<R>>,
    settings: BusSettings,
}

impl<R> Schedule<R> {
    /// A schedule whose first polls are due at once, spread by a few milliseconds per device so
    /// that a bus's devices do not all start on the same tick.
    pub fn new(
        groups: impl IntoIterator<Item = Vec<(Duration, Vec<R>)>>,
        settings: BusSettings,
        now: Instant,
    ) -> Schedule<R> {
        let devices = groups
            .into_iter()
            .enumerate()
            .map(|(i, groups)| DeviceSchedule {
                groups: groups
                    .into_iter()
                    .map(|(interval, reads)| GroupState {
                        interval,
                        reads,
                        next_due: now + Duration::from_millis(5 * i as u64 % 1000),
                        cursor: 0,
                        values: Map::new(),
                    })
                    .collect(),
                health: Health::Unknown,
                failures: 0,
            })
            .collect();
        Schedule { devices, settings }
    }

    /// When the device may be polled: always, unless it is offline and its retry is later.
    fn available_at(&self, device: usize) -> Option<Instant> {
        match self.devices.get(device)?.health {
            Health::Offline { retry_at, .. } => Some(retry_at),
            _ => None,
        }
    }

    /// The poll to run at `now`, or the instant the next one is due (`Err`); `Err(None)` when the
    /// bus has nothing to poll at all.
    pub fn next_poll(&self, now: Instant) -> Result<PollJob, Option<Instant>> {
        let mut best: Option<(Instant, PollJob)> = None;
        for (d, device) in self.devices.iter().enumerate() {
            let available = self.available_at(d);
            for (g, group) in device.groups.iter().enumerate() {
                if group.reads.is_empty() {
                    continue;
                }
                let due = match available {
                    Some(at) => group.next_due.max(at),
                    None => group.next_due,
                };
                if best.is_none_or(|(b, _)| due < b) {
                    let job = PollJob {
                        device: d,
                        group: g,
                        read: group.cursor.min(group.reads.len() - 1),
                    };
                    best = Some((due, job));
                }
            }
        }
        match best {
            Some((due, job)) if due <= now => Ok(job),
            Some((due, _)) => Err(Some(due)),
            None => Err(None),
        }
    }

    /// The group of `job` after its read ran (answered or not): moves to the next read, and at
    /// the end of the cycle returns the cycle's values (possibly empty) and sets the next due
    /// time.
    pub fn advance(&mut self, job: PollJob, now: Instant) -> Option<Map<String, Value>> {
        let group = self
            .devices
            .get_mut(job.device)?
            .groups
            .get_mut(job.group)?;
        group.cursor = job.read + 1;
        if group.cursor < group.reads.len() {
            return None;
        }
        group.cursor = 0;
        // On time: one interval after the cycle was due. Late: one interval from now, not
        // caught up.
        let on_time = group.next_due + group.interval;
        group.next_due = if on_time < now {
            now + group.interval
        } else {
            on_time
        };
        Some(std::mem::take(&mut group.values))
    }

    /// Puts a read's values into its group's cycle.
    pub fn collect(&mut self, job: PollJob, values: impl IntoIterator<Item = (String, Value)>) {
        if let Some(group) = self
            .devices
            .get_mut(job.device)
            .and_then(|d| d.groups.get_mut(job.group))
        {
            group.values.extend(values);
        }
    }

    /// Replaces a merged read by `parts` (an illegal-address exception on a merged read: each
    /// property is then read alone, so one bad address does not hide its neighbours).
    pub fn split(&mut self, job: PollJob, parts: Vec<R>) {
        let Some(group) = self
            .devices
            .get_mut(job.device)
            .and_then(|d| d.groups.get_mut(job.group))
        else {
            return;
        };
        if job.read >= group.reads.len() || parts.is_empty() {
            return;
        }
        group.reads.splice(job.read..=job.read, parts);
        // The cursor stays on the first part, to run it now.
        group.cursor = job.read;
    }

    /// The device answered (with data or with an exception).
    pub fn answered(&mut self, device: usize) -> Transition {
        let Some(d) = self.devices.get_mut(device) else {
            return Transition::None;
        };
        d.failures = 0;
        let was = d.health;
        d.health = Health::Online;
        if was == Health::Online {
            Transition::None
        } else {
            Transition::WentOnline
        }
    }

    /// The device did not answer (timeout, or the connection failed while it was asked).
    pub fn failed(&mut self, device: usize, now: Instant) -> Transition {
        let (min, max, limit) = (
            self.settings.backoff_min,
            self.settings.backoff_max,
            self.settings.offline_after_failures,
        );
        let Some(d) = self.devices.get_mut(device) else {
            return Transition::None;
        };
        d.failures = d.failures.saturating_add(1);
        match d.health {
            Health::Offline { backoff, .. } => {
                let backoff = (backoff * 2).min(max);
                d.health = Health::Offline {
                    retry_at: now + backoff,
                    backoff,
                };
                Transition::None
            }
            Health::Online | Health::Unknown if d.failures >= limit => {
                let was_online = d.health == Health::Online;
                d.health = Health::Offline {
                    retry_at: now + min,
                    backoff: min,
                };
                // A device never heard from is offline from the hub's view already; tell it
                // anyway only if it had been online.
                if was_online {
                    Transition::WentOffline
                } else {
                    Transition::None
                }
            }
            _ => Transition::None,
        }
    }

    /// Whether the device is offline (writes to it are refused rather than queued behind
    /// timeouts; the hub sends pending desired values again when it comes back).
    pub fn is_offline(&self, device: usize) -> bool {
        matches!(
            self.devices.get(device).map(|d| d.health),
            Some(Health::Offline { .. })
        )
    }

    /// Every device that is online, marked offline at once (the connection or port is lost);
    /// returns their indexes.
    pub fn all_lost(&mut self, now: Instant) -> Vec<usize> {
        let min = self.settings.backoff_min;
        let mut lost = Vec::new();
        for (i, d) in self.devices.iter_mut().enumerate() {
            if d.health == Health::Online {
                lost.push(i);
            }
            if !matches!(d.health, Health::Offline { .. }) {
                d.health = Health::Offline {
                    retry_at: now + min,
                    backoff: min,
                };
            }
            d.failures = 0;
            for g in &mut d.groups {
                g.cursor = 0;
                g.values.clear();
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BusSettings {
        BusSettings {
            timeout: Duration::from_millis(100),
            offline_after_failures: 2,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(4),
            max_queued: 8,
        }
    }

    fn read(address: u16) -> u16 {
        address
    }

    fn group(ms: u64, reads: Vec<u16>) -> (Duration, Vec<u16>) {
        (Duration::from_millis(ms), reads)
    }

    #[test]
    fn groups_run_their_reads_then_wait_their_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            vec![vec![group(1000, vec![read(0), read(10)])]],
            settings(),
            t0,
        );
        let job = s.next_poll(t0).expect("due at once");
        assert_eq!(job.read, 0);
        s.collect(job, [("a".to_owned(), Value::from(1))]);
        assert!(s.advance(job, t0).is_none(), "cycle not over");
        let job = s.next_poll(t0).expect("second read due");
        assert_eq!(job.read, 1);
        s.collect(job, [("b".to_owned(), Value::from(2))]);
        let values = s.advance(job, t0).expect("cycle over");
        assert_eq!(values.len(), 2);
        assert_eq!(s.next_poll(t0), Err(Some(t0 + Duration::from_secs(1))));
        // Late: not caught up.
        let late = t0 + Duration::from_secs(5);
        let job = s.next_poll(late).expect("due");
        s.advance(job, late);
        let job = s.next_poll(late).expect("due");
        s.advance(job, late);
        assert_eq!(s.next_poll(late), Err(Some(late + Duration::from_secs(1))));
    }

    #[test]
    fn the_earliest_due_group_goes_first() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            vec![
                vec![group(100, vec![read(0)])],
                vec![group(1000, vec![read(0)])],
            ],
            settings(),
            t0,
        );
        let first = s.next_poll(t0 + Duration::from_millis(10)).expect("due");
        assert_eq!(first.device, 0);
        s.advance(first, t0 + Duration::from_millis(10));
        let second = s.next_poll(t0 + Duration::from_millis(10)).expect("due");
        assert_eq!(second.device, 1);
    }

    #[test]
    fn a_dead_device_is_backed_off_and_does_not_hold_the_others() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            vec![
                vec![group(100, vec![read(0)])],
                vec![group(100, vec![read(0)])],
            ],
            settings(),
            t0,
        );
        assert_eq!(s.answered(0), Transition::WentOnline);
        assert_eq!(s.failed(0, t0), Transition::None);
        assert_eq!(s.failed(0, t0), Transition::WentOffline);
        assert!(s.is_offline(0));
        // Device 0 is not polled before its retry; device 1 is.
        for _ in 0..5 {
            let job = s
                .next_poll(t0 + Duration::from_millis(500))
                .expect("device 1 due");
            assert_eq!(job.device, 1);
            s.advance(job, t0 + Duration::from_millis(500));
            if s.next_poll(t0 + Duration::from_millis(500)).is_err() {
                break;
            }
        }
        let at = t0 + Duration::from_secs(1);
        let mut job = s.next_poll(at).expect("a poll due");
        if job.device == 1 {
            // Device 1 was due earlier (t0 + 600 ms); the retry comes right after it.
            s.advance(job, at);
            job = s.next_poll(at).expect("retry due");
        }
        assert_eq!(job.device, 0);
        // Failing again doubles the back-off, up to the cap.
        s.failed(0, at);
        assert!(
            matches!(s.devices[0].health, Health::Offline { backoff, .. } if backoff == Duration::from_secs(2))
        );
        s.failed(0, at);
        s.failed(0, at);
        assert!(
            matches!(s.devices[0].health, Health::Offline { backoff, .. } if backoff == Duration::from_secs(4))
        );
        assert_eq!(s.answered(0), Transition::WentOnline);
        assert!(!s.is_offline(0));
    }

    #[test]
    fn a_device_never_heard_from_goes_offline_quietly() {
        let t0 = Instant::now();
        let mut s = Schedule::new(vec![vec![group(100, vec![read(0)])]], settings(), t0);
        assert_eq!(s.failed(0, t0), Transition::None);
        assert_eq!(s.failed(0, t0), Transition::None);
        assert!(s.is_offline(0));
    }

    #[test]
    fn a_split_read_runs_its_parts_in_place() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            vec![vec![group(100, vec![read(0), read(50)])]],
            settings(),
            t0,
        );
        let job = s.next_poll(t0).expect("due");
        s.split(job, vec![read(0), read(1)]);
        assert_eq!(s.devices[0].groups[0].reads.len(), 3);
        let job = s.next_poll(t0).expect("due");
        assert_eq!(job.read, 0);
        s.advance(job, t0);
        let job = s.next_poll(t0).expect("due");
        assert_eq!(job.read, 1);
    }

    #[test]
    fn a_lost_line_takes_every_online_device_offline() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            vec![
                vec![group(100, vec![read(0)])],
                vec![group(100, vec![read(0)])],
            ],
            settings(),
            t0,
        );
        s.answered(1);
        assert_eq!(s.all_lost(t0), vec![1]);
        assert!(s.is_offline(0) && s.is_offline(1));
    }
}
