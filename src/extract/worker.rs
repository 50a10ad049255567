//! The workers of `embed extract`: one per device, each taking the next pending shard and
//! running it through a three-stage pipeline (read + tokenise → forward pass → write) on its
//! own threads, committing part files as it goes.

use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use super::manifest::{self, ShardReport};
use super::plan::{self, Plan};
use super::shard::{self, shard_name, Row};
use super::{ExtractConfig, Totals, MAX_CHUNK_ROWS};
use crate::encoder::{Checkpoint, Device, Encoder, EncoderOptions, TextKind, Tokenized};
use crate::progress::{Progress, Task};

/// Run the pending shards on one worker per device, each taking the next shard as it frees up.
/// Returns what was embedded in this run. The first error stops every worker after its current
/// shard.
pub(super) fn run_workers(
    cfg: &ExtractConfig,
    checkpoint: &Checkpoint,
    plan: &Plan,
    pending: Vec<usize>,
    progress: &dyn Progress,
) -> Result<Totals> {
    let todo_rows: usize = pending.iter().map(|&k| plan.rows_per_shard[k]).sum();
    let mut total: Box<dyn Task + '_> = progress.task("total", Some(todo_rows as u64), "texts");
    if cfg.progress_lines {
        total = Box::new(LoggedTask::new(total, progress, todo_rows));
    }
    let devices = &cfg.devices[..cfg.devices.len().min(pending.len().max(1))];
    let cpu_workers = devices.iter().filter(|d| d.is_cpu()).count().max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shared = Shared {
        queue: Mutex::new(pending.into()),
        totals: Mutex::new(Totals::default()),
        errors: Mutex::new(Vec::new()),
    };
    std::thread::scope(|s| {
        for (w, &device) in devices.iter().enumerate() {
            // CPU workers split the cores; a GPU worker needs only a thread or two of its own.
            let threads = if device.is_cpu() {
                (cores / cpu_workers).max(1)
            } else {
                2
            };
            let (shared, total) = (&shared, &*total);
            s.spawn(move || {
                let worker = Worker {
                    cfg,
                    plan,
                    id: w,
                    progress,
                    total,
                };
                if let Err(e) = worker.run(checkpoint, device, threads, shared) {
                    shared.errors.lock().unwrap().push(e);
                }
            });
        }
    });
    if let Some(e) = shared.errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let totals = *shared.totals.lock().unwrap();
    Ok(totals)
}

/// What the workers share: the shard queue, running totals, and the first errors.
struct Shared {
    queue: Mutex<VecDeque<usize>>,
    totals: Mutex<Totals>,
    errors: Mutex<Vec<anyhow::Error>>,
}

struct Worker<'a> {
    cfg: &'a ExtractConfig,
    plan: &'a Plan,
    id: usize,
    progress: &'a dyn Progress,
    total: &'a dyn Task,
}

