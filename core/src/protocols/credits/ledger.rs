//! Balances and trust, computed from the signed records of one network
//! (see [`super::records`]). Every member reads the same records from the
//! replicated state, so every member computes the same numbers: the
//! ledger is a pure function of the set of records it was given, whatever
//! their order.

use std::collections::{BTreeMap, BTreeSet};

use super::records::{CheckOutcome, CreditError, Receipt, Terms, check_key, receipt_key};

/// Most receipts and checks one ledger holds (a network's history beyond
/// is ignored, oldest kept: see the README's trade-offs).
pub const MAX_RECORDS: usize = 200_000;
/// A worker's score with no checks yet.
const PRIOR: f64 = 1.0;
/// How much one disagreeing check weighs against agreeing ones.
const PENALTY: f64 = 50.0;
/// Below this score a worker is given no work.
pub const EXCLUDE_BELOW: f64 = 0.25;
/// From this score (18 agreeing checks and none lost) a worker's chunks
/// are checked at the network's rate; below it, every chunk is checked. A
/// worker that lies on a share `f` of its chunks earns that trust before
/// it is caught with probability (1 − f)^18: 4 in a million at f = 0.5.
pub const TRUSTED_FROM: f64 = 0.95;

/// Who the devices of a network's members are.
pub trait Devices {
    /// Whether `device` is one of `person`'s devices in the network.
    fn is_device_of(&self, person: &str, device: &str) -> bool;
}

impl<F: Fn(&str, &str) -> bool> Devices for F {
    fn is_device_of(&self, person: &str, device: &str) -> bool {
        self(person, device)
    }
}

/// A worker's record in spot checks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Trust {
    /// Checks its answer agreed with another's.
    pub agreed: u64,
    /// Checks its answer lost.
    pub disagreed: u64,
}

impl Trust {
    /// From 0 to 1: (agreed + 1) / (agreed + 2 + 50 × disagreed). A new
    /// worker scores 0.5; 18 agreeing checks take it to 0.95; one
    /// disagreeing check takes a worker with 30 agreeing ones to 0.38.
    pub fn score(&self) -> f64 {
        let a = self.agreed as f64;
        (a + PRIOR) / (a + 2.0 * PRIOR + PENALTY * self.disagreed as f64)
    }

    /// Whether it may be given work, and why not.
    pub fn excluded(&self) -> Option<String> {
        let score = self.score();
        (score < EXCLUDE_BELOW).then(|| {
            format!(
                "trust {score:.2} is below {EXCLUDE_BELOW}: {} of its answers lost a spot check ({} agreed)",
                self.disagreed, self.agreed
            )
        })
    }

    /// The share of its chunks to check, given the network's rate: all of
    /// them until it is trusted, none where the network checks nothing.
    pub fn check_rate(&self, network_rate: f64) -> f64 {
        check_rate(self.score(), network_rate)
    }
}

/// The share of the chunks of a worker with trust `score` to check,
/// given the network's rate (see [`Trust::check_rate`]).
pub fn check_rate(score: f64, network_rate: f64) -> f64 {
    if network_rate <= 0.0 {
        0.0
    } else if score >= TRUSTED_FROM {
        network_rate
    } else {
        1.0
    }
}

/// A person's credits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    /// The owner's grant.
    pub granted: u64,
    /// Earned by running chunks.
    pub earned: u64,
    /// Spent on jobs.
    pub spent: u64,
}

impl Balance {
    /// What is left (negative only if devices of one person spent at once).
    pub fn available(&self) -> i128 {
        i128::from(self.granted) + i128::from(self.earned) - i128::from(self.spent)
    }
}

/// One network's ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    network: String,
    terms: Terms,
    receipts: BTreeMap<String, Receipt>,
    checks: BTreeMap<String, CheckOutcome>,
    /// (job, chunk, device) of answers that lost a check.
    void: BTreeSet<(Vec<u8>, u32, String)>,
}

impl Ledger {
    /// An empty ledger for `network` under `terms`.
    pub fn new(network: &str, terms: Terms) -> Self {
        Ledger {
            network: network.to_owned(),
            terms,
            receipts: BTreeMap::new(),
            checks: BTreeMap::new(),
            void: BTreeSet::new(),
        }
    }

    /// The terms in force.
    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    fn full(&self) -> bool {
        self.receipts.len() + self.checks.len() >= MAX_RECORDS
    }

