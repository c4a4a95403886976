//! The operation engine: persisted, typed state machines that survive crashes.
//!
//! A job is a row of the `jobs` table whose `state` column holds the job's
//! whole state machine, serialised: a [`Machine`] value, captured once at
//! admission (project, target, source, mode, cipher, key ids) and replaced at
//! every step. The engine does not know what the states mean. It runs a
//! machine's [`Machine::step`], which does one action (storage, key manager,
//! LUKS header), consumes the state and returns the next one together with
//! the open transaction holding the action's effects on the records; the
//! engine adds the new state (or the job's removal when the machine is
//! finished) to that transaction and commits it. Every action is safe to run
//! again when a crash hits between the action and its commit, so on start
//! the engine simply resumes every job at its recorded state.
//!
//! Retries are part of the row too: a failure in a state the machine calls
//! late ([`Machine::is_late`], past its point of no return) is counted in
//! `attempts` and given a backoff deadline `next_attempt_at`, and the state
//! is retried (by this process or, after a restart, the next); so is an
//! earlier state whose key manager or backend was unavailable (a timeout, a
//! refused connection), up to [`TRANSIENT_ATTEMPTS`] times; any other
//! failure rolls the machine back ([`Machine::roll_back`]) and removes the
//! job.
//!
//! Several processes (nodes) may share the database. A job is leased to the
//! node that admitted it; each node renews the leases of the jobs it runs
//! (heartbeat) and claims the jobs whose lease ran out (a dead or stalled
//! node's: `FOR UPDATE SKIP LOCKED` on PostgreSQL). Taking a job up bumps its
//! `epoch`; each step's start is checked against it and each commit is
//! fenced by it (`UPDATE … WHERE epoch = $`), so a node that lost the job
//! never commits a step of it. Every attempt is written to `step_log`
//! (start committed before the action, end with the step's commit), which
//! shows that no step of a job ran on two nodes at once. The start of a
//! job's next attempt is written in the commit of the step before it (and
//! the first one in the admission), so a step costs one commit, not three:
//! that commit was fenced at the run's epoch, which is as good a check as a
//! separate read before the action. The key-deletion queue is leased per
//! key the same way.
//!
//! The machines (creates, clones, snapshots, restores, transfers, rekeys,
//! deletes) live in [`crate::paths`]; this module only runs them, keeps the
//! key-deletion queue (step 5 of every rekey) and names the keys jobs make.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rekey_keys::{ErrorKind as KeyErrorKind, KeyId, KeyManager, Project};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Notify;

use crate::db::{self, Db, JobRow, StepLogEntry};
use crate::error::{Result, ServiceError};
use crate::fault::{self, Point, Step};

pub(crate) const GIB: u64 = 1 << 30;
/// Key-manager algorithm for volume keys (Cinder asks for the cipher's family).
pub(crate) const KEY_ALGORITHM: &str = "aes";
/// Attempts at a late state before the machine's target is marked `error`;
/// the job keeps retrying (see [`retry_delay`]).
const LATE_STEP_ATTEMPTS: u32 = 4;
/// Attempts at a state before the point of no return whose failures were
/// all transient (key manager or backend unavailable) before the machine is
/// rolled back: about 15 s of backoff, so an overloaded Barbican or a
/// restarting OSD does not fail a clone.
const TRANSIENT_ATTEMPTS: u32 = 5;
/// The longest pause between two attempts at a late state.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the key-deletion queue is looked at without being woken.
const KEY_GC_INTERVAL: Duration = Duration::from_secs(2);

/// Exponential backoff from 0.5 s, capped at [`RETRY_MAX`].
fn retry_delay(failures: u32) -> Duration {
    Duration::from_millis(250u64 << failures.min(10)).min(RETRY_MAX)
}

/// Milliseconds since the epoch: how deadlines are stored.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A database transaction a step's effects are written in.
pub type Tx = db::Tx;

