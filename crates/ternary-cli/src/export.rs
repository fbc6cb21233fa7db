//! `ternary export`: a ternary model → a GGUF file llama.cpp loads.
//!
//! `ternary export --model M --source SRC.gguf --format gguf-tq2_0 --out OUT.gguf`
//!
//! `M` is any model the CLI loads (told by content): a converted model (`ternary quantize`
//! output), a BitNet b1.58 or Llama-architecture ternary Hugging Face checkpoint, a GGUF.
//!
//! - **Weights.** A ternary layer `W = s·t` is written as `TQ2_0` / `TQ1_0` (one f16 scale per
//!   256 weights). A BitNet W1.58A8 layer (`y = Σq·t/(k·d)`) is the ternary weight `t/d`: its
//!   scales are divided by the per-tensor divisor `d` (llama.cpp's BitNet graph multiplies the
//!   TQ weights with its own int8 activations, so only the weights carry over exactly). Its scales are first rounded to f16 (relative change ≤ 2⁻¹¹, reported);
//!   from then on the file holds exactly those weights. Where the TQ types cannot hold the
//!   layer — a width that is not a multiple of 256 (SmolLM2's 576) or scale groups smaller
//!   than 256 that differ inside a 256-block — it falls back to `Q8_0` with `d = f16(s)` and
//!   `q = t` ([`encode_q8_0_exact`]): the same weights, 8.5 bits each. (llama.cpp's own
//!   quantizer falls back to a lossy Q4_0/Q8_0 there.) A layer with an input scale
//!   (`y = Q·(x ⊙ d)`) is not ternary in llama.cpp's terms: its effective weight
//!   `s·t·d[c]` is written as F16 when exact, else F32. Biases go out as F32 `*.bias`.
//! - **Float tensors** (embedding, norms, layers kept float): when the source GGUF holds the
//!   same tensor with bit-identical values (it was copied from there), its stored bytes and
//!   type are copied; otherwise F16 when every value is exactly an f16, else F32.
//! - **Row order.** llama.cpp stores a `llama` model's Q/K rows permuted for its RoPE
//!   ([`unpermute_qk`](ternary_models::weights::unpermute_qk)); they are permuted back here.
//!   `bitnet` keeps Hugging Face's order ([`qk_permuted`]).
//! - **Metadata and tokenizer** come from `--source`, the GGUF the model was converted from
//!   (the converted file does not record it): its `llama.*`, `general.*` and `tokenizer.*`
//!   keys are copied, `general.file_type` set to `MOSTLY_TQ2_0` (37) / `MOSTLY_TQ1_0` (36).
//!   The source must be a GGUF of the model's architecture (`llama`, or `bitnet` for BitNet
//!   b1.58) with the model's shape; for a Hugging Face checkpoint that is a GGUF llama.cpp's
//!   `convert_hf_to_gguf.py` made from it (the tokenizer is taken from there).
//!
//! The output is written atomically; neither input is modified (the output may not be one of
//! them).

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use ternary_convert::model_file::as_ternary;
use ternary_core::TernaryMatrix;
use ternary_layers::Cpu;
use ternary_models::gguf::{GgufFile, GgufTensorData, GgufValue, write_gguf};
use ternary_models::quant::{
    GgmlType, encode_float, encode_q8_0_exact, encode_ternary, is_f16_exact, select_rows,
    with_f16_scales,
};
use ternary_models::weights::{gguf_name, qk_permuted};
use ternary_models::{Architecture, BitLinear, Llama, LlamaConfig};

use crate::common::{CliError, Res, load_model};
use ternary_models::{Format, sniff};

/// Output formats of `ternary export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// GGUF with ternary layers as llama.cpp's TQ2_0 (2.06 bits/weight).
    #[value(name = "gguf-tq2_0")]
    GgufTq2_0,
    /// GGUF with ternary layers as llama.cpp's TQ1_0 (1.69 bits/weight).
    #[value(name = "gguf-tq1_0")]
    GgufTq1_0,
}