impl Worker<'_> {
    fn run(
        &self,
        checkpoint: &Checkpoint,
        device: Device,
        threads: usize,
        shared: &Shared,
    ) -> Result<()> {
        let opts = EncoderOptions {
            device,
            dtype: Some(checkpoint.dtype(&self.cfg.encoder)), // the manifest's dtype
            ..self.cfg.encoder.clone()
        };
        let encoder = Encoder::from_checkpoint(checkpoint, &opts)
            .with_context(|| format!("loading the model on {device}"))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        loop {
            let Some(k) = shared.queue.lock().unwrap().pop_front() else {
                return Ok(());
            };
            if !shared.errors.lock().unwrap().is_empty() {
                return Ok(());
            }
            let label = format!(
                "worker {} ({device}) {}",
                self.id,
                shard_name(k, self.cfg.shards)
            );
            let task =
                self.progress
                    .task(&label, Some(self.plan.rows_per_shard[k] as u64), "texts");
            let done = pool.install(|| self.run_shard(&encoder, k, &*task))?;
            *shared.totals.lock().unwrap() += done;
        }
    }

    /// Embed one shard, resuming after its committed parts. Returns what was embedded now.
    fn run_shard(&self, encoder: &Encoder, k: usize, task: &dyn Task) -> Result<Totals> {
        let n = self.cfg.shards;
        let parts_dir = self.cfg.out.join(".parts").join(shard_name(k, n));
        std::fs::create_dir_all(&parts_dir)
            .with_context(|| format!("creating {}", parts_dir.display()))?;
        let parts = shard::committed_parts(&parts_dir)?;
        let mut done = 0;
        for p in &parts {
            done += shard::parquet_rows(p)?;
        }
        task.set_position(done as u64);
        let pipeline = Pipeline {
            cfg: self.cfg,
            plan: self.plan,
            encoder,
            shard: k,
            chunk_rows: self.cfg.checkpoint_rows.min(MAX_CHUNK_ROWS),
            parts_dir: &parts_dir,
        };
        let counts = pipeline
            .run(done, parts.len(), task, self.total)
            .with_context(|| format!("embedding {}", shard_name(k, n)))?;
        self.finish_shard(k, &parts_dir, encoder.dim())?;
        Ok(counts)
    }

    /// All parts are committed: merge them into the final shard file, then record it.
    fn finish_shard(&self, k: usize, parts_dir: &Path, dim: usize) -> Result<()> {
        let n = self.cfg.shards;
        let parts = shard::committed_parts(parts_dir)?;
        let dest = self.cfg.out.join(format!("{}.parquet", shard_name(k, n)));
        let schema = shard::schema(dim, &self.plan.columns);
        let rows = shard::merge_parts(&parts, &dest, &schema)?;
        if rows != self.plan.rows_per_shard[k] {
            bail!(
                "{}: {rows} rows written but the plan has {}; the input changed during the run?",
                dest.display(),
                self.plan.rows_per_shard[k]
            );
        }
        manifest::write_shard_report(
            &self.cfg.out,
            &ShardReport {
                shard: k,
                shards: n,
                rows,
                file: format!("{}.parquet", shard_name(k, n)),
            },
        )?;
        std::fs::remove_dir_all(parts_dir).ok();
        Ok(())
    }
}

type Chunk = (Vec<Row>, Vec<Tokenized>);

/// The three stages of one shard: read + tokenise, forward pass, write parts.
struct Pipeline<'a> {
    cfg: &'a ExtractConfig,
    plan: &'a Plan,
    encoder: &'a Encoder,
    shard: usize,
    chunk_rows: usize,
    parts_dir: &'a Path,
}

