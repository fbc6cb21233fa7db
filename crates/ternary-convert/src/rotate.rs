//! Rotating a float Llama's residual stream before conversion ("incoherence processing").
//!
//! For an orthogonal `Q` (`QᵀQ = I`, `H × H`) the model whose residual stream is `h' = h·Q` (row
//! vectors) computes the same function, because RMSNorm commutes with `Q`:
//! `n(h') = h'/rms(h') = n(h)·Q`. With each RMSNorm weight `g` folded into the layers that read
//! the stream, up to its level `c = rms(g)` ([`norm_level`]), which the norm keeps as `c·1` (a
//! multiple of the identity commutes with `Q` too, and the folded weights keep their size, so
//! training rates mean the same as for the original model):
//!
//! - embedding `E' = E·Q`;
//! - readers (`q/k/v_proj`, `gate/up_proj`): `W' = W·diag(g/c)·Q`, so
//!   `W'·(c·n(h'))ᵀ = W·(g ⊙ n(h))ᵀ`;
//! - writers (`o_proj`, `down_proj`, adding to the stream): `W' = Qᵀ·W`;
//! - output head `L' = L·diag(g_final/c_final)·Q` (no longer the embedding: the rotated model is
//!   untied).
//!
//! The function is unchanged, but every weight row read from the stream is now mixed over all
//! `H` inputs: outlier columns (the few residual dimensions that carry large activations) are
//! spread out, so a grid with one scale per group fits the weights better. This is the residual
//! rotation `R1` of QuaRot (arXiv 2404.00456) and SpinQuant (arXiv 2405.16406), the incoherence
//! processing of QuIP (arXiv 2307.13304), here with a Haar-random `Q`.
//!
//! Cost: the untied head is one more `V × H` float matrix (SmolLM2-135M: 28.3 M values).
//!
//! [`rotate_heads`] adds QuaRot's per-head value rotation (`R2`): key/value head `k`'s value
//! space is rotated by its own orthogonal `Q_k` (`d_h × d_h`). Attention mixes value vectors
//! only across positions, so every query head `h` reading head `k` outputs `o_h·Q_k`, which
//! `o_proj` undoes: `v_proj` rows of head `k` become `Q_kᵀ·W_v[k]`, `o_proj` columns of head
//! `h` become `W_o[:, h]·Q_k`. Block outputs are unchanged (no config records it, and a float
//! teacher needs no matching rotation); `o_proj`'s input columns are mixed within each head.
//!
//! [`rotate_ffn`] adds QuaRot's online Hadamard before `down_proj` (`R4`): `act(gate) ⊙ up`
//! is not a linear function of the stream, so its rotation `T` runs in the forward pass
//! ([`ternary_core::rotation`]), recorded in the config, and `down_proj` reads `T(a)` with its
//! rows rotated by `T`.

use std::collections::HashMap;

use ndarray::{Array2, ArrayView2};
use ternary_core::rng::{Rng, derive_seed};
use ternary_core::rotation::SignedHadamard;
use ternary_layers::{TernaryBackend, to_rows};
use ternary_models::weights::{HostTensor, MapWeights};
use ternary_models::{Architecture, Llama};

use crate::error::{ConvertError, Result};