impl ExportFormat {
    fn kind(self) -> GgmlType {
        match self {
            Self::GgufTq2_0 => GgmlType::TQ2_0,
            Self::GgufTq1_0 => GgmlType::TQ1_0,
        }
    }

    /// llama.cpp's `llama_ftype` (`LLAMA_FTYPE_MOSTLY_TQ1_0 = 36`, `…TQ2_0 = 37`).
    fn file_type(self) -> u32 {
        match self {
            Self::GgufTq2_0 => 37,
            Self::GgufTq1_0 => 36,
        }
    }
}

/// Arguments of `ternary export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The ternary model: a `ternary quantize` output, a Hugging Face checkpoint or a GGUF.
    #[arg(long)]
    pub model: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// A GGUF of the same model (metadata and tokenizer are copied from it): the one it was
    /// converted from, or llama.cpp's conversion of the checkpoint.
    #[arg(long)]
    pub source: PathBuf,
    /// The GGUF file to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// How float tensors are written: `source` copies the source GGUF's bytes where they hold
    /// exactly the model's values (else F16 when exact, else F32); `f32` writes every float
    /// tensor as F32, so that llama.cpp multiplies them without quantizing its activations
    /// (for comparing the ternary layers alone).
    #[arg(long, value_enum, default_value_t = FloatOut::Source)]
    pub floats: FloatOut,
}

/// How `ternary export` writes float tensors (`--floats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FloatOut {
    /// The source's bytes when identical, else F16 when exact, else F32.
    #[default]
    Source,
    /// Every float tensor as F32.
    F32,
}

