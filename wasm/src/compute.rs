//! Pooled compute in a page: private networks, jobs, and this tab's compute
//! offered to its networks. The model runs in Web Workers started by
//! `js/compute.js` from the package's separate compute module; the core
//! decides what runs where, this file only carries tasks to the workers and
//! converts values.

use std::rc::Rc;

use futures::future::{Either, select};
use infermesh_core::{
    InviteOptions, JobHandle, MeshError,
    compute::{ComputeOffer, EMBEDDING_MODEL, Executor, Progress, Task, TaskOutput, TaskResult},
};
use js_sys::{Array, Float32Array, Function, Promise};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use crate::{
    Shared, WasmP2PClient,
    convert::{js_error, options as parse_options, to_js},
    promise,
};

#[wasm_bindgen(module = "/js/compute.js")]
extern "C" {
    /// The page's compute workers (`js/compute.js`).
    pub(crate) type ComputeWorkers;

    #[wasm_bindgen(constructor)]
    fn new(threads: u32, worker_url: &str, model_base: &str) -> ComputeWorkers;

    /// Resolves with `{ load_ms, cached }` once every worker has the model.
    #[wasm_bindgen(method)]
    fn start(this: &ComputeWorkers) -> Promise;

    /// Resolves with `{ vectors: Float32Array, tokens }`.
    #[wasm_bindgen(method)]
    fn run(this: &ComputeWorkers, inputs: Array) -> Promise;

    #[wasm_bindgen(method)]
    pub(crate) fn stop(this: &ComputeWorkers);

    #[wasm_bindgen(js_name = defaultWorkerUrl)]
    fn default_worker_url() -> String;

    #[wasm_bindgen(js_name = defaultModelBase)]
    fn default_model_base() -> String;

    #[wasm_bindgen(js_name = defaultThreads)]
    fn default_threads() -> u32;

    #[wasm_bindgen(js_name = deviceMemoryMb)]
    fn device_memory_mb() -> u32;
}

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** A private network this node is in. */
export interface NetworkInfo {
  id: string; name: string; owner: string; person: string;
  role: "owner" | "member";
  status: "active" | "pending" | "revoked" | "expired";
  members: number;
}
/** A member: a person (a key) and the devices it certified. */
export interface MemberInfo { person: string; devices: string[]; owner: boolean; joined_ms: number; expires_ms: number | null }
/** A device offering compute, as its presence says and this node measured. */
export interface WorkerInfo {
  network: string; device: string; person: string;
  threads: number; memory_mb: number; models: string[]; kind: "native" | "browser";
  queue: number; seen_ms_ago: number; ms_per_input: number | null; chunks: number; local: boolean;
  /** Trust in the network's spot checks (0 to 1), the checks agreed and lost, and why it gets no work if it does not. */
  trust: number; checks_agreed: number; checks_lost: number; excluded: string | null;
}
/** A job this node asked for. */
export interface JobInfo {
  id: string; network: string; model: string; state: "running" | "done" | "failed";
  done: number; inputs: number; workers: Record<string, number>; reassigned: number; chunk_overhead_us: number | null;
  elapsed_ms: number; error: string | null;
}
/** A network's credits: its terms, balances (this page's person first) and latest receipts. */
export interface CreditsInfo {
  network: string; grant: number; price_per_token: number; check_rate: number; me: string; records: number;
  balances: { person: string; granted: number; earned: number; spent: number; available: number }[];
  receipts: { job: string; chunk: number; requester: string; worker: string; worker_device: string;
    tokens: number; credits: number; at_ms: number; void: boolean }[];
}
export interface TermsOptions { network?: string; grant?: number; price_per_token?: number; check_rate?: number }
/** How far a job is. */
export interface Progress { job: string; done: number; total: number; chunks_done: number; chunks: number }
/** What this tab offers, and how its model loaded. */
export interface ComputeOffered {
  threads: number; memory_mb: number; models: string[]; kind: "browser";
  load_ms: number; cached: boolean;
}
export interface NetworkOptions { network?: string }
export interface InviteOptions { network?: string; uses?: number; expires_in_s?: number; member_for_s?: number }
export interface EmbedOptions { network?: string; model?: string }
export interface ComputeOptions { threads?: number; model_base?: string; worker_url?: string }
"#;

