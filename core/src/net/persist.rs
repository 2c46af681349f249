//! The event loop's side of durability: the two stores, a group-commit
//! [`Writer`] for each, and the commit under way in each. Commits run off
//! the loop (the stores' own writer thread or task); the loop only starts
//! them and polls their futures.

use std::task::{Context, Poll};

use futures::FutureExt;

use crate::{
    platform::Instant,
    protocols::{replication::WriteReply, sessions::HeldAck},
    state::Entry,
    store::{Commit, Finished, MailChange, MailKey, MailStore, Store, Writer},
};

/// Staged changes beyond which the loop stops taking commands until the
/// store catches up.
const HIGH_WATER: usize = 50_000;

/// A commit that finished.
pub(crate) enum Stored<C> {
    /// Of state entries.
    State(Finished<(String, String), WriteReply>),
    /// Of mailbox changes.
    Mail(Finished<MailKey, HeldAck<C>>),
}

/// The stores and their writers.
pub(crate) struct Persistence<C> {
    store: Box<dyn Store>,
    entries: Writer<(String, String), Entry, WriteReply>,
    entries_commit: Option<Commit>,
    mail_store: Box<dyn MailStore>,
    mail: Writer<MailKey, MailChange, HeldAck<C>>,
    mail_commit: Option<Commit>,
}

impl<C> Persistence<C> {
    pub(crate) fn new(store: Box<dyn Store>, mail_store: Box<dyn MailStore>) -> Self {
        Self {
            store,
            entries: Writer::new(HIGH_WATER),
            entries_commit: None,
            mail_store,
            mail: Writer::new(HIGH_WATER),
            mail_commit: None,
        }
    }

    /// Stages entries; `ack` is answered once they are durable.
    pub(crate) fn entries(&mut self, entries: Vec<Entry>, ack: Option<WriteReply>) {
        let changes = entries.into_iter().map(|e| ((e.namespace.clone(), e.key.clone()), e));
        if let Some(ack) = self.entries.stage(changes, ack) {
            let _ = ack.send(Ok(()));
        }
    }

    /// Stages mailbox changes; `held` is answered once they are durable.
    /// Returns `held` when there was nothing to store.
    pub(crate) fn mail(&mut self, changes: Vec<MailChange>, held: Option<HeldAck<C>>) -> Option<HeldAck<C>> {
        let changes = changes.into_iter().map(|change| {
            let key = match &change {
                MailChange::Hold(recipient, held) => (*recipient, held.author, held.id.clone()),
                MailChange::Drop(recipient, author, id) => (*recipient, *author, id.clone()),
            };
            (key, change)
        });
        self.mail.stage(changes, held)
    }

    /// Hands each idle store its next batch.
    pub(crate) fn start(&mut self, now: Instant) {
        if self.entries_commit.is_none()
            && let Some(batch) = self.entries.next_batch(now)
        {
            self.entries_commit = Some(self.store.commit(batch));
        }
        if self.mail_commit.is_none()
            && let Some(batch) = self.mail.next_batch(now)
        {
            self.mail_commit = Some(self.mail_store.commit_mail(batch));
        }
    }

    /// The next commit that finished.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Stored<C>> {
        if let Some(commit) = &mut self.entries_commit
            && let Poll::Ready(result) = commit.poll_unpin(cx)
        {
            self.entries_commit = None;
            return Poll::Ready(Stored::State(self.entries.finished(result, now)));
        }
        if let Some(commit) = &mut self.mail_commit
            && let Poll::Ready(result) = commit.poll_unpin(cx)
        {
            self.mail_commit = None;
            return Poll::Ready(Stored::Mail(self.mail.finished(result, now)));
        }
        Poll::Pending
    }

    /// Whether the stores are behind: stop taking commands until they catch up.
    pub(crate) fn backlogged(&self) -> bool {
        self.entries.is_backlogged() || self.mail.is_backlogged()
    }

    /// Whether anything is staged or being committed.
    pub(crate) fn busy(&self) -> bool {
        self.entries.has_staged() || self.entries.is_busy() || self.mail.has_staged() || self.mail.is_busy()
    }
}