/// How each tensor was written, for the summary.
#[derive(Debug, Default)]
pub struct ExportReport {
    /// `(gguf name, type, why)` per tensor.
    pub tensors: Vec<(String, GgmlType, &'static str)>,
    /// Largest relative change of a ternary scale by the f16 rounding.
    pub max_scale_change: f64,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `ternary export`.
pub fn run(args: &ExportArgs) -> Res<()> {
    for input in [&args.model, &args.source] {
        if same_file(input, &args.out) {
            return Err(CliError::new(format!(
                "--out {} is an input file; choose another path",
                args.out.display()
            )));
        }
    }
    let found = sniff(&args.source)?;
    if found != Format::Gguf {
        return Err(CliError::new(format!(
            "--source {} is a {found}; export needs a {}",
            args.source.display(),
            Format::Gguf
        )));
    }
    let source = GgufFile::open(&args.source)?;
    let (loaded, _) = load_model(&args.model)?;
    let (bytes, report) = export_gguf(&loaded.model, &source, args.format, args.floats)?;
    ternary_core::io::write_atomic(&args.out, &bytes)?;
    let mut counts = std::collections::BTreeMap::<(String, &str), usize>::new();
    for (_, kind, why) in &report.tensors {
        *counts.entry((kind.name(), *why)).or_default() += 1;
    }
    for ((kind, why), n) in counts {
        println!("{n:4} tensors {kind:6} {why}");
    }
    println!(
        "largest ternary scale change from f16 rounding: {:.2e} (relative)",
        report.max_scale_change
    );
    println!("wrote {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

/// GGUF row order of Q/K rows: GGUF row `h·d + 2i + s` is HF row `h·d + s·d/2 + i`.
fn qk_gguf_order(n_heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(n_heads * head_dim);
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                order.push(h * head_dim + s * half + i);
            }
        }
    }
    order
}

/// Rows of a row-major `[rows, cols]` array in `order`.
fn reorder<T: Copy>(data: &[T], cols: usize, order: &[usize]) -> Vec<T> {
    order
        .iter()
        .flat_map(|&r| data[r * cols..(r + 1) * cols].iter().copied())
        .collect()
}

/// Checks that the source GGUF describes the same model.
fn check_source(c: &LlamaConfig, source: &GgufFile) -> Res<()> {
    let arch = source.get_str("general.architecture")?;
    let want = match c.architecture {
        Architecture::Llama => "llama",
        Architecture::BitNet => "bitnet",
    };
    if arch != want {
        return Err(CliError::new(format!(
            "the source GGUF is a {arch:?} model; this model needs a {want:?} source"
        )));
    }
    let s = LlamaConfig::from_gguf(source)?;
    let fields = [
        ("hidden size", c.hidden_size, s.hidden_size),
        ("FFN size", c.intermediate_size, s.intermediate_size),
        ("layers", c.num_layers, s.num_layers),
        ("heads", c.num_heads, s.num_heads),
        ("KV heads", c.num_kv_heads, s.num_kv_heads),
        ("head size", c.head_dim, s.head_dim),
        ("vocabulary", c.vocab_size, s.vocab_size),
    ];
    for (what, ours, theirs) in fields {
        if ours != theirs {
            return Err(CliError::new(format!(
                "the source GGUF is not this model's source: {what} {theirs}, the model has {ours}"
            )));
        }
    }
    Ok(())
}

/// One float tensor `[rows, cols]` (or `[n]`) in GGUF row order: the source's bytes when they
/// hold exactly these values, else F16 when exact, else F32.
fn float_tensor(
    source: Option<&GgufFile>,
    name: String,
    shape: &[usize],
    values: &[f32],
    force_f32: bool,
) -> Res<(GgufTensorData, &'static str)> {
    let dims: Vec<usize> = shape.iter().rev().copied().collect();
    if let Some(source) = source
        && let Some(info) = source.tensor(&name)
        && info.dims == dims
        && let Ok((_, theirs)) = source.dequantize(&name)
        && theirs.len() == values.len()
        && theirs
            .iter()
            .zip(values)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    {
        let bytes = source.tensor_bytes(info)?.to_vec();
        let kind = info.kind;
        return Ok((
            GgufTensorData {
                name,
                dims,
                kind,
                bytes,
            },
            "float, copied from the source GGUF",
        ));
    }
    let (kind, why) = if !force_f32 && is_f16_exact(values) {
        (GgmlType::F16, "float, exactly f16")
    } else {
        (GgmlType::F32, "float")
    };
    Ok((
        GgufTensorData {
            name,
            dims,
            kind,
            bytes: encode_float(kind, values)?,
        },
        why,
    ))
}

/// A ternary matrix (GGUF row order, f16 scales) as `kind`, or the exact Q8_0 fallback.
fn ternary_tensor(
    name: String,
    m: &TernaryMatrix,
    kind: GgmlType,
) -> Res<(GgufTensorData, &'static str)> {
    let dims = vec![m.cols(), m.rows()];
    let (kind, bytes, why) = match encode_ternary(kind, m) {
        Ok(b) => (kind, b, "ternary"),
        Err(_) if m.cols().is_multiple_of(32) => (
            GgmlType::Q8_0,
            encode_q8_0_exact(m)?,
            "ternary, exact Q8_0 fallback (width or scale groups not TQ-compatible)",
        ),
        Err(_) => (
            GgmlType::F16,
            encode_float(GgmlType::F16, &m.dequantize())?,
            "ternary, exact F16 fallback (width not a multiple of 32)",
        ),
    };
    Ok((
        GgufTensorData {
            name,
            dims,
            kind,
            bytes,
        },
        why,
    ))
}

fn as_bitlinear(layer: &dyn ternary_layers::LinearLayer<Cpu>) -> Option<&BitLinear<Cpu>> {
    layer.as_any()?.downcast_ref::<BitLinear<Cpu>>()
}

/// A W1.58A8 layer's effective ternary weight `t·s/d`: its scales divided by the divisor `d`.
fn bitlinear_weight(name: &str, b: &BitLinear<Cpu>) -> Res<TernaryMatrix> {
    let d = b.divisor();
    let mut m = b.matrix().clone();
    let scales = m.scales();
    let values: Vec<f32> = scales.values().iter().map(|s| s / d).collect();
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(CliError::new(format!(
            "{name}: weight scale / divisor {d} gives {bad}, not a finite scale"
        )));
    }
    m.set_scales(ternary_core::Scales::new(scales.layout(), values))
        .map_err(|e| CliError::new(format!("{name}: {e}")))?;
    Ok(m)
}

