//! [`Runtime`]: the model's forward pass on persistent worker threads.
//!
//! Every worker runs the same program over its share of each product's output rows
//! (`T` threads, worker `t`), and the workers meet at a [`SpinBarrier`] after each phase.
//! Per block, with `x` the residual stream (each worker keeps its own copy):
//!
//! ```text
//! A  x += down(prev)           n1 = RMSNorm(x)·w, quantized once     q|k|v rows (head-aligned)
//!    RoPE on q, k; k, v → cache                                                      | barrier
//! B  attention per (query head, token block): tokens in SIMD lanes (decode: one token) | barrier
//! C  gather heads (BitNet: attn_sub_norm)                            o_proj rows     | barrier
//! D  x += o                    n2 = RMSNorm(x)·w, quantized once  act(gate)·up rows  | barrier
//! E  gather (BitNet: ffn_sub_norm; FFN rotation)                     down_proj rows  | barrier
//! ```
//!
//! then `logits = lm_head · RMSNorm(x)` for the positions asked for (none for the earlier
//! chunks of a long prompt). Five barriers per block. Products write row-major by row into
//! per-worker publication buffers (double-buffered by phase parity, so a phase's writes never
//! meet the previous phase's reads); the next phase gathers them. The residual adds, the
//! gate's activation and the product with `up` are fused into the gathers and epilogues.
//!
//! Attention is causal grouped-query attention, `softmax(q·kᵀ/√d)·v` over the cached
//! positions, query head `j` reading kv head `j / (n_h/n_kv)`, RoPE with Hugging Face's
//! duplicated halves (`x·cos + rotate_half(x)·sin`, angles `p·θ^(−2i/d)` in `f64`).

use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use ternary_core::kernels::{self, Level};
use ternary_layers::TernaryBackend;
use ternary_models::{Decoder, Llama, LlamaConfig, Logits, ModelError};

use crate::error::{Result, RuntimeError};
use crate::kv::HeadCache;
use crate::model::{Model, build};
use crate::options::RuntimeOptions;
use crate::pool::{Signal, SpinBarrier};
use crate::proj::{Kernels, Prepared, Proj, Scratch, product_rows};

/// Rows per worker share are multiples of this (the kernels work on blocks of 4 rows).
const ROW_ALIGN: usize = 16;

/// Which logits a job computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    None,
    Last,
    All,
}

/// One batch of tokens for the workers.
#[derive(Debug, Default)]
struct Job {
    tokens: Vec<u32>,
    start: usize,
    want: Option<Want>,
    /// `cos(p·f_i)`, `sin(p·f_i)` for the job's positions: `[n, d/2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// What every worker shares.
#[derive(Debug)]
struct Shared {
    model: Model,
    threads: usize,
    k: Kernels,
    max_ctx: usize,
    signal: Signal,
    barrier: SpinBarrier,
    job: RwLock<Job>,
    /// Publication buffers, `[phase parity][worker]`.
    parts: [Vec<RwLock<Vec<f32>>>; 2],
    /// `[layer · n_kv + kv head]`.
    kv: Vec<RwLock<HeadCache>>,
    error: Mutex<Option<RuntimeError>>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Share `t` of `total` items among `nt` workers, in multiples of `align`.
fn split(total: usize, t: usize, nt: usize, align: usize) -> Range<usize> {
    let units = total.div_ceil(align);
    let a = (units * t / nt * align).min(total);
    let b = (units * (t + 1) / nt * align).min(total);
    a..b
}

impl Shared {
    fn record(&self, e: RuntimeError) {
        let mut g = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }

    fn config(&self) -> &LlamaConfig {
        &self.model.config
    }

    /// Head units (`d` rows each) of the fused q|k|v product owned by worker `t`.
    fn qkv_units(&self, t: usize) -> Range<usize> {
        let c = self.config();
        split(c.num_heads + 2 * c.num_kv_heads, t, self.threads, 1)
    }

    /// The worker owning head unit `u` and the unit's first row within its share.
    fn unit_owner(&self, u: usize) -> (usize, usize) {
        for t in 0..self.threads {
            let r = self.qkv_units(t);
            if r.contains(&u) {
                return (t, u - r.start);
            }
        }
        (0, 0)
    }

