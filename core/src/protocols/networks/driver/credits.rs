//! A network's credits as the replicated state holds them: the owner's
//! terms, and the receipts and check outcomes in its members' namespaces,
//! verified once each and summed up in a [`Ledger`]. Members replicate
//! each other's namespaces so that every one of them sums the same
//! records.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{Action, Networks, record};
use crate::platform::Instant;

/// How long a summed-up ledger is used before it is summed up again.
const LEDGER_TTL: std::time::Duration = std::time::Duration::from_secs(1);
use crate::{
    MeshError,
    compute::{BalanceInfo, CreditsInfo, ReceiptInfo},
    credits::{
        ledger::{Balance, Ledger, MAX_RECORDS},
        records::{CHECK_PREFIX, CheckOutcome, RECEIPT_PREFIX, Receipt, Terms, credits_prefix, terms_key},
    },
    state::LocalState,
};

/// A record read from the state, checked once.
#[derive(Clone)]
pub(super) enum Verified {
    Receipt(Box<Receipt>),
    Check(Box<CheckOutcome>),
    Invalid,
}

/// Records already checked, by the SHA-256 of their token.
#[derive(Default)]
pub(crate) struct Checked(HashMap<[u8; 32], Verified>);

impl Checked {
    fn get(&mut self, token: &str) -> Verified {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(v) = self.0.get(&key) {
            return v.clone();
        }
        if self.0.len() >= 2 * MAX_RECORDS {
            self.0.clear();
        }
        let verified = if token.starts_with(RECEIPT_PREFIX) {
            Receipt::from_token(token).map_or(Verified::Invalid, |r| Verified::Receipt(Box::new(r)))
        } else if token.starts_with(CHECK_PREFIX) {
            // The network's minimum rate is checked when it is summed up.
            CheckOutcome::from_token(token, 0.0).map_or(Verified::Invalid, |c| Verified::Check(Box::new(c)))
        } else {
            Verified::Invalid
        };
        self.0.insert(key, verified.clone());
        verified
    }
}

impl<C> Networks<C> {
    /// `network`'s terms, as its owner wrote them (the defaults if not).
    pub(crate) fn terms(&self, state: &LocalState, network: &str) -> Terms {
        self.nets
            .get(network)
            .and_then(|m| record::<Terms>(state, &m.owner, &terms_key(network), &m.owner))
            .filter(|t| t.check().is_ok())
            .unwrap_or_default()
    }

    /// `network`'s ledger, from the records this node holds, summed up
    /// again at most once every `LEDGER_TTL` (a job asks for it at every
    /// answer).
    pub(crate) fn ledger(&self, state: &LocalState, network: &str, now: Instant) -> Ledger {
        let mut cache = self.ledgers.borrow_mut();
        if let Some((at, ledger)) = cache.get(network)
            && now.saturating_duration_since(*at) < LEDGER_TTL
        {
            return ledger.clone();
        }
        let ledger = self.sum_up(state, network);
        if cache.len() >= super::MAX_NETWORKS {
            cache.clear();
        }
        cache.insert(network.to_owned(), (now, ledger.clone()));
        ledger
    }

    fn sum_up(&self, state: &LocalState, network: &str) -> Ledger {
        let mut ledger = Ledger::new(network, self.terms(state, network));
        let devices: BTreeMap<String, HashSet<String>> = self
            .member_records(state, network)
            .into_iter()
            .map(|m| (m.person, m.devices.into_iter().collect()))
            .collect();
        let is_device_of =
            |person: &str, device: &str| devices.get(person).is_some_and(|d| d.contains(device));
        let prefix = credits_prefix(network);
        let min_rate = ledger.terms().check_rate;
        let mut checked = self.checked.borrow_mut();
        for person in devices.keys() {
            for entry in state.replica().entries_under(person, &prefix) {
                let Some(token) = entry.value.as_deref().and_then(|v| serde_json::from_str::<String>(v).ok())
                else {
                    continue;
                };
                // Whoever signed it, a record counts only where it belongs:
                // in the namespace of the requester or the worker.
                match checked.get(&token) {
                    Verified::Receipt(r) if r.work.requester == *person || r.work.worker == *person => {
                        let _ = ledger.add_receipt(*r, &is_device_of);
                    }
                    Verified::Check(c) if c.rate >= min_rate && c.answers[0].work.requester == *person => {
                        let _ = ledger.add_check(*c, &is_device_of);
                    }
                    _ => {}
                }
            }
        }
        ledger
    }

    /// What `credits` shows of `network`.
    pub(crate) fn credits_info(&self, state: &LocalState, network: &str, now: Instant) -> CreditsInfo {
        // Fresh: the caller asks after a change of its own.
        self.ledgers.borrow_mut().remove(network);
        let ledger = self.ledger(state, network, now);
        let terms = *ledger.terms();
        let me = self.person(network).unwrap_or_default().to_owned();
        let info = |person: &str, b: Balance| BalanceInfo {
            person: person.to_owned(),
            granted: b.granted,
            earned: b.earned,
            spent: b.spent,
            available: b.available().clamp(i64::MIN.into(), i64::MAX.into()) as i64,
        };
        // Every member, and anyone else a receipt names (a member since
        // revoked).
        let mut people: BTreeMap<String, Balance> = ledger.balances();
        for m in self.member_records(state, network) {
            people.entry(m.person.clone()).or_insert_with(|| ledger.balance(&m.person));
        }
        let mut balances = vec![info(&me, ledger.balance(&me))];
        balances.extend(people.into_iter().filter(|(p, _)| *p != me).map(|(p, b)| info(&p, b)));
        let receipts = ledger
            .latest(20)
            .into_iter()
            .map(|r| ReceiptInfo {
                job: hex::encode(&r.work.job[..8.min(r.work.job.len())]),
                chunk: r.work.chunk,
                requester: r.work.requester.clone(),
                worker: r.work.worker.clone(),
                worker_device: r.work.worker_device.clone(),
                tokens: r.work.tokens,
                credits: r.work.credits,
                at_ms: r.work.at_ms,
                void: ledger.is_void(r),
            })
            .collect();
        let (receipts_held, checks_held) = ledger.len();
        CreditsInfo {
            network: network.to_owned(),
            grant: terms.grant,
            price_per_token: terms.price_per_token,
            check_rate: terms.check_rate,
            me,
            balances,
            receipts,
            records: receipts_held + checks_held,
        }
    }

    /// The write that sets `network`'s terms: only its owner may.
    pub(crate) fn terms_write(
        &self,
        network: &str,
        terms: &Terms,
    ) -> Result<(String, serde_json::Value), MeshError> {
        let m = self
            .nets
            .get(network)
            .ok_or_else(|| super::err(format!("this node is not in network {network}")))?;
        if m.owner != self.local_text {
            return Err(super::err(format!("only the owner of network {network} sets its terms")));
        }
        terms.check().map_err(MeshError::BadRequest)?;
        Ok((terms_key(network), super::json(terms)))
    }

    /// Replicates the namespaces of the members of this node's networks
    /// (where their credit records are), once each.
    pub(super) fn want_members(&mut self, state: &LocalState) {
        let ids: Vec<String> = self.nets.keys().cloned().collect();
        for id in ids {
            for member in self.member_records(state, &id) {
                if member.person != self.local_text && self.wanted.insert(member.person.clone()) {
                    self.actions.push_back(Action::Want(member.person));
                }
            }
        }
    }
}
