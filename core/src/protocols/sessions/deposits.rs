//! The sender's side of the mailbox: a message left with several holders
//! is delivered (to the caller) as soon as one of them holds it, and fails
//! only when every holder refused.

use std::collections::HashMap;

use libp2p::PeerId;

use crate::{Delivery, MeshError, platform::Instant, protocols::Reply};

/// A message deposited with mailbox holders, waiting for their answers.
struct Deposit {
    id: String,
    recipient: PeerId,
    started: Instant,
    reply: Option<Reply<Delivery>>,
    outstanding: usize,
    refusals: Vec<String>,
}

/// The deposits waiting for answers, by number.
#[derive(Default)]
pub(super) struct Deposits {
    open: HashMap<u64, Deposit>,
    next: u64,
}

impl Deposits {
    /// A deposit of message `id` for `recipient` with `holders` holders;
    /// returns its number.
    pub(super) fn start(
        &mut self,
        id: String,
        recipient: PeerId,
        started: Instant,
        reply: Reply<Delivery>,
        holders: usize,
    ) -> u64 {
        let number = self.next;
        self.next += 1;
        let deposit = Deposit {
            id,
            recipient,
            started,
            reply: Some(reply),
            outstanding: holders,
            refusals: Vec::new(),
        };
        self.open.insert(number, deposit);
        number
    }

    /// A holder's answer to deposit `number`: the caller hears of the
    /// first that holds it, or of every refusal once all have answered.
    pub(super) fn answer(&mut self, number: u64, holder: PeerId, outcome: Result<(), String>, now: Instant) {
        let Some(deposit) = self.open.get_mut(&number) else { return };
        deposit.outstanding = deposit.outstanding.saturating_sub(1);
        match outcome {
            Ok(()) => {
                if let Some(reply) = deposit.reply.take() {
                    let _ = reply.send(Ok(Delivery {
                        id: deposit.id.clone(),
                        rtt: now.saturating_duration_since(deposit.started),
                        held_by: Some(holder),
                        encrypted: true,
                    }));
                }
            }
            Err(reason) => deposit.refusals.push(format!("{holder}: {reason}")),
        }
        if deposit.outstanding == 0
            && let Some(deposit) = self.open.remove(&number)
            && let Some(reply) = deposit.reply
        {
            let _ = reply.send(Err(MeshError::Delivery {
                peer: deposit.recipient,
                reason: format!(
                    "not reachable, and no node would hold the message ({})",
                    deposit.refusals.join("; ")
                ),
            }));
        }
    }
}