impl Pipeline<'_> {
    /// Skip the `done` rows already committed (as `parts` part files), embed the rest.
    fn run(&self, done: usize, parts: usize, task: &dyn Task, total: &dyn Task) -> Result<Totals> {
        let (to_model, from_reader) = std::sync::mpsc::sync_channel::<Result<Chunk>>(2);
        let (to_writer, from_model) = std::sync::mpsc::sync_channel::<Vec<Row>>(2);
        std::thread::scope(|s| {
            let reader = s.spawn(move || self.read_stage(done, to_model));
            let writer = s.spawn(move || self.write_stage(parts, from_model));
            let embedded = self.embed_stage(from_reader, to_writer, task, total);
            let written = writer.join().expect("writer thread panicked");
            let _ = reader.join();
            let counts = embedded?;
            written?;
            Ok(counts)
        })
    }

    /// Stage 1: this shard's records after the committed ones, tokenised a chunk at a time.
    fn read_stage(&self, mut skip: usize, to_model: SyncSender<Result<Chunk>>) {
        let spec = &self.plan.text;
        let send = |chunk: Vec<Row>, texts: Vec<String>| -> bool {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let tokenized = self.encoder.tokenize(&refs, TextKind::Document);
            to_model.send(tokenized.map(|t| (chunk, t))).is_ok()
        };
        let mut chunk: Vec<Row> = Vec::with_capacity(self.chunk_rows);
        let mut texts: Vec<String> = Vec::with_capacity(self.chunk_rows);
        for raw in crate::corpus::stream_records(&self.cfg.inputs) {
            let raw = match raw {
                Ok(r) => r,
                Err(e) => {
                    let _ = to_model.send(Err(e));
                    return;
                }
            };
            if self
                .plan
                .rejected_at
                .contains(&(raw.file.clone(), raw.line))
            {
                continue;
            }
            let Ok(fields) = raw.fields else { continue };
            let Ok((id, text, _)) = spec.apply_at(&fields, &raw.file, raw.line) else {
                continue;
            };
            if plan::shard_of(&id, self.cfg.shards) != self.shard {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            chunk.push(Row {
                id,
                fields,
                vector: Vec::new(),
            });
            texts.push(text);
            if chunk.len() == self.chunk_rows {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(self.chunk_rows));
                if !send(full, std::mem::take(&mut texts)) {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            send(chunk, texts);
        }
    }

    /// Stage 2 (the calling thread): the forward pass. Returns what it embedded.
    fn embed_stage(
        &self,
        from_reader: Receiver<Result<Chunk>>,
        to_writer: SyncSender<Vec<Row>>,
        task: &dyn Task,
        total: &dyn Task,
    ) -> Result<Totals> {
        let started = Instant::now();
        let mut now = Totals::default();
        for item in from_reader {
            let (mut rows, tokenized) = item?;
            let encoded = self.encoder.encode_tokenized(&tokenized, |_, _| {})?;
            for (r, v) in rows.iter_mut().zip(encoded.vectors) {
                r.vector = v;
            }
            now += Totals {
                rows: rows.len(),
                tokens: encoded.tokens,
                truncated: encoded.truncated,
            };
            task.inc(rows.len() as u64);
            total.inc(rows.len() as u64);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            task.set_message(format!("{:.0} tokens/s", now.tokens as f64 / secs));
            if to_writer.send(rows).is_err() {
                break; // the writer failed; its error is reported by the caller
            }
        }
        Ok(now)
    }

    /// Stage 3: commit a part file every `checkpoint_rows` rows.
    fn write_stage(&self, parts: usize, from_model: Receiver<Vec<Row>>) -> Result<()> {
        let dim = self.encoder.dim();
        let schema = shard::schema(dim, &self.plan.columns);
        let mut index = parts;
        let mut pending: Vec<Row> = Vec::new();
        let mut commit = |rows: &mut Vec<Row>| -> Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let batch = shard::to_batch(&schema, &self.plan.columns, dim, rows)?;
            let path = self.parts_dir.join(format!("part-{index:05}.parquet"));
            shard::write_parquet(&path, &schema, &[batch])?;
            index += 1;
            rows.clear();
            Ok(())
        };
        for chunk in from_model {
            pending.extend(chunk);
            // Parts hold whole chunks, so a resumed run re-forms exactly the same batches.
            if pending.len() + self.chunk_rows > self.cfg.checkpoint_rows {
                commit(&mut pending)?;
            }
        }
        commit(&mut pending)
    }
}

/// The "total" task that also logs a line every 10% or 5 s: where no bar is drawn (--quiet, a
/// log file), a long run still shows that it moves and how fast.
struct LoggedTask<'a> {
    inner: Box<dyn Task + 'a>,
    progress: &'a dyn Progress,
    total: usize,
    start: Instant,
    /// (texts done, when the last line was logged, its tenth of the total)
    state: Mutex<(usize, Instant, usize)>,
}

impl<'a> LoggedTask<'a> {
    fn new(inner: Box<dyn Task + 'a>, progress: &'a dyn Progress, total: usize) -> Self {
        let now = Instant::now();
        Self {
            inner,
            progress,
            total,
            start: now,
            state: Mutex::new((0, now, 0)),
        }
    }
}

impl Task for LoggedTask<'_> {
    fn inc(&self, n: u64) {
        self.inner.inc(n);
        let mut st = self.state.lock().unwrap();
        st.0 += n as usize;
        let tenth = st.0 * 10 / self.total.max(1);
        if tenth == st.2 && st.1.elapsed().as_secs_f64() < 5.0 {
            return;
        }
        (st.1, st.2) = (Instant::now(), tenth);
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = st.0 as f64 / secs;
        let eta = self.total.saturating_sub(st.0) as f64 / rate.max(1e-9);
        self.progress.log(&format!(
            "extract: {}/{} texts ({:.0}%), {rate:.1} texts/s, eta {eta:.0} s",
            st.0,
            self.total,
            100.0 * st.0 as f64 / self.total.max(1) as f64
        ));
    }
    fn set_position(&self, n: u64) {
        self.inner.set_position(n)
    }
    fn set_length(&self, n: u64) {
        self.inner.set_length(n)
    }
    fn set_message(&self, msg: String) {
        self.inner.set_message(msg)
    }
}