/// What the engine needs of the process that runs machines.
pub trait Context: Clone + Send + Sync + 'static {
    fn engine(&self) -> &Arc<Engine>;
}

/// The engine's own state: its database, the key manager (for the deletion
/// queue), this node's name and lease length, the jobs this process runs
/// (with the epoch each run holds) and the wake-up of the deletion worker.
#[derive(Debug)]
pub struct Engine {
    db: Db,
    keys: Arc<dyn KeyManager>,
    /// Only for this process's storage session and fencing dead ones.
    storage: Arc<dyn rekey_storage::Backend>,
    key_gc: Notify,
    node: String,
    lease: Duration,
    running: Mutex<HashMap<String, Arc<AtomicI64>>>,
    pub(crate) metrics: crate::metrics::Metrics,
}

impl Engine {
    pub(crate) fn new(
        db: Db,
        keys: Arc<dyn KeyManager>,
        storage: Arc<dyn rekey_storage::Backend>,
        node: String,
        lease: Duration,
        calls: Arc<crate::metrics::Calls>,
    ) -> Self {
        Engine {
            db,
            keys,
            storage,
            key_gc: Notify::new(),
            node,
            lease,
            running: Mutex::new(HashMap::new()),
            metrics: crate::metrics::Metrics::new(calls),
        }
    }

    /// This node's name.
    pub(crate) fn node_name(&self) -> &str {
        &self.node
    }

    fn lease_until(&self) -> i64 {
        now_ms() + self.lease.as_millis() as i64
    }

    /// How often leases are renewed and expired ones looked for.
    fn beat(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The start of job `id`'s next attempt at `step`, to be committed by
    /// the caller's transaction (the previous step's commit, or the
    /// admission), at `epoch`.
    fn next_attempt(&self, id: &str, kind: &str, step: Step, epoch: i64) -> StepLogEntry {
        StepLogEntry {
            id: uuid::Uuid::new_v4().to_string(),
            job_id: id.to_owned(),
            kind: kind.to_owned(),
            step: step.as_str().to_owned(),
            node: self.node.clone(),
            epoch,
            started_at: now_ms(),
        }
    }

    /// Registers a run of job `id` at `epoch` in this process; `None` if a
    /// run of it is already here (which now holds `epoch`).
    fn register(&self, id: &str, epoch: i64) -> Option<Arc<AtomicI64>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = running.get(id) {
            e.store(epoch, Ordering::SeqCst);
            return None;
        }
        let e = Arc::new(AtomicI64::new(epoch));
        running.insert(id.to_owned(), e.clone());
        Some(e)
    }

    fn unregister(&self, id: &str) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Something was queued for deletion: look now rather than at the next tick.
    pub(crate) fn wake_key_gc(&self) {
        self.key_gc.notify_one();
    }

    async fn tx(&self) -> Result<Tx> {
        self.db.tx().await
    }
}

/// A state machine the engine runs. `Clone` because the engine keeps the
/// persisted state while a step consumes a copy: a failed step leaves the
/// recorded state to retry or roll back from.
pub trait Machine: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// What the steps are given (the service).
    type Cx: Context;

    /// The job kind, for the `kind` column and logs (`clone`, `restore`, …).
    fn kind(&self) -> &'static str;

    /// The label of the current state.
    fn step_name(&self) -> Step;

    /// Whether the current state is past the point of no return: a failure
    /// there is retried, never rolled back.
    fn is_late(&self) -> bool;

    /// The key ids this state holds that no record may name yet (the old and
    /// the new key of a rekey), so the audit and the key lookup see them.
    fn held_keys(&self) -> [Option<&str>; 2];

    /// Does the current state's action; returns the transaction holding its
    /// effects and the next state (`None`: the machine is finished, and the
    /// transaction holds its final effects).
    fn step(self, cx: &Self::Cx, job_id: &str) -> impl Future<Output = Result<Transition<Self>>> + Send;

    /// The machine failed in a state that is not late: the transaction puts
    /// its records into their failed state and queues the keys it made for
    /// deletion. The engine removes the job in the same transaction.
    fn roll_back(self, cx: &Self::Cx, job_id: &str, error: &str) -> impl Future<Output = Result<Tx>> + Send;

    /// A late state failed [`LATE_STEP_ATTEMPTS`] times: show it on the
    /// records (the job keeps retrying).
    fn give_up(&self, tx: &mut Tx) -> impl Future<Output = Result<()>> + Send;
}