/// Builds the GGUF bytes of `model` with `source`'s metadata; see the [module docs](self).
pub fn export_gguf(
    model: &Llama<Cpu>,
    source: &GgufFile,
    format: ExportFormat,
    floats: FloatOut,
) -> Res<(Vec<u8>, ExportReport)> {
    // TQ1_0 / TQ2_0 hold one trit per weight and one scale per block: a two-plane layer
    // (W = M₁ + M₂) has no faithful encoding there.
    for (hf, layer) in model.linears() {
        if let Some(t) = as_ternary::<Cpu>(layer.as_ref())
            && t.planes() != 1
        {
            return Err(CliError::new(format!(
                "{hf} has {} trit-planes; GGUF {:?} holds one trit per weight, so export \
                 refuses two-plane models (convert with --planes 1 to export)",
                t.planes(),
                format.kind()
            )));
        }
    }
    if let Some(seed) = model.config().ffn_rotation {
        return Err(CliError::new(format!(
            "the model rotates its FFN activations before down_proj in every forward pass \
             (ternary_ffn_rotation {seed}); GGUF readers such as llama.cpp do not, so export \
             refuses it (convert without --rotate-ffn to export)"
        )));
    }
    let c = model.config();
    // Where float tensors may come from, and whether they must be F32.
    let (copy_from, all_f32) = match floats {
        FloatOut::Source => (Some(source), false),
        FloatOut::F32 => (None, true),
    };
    check_source(c, source)?;
    let mut report = ExportReport::default();
    let mut tensors = Vec::new();
    let mut push = |report: &mut ExportReport, (t, why): (GgufTensorData, &'static str)| {
        report.tensors.push((t.name.clone(), t.kind, why));
        tensors.push(t);
    };
    let floats = model.float_tensors()?;
    let embedding = floats.first().map(|(_, t)| t.data.clone());
    for (hf, t) in &floats {
        let name = gguf_name(hf).ok_or_else(|| CliError::new(format!("no GGUF name for {hf}")))?;
        let norm = t.shape.len() == 1;
        push(
            &mut report,
            float_tensor(copy_from, name, &t.shape, &t.data, norm || all_f32)?,
        );
    }
    for (hf, layer) in model.linears() {
        let name = gguf_name(&format!("{hf}.weight"))
            .ok_or_else(|| CliError::new(format!("no GGUF name for {hf}")))?;
        let heads = if !qk_permuted(c.architecture) {
            None
        } else if hf.ends_with("q_proj") {
            Some(c.num_heads)
        } else if hf.ends_with("k_proj") {
            Some(c.num_kv_heads)
        } else {
            None
        };
        let order = heads.map(|n| qk_gguf_order(n, c.head_dim));
        let (rows, cols) = (layer.out_features(), layer.in_features());
        if let Some(b) = as_bitlinear(layer.as_ref()) {
            let m = with_f16_scales(&bitlinear_weight(&hf, b)?)?;
            let m = match &order {
                Some(o) => select_rows(&m, o)?,
                None => m,
            };
            push(&mut report, ternary_tensor(name, &m, format.kind())?);
            continue;
        }
        if let Some(t) = as_ternary::<Cpu>(layer.as_ref()) {
            // One plane (two-plane models were refused above).
            let matrix = t.matrix()?;
            if let Some(b) = t.bias() {
                let b = match &order {
                    Some(o) => reorder(&b, 1, o),
                    None => b,
                };
                let bias_name = name.replace(".weight", ".bias");
                push(
                    &mut report,
                    float_tensor(copy_from, bias_name, &[rows], &b, true)?,
                );
            }
            if let Some(d) = t.input_scale() {
                let w = matrix.dequantize();
                let mut w: Vec<f32> = w
                    .chunks_exact(cols.max(1))
                    .flat_map(|row| row.iter().zip(d).map(|(x, s)| x * s))
                    .collect();
                if let Some(o) = &order {
                    w = reorder(&w, cols, o);
                }
                let (t, _) = float_tensor(copy_from, name, &[rows, cols], &w, all_f32)?;
                push(&mut report, (t, "ternary with input scale, as float"));
                continue;
            }
            let m = with_f16_scales(matrix)?;
            for (a, b) in matrix.scales().values().iter().zip(m.scales().values()) {
                if *a != 0.0 {
                    let rel = f64::from((a - b).abs()) / f64::from(a.abs());
                    report.max_scale_change = report.max_scale_change.max(rel);
                }
            }
            let m = match &order {
                Some(o) => select_rows(&m, o)?,
                None => m,
            };
            push(&mut report, ternary_tensor(name, &m, format.kind())?);
        } else {
            let mut w = ternary_layers::to_rows(layer.weight())?;
            if hf == "lm_head"
                && c.tie_word_embeddings
                && embedding.as_ref().is_some_and(|e| *e == w)
            {
                continue; // tied: llama.cpp uses token_embd
            }
            if let Some(o) = &order {
                w = reorder(&w, cols, o);
            }
            push(
                &mut report,
                float_tensor(copy_from, name, &[rows, cols], &w, all_f32)?,
            );
        }
    }
    let mut metadata: Vec<(String, GgufValue)> = source
        .metadata
        .iter()
        .filter(|(k, _)| *k != "general.alignment" && *k != "general.file_type")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.push((
        "general.file_type".into(),
        GgufValue::U32(format.file_type()),
    ));
    if source.get("general.quantization_version").is_none() {
        metadata.push(("general.quantization_version".into(), GgufValue::U32(2)));
    }
    let meta: Vec<(&str, GgufValue)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    Ok((write_gguf(&meta, &tensors), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_core::Scales;
    use ternary_models::weights::unpermute_qk;

    #[test]
    fn qk_order_should_invert_unpermute() {
        let (h, d, cols) = (3, 8, 2);
        let rows: Vec<u32> = (0..(h * d * cols) as u32).collect();
        let gguf = reorder(&rows, cols, &qk_gguf_order(h, d));
        assert_eq!(unpermute_qk(&gguf, h, d, cols), rows);
    }

    #[test]
    fn ternary_layers_should_pick_tq_or_the_exact_q8_0_fallback() {
        let m = |cols: usize, scales: Scales| {
            let trits: Vec<i8> = (0..2 * cols).map(|i| (i % 3) as i8 - 1).collect();
            TernaryMatrix::from_trits(2, cols, &trits, scales).unwrap()
        };
        let cases = [
            (m(512, Scales::per_row(vec![0.5, 0.25])), GgmlType::TQ2_0),
            (m(576, Scales::per_row(vec![0.5, 0.25])), GgmlType::Q8_0),
            (
                m(
                    512,
                    Scales::per_group(64, (0..16).map(|i| i as f32 / 8.0).collect()),
                ),
                GgmlType::Q8_0,
            ),
        ];
        for (w, want) in cases {
            let (t, _) = ternary_tensor("x".into(), &w, GgmlType::TQ2_0).unwrap();
            assert_eq!(t.kind, want);
            let x = ternary_models::quant::dequantize("x", t.kind, &t.bytes, w.rows() * w.cols())
                .unwrap();
            assert_eq!(x, w.dequantize());
        }
    }

    /// `export.<key>.llama_cpp.ppl` of fixtures/tiny-bitnet-gguf/export.json (a flat scan: the
    /// CLI has no JSON dependency).
    fn json_number(doc: &str, key: &str) -> f64 {
        let at = doc.find(&format!("\"{key}\"")).unwrap();
        let rest = &doc[at..];
        let at = rest.find("\"llama_cpp\"").unwrap();
        let rest = &rest[at..];
        let at = rest.find("\"ppl\":").unwrap() + 6;
        let end = rest[at..].find(',').unwrap();
        rest[at..at + end].trim().parse().unwrap()
    }

    /// The tiny BitNet b1.58 (bf16 master weights, ternarized on load) exported with llama.cpp's
    /// own conversion as the source: every ternary tensor is byte for byte what
    /// `llama-quantize` wrote for the same model (fixtures/tiny-bitnet-gguf), and the file reads
    /// back with the same weights.
    #[test]
    fn bitnet_export_should_equal_llama_quantize_byte_for_byte() {
        let root = ternary_testkit::fixture_path("");
        let root = root.display();
        let dev = Default::default();
        let m = ternary_models::load::<Cpu>(format!("{root}/tiny-bitnet/silu-bf16"), &dev).unwrap();
        for (format, file) in [
            (ExportFormat::GgufTq2_0, "tiny-bitnet-tq2_0.gguf"),
            (ExportFormat::GgufTq1_0, "tiny-bitnet-tq1_0.gguf"),
        ] {
            let source = GgufFile::open(format!("{root}/tiny-bitnet-gguf/{file}")).unwrap();
            let (bytes, report) = export_gguf(&m.model, &source, format, FloatOut::Source).unwrap();
            let g = GgufFile::from_bytes(bytes.clone()).unwrap();
            let mut same = 0;
            for info in source.tensors.iter().filter(|t| t.kind == format.kind()) {
                let ours = g
                    .tensor(&info.name)
                    .unwrap_or_else(|| panic!("{}", info.name));
                assert_eq!(ours.kind, info.kind, "{}", info.name);
                assert_eq!(ours.dims, info.dims, "{}", info.name);
                assert!(
                    g.tensor_bytes(ours).unwrap() == source.tensor_bytes(info).unwrap(),
                    "{file}: {} differs from llama-quantize's",
                    info.name
                );
                same += 1;
            }
            assert_eq!(same, 14, "{file}");
            assert!(report.max_scale_change <= 1.0 / 2048.0);
            // Read back: every linear holds the model's ternary weights `t/d` (f16 scales).
            let path = std::env::temp_dir().join(format!("export-{}-{file}", std::process::id()));
            std::fs::write(&path, &bytes).unwrap();
            let back = ternary_models::load_gguf::<Cpu>(&path, &dev);
            std::fs::remove_file(&path).unwrap();
            let back = back.unwrap();
            for ((name, ours), (_, theirs)) in m.model.linears().iter().zip(back.model.linears()) {
                let want = match as_bitlinear(ours.as_ref()) {
                    Some(b) => with_f16_scales(&bitlinear_weight(name, b).unwrap())
                        .unwrap()
                        .dequantize(),
                    None => ternary_layers::to_rows(ours.weight()).unwrap(),
                };
                let got = ternary_layers::to_rows(theirs.weight()).unwrap();
                assert!(got == want, "{file}: {name} read back differs");
            }
            // llama-perplexity on this export (scripts/check_bitnet_export.sh, export.json):
            // ours on the same file within 1%.
            let key = if format == ExportFormat::GgufTq2_0 {
                "tq2_0"
            } else {
                "tq1_0"
            };
            let doc =
                std::fs::read_to_string(format!("{root}/tiny-bitnet-gguf/export.json")).unwrap();
            let want = json_number(&doc, key);
            let text =
                std::fs::read_to_string(format!("{root}/text/declaration-gettysburg.txt")).unwrap();
            let tokens = back.tokenizer.encode(&text, true).unwrap();
            let bos = back.tokenizer.bos_id.filter(|_| back.tokenizer.add_bos);
            let r = ternary_models::perplexity(&back.model, &tokens, 128, bos, None, |_, _| {})
                .unwrap();
            eprintln!(
                "{key} export: ours {} vs llama.cpp PPL {want} ({:+.3}%)",
                r.final_line(),
                100.0 * (r.ppl - want) / want
            );
            assert!(
                (r.ppl - want).abs() <= 0.01 * want,
                "{key}: {} vs {want}",
                r.ppl
            );
        }
    }

    /// The tiny fixture converted to ternary (no budget: every layer that can be), exported,
    /// and read back: every weight is the model's (ternary scales rounded to f16), Q/K rows in
    /// llama.cpp's order, metadata from the source.
    #[test]
    fn export_should_hold_the_models_weights() {
        let dir = ternary_testkit::fixture_path("tiny-llama");
        let dev = Default::default();
        let mut m = ternary_models::load::<Cpu>(dir, &dev).unwrap();
        let cfg = ternary_convert::ConvertConfig {
            budget: None,
            gptq: None,
            measure: false,
            ..Default::default()
        };
        let text = ternary_convert::CALIBRATION_TEXT;
        ternary_convert::convert(&mut m.model, &m.tokenizer, text, &cfg, &mut |_| {}).unwrap();
        let c = m.model.config().clone();
        let u = |x: usize| GgufValue::U32(x as u32);
        let source = GgufFile::from_bytes(write_gguf(
            &[
                ("general.architecture", GgufValue::String("llama".into())),
                ("general.alignment", u(32)),
                ("general.file_type", u(1)),
                ("llama.block_count", u(c.num_layers)),
                ("llama.embedding_length", u(c.hidden_size)),
                ("llama.feed_forward_length", u(c.intermediate_size)),
                ("llama.attention.head_count", u(c.num_heads)),
                ("llama.attention.head_count_kv", u(c.num_kv_heads)),
                ("llama.attention.key_length", u(c.head_dim)),
                (
                    "llama.attention.layer_norm_rms_epsilon",
                    GgufValue::F32(1e-5),
                ),
                ("llama.vocab_size", u(c.vocab_size)),
            ],
            &[],
        ))
        .unwrap();
        let (bytes, report) =
            export_gguf(&m.model, &source, ExportFormat::GgufTq1_0, FloatOut::Source).unwrap();
        assert!(
            report.max_scale_change <= 1.0 / 2048.0,
            "{}",
            report.max_scale_change
        );
        let g = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(g.get_usize("general.file_type").unwrap(), 36);
        assert_eq!(g.get_usize("llama.block_count").unwrap(), c.num_layers);
        let mut ternary = 0;
        for (hf, layer) in m.model.linears() {
            let name = gguf_name(&format!("{hf}.weight")).unwrap();
            let (rows, cols) = (layer.out_features(), layer.in_features());
            let want = match as_ternary::<Cpu>(layer.as_ref()) {
                Some(t) => {
                    ternary += 1;
                    with_f16_scales(t.matrix().unwrap()).unwrap().dequantize()
                }
                None => ternary_layers::to_rows(layer.weight()).unwrap(),
            };
            let (shape, mut got) = g.dequantize(&name).unwrap();
            assert_eq!(shape, vec![rows, cols], "{name}");
            if hf.ends_with("q_proj") {
                got = unpermute_qk(&got, c.num_heads, c.head_dim, cols);
            } else if hf.ends_with("k_proj") {
                got = unpermute_qk(&got, c.num_kv_heads, c.head_dim, cols);
            }
            assert!(got == want, "{name}: weights differ");
        }
        assert!(ternary >= 14, "only {ternary} ternary layers");
        for (hf, t) in m.model.float_tensors().unwrap() {
            let (_, got) = g.dequantize(&gguf_name(&hf).unwrap()).unwrap();
            assert!(got == t.data, "{hf}");
        }
        // `--floats f32`: every float tensor F32, the ternary ones as before.
        let (_, f32_report) =
            export_gguf(&m.model, &source, ExportFormat::GgufTq1_0, FloatOut::F32).unwrap();
        for ((name, kind, why), (_, kind0, _)) in f32_report.tensors.iter().zip(&report.tensors) {
            if why.starts_with("float") || why.contains("as float") {
                assert_eq!(*kind, GgmlType::F32, "{name}");
            } else {
                assert_eq!(kind, kind0, "{name}");
            }
        }
        // The exported file is a source of itself; an unrelated source is refused.
        let mut wrong = write_gguf(
            &[
                ("general.architecture", GgufValue::String("llama".into())),
                ("llama.block_count", u(c.num_layers + 1)),
                ("llama.embedding_length", u(c.hidden_size)),
                ("llama.feed_forward_length", u(c.intermediate_size)),
                ("llama.attention.head_count", u(c.num_heads)),
                (
                    "llama.attention.layer_norm_rms_epsilon",
                    GgufValue::F32(1e-5),
                ),
                ("llama.vocab_size", u(c.vocab_size)),
            ],
            &[],
        );
        let e = export_gguf(
            &m.model,
            &GgufFile::from_bytes(wrong.clone()).unwrap(),
            ExportFormat::GgufTq2_0,
            FloatOut::Source,
        )
        .unwrap_err();
        assert!(e.message().contains("layers"), "{}", e.message());
        wrong[..4].copy_from_slice(b"GGUX");
        assert!(GgufFile::from_bytes(wrong).is_err());
    }

    /// A two-plane model (`--planes 2`) has no TQ1_0 / TQ2_0 encoding: export says so rather
    /// than write one plane of it.
    #[test]
    fn export_should_refuse_two_plane_models() {
        let dir = ternary_testkit::fixture_path("tiny-llama");
        let mut m = ternary_models::load::<Cpu>(dir, &Default::default()).unwrap();
        let cfg = ternary_convert::ConvertConfig {
            planes: ternary_convert::convert::Planes::Two,
            budget: None,
            gptq: None,
            measure: false,
            ..Default::default()
        };
        let text = ternary_convert::CALIBRATION_TEXT;
        ternary_convert::convert(&mut m.model, &m.tokenizer, text, &cfg, &mut |_| {}).unwrap();
        let c = m.model.config().clone();
        let u = |x: usize| GgufValue::U32(x as u32);
        let source = GgufFile::from_bytes(write_gguf(
            &[
                ("general.architecture", GgufValue::String("llama".into())),
                ("general.alignment", u(32)),
                ("llama.block_count", u(c.num_layers)),
                ("llama.embedding_length", u(c.hidden_size)),
                ("llama.vocab_size", u(c.vocab_size)),
            ],
            &[],
        ))
        .unwrap();
        for format in [ExportFormat::GgufTq1_0, ExportFormat::GgufTq2_0] {
            let e = export_gguf(&m.model, &source, format, FloatOut::F32).unwrap_err();
            assert!(
                e.message().contains("2 trit-planes") && e.message().contains("--planes 1"),
                "{}",
                e.message()
            );
        }
    }

    /// A model rotating its FFN activations in the forward pass (`--rotate-ffn`) computes
    /// something else in a GGUF reader: export refuses it.
    #[test]
    fn export_should_refuse_ffn_rotated_models() {
        let dir = ternary_testkit::fixture_path("tiny-llama");
        let mut m = ternary_models::load::<Cpu>(dir, &Default::default()).unwrap();
        ternary_convert::rotate::rotate_ffn(&mut m.model, 3).unwrap();
        let source = GgufFile::from_bytes(write_gguf(
            &[("general.architecture", GgufValue::String("llama".into()))],
            &[],
        ))
        .unwrap();
        let e = export_gguf(&m.model, &source, ExportFormat::GgufTq2_0, FloatOut::F32).unwrap_err();
        assert!(e.message().contains("--rotate-ffn"), "{}", e.message());
    }
}