    fn rows_h(&self, t: usize) -> Range<usize> {
        split(self.config().hidden_size, t, self.threads, ROW_ALIGN)
    }

    fn rows_f(&self, t: usize) -> Range<usize> {
        split(self.config().intermediate_size, t, self.threads, ROW_ALIGN)
    }

    fn rows_v(&self, t: usize) -> Range<usize> {
        split(self.config().vocab_size, t, self.threads, ROW_ALIGN)
    }

    /// Token blocks per query head for the attention of `n` tokens (about eight items per
    /// thread, so that the split is even).
    fn blocks(&self, n: usize) -> usize {
        let nh = self.config().num_heads;
        (8 * self.threads).div_ceil(nh).clamp(1, n.max(1))
    }
}

/// One worker's activations and scratch (sized on first use, then reused).
#[derive(Debug)]
struct Local {
    /// Residual stream `[n, H]`.
    x: Vec<f32>,
    /// Normalized input of the next products `[n, width]`.
    xn: Vec<f32>,
    /// Gathered attention output `[n, n_h·d]` or MLP activations `[n, F]`.
    act: Vec<f32>,
    prep: [Prepared; 3],
    scratch: Scratch,
    gate: Vec<f32>,
    q: Vec<f32>,
    out: Vec<f32>,
    /// Keys and values widened from an `f16` cache.
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    attn: kernels::AttentionScratch,
}

impl Local {
    fn new() -> Self {
        Self {
            x: Vec::new(),
            xn: Vec::new(),
            act: Vec::new(),
            prep: [Prepared::new(), Prepared::new(), Prepared::new()],
            scratch: Scratch::default(),
            gate: Vec::new(),
            q: Vec::new(),
            out: Vec::new(),
            kbuf: Vec::new(),
            vbuf: Vec::new(),
            attn: kernels::AttentionScratch::default(),
        }
    }
}

/// Makes `v` `len` long without zeroing what it already holds: for buffers whose every element
/// the phase writes before anything reads it (product outputs, gathers, norms, attention), so
/// re-zeroing megabytes per product (a memset at 5% of a prefill) buys nothing.
fn sized(v: &mut Vec<f32>, len: usize) {
    v.resize(len, 0.0);
}

/// `1 / sqrt(mean(x²) + ε)` in the reference's `f32` order: squares summed by eight
/// interleaved accumulators (ndarray's `sum` over a row, which Burn's `mean_dim` uses), divided
/// by the width, `ε` added, square root, reciprocal. Same bits as the reference, so BitNet's
/// activation rounding sees the same inputs.
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let mut p = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            p[i] += c[i] * c[i];
        }
    }
    let mut acc = 0f32;
    for i in 0..4 {
        acc += p[i] + p[i + 4];
    }
    for &v in tail {
        acc += v * v;
    }
    1.0 / ((acc / row.len() as f32) + eps).sqrt()
}

/// `out[j] = x[j] / sqrt(mean(x[j]²) + ε) ⊙ w` per row of width `w.len()`.
fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>) {
    sized(out, x.len());
    let h = w.len().max(1);
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let inv = inv_rms(row, eps);
        for ((o, &v), &wi) in o.iter_mut().zip(row).zip(w) {
            *o = v * inv * wi;
        }
    }
}

/// [`rmsnorm`] in place.
fn rmsnorm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let h = w.len().max(1);
    for row in x.chunks_exact_mut(h) {
        let inv = inv_rms(row, eps);
        for (v, &wi) in row.iter_mut().zip(w) {
            *v = *v * inv * wi;
        }
    }
}

