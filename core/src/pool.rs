//! The pooled-compute half of [`MeshHandle`]: private networks, workers and
//! jobs.

use std::time::Duration;

use libp2p::PeerId;

use crate::{
    MeshError, MeshHandle,
    compute::{
        self, ComputeOffer, CreditsInfo, Embeddings, Executor, JobInfo, MODELS, MemberInfo, NetworkInfo,
        WorkerInfo,
    },
    credits::records::Terms,
    net::{Command, PoolCommand},
    protocols::jobs::{JobHandle, check_inputs},
};

/// How an invite may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteOptions {
    /// How many people may join with it.
    pub uses: u32,
    /// How long it can be used.
    pub valid_for: Duration,
    /// How long a membership it grants lasts (`None`: until revoked).
    pub member_for: Option<Duration>,
}

impl Default for InviteOptions {
    /// One use, valid for a day, membership until revoked.
    fn default() -> Self {
        Self { uses: 1, valid_for: Duration::from_secs(24 * 3600), member_for: None }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl MeshHandle {
    /// Creates a private network owned by this node.
    pub async fn network_create(&self, name: &str) -> Result<NetworkInfo, MeshError> {
        let name = name.to_owned();
        self.call(|reply| Command::Pool(PoolCommand::NetworkCreate { name, reply })).await?
    }

    /// A signed invite token to a network this node owns (`None`: the only
    /// network it is in).
    pub async fn network_invite(
        &self,
        network: Option<&str>,
        options: InviteOptions,
    ) -> Result<String, MeshError> {
        let network = network.map(str::to_owned);
        let (uses, valid_ms, member_for_ms) =
            (options.uses, millis(options.valid_for), options.member_for.map(millis));
        self.call(|reply| {
            Command::Pool(PoolCommand::NetworkInvite { network, uses, valid_ms, member_for_ms, reply })
        })
        .await?
    }

    /// A certificate, signed by this node's key, that `device` (a node with
    /// another key) is one of this person's devices in `network`: the
    /// device joins with it (and an invite) as this person.
    pub async fn network_certify(
        &self,
        network: Option<&str>,
        device: PeerId,
        valid_for: Duration,
    ) -> Result<String, MeshError> {
        let network = network.map(str::to_owned);
        let valid_ms = millis(valid_for);
        self.call(|reply| Command::Pool(PoolCommand::NetworkCertify { network, device, valid_ms, reply }))
            .await?
    }

    /// Joins the network of an invite token, through its owner (who must be
    /// reachable); `cert` makes this node a device of the person who
    /// certified it.
    pub async fn network_join(&self, token: &str, cert: Option<&str>) -> Result<NetworkInfo, MeshError> {
        let (token, cert) = (token.to_owned(), cert.map(str::to_owned));
        self.call(|reply| Command::Pool(PoolCommand::NetworkJoin { token, cert, reply })).await?
    }

    /// Leaves a network; `true` once its owner removed this node, `false`
    /// if the owner could not be reached (this node has left all the same).
    pub async fn network_leave(&self, network: Option<&str>) -> Result<bool, MeshError> {
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::NetworkLeave { network, reply })).await?
    }

    /// Revokes a member (a person's node ID: all its devices) or one
    /// device, in a network this node owns.
    pub async fn network_revoke(&self, network: Option<&str>, id: &str) -> Result<String, MeshError> {
        let (network, id) = (network.map(str::to_owned), id.to_owned());
        self.call(|reply| Command::Pool(PoolCommand::NetworkRevoke { network, id, reply })).await?
    }

    /// The members of a network.
    pub async fn network_members(&self, network: Option<&str>) -> Result<Vec<MemberInfo>, MeshError> {
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::NetworkMembers { network, reply })).await?
    }

    /// The networks this node is in.
    pub async fn networks(&self) -> Result<Vec<NetworkInfo>, MeshError> {
        self.call(|reply| Command::Pool(PoolCommand::Networks { reply })).await
    }

    /// The devices offering compute in a network (`None`: every network).
    pub async fn workers(&self, network: Option<&str>) -> Result<Vec<WorkerInfo>, MeshError> {
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::Workers { network, reply })).await?
    }

    /// A network's credits (`None`: the only network this node is in): its
    /// terms, balances and latest receipts, summed up from the signed
    /// records this node holds.
    pub async fn credits(&self, network: Option<&str>) -> Result<CreditsInfo, MeshError> {
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::Credits { network, reply })).await?
    }

    /// Sets the credit terms of a network this node owns: the grant each
    /// person starts with, the price per input token, the check rate.
    pub async fn set_credit_terms(
        &self,
        network: Option<&str>,
        terms: Terms,
    ) -> Result<CreditsInfo, MeshError> {
        terms.check().map_err(MeshError::BadRequest)?;
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::SetTerms { network, terms, reply })).await?
    }

    /// [`MeshHandle::set_credit_terms`] for the terms given; the others
    /// stay as they are.
    pub async fn update_credit_terms(
        &self,
        network: Option<&str>,
        grant: Option<u64>,
        price_per_token: Option<u64>,
        check_rate: Option<f64>,
    ) -> Result<CreditsInfo, MeshError> {
        let now = self.credits(network).await?;
        let terms = Terms {
            grant: grant.unwrap_or(now.grant),
            price_per_token: price_per_token.unwrap_or(now.price_per_token),
            check_rate: check_rate.unwrap_or(now.check_rate),
        };
        self.set_credit_terms(network, terms).await
    }

    /// Starts a job embedding `inputs` (in order) with `model` (`None`:
    /// `all-MiniLM-L6-v2`) across a network's workers; the handle has its
    /// progress and its result.
    pub async fn start_embed(
        &self,
        network: Option<&str>,
        model: Option<&str>,
        inputs: Vec<String>,
    ) -> Result<JobHandle, MeshError> {
        let model = match model {
            None => compute::EMBEDDING_MODEL,
            Some(name) => compute::model(name).ok_or_else(|| {
                let known: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
                MeshError::BadRequest(format!("unknown model '{name}'; this mesh runs {}", known.join(", ")))
            })?,
        };
        check_inputs(&inputs)?;
        let network = network.map(str::to_owned);
        self.call(|reply| Command::Pool(PoolCommand::Embed { network, model, inputs, reply })).await?
    }

    /// Embeds `inputs` across a network's workers: one unit-length vector
    /// per input, in order.
    pub async fn embed(&self, network: Option<&str>, inputs: Vec<String>) -> Result<Embeddings, MeshError> {
        let job = self.start_embed(network, None, inputs).await?;
        job.result.await.map_err(|_| MeshError::Closed)?
    }

    /// Jobs this node asked for: running, and the last ones finished.
    pub async fn jobs(&self) -> Result<Vec<JobInfo>, MeshError> {
        self.call(|reply| Command::Pool(PoolCommand::Jobs { reply })).await
    }

    /// Offers this node's compute to its networks, run by `executor`;
    /// resolves with what is offered.
    pub async fn offer_compute(&self, executor: Box<dyn Executor>) -> Result<ComputeOffer, MeshError> {
        let offer = self
            .call(|reply| Command::Pool(PoolCommand::Compute { executor: Some(executor), reply }))
            .await?;
        offer.ok_or_else(|| MeshError::BadRequest("the executor offers nothing".into()))
    }

    /// Stops offering compute (chunks running finish; waiting ones are
    /// refused, and run elsewhere).
    pub async fn stop_compute(&self) -> Result<(), MeshError> {
        self.call(|reply| Command::Pool(PoolCommand::Compute { executor: None, reply })).await?;
        Ok(())
    }
}