/// The outcome of a step: its effects, not yet committed, and what follows.
pub struct Transition<M> {
    pub(crate) tx: Tx,
    pub(crate) next: Option<M>,
}

impl<M> Transition<M> {
    pub(crate) fn next(tx: Tx, next: M) -> Self {
        Transition { tx, next: Some(next) }
    }
    pub(crate) fn done(tx: Tx) -> Self {
        Transition { tx, next: None }
    }
}

/// A job: its identity, retry bookkeeping and machine.
#[derive(Debug, Clone)]
pub struct Job<M> {
    pub(crate) id: String,
    /// The record it works on (a volume, a snapshot or a backup id).
    pub(crate) target_id: String,
    pub(crate) project_id: String,
    /// The record it reads from (a clone's source, a backup's volume, …):
    /// what may not be deleted while the job runs.
    pub(crate) source_id: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) next_attempt_at: i64,
    pub(crate) epoch: i64,
    pub(crate) state: M,
}

/// A run's hold on its job: the epoch it may commit at (raised when this
/// node takes the job up again after its own lease ran out).
struct Hold(Arc<AtomicI64>);

impl<M: Machine> Job<M> {
    /// A new job at the machine's first state, at epoch 1: the admitting
    /// node takes it up in the admission itself ([`admit`]).
    pub(crate) fn new(target_id: &str, project_id: &str, source_id: Option<&str>, state: M) -> Self {
        Job {
            id: uuid::Uuid::new_v4().to_string(),
            target_id: target_id.to_owned(),
            project_id: project_id.to_owned(),
            source_id: source_id.map(str::to_owned),
            attempts: 0,
            next_attempt_at: 0,
            epoch: 1,
            state,
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn row_leased(&self, lease_owner: Option<&str>, lease_until: i64) -> Result<JobRow> {
        let [old, new] = self.state.held_keys();
        Ok(JobRow {
            id: self.id.clone(),
            kind: self.state.kind().to_owned(),
            target_id: self.target_id.clone(),
            project_id: self.project_id.clone(),
            source_id: self.source_id.clone(),
            step: self.state.step_name().as_str().to_owned(),
            state: serde_json::to_string(&self.state)
                .map_err(|e| ServiceError::Internal(format!("cannot serialise job state: {e}")))?,
            old_key_id: old.map(str::to_owned),
            new_key_id: new.map(str::to_owned),
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            epoch: self.epoch,
            lease_owner: lease_owner.map(str::to_owned),
            lease_until,
            last_error: None,
            created_at: String::new(),
            previous_owner: None,
        })
    }

    fn from_row(r: JobRow) -> Result<Self> {
        let state = serde_json::from_str(&r.state)
            .map_err(|e| ServiceError::Internal(format!("job {} has an unreadable state: {e}", r.id)))?;
        Ok(Job {
            id: r.id,
            target_id: r.target_id,
            project_id: r.project_id,
            source_id: r.source_id,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            epoch: r.epoch,
            state,
        })
    }
}

/// Records a new job in `tx` (the admission's transaction), leased to this
/// node at the job's first epoch, with the start of its first attempt; the
/// node runs it ([`spawn`]) once the admission is committed. No other
/// node's claimer can take it up in between (the lease), and if this node
/// dies first, the claimer that does bumps the epoch.
pub(crate) async fn admit<M: Machine>(engine: &Engine, tx: &mut Tx, job: &Job<M>) -> Result<()> {
    db::insert_job(tx, &job.row_leased(Some(&engine.node), engine.lease_until())?).await?;
    let mut first = engine.next_attempt(&job.id, job.state.kind(), job.state.step_name(), job.epoch);
    first.id = admitted_attempt(&job.id);
    db::step_started(tx, &first).await
}

/// The step-log id of a job's first attempt, which its admission writes.
fn admitted_attempt(job_id: &str) -> String {
    format!("{job_id}-admitted")
}

/// Starts running `job` (just admitted, its admission committed) on this
/// node in the background.
pub fn spawn<M: Machine>(cx: M::Cx, job: Job<M>) {
    let first = admitted_attempt(&job.id);
    start(cx, job, Some(first));
}

/// Runs a job this node holds, unless a run of it is here already (which
/// then carries on at the new epoch). `logged`: the step-log id of the
/// attempt at its current state, if a commit already wrote its start.
fn start<M: Machine>(cx: M::Cx, job: Job<M>, logged: Option<String>) {
    if let Some(hold) = cx.engine().register(&job.id, job.epoch) {
        tokio::spawn(run(cx, job, Hold(hold), logged));
    }
}

/// Starts this node's workers: the claimer, which takes up every job whose
/// lease ran out (at start: every job nobody holds, and this node's own
/// from before a restart), the heartbeat that renews this node's leases,
/// and the key-deletion worker. Returns how many jobs it took up at once.
pub async fn recover<M: Machine>(cx: M::Cx) -> Result<usize> {
    let engine = cx.engine().clone();
    // This node's leases from before a restart are its to resume now.
    {
        let mut c = engine.db.conn().await?;
        sqlx::query("UPDATE jobs SET lease_until = 0 WHERE lease_owner = $1")
            .bind(&engine.node)
            .execute(&mut *c)
            .await
            .map_err(crate::error::db("release own leases"))?;
    }
    let session = engine.storage.session();
    if let Some(s) = &session {
        let mut c = engine.db.conn().await?;
        db::session_alive(&mut c, s, &engine.node, engine.lease_until()).await?;
        tracing::info!(session = %s, node = %engine.node, "storage session recorded");
    }
    let n = claim_round::<M>(&cx).await?;
    tokio::spawn(claimer::<M>(cx.clone()));
    tokio::spawn(heartbeat(engine.clone(), session));
    tokio::spawn(key_gc(engine));
    Ok(n)
}

/// Fences the storage sessions of processes that stopped renewing them (a
/// killed node's, also one restarted under the same name: the old process's
/// session is not the new one's), before their jobs are claimed: on RBD the
/// dead client's exclusive lock and watch on the images it had open would
/// otherwise hold the next writer up until the OSDs time the watch out. A
/// process alive but stalled past its lease is cut off from storage too, as
/// its jobs are from the database by the epoch; it has to be restarted.
async fn fence_dead_sessions(engine: &Engine) -> Result<()> {
    let now = now_ms();
    let dead = {
        let mut c = engine.db.conn().await?;
        db::dead_sessions(&mut c, now).await?
    };
    for (session, node) in dead {
        let storage = engine.storage.clone();
        let s = session.clone();
        match blocking(move || storage.fence(&s).map_err(ServiceError::from)).await {
            Ok(()) => {
                tracing::warn!(%session, %node, by = %engine.node, "storage session of a dead process fenced");
                let mut c = engine.db.conn().await?;
                db::forget_session(&mut c, &session, now).await?;
            }
            Err(e) => tracing::warn!(%session, %node, error = %e, "cannot fence a dead process's storage session"),
        }
    }
    Ok(())
}

async fn claim_round<M: Machine>(cx: &M::Cx) -> Result<usize> {
    let engine = cx.engine();
    if let Err(e) = fence_dead_sessions(engine).await {
        tracing::warn!(error = %e, "fencing dead storage sessions failed");
    }
    let rows = {
        let mut tx = engine.tx().await?;
        let rows = db::claim_jobs(&mut tx, engine.db.is_postgres(), &engine.node, now_ms(), engine.lease_until(), 64).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        rows
    };
    let n = rows.len();
    for row in rows {
        let (id, kind, step, epoch) = (row.id.clone(), row.kind.clone(), row.step.clone(), row.epoch);
        if row.previous_owner.as_deref().is_some_and(|o| o != engine.node) {
            engine.metrics.lease_takeovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(job = %id, from = row.previous_owner.as_deref().unwrap_or(""), node = %engine.node, "lease ran out; taking the job over");
        }
        match Job::<M>::from_row(row) {
            Ok(job) => {
                tracing::info!(job = %id, %kind, target = %job.target_id, %step, epoch, node = %engine.node, "taking up job");
                start(cx.clone(), job, None);
            }
            Err(e) => tracing::error!(job = %id, %kind, error = %e, "cannot run job; left as it is"),
        }
    }
    Ok(n)
}

async fn claimer<M: Machine>(cx: M::Cx) {
    loop {
        tokio::time::sleep(cx.engine().beat()).await;
        if let Err(e) = claim_round::<M>(&cx).await {
            tracing::warn!(error = %e, "claiming jobs failed");
        }
    }
}

async fn heartbeat(engine: Arc<Engine>, session: Option<String>) {
    loop {
        tokio::time::sleep(engine.beat()).await;
        // Only the jobs a run of this process is working on: a job whose run
        // ended any other way is left to expire and be taken up again.
        let ids: Vec<String> = engine.running.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        if ids.is_empty() && session.is_none() {
            continue;
        }
        // One transaction for all of them: on SQLite one commit (one fsync)
        // per beat rather than one per running job.
        let renewed = async {
            let mut tx = engine.tx().await?;
            let until = engine.lease_until();
            if let Some(s) = &session {
                db::session_alive(&mut tx, s, &engine.node, until).await?;
            }
            db::renew_leases(&mut tx, engine.db.is_postgres(), &ids, &engine.node, until).await?;
            tx.commit().await.map_err(crate::error::db("commit"))
        };
        if let Err(e) = renewed.await {
            tracing::warn!(error = %e, "lease heartbeat failed");
        }
    }
}

/// Why a step did not move its job on.
enum Failure {
    /// Another run took the job up (a higher epoch): this one stops.
    Fenced,
    Error(ServiceError),
}

impl From<ServiceError> for Failure {
    fn from(e: ServiceError) -> Self {
        Failure::Error(e)
    }
}

async fn run<M: Machine>(cx: M::Cx, job: Job<M>, hold: Hold, logged: Option<String>) {
    let id = job.id.clone();
    run_held(&cx, job, &hold, logged).await;
    cx.engine().unregister(&id);
}

async fn run_held<M: Machine>(cx: &M::Cx, mut job: Job<M>, hold: &Hold, mut logged: Option<String>) {
    let engine = cx.engine();
    loop {
        let wait = job.next_attempt_at - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let epoch = hold.0.load(Ordering::SeqCst);
        let step = job.state.step_name();
        let late = job.state.is_late();
        // The attempt whose start the last commit wrote, at the epoch that
        // commit was fenced by; if this node has taken the job up again
        // since (its lease ran out while it stalled), that attempt is
        // closed and a checked one started.
        let prelogged = logged.take();
        if let Some(id) = prelogged.as_deref().filter(|_| epoch != job.epoch) {
            if let Err(e) = close_attempt(engine, id, "fenced").await {
                tracing::warn!(job = %job.id, %step, error = %e, "cannot close a step-log entry");
            }
        }
        let log = match prelogged.filter(|_| epoch == job.epoch) {
            Some(id) => id,
            // Never start an action for a job another node has taken up.
            None => {
                job.epoch = epoch;
                match start_step(engine, &job, step).await {
                    Ok(Some(log)) => log.id,
                    Ok(None) => {
                        tracing::warn!(job = %job.id, %step, epoch = job.epoch, "job taken up by another run; this one stops");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = %job.id, %step, error = %e, "cannot start step; will retry");
                        tokio::time::sleep(engine.beat()).await;
                        continue;
                    }
                }
            }
        };
        let began = std::time::Instant::now();
        let outcome = match job.state.clone().step(cx, &job.id).await {
            Ok(t) => commit(cx, &job, step, &log, t).await,
            Err(e) => Err(Failure::Error(e)),
        };
        let result = match &outcome {
            Ok(_) => "done",
            Err(Failure::Fenced) => "fenced",
            Err(Failure::Error(_)) => "failed",
        };
        engine.metrics.step(job.state.kind(), step.as_str(), result, began.elapsed());
        // After the commit, and after the step is counted, so a test that
        // dwells here sees it timed.
        if outcome.is_ok() {
            fault::point(Point::recorded(step)).await;
        }
        let e = match outcome {
            Ok(None) => return,
            Ok(Some((next, next_log))) => {
                job.state = next;
                logged = Some(next_log);
                job.attempts = 0;
                job.next_attempt_at = 0;
                continue;
            }
            Err(Failure::Fenced) => {
                tracing::warn!(job = %job.id, %step, epoch = job.epoch, "job taken up by another run; this one stops");
                return;
            }
            Err(Failure::Error(e)) => e,
        };
        let transient = !late && e.kind() == crate::error::ErrorKind::Unavailable && job.attempts + 1 < TRANSIENT_ATTEMPTS;
        if late || transient {
            job.attempts += 1;
            job.next_attempt_at = now_ms() + retry_delay(job.attempts).as_millis() as i64;
            tracing::warn!(job = %job.id, target = %job.target_id, %step, error = %e, attempt = job.attempts, "step failed; will retry");
            // A late state cannot be rolled back, so it is never given up:
            // the target shows `error` meanwhile, and the job finishes as
            // soon as the step can run (e.g. Ceph is back).
            match record_failure(cx, &job, &log, &e.to_string()).await {
                Ok(()) => {}
                Err(Failure::Fenced) => return,
                Err(Failure::Error(e2)) => tracing::error!(job = %job.id, error = %e2, "cannot record failure"),
            }
        } else {
            tracing::error!(job = %job.id, target = %job.target_id, %step, error = %e, "job failed; rolling back");
            if let Err(Failure::Error(e2)) = roll_back(cx, &job, &log, &e.to_string()).await {
                tracing::error!(job = %job.id, error = %e2, "cannot record the failed job");
            }
            return;
        }
    }
}

/// Checks the run still holds its job and logs the attempt's start; `None`
/// if another run has taken the job up.
async fn start_step<M: Machine>(engine: &Engine, job: &Job<M>, step: Step) -> Result<Option<StepLogEntry>> {
    let mut c = engine.db.conn().await?;
    if !db::job_is_current(&mut c, &job.id, job.epoch).await? {
        return Ok(None);
    }
    let e = engine.next_attempt(&job.id, job.state.kind(), step, job.epoch);
    db::step_started(&mut c, &e).await?;
    Ok(Some(e))
}

/// Commits a step: its effects, the next state (or the job's removal), the
/// end of this attempt and the start of the next one (whose id it returns
/// with the next state), and the fence, with the fault-injection point
/// before the commit (the one after it is the caller's, once the step is
/// counted).
async fn commit<M: Machine>(cx: &M::Cx, job: &Job<M>, step: Step, log: &str, t: Transition<M>) -> Result<Option<(M, String)>, Failure> {
    let engine = cx.engine();
    let Transition { mut tx, next } = t;
    db::step_ended(&mut tx, log, now_ms(), "done").await?;
    let (current, next) = match next {
        Some(next) => {
            // The commit extends the lease too: a heartbeat skips a job
            // whose commit holds its row.
            let row = Job { state: next.clone(), attempts: 0, next_attempt_at: 0, ..job.clone() }
                .row_leased(Some(&engine.node), engine.lease_until())?;
            let current = db::save_job(&mut tx, &row).await?;
            let attempt = engine.next_attempt(&job.id, next.kind(), next.step_name(), job.epoch);
            if current {
                db::step_started(&mut tx, &attempt).await?;
            }
            (current, Some((next, attempt.id)))
        }
        None => (db::delete_job(&mut tx, &job.id, job.epoch).await?, None),
    };
    if !current {
        return Err(Failure::Fenced);
    }
    fault::point(Point::done(step)).await;
    tx.commit().await.map_err(crate::error::db("commit"))?;
    // A step may have queued a key for deletion; the worker looks now.
    engine.wake_key_gc();
    Ok(next)
}

/// Ends a step-log entry outside any step's commit.
async fn close_attempt(engine: &Engine, log: &str, outcome: &str) -> Result<()> {
    let mut c = engine.db.conn().await?;
    db::step_ended(&mut c, log, now_ms(), outcome).await
}

async fn record_failure<M: Machine>(cx: &M::Cx, job: &Job<M>, log: &str, error: &str) -> Result<(), Failure> {
    let mut tx = cx.engine().tx().await?;
    db::step_ended(&mut tx, log, now_ms(), "failed").await?;
    if !db::job_failed(&mut tx, &job.id, job.epoch, error, job.attempts, job.next_attempt_at).await? {
        return Err(Failure::Fenced);
    }
    if job.state.is_late() && job.attempts >= LATE_STEP_ATTEMPTS {
        job.state.give_up(&mut tx).await?;
    }
    tx.commit().await.map_err(crate::error::db("commit"))?;
    Ok(())
}

async fn roll_back<M: Machine>(cx: &M::Cx, job: &Job<M>, log: &str, error: &str) -> Result<(), Failure> {
    let mut tx = job.state.clone().roll_back(cx, &job.id, error).await?;
    db::step_ended(&mut tx, log, now_ms(), "rolled back").await?;
    if !db::delete_job(&mut tx, &job.id, job.epoch).await? {
        return Err(Failure::Fenced);
    }
    tx.commit().await.map_err(crate::error::db("commit"))?;
    cx.engine().wake_key_gc();
    Ok(())
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("blocking task: {e}")))?
}