/// The worker program for one job; returns the parity of the last phase's buffers.
fn run_job(sh: &Shared, t: usize, job: &Job, lo: &mut Local) -> usize {
    let m = &sh.model;
    let c = &m.config;
    let (h, f, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let (nh, nkv) = (c.num_heads, c.num_kv_heads);
    let group = nh / nkv;
    let n = job.tokens.len();
    let p0 = job.start;
    let mut phase = 0usize;
    let end_phase = |phase: &mut usize| {
        sh.barrier.wait();
        *phase += 1;
    };
    // Embedding rows.
    lo.x.clear();
    for &tok in &job.tokens {
        m.embed.push_row(tok as usize, h, &mut lo.x);
    }
    for (l, layer) in m.layers.iter().enumerate() {
        // ---- A: x += down; n1; q|k|v; RoPE; k, v → cache.
        if l > 0 {
            gather(sh, phase, n, h, |u| sh.rows_h(u), &mut lo.x, true);
        }
        rmsnorm(&lo.x, &layer.attn_norm, m.eps, &mut lo.xn);
        {
            let units = sh.qkv_units(t);
            let mut part = write(&sh.parts[phase % 2][t]);
            sized(&mut part, units.len() * d * n);
            let segs = [(0, nh), (nh, nh + nkv), (nh + nkv, nh + 2 * nkv)];
            let mut ready = [false; 3];
            for (s, &(s0, s1)) in segs.iter().enumerate() {
                let (u0, u1) = (units.start.max(s0), units.end.min(s1));
                if u0 >= u1 {
                    continue;
                }
                let idx = (0..=s)
                    .find(|&i| layer.qkv[i].shares_input_with(&layer.qkv[s]))
                    .unwrap_or(s);
                if !ready[idx] {
                    if let Err(e) = lo.prep[idx].prepare(sh.k.i8, &layer.qkv[idx], &lo.xn, n) {
                        sh.record(e);
                    }
                    ready[idx] = true;
                }
                let out = &mut part[(u0 - units.start) * d * n..(u1 - units.start) * d * n];
                let rows = (u0 - s0) * d..(u1 - s0) * d;
                let r = product_rows(
                    &sh.k,
                    &layer.qkv[s],
                    &lo.prep[idx],
                    &lo.xn,
                    n,
                    rows,
                    out,
                    &mut lo.scratch,
                );
                if let Err(e) = r {
                    sh.record(e);
                }
            }
            for u in units.clone() {
                let base = (u - units.start) * d * n;
                let unit = &mut part[base..base + d * n];
                if u < nh + nkv {
                    rope(unit, n, d, &job.cos, &job.sin);
                }
                if u >= nh {
                    let (value, head) = if u < nh + nkv {
                        (false, u - nh)
                    } else {
                        (true, u - nh - nkv)
                    };
                    let mut cache = write(&sh.kv[l * nkv + head]);
                    for j in 0..n {
                        cache.store(value, p0 + j, d, |i| unit[i * n + j]);
                    }
                }
            }
        }
        end_phase(&mut phase);
        // ---- B: attention over (query head, token block) items: with few kv heads (3 in
        // SmolLM2) whole kv heads would split unevenly over the threads.
        {
            let nb = sh.blocks(n);
            let items = split(nh * nb, t, sh.threads, 1);
            let mut part = write(&sh.parts[phase % 2][t]);
            part.clear();
            let qset = (phase + 1) % 2;
            let scale = (1.0 / (d as f64).sqrt()) as f32;
            for it in items {
                let (head, b) = (it / nb, it % nb);
                let toks = split(n, b, nb, 1);
                let cache = read(&sh.kv[l * nkv + head / group]);
                let (ow, off) = sh.unit_owner(head);
                let src = read(&sh.parts[qset][ow]);
                let base = off * d * n;
                // The block's queries `[d, nt]`, then their outputs, also `[d, nt]`.
                lo.q.clear();
                for i in 0..d {
                    lo.q.extend_from_slice(
                        &src[base + i * n + toks.start..base + i * n + toks.end],
                    );
                }
                if let Err(e) = attend(sh, &cache, p0 + toks.start, toks.len(), d, scale, lo) {
                    sh.record(e);
                }
                part.extend_from_slice(&lo.out);
            }
        }
        end_phase(&mut phase);
        // ---- C: gather heads; o_proj.
        {
            let width = nh * d;
            sized(&mut lo.act, n * width);
            let nb = sh.blocks(n);
            for u in 0..sh.threads {
                let src = read(&sh.parts[(phase + 1) % 2][u]);
                let mut at = 0;
                for it in split(nh * nb, u, sh.threads, 1) {
                    let (head, b) = (it / nb, it % nb);
                    let toks = split(n, b, nb, 1);
                    let bt = toks.len();
                    // The item's outputs `[d, bt]` into columns head·d.. of its tokens' rows.
                    let out = &mut lo.act[toks.start * width + head * d..];
                    let r = kernels::transpose_into_with(
                        sh.k.level,
                        &src[at..],
                        d,
                        bt,
                        out,
                        width,
                        false,
                    );
                    if let Err(e) = r {
                        sh.record(e.into());
                    }
                    at += d * bt;
                }
            }
            if let Some(w) = &layer.attn_sub_norm {
                rmsnorm_in_place(&mut lo.act, w, m.eps);
            }
            project(
                sh,
                t,
                phase,
                &layer.o,
                &lo.act,
                n,
                sh.rows_h(t),
                &mut lo.prep[0],
                &mut lo.scratch,
            );
        }
        end_phase(&mut phase);
        // ---- D: x += o; n2; act(gate)·up.
        gather(sh, phase, n, h, |u| sh.rows_h(u), &mut lo.x, true);
        rmsnorm(&lo.x, &layer.mlp_norm, m.eps, &mut lo.xn);
        {
            let rows = sh.rows_f(t);
            let shares = layer.up.shares_input_with(&layer.gate);
            let r = lo.prep[0]
                .prepare(sh.k.i8, &layer.gate, &lo.xn, n)
                .and_then(|()| {
                    if shares {
                        Ok(())
                    } else {
                        lo.prep[1].prepare(sh.k.i8, &layer.up, &lo.xn, n)
                    }
                });
            if let Err(e) = r {
                sh.record(e);
            }
            sized(&mut lo.gate, rows.len() * n);
            let mut part = write(&sh.parts[phase % 2][t]);
            sized(&mut part, rows.len() * n);
            let up_prep = if shares { 0 } else { 1 };
            let (g, u) = (
                product_rows(
                    &sh.k,
                    &layer.gate,
                    &lo.prep[0],
                    &lo.xn,
                    n,
                    rows.clone(),
                    &mut lo.gate,
                    &mut lo.scratch,
                ),
                product_rows(
                    &sh.k,
                    &layer.up,
                    &lo.prep[up_prep],
                    &lo.xn,
                    n,
                    rows,
                    &mut part,
                    &mut lo.scratch,
                ),
            );
            for e in [g, u].into_iter().filter_map(|r| r.err()) {
                sh.record(e);
            }
            if m.relu2 {
                for (u, &g) in part.iter_mut().zip(&lo.gate) {
                    let r = g.max(0.0);
                    *u *= r * r;
                }
            } else {
                if let Err(e) = kernels::silu_mul_with(sh.k.level, &lo.gate, &mut part) {
                    sh.record(e.into());
                }
            }
        }
        end_phase(&mut phase);
        // ---- E: gather activations (BitNet: ffn_sub_norm); down_proj.
        {
            sized(&mut lo.act, n * f);
            gather(sh, phase, n, f, |u| sh.rows_f(u), &mut lo.act, false);
            if let Some(w) = &layer.ffn_sub_norm {
                rmsnorm_in_place(&mut lo.act, w, m.eps);
            }
            if let Some(r) = &layer.ffn_rotation
                && let Err(e) = r.apply(&mut lo.act)
            {
                sh.record(e.into());
            }
            project(
                sh,
                t,
                phase,
                &layer.down,
                &lo.act,
                n,
                sh.rows_h(t),
                &mut lo.prep[0],
                &mut lo.scratch,
            );
        }
        end_phase(&mut phase);
    }
    // ---- Logits.
    let want = job.want.unwrap_or(Want::None);
    if want == Want::None || n == 0 {
        return (phase + 1) % 2;
    }
    gather(sh, phase, n, h, |u| sh.rows_h(u), &mut lo.x, true);
    let sel = if want == Want::All { 0..n } else { n - 1..n };
    let np = sel.len();
    rmsnorm(
        &lo.x[sel.start * h..sel.end * h],
        &m.norm,
        m.eps,
        &mut lo.xn,
    );
    project(
        sh,
        t,
        phase,
        &m.lm_head,
        &lo.xn,
        np,
        sh.rows_v(t),
        &mut lo.prep[0],
        &mut lo.scratch,
    );
    sh.barrier.wait();
    phase % 2
}

/// `proj` over worker `t`'s `rows` of input `x: [n, cols]`, into its buffer of this phase.
#[allow(clippy::too_many_arguments)]
fn project(
    sh: &Shared,
    t: usize,
    phase: usize,
    proj: &Proj,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    prep: &mut Prepared,
    scratch: &mut Scratch,
) {
    if let Err(e) = prep.prepare(sh.k.i8, proj, x, n) {
        sh.record(e);
    }
    let mut part = write(&sh.parts[phase % 2][t]);
    sized(&mut part, rows.len() * n);
    let r = product_rows(&sh.k, proj, prep, x, n, rows, &mut part, scratch);
    if let Err(e) = r {
        sh.record(e);
    }
}

/// `dst[j, r] = part_u[(r − r0)·n + j]` (`+=` when `add`: the residual stream; set for the MLP
/// activations) over every worker's rows `r0..` (the previous phase's buffers), transposed by
/// [`kernels::transpose_into_with`] (8 × 8 register blocks at AVX2 and AVX-512).
fn gather(
    sh: &Shared,
    phase: usize,
    n: usize,
    width: usize,
    rows: impl Fn(usize) -> Range<usize>,
    dst: &mut [f32],
    add: bool,
) {
    if n == 0 {
        return;
    }
    for u in 0..sh.threads {
        let src = read(&sh.parts[(phase + 1) % 2][u]);
        let r = rows(u);
        let len = r.len().min(src.len() / n);
        let out = &mut dst[r.start..];
        if let Err(e) = kernels::transpose_into_with(sh.k.level, &src, len, n, out, width, add) {
            sh.record(e.into());
        }
    }
}

/// RoPE on one head unit laid out row-major by row (`unit[i·n + j]`, `i < d`, token `j`):
/// `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
fn rope(unit: &mut [f32], n: usize, d: usize, cos: &[f32], sin: &[f32]) {
    let half = d / 2;
    for i in 0..half {
        for j in 0..n {
            let (c, s) = (cos[j * half + i], sin[j * half + i]);
            let (a, b) = (unit[i * n + j], unit[(i + half) * n + j]);
            unit[i * n + j] = a * c + (-b) * s;
            unit[(i + half) * n + j] = b * c + a * s;
        }
    }
}

/// Causal attention of `nt` consecutive tokens of one query head, the first at position
/// `pos0`, queries in `lo.q` (`[d, nt]`), over the cached positions `0..=pos0 + t` for token
/// `t` ([`kernels::causal_attention_with`]); the results `[d, nt]` in `lo.out`.
fn attend(
    sh: &Shared,
    cache: &HeadCache,
    pos0: usize,
    nt: usize,
    d: usize,
    scale: f32,
    lo: &mut Local,
) -> Result<()> {
    let len = pos0 + nt;
    sized(&mut lo.out, nt * d);
    let keys = cache.rows(false, len, d, &mut lo.kbuf);
    let values = cache.rows(true, len, d, &mut lo.vbuf);
    kernels::causal_attention_with(
        sh.k.level,
        &lo.q,
        nt,
        keys,
        values,
        d,
        pos0,
        scale,
        &mut lo.out,
        &mut lo.attn,
    )?;
    Ok(())
}

/// Runs [`run_job`] catching a panic: the barrier is poisoned (so nobody waits forever) and
/// the error recorded.
fn run_guarded(sh: &Shared, t: usize, lo: &mut Local) -> usize {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let job = read(&sh.job);
        run_job(sh, t, &job, lo)
    }));
    match r {
        Ok(set) => set,
        Err(_) => {
            sh.barrier
                .poisoned
                .store(true, std::sync::atomic::Ordering::Relaxed);
            sh.record(RuntimeError::Worker(format!("worker {t} panicked")));
            0
        }
    }
}