    /// Adds a receipt whose signatures were checked (as
    /// [`Receipt::from_token`] does). `Ok(false)`: already counted.
    pub fn add_receipt(&mut self, receipt: Receipt, devices: &impl Devices) -> Result<bool, CreditError> {
        let w = &receipt.work;
        if w.network != self.network {
            return Err(CreditError::OtherNetwork("receipt"));
        }
        for (person, device) in [(&w.requester, &w.requester_device), (&w.worker, &w.worker_device)] {
            if !devices.is_device_of(person, device) {
                return Err(CreditError::NotMember { person: person.clone(), device: device.clone() });
            }
        }
        let key = receipt_key(w);
        match self.receipts.get(&key) {
            Some(old) if *old == receipt => Ok(false),
            // Two receipts for one chunk by one worker: the requester
            // signed twice. The one with fewer credits counts, whatever
            // order they came in.
            Some(old) if (old.work.credits, old.to_token()) <= (w.credits, receipt.to_token()) => Ok(false),
            _ if self.full() && !self.receipts.contains_key(&key) => Ok(false),
            _ => {
                self.receipts.insert(key, receipt);
                Ok(true)
            }
        }
    }

    /// Adds a check outcome whose signatures and draw were checked (as
    /// [`CheckOutcome::from_token`] does). `Ok(false)`: already counted.
    pub fn add_check(&mut self, check: CheckOutcome, devices: &impl Devices) -> Result<bool, CreditError> {
        if check.network != self.network {
            return Err(CreditError::OtherNetwork("check outcome"));
        }
        for a in &check.answers {
            for (person, device) in
                [(&a.work.requester, &a.work.requester_device), (&a.work.worker, &a.work.worker_device)]
            {
                if !devices.is_device_of(person, device) {
                    return Err(CreditError::NotMember { person: person.clone(), device: device.clone() });
                }
            }
        }
        let key = check_key(&check);
        if self.checks.contains_key(&key) || self.full() {
            // One outcome per chunk: the first kept (a requester that
            // signs two outcomes for one chunk gains nothing by it).
            return Ok(false);
        }
        if let Some(rejected) = &check.rejected {
            self.void.insert((check.job.to_vec(), check.chunk, rejected.clone()));
        }
        self.checks.insert(key, check);
        Ok(true)
    }

    fn counts(&self, receipt: &Receipt) -> bool {
        let w = &receipt.work;
        w.requester != w.worker && !self.void.contains(&(w.job.to_vec(), w.chunk, w.worker_device.clone()))
    }

    /// `person`'s balance.
    pub fn balance(&self, person: &str) -> Balance {
        let mut balance = Balance { granted: self.terms.grant, ..Balance::default() };
        for r in self.receipts.values().filter(|r| self.counts(r)) {
            if r.work.requester == person {
                balance.spent = balance.spent.saturating_add(r.work.credits);
            }
            if r.work.worker == person {
                balance.earned = balance.earned.saturating_add(r.work.credits);
            }
        }
        balance
    }

    /// Every person named in a receipt, with its balance.
    pub fn balances(&self) -> BTreeMap<String, Balance> {
        let mut people = BTreeSet::new();
        for r in self.receipts.values() {
            people.insert(r.work.requester.clone());
            people.insert(r.work.worker.clone());
        }
        people.into_iter().map(|p| (p.clone(), self.balance(&p))).collect()
    }

    /// The latest receipts (by the worker's time), newest first.
    pub fn latest(&self, n: usize) -> Vec<&Receipt> {
        let mut all: Vec<&Receipt> = self.receipts.values().collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.work.at_ms));
        all.truncate(n);
        all
    }

    /// Whether this receipt counts (not voided by a check).
    pub fn is_void(&self, receipt: &Receipt) -> bool {
        !self.counts(receipt)
    }

    /// `device`'s record in this network's spot checks.
    pub fn trust(&self, device: &str) -> Trust {
        let mut trust = Trust::default();
        for check in self.checks.values() {
            for a in check.answers.iter().filter(|a| a.work.worker_device == device) {
                if check.rejected.as_deref() == Some(&a.work.worker_device) {
                    trust.disagreed += 1;
                } else {
                    trust.agreed += 1;
                }
            }
        }
        trust
    }

    /// Receipts and checks held.
    pub fn len(&self) -> (usize, usize) {
        (self.receipts.len(), self.checks.len())
    }
}

#[cfg(test)]
mod tests;