// ---- keys the jobs make ----------------------------------------------------

/// Every key the service makes is named `rekey-job-<job id>-<tag>`, so that a
/// step re-run after a crash finds the key its interrupted run made instead
/// of making another (which would leave the first one orphaned), a rolled-back
/// job's unrecorded keys can be found and deleted, and the audit can tell the
/// service's keys from anything else in a Barbican project.
pub(crate) const KEY_NAME_PREFIX: &str = "rekey-job-";

/// The name of the key `job_id` makes at `tag`.
pub(crate) fn key_name(job_id: &str, tag: &str) -> String {
    format!("{KEY_NAME_PREFIX}{job_id}-{tag}")
}

/// The job id a service key's name carries (`None` for other names).
pub(crate) fn key_name_job(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(KEY_NAME_PREFIX)?;
    // A job id is a UUID: 36 characters.
    rest.get(..36).filter(|_| rest.as_bytes().get(36) == Some(&b'-'))
}

/// A fresh key in `project` for job `job_id`'s step `tag`, or the one an
/// interrupted run of the same step already made.
pub(crate) async fn job_new_key(keys: &dyn KeyManager, job_id: &str, project: &str, tag: &str, bits: u32) -> Result<KeyId> {
    let p = Project::new(project.to_owned())?;
    let name = key_name(job_id, tag);
    if let Some(id) = keys.find_named(&p, &name).await? {
        tracing::info!(job = %job_id, key = %id, %tag, "reusing the key an interrupted step made");
        return Ok(id);
    }
    Ok(keys.create_named_key(&p, Some(&name), KEY_ALGORITHM, bits).await?)
}