fn worker_main(sh: Arc<Shared>, t: usize) {
    let mut lo = Local::new();
    let mut seen = 0;
    loop {
        let g = sh.signal.wait_for_change(seen);
        if g == u64::MAX {
            return;
        }
        seen = g;
        run_guarded(&sh, t, &mut lo);
    }
}

/// The CPU inference runtime of a Llama-family (or BitNet) model; see the
/// [crate docs](crate).
#[derive(Debug)]
pub struct Runtime {
    sh: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    lo: Local,
    pos: usize,
    chunk: usize,
    logits: Vec<f32>,
    generation: u64,
    inv_freq: Vec<f64>,
    broken: bool,
    repacked: usize,
    huge_page_bytes: usize,
}

impl Runtime {
    /// Builds the runtime from a loaded model (sharing its weights) and starts
    /// `opts.threads − 1` workers. [`Runtime::from_owned_model`] is faster where the model is
    /// not needed afterwards.
    pub fn from_model<B: TernaryBackend + 'static>(
        model: &Llama<B>,
        opts: RuntimeOptions,
    ) -> Result<Self> {
        opts.validate()?;
        let m = build(model, &opts)?;
        Self::start(m, opts, 0)
    }

    /// [`Runtime::from_model`] taking the model: it is dropped once the runtime holds what it
    /// needs, and the ternary matrices it no longer shares are repacked for the kernels' SIMD
    /// level (at AVX2, 2-bit fields: `PackedTernary`), with no second copy of any of them.
    pub fn from_owned_model<B: TernaryBackend + 'static>(
        model: Llama<B>,
        opts: RuntimeOptions,
    ) -> Result<Self> {
        opts.validate()?;
        let mut m = build(&model, &opts)?;
        drop(model);
        let repacked = m.repack(opts.level.unwrap_or_else(Level::detect));
        Self::start(m, opts, repacked)
    }

    /// Starts the workers on a built model (`repacked` of whose projections were repacked).
    fn start(m: Model, opts: RuntimeOptions, repacked: usize) -> Result<Self> {
        // Huge pages for the streamed weights, unless turned off (`TERNARY_HUGE_PAGES=0`: for
        // comparisons).
        let off = std::env::var("TERNARY_HUGE_PAGES").as_deref() == Ok("0");
        let huge_page_bytes = if opts.huge_pages && !off {
            m.advise_huge_pages()
        } else {
            0
        };
        let c = &m.config;
        let max_ctx = opts.max_context.unwrap_or(c.max_position_embeddings).max(1);
        let d = c.head_dim;
        let inv_freq = (0..d / 2)
            .map(|i| c.rope_theta.powf(-((2 * i) as f64) / d as f64))
            .collect();
        let threads = opts.threads;
        let level = opts.level.unwrap_or_else(Level::detect);
        let kv = (0..c.num_layers * c.num_kv_heads)
            .map(|_| RwLock::new(HeadCache::new(opts.kv)))
            .collect();
        let parts = |_| (0..threads).map(|_| RwLock::new(Vec::new())).collect();
        let sh = Arc::new(Shared {
            model: m,
            threads,
            k: Kernels::new(level)?,
            max_ctx,
            signal: Signal::new(),
            barrier: SpinBarrier::new(threads),
            job: RwLock::new(Job::default()),
            parts: [parts(0), parts(1)],
            kv,
            error: Mutex::new(None),
        });
        let mut rt = Self {
            sh: Arc::clone(&sh),
            workers: Vec::with_capacity(threads - 1),
            lo: Local::new(),
            pos: 0,
            chunk: opts.chunk,
            logits: Vec::new(),
            generation: 0,
            inv_freq,
            broken: false,
            repacked,
            huge_page_bytes,
        };
        for t in 1..threads {
            let s = Arc::clone(&sh);
            let h = std::thread::Builder::new()
                .name(format!("ternary-rt-{t}"))
                .spawn(move || worker_main(s, t))
                .map_err(|e| RuntimeError::Worker(format!("cannot start a worker: {e}")))?;
            rt.workers.push(h);
        }
        Ok(rt)
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        self.sh.config()
    }

    /// Threads per product (the caller's included).
    pub fn threads(&self) -> usize {
        self.sh.threads
    }

    /// Projections whose ternary matrices were repacked for the kernels' level
    /// ([`Runtime::from_owned_model`]; 0 when the weights are shared with a model).
    pub fn repacked_layers(&self) -> usize {
        self.repacked
    }

    /// Bytes of the projections' weights the OS put on huge pages at start (0 off Linux, where
    /// it declined, or with `TERNARY_HUGE_PAGES=0`).
    pub fn huge_page_bytes(&self) -> usize {
        self.huge_page_bytes
    }

    /// How the ternary layers take their activations here: `"f32"`, `"int8"`, `"int8x2"` (two
    /// int8 codes per token), `"bitnet"`, `"mixed"` or `"none"` (see
    /// [`TernaryActivations`](crate::TernaryActivations)).
    pub fn ternary_activations(&self) -> &'static str {
        self.sh.model.ternary_activations()
    }

    /// The SIMD level of the kernels.
    pub fn level(&self) -> Level {
        self.sh.k.level
    }

    /// Positions cached.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Most positions the cache holds.
    pub fn max_context(&self) -> usize {
        self.sh.max_ctx
    }

    /// Forgets every cached position (the cache's memory is kept for reuse).
    pub fn clear(&mut self) {
        self.pos = 0;
    }

    /// Weight bytes one decode step reads (every projection, the norms, one embedding row).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.sh.model.bytes_per_token()
    }

    /// Bytes of weights the runtime holds (shared with the model it came from).
    pub fn weight_bytes(&self) -> u64 {
        self.sh.model.weight_bytes()
    }

    /// Bytes the KV cache holds now.
    pub fn kv_bytes(&self) -> usize {
        self.sh.kv.iter().map(|k| read(k).bytes()).sum()
    }

    /// Runs `tokens` after the cached positions, appends them to the cache, and returns the
    /// logits `[tokens, V]` ([`Logits::All`]) or `[1, V]` ([`Logits::Last`]), row-major.
    /// Long inputs run in chunks of [`RuntimeOptions::chunk`] tokens; with
    /// [`Logits::Last`] only the last chunk computes logits, and only for its last position.
    ///
    /// Errors (nothing is cached then): no tokens, a token id outside the vocabulary, more
    /// positions than [`max_context`](Self::max_context).
    pub fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<&[f32]> {
        if self.broken {
            return Err(RuntimeError::Worker(
                "an earlier step failed; build a new runtime".into(),
            ));
        }
        let c = self.sh.config();
        if tokens.is_empty() {
            return Err(RuntimeError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(RuntimeError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        if self.pos + tokens.len() > self.sh.max_ctx {
            return Err(RuntimeError::Input(format!(
                "{} cached positions plus {} tokens exceed the context of {}",
                self.pos,
                tokens.len(),
                self.sh.max_ctx
            )));
        }
        let (d, v) = (c.head_dim, c.vocab_size);
        self.logits.clear();
        let end = self.pos + tokens.len();
        for k in &self.sh.kv {
            write(k).reserve(end, d, self.sh.max_ctx);
        }
        let chunks = tokens.len().div_ceil(self.chunk);
        for (ci, chunk) in tokens.chunks(self.chunk).enumerate() {
            let want = match which {
                Logits::All => Want::All,
                Logits::Last if ci + 1 == chunks => Want::Last,
                Logits::Last => Want::None,
            };
            {
                let mut job = write(&self.sh.job);
                job.tokens.clear();
                job.tokens.extend_from_slice(chunk);
                job.start = self.pos;
                job.want = Some(want);
                job.cos.clear();
                job.sin.clear();
                for p in self.pos..self.pos + chunk.len() {
                    for &fr in &self.inv_freq {
                        let a = p as f64 * fr;
                        job.cos.push(a.cos() as f32);
                        job.sin.push(a.sin() as f32);
                    }
                }
            }
            self.generation += 1;
            self.sh.signal.publish(self.generation);
            let set = run_guarded(&self.sh, 0, &mut self.lo);
            let failed = self
                .sh
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(e) = failed {
                self.broken = true;
                return Err(e);
            }
            if want != Want::None {
                let np = if want == Want::All { chunk.len() } else { 1 };
                let base = self.logits.len();
                self.logits.resize(base + np * v, 0.0);
                let out = &mut self.logits[base..];
                for u in 0..self.sh.threads {
                    let src = read(&self.sh.parts[set][u]);
                    let r = self.sh.rows_v(u);
                    for (i, col) in src.chunks_exact(np).take(r.len()).enumerate() {
                        for (j, &x) in col.iter().enumerate() {
                            out[j * v + r.start + i] = x;
                        }
                    }
                }
            }
            self.pos += chunk.len();
        }
        Ok(&self.logits)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.sh.signal.publish(u64::MAX);
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Decoder for Runtime {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn clear(&mut self) {
        Runtime::clear(self);
    }

    fn forward(&mut self, tokens: &[u32], which: Logits) -> ternary_models::Result<&[f32]> {
        Runtime::forward(self, tokens, which).map_err(|e| match e {
            RuntimeError::Input(s) => ModelError::Input(s),
            other => ModelError::Engine(other.to_string()),
        })
    }
}