/// A task for the page and where its answer goes.
type Assigned = (Task, oneshot::Sender<TaskResult>);

/// The core's side of the page's workers: it lives in the event loop (which
/// needs `Send`), so it only passes tasks to [`serve`] on the page.
struct PageExecutor {
    offer: ComputeOffer,
    tasks: mpsc::Sender<Assigned>,
}

impl Executor for PageExecutor {
    fn offer(&self) -> ComputeOffer {
        self.offer.clone()
    }

    fn run(&self, task: Task, done: oneshot::Sender<TaskResult>) {
        // The core hands out at most `offer.threads` tasks at once, which
        // is the channel's size: a full channel is a broken promise.
        if let Err(refused) = self.tasks.try_send((task, done)) {
            let (reason, (_, done)) = match refused {
                mpsc::error::TrySendError::Full(assigned) => ("this page has no free worker", assigned),
                mpsc::error::TrySendError::Closed(assigned) => ("this page stopped computing", assigned),
            };
            let _ = done.send(Err(reason.into()));
        }
    }
}

/// Runs the core's tasks on the workers until the executor is dropped.
async fn serve(workers: Rc<ComputeWorkers>, mut tasks: mpsc::Receiver<Assigned>) {
    while let Some((task, done)) = tasks.recv().await {
        let workers = workers.clone();
        spawn_local(async move {
            let _ = done.send(run_task(&workers, task).await);
        });
    }
}

async fn run_task(workers: &ComputeWorkers, task: Task) -> TaskResult {
    let n = task.inputs.len();
    let inputs: Array = task.inputs.iter().map(|t| JsValue::from_str(t)).collect();
    let answer = JsFuture::from(workers.run(inputs)).await.map_err(|e| describe(&e))?;
    let field = |name: &str| js_sys::Reflect::get(&answer, &name.into()).map_err(|e| describe(&e));
    let vectors: Float32Array =
        field("vectors")?.dyn_into().map_err(|_| "the compute worker gave no vectors".to_owned())?;
    let tokens = field("tokens")?.as_f64().unwrap_or(0.0) as u64;
    let dims = EMBEDDING_MODEL.dimensions;
    let flat = vectors.to_vec();
    if flat.len() != n * dims {
        return Err(format!("the compute worker gave {} floats for {n} inputs of {dims}", flat.len()));
    }
    Ok(TaskOutput { vectors: flat.chunks(dims).map(<[f32]>::to_vec).collect(), tokens })
}