/// A copy (same bytes, new id, in `project`) of key `from` of project
/// `from_project`, for job `job_id`'s step `tag`; or the copy an interrupted
/// run of the same step already made. No two records ever share a key id.
pub(crate) async fn job_copy_key(
    keys: &dyn KeyManager,
    job_id: &str,
    project: &str,
    tag: &str,
    from_project: &str,
    from: &str,
) -> Result<String> {
    let p = Project::new(project.to_owned())?;
    let name = key_name(job_id, tag);
    if let Some(id) = keys.find_named(&p, &name).await? {
        tracing::info!(job = %job_id, key = %id, %tag, "reusing the key copy an interrupted step made");
        return Ok(id.to_string());
    }
    let bytes = keys.get_key(&Project::new(from_project.to_owned())?, &KeyId::parse(from)?).await?;
    let id = keys.store_named_key(&p, Some(&name), &bytes, KEY_ALGORITHM, (bytes.len() * 8) as u32).await?;
    Ok(id.to_string())
}

// ---- step 5: the key-deletion queue --------------------------------------

/// Deletes queued keys; failures are retried with a persisted backoff, never
/// fatal, so no key is orphaned for good.
async fn key_gc(engine: Arc<Engine>) {
    loop {
        if let Err(e) = key_gc_pass(&engine).await {
            tracing::warn!(error = %e, "key deletion pass failed");
        }
        tokio::select! {
            _ = engine.key_gc.notified() => {}
            _ = tokio::time::sleep(KEY_GC_INTERVAL) => {}
        }
    }
}

