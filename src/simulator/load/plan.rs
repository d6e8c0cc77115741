//! The schedule of a load run, drawn before it starts: when each phone's first session
//! begins and how long sessions and the idle gaps between them last. Pure, seeded.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::LoadOptions;

/// How one phone's first session is placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhonePlan {
    /// When the first session starts, from the run's start.
    pub first_start: Duration,
    /// Part of the flash crowd: idle until its flash start, then plays.
    pub flash: bool,
}

/// Every phone's plan, and the counts the report states.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub phones: Vec<PhonePlan>,
    /// Phones busy from the ramp on (the steady-state busy share).
    pub busy_at_start: usize,
    pub flash_phones: usize,
}

/// The fleet's schedule. A share `busy_share` of the phones start a session during the ramp
/// (spread evenly over it), so the fleet is at its steady busy share once the ramp is over;
/// the others start after an idle draw. The flash crowd is taken from the idle phones and
/// starts within `flash_within_secs` of `flash_at_secs`, evenly spread.
pub fn plan(options: &LoadOptions, phones: usize, seed: u64) -> FleetPlan {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ramp_start = options.sessions_from();
    let ramp = Duration::from_secs_f64(options.ramp_secs);
    let busy = (phones as f64 * options.busy_share).round() as usize;
    let flash = ((phones as f64 * options.flash_share).round() as usize).min(phones - busy);
    let flash_at = Duration::from_secs_f64(options.flash_at_secs);
    let flash_within = Duration::from_secs_f64(options.flash_within_secs);
    // Busy and flash phones are interleaved over the fleet rather than the first N, so
    // neither lands on one server or one end of the id range.
    let stride = |i: usize, n: usize| i * n / phones.max(1);
    let mut plans: Vec<PhonePlan> = (0..phones)
        .map(|_| PhonePlan {
            first_start: ramp_start + options.idle(&mut rng),
            flash: false,
        })
        .collect();
    let mut busy_seen = 0;
    let mut idle = Vec::with_capacity(phones - busy);
    for (i, phone) in plans.iter_mut().enumerate() {
        if stride(i + 1, busy) > busy_seen {
            busy_seen += 1;
            phone.first_start = ramp_start + ramp.mul_f64(busy_seen as f64 / (busy + 1) as f64);
        } else {
            idle.push(i);
        }
    }
    for n in 0..flash {
        let offset = flash_within.mul_f64((n + 1) as f64 / (flash + 1) as f64);
        plans[idle[n * idle.len() / flash]] = PhonePlan {
            first_start: flash_at + offset,
            flash: true,
        };
    }
    FleetPlan {
        phones: plans,
        busy_at_start: busy_seen,
        flash_phones: flash,
    }
}

/// A draw from the exponential distribution of the given mean (inverse transform).
pub fn exponential(rng: &mut SmallRng, mean_secs: f64) -> Duration {
    let u: f64 = rng.random();
    Duration::from_secs_f64(-mean_secs * (1.0 - u).ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(busy: f64, flash: f64) -> LoadOptions {
        let mut options = LoadOptions::defaults();
        options.busy_share = busy;
        options.flash_share = flash;
        options
    }

    #[test]
    fn the_busy_share_starts_within_the_ramp_and_the_flash_crowd_within_its_window() {
        let options = options(0.3, 0.1);
        let plan = plan(&options, 1000, 7);
        assert_eq!((plan.busy_at_start, plan.flash_phones), (300, 100));
        let ramp_start = options.sessions_from();
        let ramp_end = ramp_start + Duration::from_secs_f64(options.ramp_secs);
        let in_ramp = plan
            .phones
            .iter()
            .filter(|p| !p.flash && p.first_start < ramp_end)
            .count();
        assert!(in_ramp >= 300, "{in_ramp}");
        let flash_at = Duration::from_secs_f64(options.flash_at_secs);
        let flash_end = flash_at + Duration::from_secs_f64(options.flash_within_secs);
        for phone in plan.phones.iter().filter(|p| p.flash) {
            assert!((flash_at..flash_end).contains(&phone.first_start));
        }
        assert!(plan.phones.iter().all(|p| p.first_start >= ramp_start));
    }

    #[test]
    fn the_flash_crowd_never_takes_a_busy_phone() {
        let plan = plan(&options(0.9, 0.5), 100, 1);
        assert_eq!((plan.busy_at_start, plan.flash_phones), (90, 10));
    }

    #[test]
    fn exponential_draws_have_the_mean_asked_for() {
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| exponential(&mut rng, 1200.0).as_secs_f64())
            .sum();
        let mean = total / n as f64;
        assert!((1150.0..1250.0).contains(&mean), "{mean}");
    }
}