fn describe(error: &JsValue) -> String {
    js_sys::Reflect::get(error, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}

fn pool_error(e: MeshError) -> JsValue {
    js_error(e)
}

#[derive(Deserialize, Default)]
struct NetworkOption {
    network: Option<String>,
}

#[derive(Deserialize, Default)]
struct TermsJsOptions {
    network: Option<String>,
    grant: Option<u64>,
    price_per_token: Option<u64>,
    check_rate: Option<f64>,
}

#[derive(Deserialize, Default)]
struct InviteJsOptions {
    network: Option<String>,
    uses: Option<u32>,
    expires_in_s: Option<f64>,
    member_for_s: Option<f64>,
}

#[derive(Deserialize, Default)]
struct EmbedOptions {
    network: Option<String>,
    model: Option<String>,
}

#[derive(Deserialize, Default)]
struct ComputeOptions {
    threads: Option<u32>,
    model_base: Option<String>,
    worker_url: Option<String>,
}

fn seconds(what: &str, s: Option<f64>) -> Result<Option<std::time::Duration>, JsValue> {
    match s {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 10.0 * 365.0 * 86_400.0 => {
            Ok(Some(std::time::Duration::from_secs_f64(s)))
        }
        Some(s) => {
            Err(js_error(format!("{what} must be a number of seconds above 0 (up to 10 years), got {s}")))
        }
    }
}

#[wasm_bindgen]
impl WasmP2PClient {
    /// Creates a private network owned by this page's key: `{ id, name,
    /// owner, person, role, status, members }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<NetworkInfo>")]
    pub fn network_create(&self, name: String) -> Promise {
        let shared = self.shared.clone();
        promise(async move { to_js(&shared.mesh()?.network_create(&name).await.map_err(pool_error)?) })
    }

    /// A signed invite token (`imnet1.…`) to a network this page owns.
    /// `options`: `{ network, uses (1), expires_in_s (a day), member_for_s
    /// (until revoked) }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn network_invite(
        &self,
        #[wasm_bindgen(unchecked_param_type = "InviteOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: InviteJsOptions = parse_options(
                "network_invite",
                options.unwrap_or_default(),
                &["network", "uses", "expires_in_s", "member_for_s"],
            )?;
            let mut invite = InviteOptions::default();
            if let Some(uses) = o.uses {
                invite.uses = uses;
            }
            if let Some(valid) = seconds("expires_in_s", o.expires_in_s)? {
                invite.valid_for = valid;
            }
            invite.member_for = seconds("member_for_s", o.member_for_s)?;
            let token =
                shared.mesh()?.network_invite(o.network.as_deref(), invite).await.map_err(pool_error)?;
            Ok(JsValue::from_str(&token))
        })
    }

    /// Joins the network of an invite token through its owner (who must be
    /// reachable); resolves with the network.
    #[wasm_bindgen(unchecked_return_type = "Promise<NetworkInfo>")]
    pub fn network_join(&self, token: String) -> Promise {
        let shared = self.shared.clone();
        promise(
            async move { to_js(&shared.mesh()?.network_join(token.trim(), None).await.map_err(pool_error)?) },
        )
    }

    /// The members of a network: `[{ person, devices, owner, joined_ms,
    /// expires_ms }]`. `options`: `{ network }` (default: the only one).
    #[wasm_bindgen(unchecked_return_type = "Promise<MemberInfo[]>")]
    pub fn network_members(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NetworkOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: NetworkOption =
                parse_options("network_members", options.unwrap_or_default(), &["network"])?;
            to_js(&shared.mesh()?.network_members(o.network.as_deref()).await.map_err(pool_error)?)
        })
    }

    /// Revokes a member (a person's node ID) or one device of a network
    /// this page owns; their jobs and results are refused from then on.
    /// `options`: `{ network }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<string>")]
    pub fn network_revoke(
        &self,
        id: String,
        #[wasm_bindgen(unchecked_param_type = "NetworkOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: NetworkOption =
                parse_options("network_revoke", options.unwrap_or_default(), &["network"])?;
            let said = shared.mesh()?.network_revoke(o.network.as_deref(), &id).await.map_err(pool_error)?;
            Ok(JsValue::from_str(&said))
        })
    }

    /// Leaves a network; resolves `true` once its owner removed this page
    /// (`false`: the owner was not reachable, but this page has left).
    /// `options`: `{ network }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn network_leave(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NetworkOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: NetworkOption = parse_options("network_leave", options.unwrap_or_default(), &["network"])?;
            let removed = shared.mesh()?.network_leave(o.network.as_deref()).await.map_err(pool_error)?;
            Ok(JsValue::from_bool(removed))
        })
    }

    /// The networks this page is in.
    #[wasm_bindgen(unchecked_return_type = "Promise<NetworkInfo[]>")]
    pub fn networks(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move { to_js(&shared.mesh()?.networks().await.map_err(pool_error)?) })
    }

    /// Devices offering compute: `[{ network, device, person, threads,
    /// memory_mb, models, kind, queue, seen_ms_ago, ms_per_input, chunks,
    /// local }]`. `options`: `{ network }` (default:
    /// every network).
    #[wasm_bindgen(unchecked_return_type = "Promise<WorkerInfo[]>")]
    pub fn workers(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NetworkOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: NetworkOption = parse_options("workers", options.unwrap_or_default(), &["network"])?;
            to_js(&shared.mesh()?.workers(o.network.as_deref()).await.map_err(pool_error)?)
        })
    }

    /// A network's credits: `{ network, grant, price_per_token,
    /// check_rate, me, balances: [{ person, granted, earned, spent,
    /// available }], receipts: [{ job, chunk, requester, worker,
    /// worker_device, tokens, credits, at_ms, void }], records }`, summed
    /// up from the signed receipts and check outcomes this page holds.
    /// `options`: `{ network }` (default: the only one).
    #[wasm_bindgen(unchecked_return_type = "Promise<CreditsInfo>")]
    pub fn credits(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NetworkOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: NetworkOption = parse_options("credits", options.unwrap_or_default(), &["network"])?;
            to_js(&shared.mesh()?.credits(o.network.as_deref()).await.map_err(pool_error)?)
        })
    }

    /// Sets the credit terms of a network this page owns: `{ network,
    /// grant, price_per_token, check_rate }` (what is left out stays as
    /// it is); resolves the network's credits.
    #[wasm_bindgen(unchecked_return_type = "Promise<CreditsInfo>")]
    pub fn set_credit_terms(
        &self,
        #[wasm_bindgen(unchecked_param_type = "TermsOptions")] options: JsValue,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: TermsJsOptions = parse_options(
                "set_credit_terms",
                options,
                &["network", "grant", "price_per_token", "check_rate"],
            )?;
            let mesh = shared.mesh()?;
            let (grant, price, rate) = (o.grant, o.price_per_token, o.check_rate);
            to_js(
                &mesh
                    .update_credit_terms(o.network.as_deref(), grant, price, rate)
                    .await
                    .map_err(pool_error)?,
            )
        })
    }

    /// Jobs this page asked for: running, and the last ones finished.
    #[wasm_bindgen(unchecked_return_type = "Promise<JobInfo[]>")]
    pub fn jobs(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move { to_js(&shared.mesh()?.jobs().await.map_err(pool_error)?) })
    }

    /// Calls `handler({ job, done, total, chunks_done, chunks })` as the
    /// chunks of this page's jobs come back.
    pub fn on_progress(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(progress: Progress) => void")] handler: JsValue,
    ) -> Result<(), JsValue> {
        let handler = handler
            .dyn_into::<Function>()
            .map_err(|_| js_error("the progress handler must be a function"))?;
        *self.shared.progress_handler.borrow_mut() = Some(handler);
        Ok(())
    }

    /// Embeds `texts` (an array of strings) across the network's workers:
    /// one unit-length `Float32Array` (384 floats) per text, in order.
    /// `options`: `{ network, model }`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array[]>")]
    pub fn embed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
        #[wasm_bindgen(unchecked_param_type = "EmbedOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: EmbedOptions = parse_options("embed", options.unwrap_or_default(), &["network", "model"])?;
            let texts: Vec<String> = serde_wasm_bindgen::from_value(texts)
                .map_err(|_| js_error("embed() takes an array of strings"))?;
            let mesh = shared.mesh()?;
            let job = mesh
                .start_embed(o.network.as_deref(), o.model.as_deref(), texts)
                .await
                .map_err(pool_error)?;
            let embeddings = follow(job, &shared).await.map_err(pool_error)?;
            Ok(embeddings
                .vectors
                .iter()
                .map(|v| JsValue::from(Float32Array::from(v.as_slice())))
                .collect::<Array>()
                .into())
        })
    }

    /// Offers this tab's compute to its networks: starts `threads` Web
    /// Workers (default: half the cores, 1 to 4), each loading the compute
    /// module and the model files (from `model_base`, default the `/models/`
    /// of the node that served the page; checked by SHA-256 and kept in the
    /// Cache Storage, so a reload reads them from there). Resolves with `{
    /// threads, memory_mb, models, kind, load_ms, cached }`. `worker_url`
    /// overrides where the package's `compute/worker.js` is.
    #[wasm_bindgen(unchecked_return_type = "Promise<ComputeOffered>")]
    pub fn offer_compute(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ComputeOptions | void")] options: Option<JsValue>,
    ) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let o: ComputeOptions = parse_options(
                "offer_compute",
                options.unwrap_or_default(),
                &["threads", "model_base", "worker_url"],
            )?;
            let mesh = shared.mesh()?;
            if shared.compute.borrow().is_some() {
                return Err(js_error("this page already offers compute: call stop_compute() first"));
            }
            let threads = o.threads.unwrap_or_else(default_threads);
            if !(1..=64).contains(&threads) {
                return Err(js_error(format!("threads must be 1 to 64, got {threads}")));
            }
            let worker_url = o.worker_url.unwrap_or_else(default_worker_url);
            let model_base = o.model_base.unwrap_or_else(default_model_base);
            let workers = Rc::new(ComputeWorkers::new(threads, &worker_url, &model_base));
            *shared.compute.borrow_mut() = Some(workers.clone());
            let loaded = match JsFuture::from(workers.start()).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    shared.compute.borrow_mut().take();
                    return Err(js_error(format!("cannot start compute: {}", describe(&e))));
                }
            };
            let (tasks, assigned) = mpsc::channel(threads as usize);
            let offer = ComputeOffer {
                threads: threads as u16,
                memory_mb: device_memory_mb(),
                models: vec![EMBEDDING_MODEL.name.into()],
                kind: "browser".into(),
            };
            spawn_local(serve(workers.clone(), assigned));
            let offered = match mesh.offer_compute(Box::new(PageExecutor { offer, tasks })).await {
                Ok(offered) => offered,
                Err(e) => {
                    workers.stop();
                    shared.compute.borrow_mut().take();
                    return Err(pool_error(e));
                }
            };
            #[derive(Serialize)]
            struct Offered {
                #[serde(flatten)]
                offer: ComputeOffer,
                load_ms: f64,
                cached: bool,
            }
            let number = |name: &str| js_sys::Reflect::get(&loaded, &name.into()).ok();
            to_js(&Offered {
                offer: offered,
                load_ms: number("load_ms").and_then(|v| v.as_f64()).unwrap_or(0.0),
                cached: number("cached").and_then(|v| v.as_bool()).unwrap_or(false),
            })
        })
    }

    /// Stops offering compute: chunks running here fail and run elsewhere;
    /// the workers end.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn stop_compute(&self) -> Promise {
        let shared = self.shared.clone();
        promise(async move {
            let mesh = shared.mesh()?;
            mesh.stop_compute().await.map_err(pool_error)?;
            if let Some(workers) = shared.compute.borrow_mut().take() {
                workers.stop();
            }
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Waits for a job, passing its progress to the page's handler.
async fn follow(
    job: JobHandle,
    shared: &Rc<Shared>,
) -> Result<infermesh_core::compute::Embeddings, MeshError> {
    let JobHandle { mut progress, mut result, .. } = job;
    let mut watching = true;
    loop {
        if !watching {
            return (&mut result).await.map_err(|_| MeshError::Closed)?;
        }
        let changed = {
            let changed = Box::pin(progress.changed());
            match select(changed, &mut result).await {
                Either::Left((changed, _)) => changed.is_ok(),
                Either::Right((done, _)) => return done.map_err(|_| MeshError::Closed)?,
            }
        };
        if !changed {
            watching = false;
            continue;
        }
        let now: Progress = progress.borrow_and_update().clone();
        let handler = shared.progress_handler.borrow().clone();
        if let Some(handler) = handler {
            match to_js(&now) {
                Ok(event) => {
                    if let Err(e) = handler.call1(&JsValue::NULL, &event) {
                        web_sys::console::error_2(&"infermesh: the progress handler threw".into(), &e);
                    }
                }
                Err(e) => web_sys::console::error_1(&e),
            }
        }
    }
}