async fn key_gc_pass(engine: &Engine) -> Result<()> {
    let pending = {
        let mut c = engine.db.conn().await?;
        db::due_key_deletions(&mut c, now_ms()).await?
    };
    if pending.is_empty() {
        return Ok(());
    }
    // Claimed together, and the deletions done recorded together below: two
    // commits per pass, not two per key.
    let mut claimed = Vec::with_capacity(pending.len());
    {
        let mut tx = engine.tx().await?;
        let (now, until) = (now_ms(), engine.lease_until());
        for p in pending {
            // Not claimed: another node is deleting it.
            if db::claim_key_deletion(&mut tx, &p.0, &engine.node, now, until).await? {
                claimed.push(p);
            }
        }
        tx.commit().await.map_err(crate::error::db("commit"))?;
    }
    let mut deleted = Vec::new();
    for (key, project, attempts) in claimed {
        let result = match (Project::new(project.clone()), KeyId::parse(&key)) {
            (Ok(p), Ok(k)) => match engine.keys.delete_key(&p, &k).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == KeyErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(%key, error = %e, "unusable key id in deletion queue; dropping it");
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                fault::point(Point::done(Step::DeleteInterimKey)).await;
                tracing::info!(%key, %project, "deleted key");
                deleted.push(key);
            }
            Err(e) => {
                engine.metrics.key_deletion_errors.fetch_add(1, Ordering::Relaxed);
                let next = now_ms() + (Duration::from_secs(2) * (1u32 << attempts.min(5))).as_millis() as i64;
                tracing::warn!(%key, %project, error = %e, attempts = attempts + 1, "key deletion failed; will retry");
                let mut c = engine.db.conn().await?;
                db::key_deletion_failed(&mut c, &key, &e, next).await?;
            }
        }
    }
    // A crash before this commit leaves the rows; the next pass deletes
    // those keys again and finds them gone, which counts as deleted.
    if !deleted.is_empty() {
        let mut tx = engine.tx().await?;
        for key in &deleted {
            db::key_deleted(&mut tx, key).await?;
        }
        tx.commit().await.map_err(crate::error::db("commit"))?;
    }
    Ok(())
}