/// A Haar-random orthogonal `d × d` matrix, row-major, from `seed`: Gaussian entries
/// orthonormalized row by row (modified Gram–Schmidt, two passes, in f64).
#[must_use]
pub fn random_orthogonal(d: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    let mut q: Vec<f64> = (0..d * d).map(|_| rng.normal()).collect();
    for i in 0..d {
        for _pass in 0..2 {
            for j in 0..i {
                let (done, rest) = q.split_at_mut(i * d);
                let (qj, qi) = (&done[j * d..(j + 1) * d], &mut rest[..d]);
                let dot: f64 = qj.iter().zip(qi.iter()).map(|(a, b)| a * b).sum();
                qi.iter_mut().zip(qj).for_each(|(b, a)| *b -= dot * a);
            }
        }
        let row = &mut q[i * d..(i + 1) * d];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    q
}

/// The level `c = sqrt(mean g²)` a folded RMSNorm weight `g` keeps (1 for an all-zero `g`).
#[must_use]
pub fn norm_level(g: &[f32]) -> f32 {
    let ms = g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / g.len().max(1) as f64;
    if ms > 0.0 && ms.is_finite() {
        ms.sqrt() as f32
    } else {
        1.0
    }
}

/// Rows per f64 product in [`read_side`]: bounds its temporary copy (the embedding has 49,152
/// rows) to 4096·d values.
const READ_ROWS: usize = 4096;

/// `W·diag(g)·Q` for `W: [rows, d]` (row-major), as f64 products (matrixmultiply's GEMM).
fn read_side(w: &[f32], d: usize, g: &[f32], q: &[f64]) -> Vec<f32> {
    if d == 0 {
        return Vec::new();
    }
    let q = ArrayView2::from_shape((d, d), q).expect("Q is d × d");
    let mut out = Vec::with_capacity(w.len());
    for chunk in w.chunks(READ_ROWS * d) {
        let a = Array2::from_shape_fn((chunk.len() / d, d), |(r, i)| {
            f64::from(chunk[r * d + i]) * f64::from(g[i])
        });
        out.extend(a.dot(&q).iter().map(|&v| v as f32));
    }
    out
}

/// `Qᵀ·W` for `W: [d, cols]` (row-major), as an f64 product.
fn write_side(w: &[f32], d: usize, cols: usize, q: &[f64]) -> Vec<f32> {
    let q = ArrayView2::from_shape((d, d), q).expect("Q is d × d");
    let w = Array2::from_shape_fn((d, cols), |(k, c)| f64::from(w[k * cols + c]));
    q.t().dot(&w).iter().map(|&v| v as f32).collect()
}

/// The float-Llama checks shared by the rotations: no BitNet model, no ternary layer.
fn check_float_llama<B: TernaryBackend>(model: &Llama<B>, what: &str) -> Result<()> {
    let config = model.config();
    if config.architecture != Architecture::Llama || config.bitnet.is_some() {
        return Err(ConvertError::Invalid(format!(
            "{what} needs a float Llama model (BitNet models are trained ternary)"
        )));
    }
    if let Some((name, l)) = model
        .linears()
        .iter()
        .find(|(_, l)| l.kind().starts_with("ternary") || l.kind().starts_with("bitnet"))
    {
        return Err(ConvertError::Invalid(format!(
            "{what} needs float layers, but {name} is {}",
            l.kind()
        )));
    }
    Ok(())
}

/// The seed of key/value head `head`'s rotation in block `layer` under [`rotate_heads`]`(seed)`.
#[must_use]
pub fn head_seed(seed: u64, layer: usize, head: usize) -> u64 {
    derive_seed(derive_seed(seed, layer as u64), head as u64)
}

/// Replaces the float Llama `model` by the same function with each key/value head's value
/// space rotated by [`random_orthogonal`]`(d_h, `[`head_seed`]`(seed, layer, head))` (module
/// docs): `v_proj` rows of head `k` become `Q_kᵀ·W_v[k]`, the `o_proj` columns of every query
/// head reading `k` become `W_o[:, h]·Q_k`. Every other tensor is kept as it is; block outputs
/// are unchanged. Composes with [`rotate_residual`] in either order.
///
/// # Errors
/// A BitNet model or a layer that is already ternary; head counts that do not divide.
pub fn rotate_heads<B: TernaryBackend>(model: &mut Llama<B>, seed: u64) -> Result<()> {
    check_float_llama(model, "head rotation")?;
    let config = model.config().clone();
    let (heads, kv, d) = (config.num_heads, config.num_kv_heads, config.head_dim);
    if kv == 0 || heads % kv != 0 || d == 0 {
        return Err(ConvertError::Shape(format!(
            "head rotation needs query heads in whole groups per key/value head, not {heads} \
             over {kv} (head size {d})"
        )));
    }
    rebuild(model, config, |name, rows, cols, w| {
        let block = name
            .strip_prefix("model.layers.")
            .and_then(|s| s.split_once('.'))
            .and_then(|(b, rest)| Some((b.parse::<usize>().ok()?, rest)));
        match block {
            Some((b, "self_attn.v_proj")) => {
                if rows != kv * d {
                    return Err(ConvertError::Shape(format!(
                        "{name} has {rows} rows, not {kv} heads of {d}"
                    )));
                }
                for (k, head) in w.chunks_mut(d * cols).enumerate() {
                    let q = random_orthogonal(d, head_seed(seed, b, k));
                    let r = write_side(head, d, cols, &q);
                    head.copy_from_slice(&r);
                }
            }
            Some((b, "self_attn.o_proj")) => {
                if cols != heads * d {
                    return Err(ConvertError::Shape(format!(
                        "{name} has {cols} columns, not {heads} heads of {d}"
                    )));
                }
                let qs: Vec<Vec<f64>> = (0..kv)
                    .map(|k| random_orthogonal(d, head_seed(seed, b, k)))
                    .collect();
                for h in 0..heads {
                    let q = &qs[h / (heads / kv)];
                    let part: Vec<f32> = w
                        .chunks(cols)
                        .flat_map(|row| row[h * d..(h + 1) * d].iter().copied())
                        .collect();
                    let r = read_side(&part, d, &vec![1.0; d], q);
                    for (row, new) in w.chunks_mut(cols).zip(r.chunks(d)) {
                        row[h * d..(h + 1) * d].copy_from_slice(new);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })
}

/// Replaces the float Llama `model` by the same function with `act(gate) ⊙ up` rotated before
/// `down_proj` by [`SignedHadamard::for_layer`]`(F, seed, layer)` (`T`, in every forward pass:
/// the config records `seed`, [`LlamaConfig::ffn_rotation`](ternary_models::LlamaConfig::ffn_rotation))
/// and each row of `down_proj` rotated by the same `T`, so `W'·T(a) = W·Tᵀ·T(a) = W·a`. Block
/// outputs are unchanged (a float teacher needs no matching rotation); `down_proj`'s inputs
/// are mixed within Hadamard blocks (512 of SmolLM2's 1,536 channels). Composes with the other
/// rotations in any order.
///
/// # Errors
/// A model whose FFN is already rotated, a BitNet model or a layer that is already ternary;
/// an intermediate size without a power-of-two divisor of at least 16.
pub fn rotate_ffn<B: TernaryBackend>(model: &mut Llama<B>, seed: u64) -> Result<()> {
    check_float_llama(model, "FFN rotation")?;
    let mut config = model.config().clone();
    if let Some(seed) = config.ffn_rotation {
        return Err(ConvertError::Invalid(format!(
            "the model's FFN is already rotated (seed {seed})"
        )));
    }
    let f = config.intermediate_size;
    let rots = (0..config.num_layers)
        .map(|l| SignedHadamard::for_layer(f, seed, l))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ConvertError::Invalid(format!("FFN rotation: {e}")))?;
    config.ffn_rotation = Some(seed);
    rebuild(model, config, |name, _, cols, w| {
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|s| s.strip_suffix(".mlp.down_proj"))
            .and_then(|b| b.parse::<usize>().ok());
        if let Some(l) = layer {
            let t = rots
                .get(l)
                .filter(|t| t.width() == cols)
                .ok_or_else(|| ConvertError::Shape(format!("{name} does not read {f} values")))?;
            t.apply(w)
                .map_err(|e| ConvertError::Shape(format!("{name}: {e}")))?;
        }
        Ok(())
    })
}

/// Rebuilds `model` under `config` from its own tensors, each linear layer's weight first
/// passed to `edit(name, rows, cols, weight)` (row-major, changed in place); a tied head is
/// left to the embedding.
fn rebuild<B: TernaryBackend>(
    model: &mut Llama<B>,
    config: ternary_models::LlamaConfig,
    mut edit: impl FnMut(&str, usize, usize, &mut [f32]) -> Result<()>,
) -> Result<()> {
    let mut out: HashMap<String, HostTensor> = model.float_tensors()?.into_iter().collect();
    for (name, l) in &model.linears() {
        if name == "lm_head" && config.tie_word_embeddings {
            continue;
        }
        let mut w = to_rows(l.weight())
            .map_err(|e| ConvertError::Shape(format!("cannot read {name}: {e}")))?;
        let (rows, cols) = (l.out_features(), l.in_features());
        edit(name, rows, cols, &mut w)?;
        out.insert(
            format!("{name}.weight"),
            HostTensor {
                shape: vec![rows, cols],
                data: w,
            },
        );
    }
    let device = model.device().clone();
    *model = Llama::from_weights(config, &MapWeights(out), &device)?;
    Ok(())
}

/// Replaces the float Llama `model` by the same function with its residual stream rotated by
/// [`random_orthogonal`]`(H, seed)` (module docs): RMSNorm weights folded into the layers
/// that read the stream up to their level (`c·1` stays), the output head untied. Layers are rebuilt as the
/// backend's default float layers.
///
/// The model's config records `seed` ([`LlamaConfig::residual_rotation`](ternary_models::LlamaConfig::residual_rotation)), so that a file
/// saved from it says so and [`rotate_residual`] refuses to rotate it twice.
///
/// # Errors
/// A model already rotated, a BitNet model (its sub-norms and W1.58A8 layers are not float readers of the stream) or a
/// layer that is already ternary; a shape the model does not have.
pub fn rotate_residual<B: TernaryBackend>(model: &mut Llama<B>, seed: u64) -> Result<()> {
    check_float_llama(model, "residual rotation")?;
    let mut config = model.config().clone();
    if let Some(seed) = config.residual_rotation {
        return Err(ConvertError::Invalid(format!(
            "the model's residual stream is already rotated (seed {seed})"
        )));
    }
    let h = config.hidden_size;
    let linears = model.linears();
    let q = random_orthogonal(h, seed);
    let mut norms: HashMap<String, Vec<f32>> = HashMap::new();
    let mut out = HashMap::new();
    for (name, t) in model.float_tensors()? {
        if name == "model.embed_tokens.weight" {
            let data = read_side(&t.data, h, &vec![1.0; h], &q);
            out.insert(name, HostTensor { data, ..t });
        } else {
            // The norm keeps `c = rms(g)` (a multiple of the identity commutes with `Q`); the
            // layers get `g / c`, so their weights keep their size (and training its rates).
            let c = norm_level(&t.data);
            out.insert(
                name.clone(),
                HostTensor {
                    shape: t.shape.clone(),
                    data: vec![c; t.data.len()],
                },
            );
            norms.insert(name, t.data.iter().map(|&g| g / c).collect());
        }
    }
    let norm = |name: &str| -> Result<&Vec<f32>> {
        norms
            .get(name)
            .ok_or_else(|| ConvertError::Shape(format!("model has no norm {name}")))
    };
    for (name, l) in &linears {
        let w = to_rows(l.weight())
            .map_err(|e| ConvertError::Shape(format!("cannot read {name}: {e}")))?;
        let (rows, cols) = (l.out_features(), l.in_features());
        let block = name
            .strip_prefix("model.layers.")
            .and_then(|s| s.split_once('.'));
        let data = match block {
            Some((b, "self_attn.q_proj" | "self_attn.k_proj" | "self_attn.v_proj")) => {
                let g = norm(&format!("model.layers.{b}.input_layernorm.weight"))?;
                read_side(&w, h, g, &q)
            }
            Some((b, "mlp.gate_proj" | "mlp.up_proj")) => {
                let g = norm(&format!("model.layers.{b}.post_attention_layernorm.weight"))?;
                read_side(&w, h, g, &q)
            }
            Some((_, "self_attn.o_proj" | "mlp.down_proj")) => write_side(&w, h, cols, &q),
            None if name == "lm_head" => read_side(&w, h, norm("model.norm.weight")?, &q),
            _ => {
                return Err(ConvertError::Invalid(format!(
                    "residual rotation does not know the layer {name}"
                )));
            }
        };
        out.insert(
            format!("{name}.weight"),
            HostTensor {
                shape: vec![rows, cols],
                data,
            },
        );
    }
    drop(linears);
    config.tie_word_embeddings = false;
    config.residual_rotation = Some(seed);
    let device = model.device().clone();
    *model = Llama::from_weights(config, &MapWeights(out), &device)?;
    Ok(())
}
