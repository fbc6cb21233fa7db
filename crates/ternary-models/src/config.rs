//! Llama-family hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`:
//! plain Llama, BitNet b1.58 ([`Architecture::BitNet`]) and Llama-architecture ternary
//! checkpoints (`quantization_config.quant_method = "bitnet"`, [`BitNetQuant`]).

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// The largest size a configuration may declare (`2^24`, as `ternary_core::io::MAX_DIM`):
/// vocabulary, widths, layers, head dimension, and `heads · head_dim`. Real models are far below
/// it (SmolLM2: 49152, 576, 1536, 30 layers); it keeps a corrupt file from asking for more
/// memory or work than any real model could.
pub const MAX_SIZE: usize = 1 << 24;

/// The hyper-parameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// Model width `H`.
    pub hidden_size: usize,
    /// SwiGLU inner width `F`.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads `n_h`.
    pub num_heads: usize,
    /// Key/value heads `n_kv` (`n_h` is a multiple of it; grouped-query attention).
    pub num_kv_heads: usize,
    /// Width of one head, `d = H / n_h` unless the checkpoint says otherwise.
    pub head_dim: usize,
    /// RoPE base θ: frequency `i` is `θ^(−2i/d)`.
    pub rope_theta: f64,
    /// RMSNorm ε: `y = x / sqrt(mean(x²) + ε) · w`.
    pub rms_norm_eps: f64,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output head reuses the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// The decoder block (`model_type`).
    pub architecture: Architecture,
    /// The FFN activation `act` in `Wdown·(act(Wgate·x) ⊙ Wup·x)` (`hidden_act`).
    pub hidden_act: Activation,
    /// W1.58A8 linear layers (`quantization_config` with `quant_method: "bitnet"`), or `None`
    /// for float linear layers.
    pub bitnet: Option<BitNetQuant>,
    /// The seed of the orthogonal `Q` the residual stream was rotated by (`h' = h·Q`, RMSNorm
    /// weights folded into the layers; `ternary_convert::rotate`), or `None`. The model
    /// computes the same function; its hidden states are the rotated ones. Stored as the
    /// non-standard key `ternary_residual_rotation`.
    pub residual_rotation: Option<u64>,
    /// The seed of the rotation `T` applied to `act(gate) ⊙ up` before `down_proj`
    /// ([`SignedHadamard::for_layer`](ternary_core::rotation::SignedHadamard::for_layer), one
    /// per layer; `down_proj`'s rows rotated by the same `T`), or `None`. The model computes
    /// the same function; the rotation runs in every forward pass. Stored as the non-standard
    /// key `ternary_ffn_rotation`.
    pub ffn_rotation: Option<u64>,
}

/// The decoder block a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Architecture {
    /// Llama (`model_type: "llama"`).
    #[default]
    Llama,
    /// BitNet b1.58 (`model_type: "bitnet"`, transformers' `BitNetForCausalLM`): Llama with an
    /// RMSNorm `attn_sub_norm` on the attention output before `o_proj` and `ffn_sub_norm` on
    /// `act(Wgate·x) ⊙ Wup·x` before `down_proj`.
    BitNet,
}

/// The FFN activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `silu(z) = z·σ(z)` (`"silu"`, Llama).
    #[default]
    Silu,
    /// `relu²(z) = max(z, 0)²` (`"relu2"`, BitNet b1.58).
    Relu2,
}

impl Activation {
    /// The name `config.json` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Silu => "silu",
            Self::Relu2 => "relu2",
        }
    }
}

/// Which transformers class a BitNet checkpoint's linear layers are, and so what its
/// `weight` and `weight_scale` tensors mean (`quantization_config.linear_class` and
/// `quantization_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitNetLinear {
    /// `BitLinear` (`linear_class: "bitlinear"`, the default; always offline): `weight` is
    /// packed ternary (`uint8 [out/4, in]`) and `y = (Σ q·t) / (k·weight_scale)`.
    #[default]
    Packed,
    /// `AutoBitLinear` offline (`"autobitlinear"`, `"offline"`): ternary `weight` (packed or
    /// float trits) and `y = (Σ q·t) / k · weight_scale`.
    AutoOffline,
    /// `AutoBitLinear` online (`"autobitlinear"`, `"online"`): float master weights, ternarized
    /// on load as in training, `t = clamp(round(W·s), −1, 1)` with `s = 1/max(mean|W|, 1e-5)`,
    /// and `y = (Σ q·t) / (k·s)`.
    Online,
}

/// The `quantization_config` of a BitNet b1.58 checkpoint (`quant_method: "bitnet"`).
///
/// Every converted linear layer is W1.58A8: ternary weights with one scale per tensor and
/// activations quantized per token to int8, `k = 127 / max(max|x|, 1e-5)`,
/// `q = clamp(round(x·k), −128, 127)` (round half to even), as transformers'
/// `BitLinear.activation_quant` and `ActQuant` do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitNetQuant {
    /// How the linear layers are stored and scaled.
    pub linear: BitNetLinear,
    /// Modules left in float (`modules_to_not_convert`); `None` means transformers' default,
    /// the output head only.
    pub modules_to_not_convert: Option<Vec<String>>,
}

impl BitNetQuant {
    /// Whether the linear layer `module` (e.g. `model.layers.0.mlp.up_proj`, `lm_head`) is
    /// W1.58A8. Follows transformers' `should_convert_module` for plain names: a pattern
    /// matches the start of the name up to a module boundary (`layers.1` matches
    /// `layers.1.mlp`, not `layers.11.mlp`) or its end.
    pub fn converts(&self, module: &str) -> bool {
        match &self.modules_to_not_convert {
            None => module != "lm_head",
            Some(patterns) => !patterns.iter().any(|p| {
                module.ends_with(p.as_str())
                    || module.strip_prefix(p.as_str()).is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with('.') || p.ends_with('.')
                    })
            }),
        }
    }

    /// Parses `quantization_config` (`None` when `quant_method` is not `"bitnet"`: the caller
    /// reports other methods).
    fn from_json(q: &serde_json::Value) -> Result<Self> {
        let bad = |m: String| ModelError::Config(format!("quantization_config: {m}"));
        let s = |key: &str, default: &'static str| -> Result<String> {
            match q.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default.to_string()),
                Some(serde_json::Value::String(v)) => Ok(v.clone()),
                Some(other) => Err(bad(format!("'{key}' is not a string: {other}"))),
            }
        };
        let linear = match (
            s("linear_class", "bitlinear")?.as_str(),
            s("quantization_mode", "offline")?.as_str(),
        ) {
            ("bitlinear", "offline" | "online") => BitNetLinear::Packed,
            ("autobitlinear", "offline") => BitNetLinear::AutoOffline,
            ("autobitlinear", "online") => BitNetLinear::Online,
            (c, m) => {
                return Err(bad(format!(
                    "linear_class '{c}' with quantization_mode '{m}' is not supported \
                     (bitlinear, or autobitlinear offline/online)"
                )));
            }
        };
        if q.get("use_rms_norm").and_then(serde_json::Value::as_bool) == Some(true) {
            return Err(bad(
                "use_rms_norm = true (an RMSNorm inside each linear layer) is not supported".into(),
            ));
        }
        let modules_to_not_convert = match q.get("modules_to_not_convert") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(a)) => {
                let mut names = Vec::with_capacity(a.len().min(1024));
                for v in a {
                    let Some(n) = v.as_str() else {
                        return Err(bad(format!(
                            "modules_to_not_convert holds a non-string {v}"
                        )));
                    };
                    if n.is_empty()
                        || n.contains(['*', '+', '?', '[', '(', '|', '^', '$', '\\', '{'])
                    {
                        return Err(bad(format!(
                            "modules_to_not_convert pattern {n:?} is empty or a regular \
                             expression (only plain module names are supported)"
                        )));
                    }
                    names.push(n.to_string());
                }
                Some(names)
            }
            Some(other) => {
                return Err(bad(format!(
                    "modules_to_not_convert is not a list: {other}"
                )));
            }
        };
        Ok(Self {
            linear,
            modules_to_not_convert,
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let (class, mode) = match self.linear {
            BitNetLinear::Packed => ("bitlinear", "offline"),
            BitNetLinear::AutoOffline => ("autobitlinear", "offline"),
            BitNetLinear::Online => ("autobitlinear", "online"),
        };
        serde_json::json!({
            "quant_method": "bitnet",
            "linear_class": class,
            "quantization_mode": mode,
            "modules_to_not_convert": self.modules_to_not_convert,
        })
    }
}

impl LlamaConfig {
    /// SmolLM2-135M's configuration (as shipped in its GGUF and `config.json`).
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            architecture: Architecture::Llama,
            hidden_act: Activation::Silu,
            bitnet: None,
            residual_rotation: None,
            ffn_rotation: None,
        }
    }

    /// Checks the invariants the model relies on: sizes non-zero and at most [`MAX_SIZE`]
    /// (`n_h · d` and `n_kv · d` included), heads grouped evenly, even head dimension, finite
    /// positive RoPE base and non-negative ε.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        let sizes = [
            ("vocab_size", Some(self.vocab_size)),
            ("hidden_size", Some(self.hidden_size)),
            ("intermediate_size", Some(self.intermediate_size)),
            ("num_layers", Some(self.num_layers)),
            ("head_dim", Some(self.head_dim)),
            (
                "num_heads · head_dim",
                self.num_heads.checked_mul(self.head_dim),
            ),
            (
                "num_kv_heads · head_dim",
                self.num_kv_heads.checked_mul(self.head_dim),
            ),
        ];
        for (what, size) in sizes {
            if size.is_none_or(|s| s > MAX_SIZE) {
                return bad(format!("{what} is above the limit {MAX_SIZE} in {self:?}"));
            }
        }
        if self.ffn_rotation.is_some() {
            let b = ternary_core::rotation::hadamard_block(self.intermediate_size);
            if b < 16 {
                return bad(format!(
                    "an FFN rotation needs an intermediate size with a power-of-two divisor of at \
                     least 16, not {}",
                    self.intermediate_size
                ));
            }
        }
        if self.num_layers == 0 || self.num_heads == 0 || self.num_kv_heads == 0 {
            return bad(format!("zero layers or heads in {self:?}"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "{} query heads is not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head dimension {} must be even and non-zero",
                self.head_dim
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad(format!("rope theta {} must be positive", self.rope_theta));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad(format!(
                "rms norm eps {} must be non-negative",
                self.rms_norm_eps
            ));
        }
        Ok(())
    }

    /// Reads `<arch>.*` metadata of a GGUF file (`arch` = `general.architecture`: `llama`, or
    /// `bitnet` as llama.cpp's converter writes BitNet b1.58, whose graph there uses SiLU).
    /// The vocabulary size comes from `<arch>.vocab_size` or the token list.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            "bitnet" => Architecture::BitNet,
            _ => {
                return Err(ModelError::Config(format!(
                    "architecture '{arch}' is not supported (only 'llama' and 'bitnet')"
                )));
            }
        };
        let k = |s: &str| format!("{arch}.{s}");
        let hidden_size = g.get_usize(&k("embedding_length"))?;
        let num_heads = g.get_usize(&k("attention.head_count"))?;
        let num_kv_heads = match g.get(&k("attention.head_count_kv")) {
            Some(_) => g.get_usize(&k("attention.head_count_kv"))?,
            None => num_heads,
        };
        let head_dim = match g.get(&k("attention.key_length")) {
            Some(_) => g.get_usize(&k("attention.key_length"))?,
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let vocab_size = match g.get(&k("vocab_size")) {
            Some(_) => g.get_usize(&k("vocab_size"))?,
            None => g
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(<[_]>::len)
                .ok_or_else(|| ModelError::Config("no vocab_size and no token list".into()))?,
        };
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: g.get_usize(&k("feed_forward_length"))?,
            num_layers: g.get_usize(&k("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta: match g.get(&k("rope.freq_base")) {
                Some(_) => g.get_f64(&k("rope.freq_base"))?,
                None => 10_000.0,
            },
            rms_norm_eps: g.get_f64(&k("attention.layer_norm_rms_epsilon"))?,
            max_position_embeddings: match g.get(&k("context_length")) {
                Some(_) => g.get_usize(&k("context_length"))?,
                None => 2048,
            },
            // GGUF stores `output.weight` only when the head is not tied.
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            architecture,
            hidden_act: Activation::Silu,
            bitnet: None,
            residual_rotation: None,
            ffn_rotation: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a Hugging Face `config.json`: `model_type` `llama` (or absent) or `bitnet`,
    /// `hidden_act` `silu` or `relu2` (default: `silu` for Llama, `relu2` for BitNet), and a
    /// `quantization_config` with `quant_method: "bitnet"` ([`BitNetQuant`]); any other
    /// quantization method is an error.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Config(format!("config.json is not valid JSON: {e}")))?;
        let architecture = match v.get("model_type").and_then(|t| t.as_str()) {
            None | Some("llama") => Architecture::Llama,
            Some("bitnet") => Architecture::BitNet,
            Some(t) => {
                return Err(ModelError::Config(format!(
                    "model_type '{t}' is not supported (only 'llama' and 'bitnet')"
                )));
            }
        };
        let hidden_act = match v.get("hidden_act") {
            None | Some(serde_json::Value::Null) => match architecture {
                Architecture::Llama => Activation::Silu,
                Architecture::BitNet => Activation::Relu2,
            },
            Some(a) => match a.as_str() {
                Some("silu" | "swish") => Activation::Silu,
                Some("relu2") => Activation::Relu2,
                _ => {
                    return Err(ModelError::Config(format!(
                        "config.json: hidden_act {a} is not supported (only 'silu' and 'relu2')"
                    )));
                }
            },
        };
        let bitnet = match v.get("quantization_config") {
            None | Some(serde_json::Value::Null) => None,
            Some(q) => match q.get("quant_method").and_then(|m| m.as_str()) {
                Some("bitnet") => Some(BitNetQuant::from_json(q)?),
                m => {
                    return Err(ModelError::Config(format!(
                        "config.json: quantization_config.quant_method {m:?} is not supported \
                         (only 'bitnet')"
                    )));
                }
            },
        };
        if v.get("attention_bias").and_then(serde_json::Value::as_bool) == Some(true)
            || v.get("mlp_bias").and_then(serde_json::Value::as_bool) == Some(true)
        {
            return Err(ModelError::Config(
                "config.json: attention_bias / mlp_bias = true is not supported (no biases)".into(),
            ));
        }
        let uint = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|x| usize::try_from(x).ok())
                .ok_or_else(|| {
                    ModelError::Config(format!(
                        "config.json: '{key}' missing or not an unsigned integer"
                    ))
                })
        };
        let float = |key: &str, default: f64| -> Result<f64> {
            match v.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| {
                    ModelError::Config(format!("config.json: '{key}' is not a number"))
                }),
            }
        };
        let hidden_size = uint("hidden_size")?;
        let num_heads = uint("num_attention_heads")?;
        let num_kv_heads = if v.get("num_key_value_heads").is_some_and(|x| !x.is_null()) {
            uint("num_key_value_heads")?
        } else {
            num_heads
        };
        let head_dim = if v.get("head_dim").is_some_and(|x| !x.is_null()) {
            uint("head_dim")?
        } else {
            hidden_size.checked_div(num_heads).unwrap_or(0)
        };
        // transformers >= 5 writes `rope_parameters: {rope_theta, rope_type}`; older versions
        // a top-level `rope_theta` and an optional `rope_scaling`.
        let rope = v
            .get("rope_parameters")
            .or_else(|| v.get("rope_scaling"))
            .filter(|x| !x.is_null());
        if let Some(r) = rope {
            let ty = r
                .get("rope_type")
                .or_else(|| r.get("type"))
                .and_then(|t| t.as_str());
            if ty.is_some_and(|t| t != "default") {
                return Err(ModelError::Config(format!(
                    "config.json: rope type {ty:?} is not supported (only plain RoPE)"
                )));
            }
        }
        let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
            Some(t) => t.as_f64().ok_or_else(|| {
                ModelError::Config("config.json: 'rope_theta' is not a number".into())
            })?,
            None => float("rope_theta", 10_000.0)?,
        };
        let cfg = Self {
            vocab_size: uint("vocab_size")?,
            hidden_size,
            intermediate_size: uint("intermediate_size")?,
            num_layers: uint("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta,
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            max_position_embeddings: if v.get("max_position_embeddings").is_some() {
                uint("max_position_embeddings")?
            } else {
                2048
            },
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            architecture,
            hidden_act,
            bitnet,
            residual_rotation: seed_key(&v, "ternary_residual_rotation")?,
            ffn_rotation: seed_key(&v, "ternary_ffn_rotation")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The optional unsigned-integer key `key` of a config document.
fn seed_key(v: &serde_json::Value, key: &str) -> Result<Option<u64>> {
    match v.get(key) {
        None => Ok(None),
        Some(r) => r.as_u64().map(Some).ok_or_else(|| {
            ModelError::Config(format!("{key} {r} is not a seed (an unsigned integer)"))
        }),
    }
}

impl LlamaConfig {
    /// A Hugging Face `config.json` for this configuration (`model_type` `llama` or
    /// `bitnet`), which [`LlamaConfig::from_hf_json`] reads back to an equal value (floats are
    /// written with round-trip precision).
    pub fn to_hf_json(&self) -> String {
        let (class, model_type) = match self.architecture {
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            Architecture::BitNet => ("BitNetForCausalLM", "bitnet"),
        };
        let mut doc = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "hidden_act": self.hidden_act.name(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
        });
        if let (Some(q), Some(m)) = (&self.bitnet, doc.as_object_mut()) {
            m.insert("quantization_config".into(), q.to_json());
        }
        if let (Some(seed), Some(m)) = (self.residual_rotation, doc.as_object_mut()) {
            m.insert("ternary_residual_rotation".into(), seed.into());
        }
        if let (Some(seed), Some(m)) = (self.ffn_rotation, doc.as_object_mut()) {
            m.insert("ternary_ffn_rotation".into(), seed.into());
        }
        doc.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_should_parse_smollm2() {
        let json = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,"intermediate_size":1536,
            "max_position_embeddings":8192,"model_type":"llama","num_attention_heads":9,
            "num_hidden_layers":30,"num_key_value_heads":3,"rms_norm_eps":1e-05,"rope_scaling":null,
            "rope_theta":100000,"tie_word_embeddings":true,"vocab_size":49152}"#;
        assert_eq!(
            LlamaConfig::from_hf_json(json).unwrap(),
            LlamaConfig::smollm2_135m()
        );
    }

    #[test]
    fn transformers_5_rope_parameters_should_parse() {
        let json = r#"{"hidden_size":32,"intermediate_size":48,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":8,"num_hidden_layers":2,"vocab_size":300,
            "rope_parameters":{"rope_theta":500.0,"rope_type":"default"},"rms_norm_eps":1e-05}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert_eq!((c.rope_theta, c.head_dim, c.num_kv_heads), (500.0, 8, 2));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn hf_json_should_round_trip() {
        let mut c = LlamaConfig::smollm2_135m();
        c.rope_theta = 123_456.789_012_345;
        c.rms_norm_eps = 1.234_567_890_123e-7;
        c.head_dim = 48;
        c.tie_word_embeddings = false;
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        c.residual_rotation = Some(u64::MAX);
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        let bad = c.to_hf_json().replace(&u64::MAX.to_string(), "-3");
        let err = LlamaConfig::from_hf_json(&bad).unwrap_err().to_string();
        assert!(err.contains("ternary_residual_rotation"), "{err}");
        c.ffn_rotation = Some(7);
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        let bad = c.to_hf_json().replace(
            "\"ternary_ffn_rotation\":7",
            "\"ternary_ffn_rotation\":\"x\"",
        );
        let err = LlamaConfig::from_hf_json(&bad).unwrap_err().to_string();
        assert!(err.contains("ternary_ffn_rotation"), "{err}");
        c.intermediate_size = 1000;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("FFN rotation"), "{err}");
        c.intermediate_size = 1536;
        let s = LlamaConfig::smollm2_135m();
        assert_eq!(LlamaConfig::from_hf_json(&s.to_hf_json()).unwrap(), s);
    }

    #[test]
    fn bitnet_quantization_configs_should_parse() {
        let base = r#""hidden_size":64,"intermediate_size":64,"num_attention_heads":2,
            "num_hidden_layers":1,"vocab_size":8"#;
        let parse = |extra: &str| LlamaConfig::from_hf_json(&format!("{{{base}{extra}}}"));
        // Falcon3-1.58bit / Llama3-8B-1.58 style: Llama blocks, packed BitLinear.
        let c = parse(r#","model_type":"llama","quantization_config":{"quant_method":"bitnet"}"#)
            .unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.hidden_act, Activation::Silu);
        let q = c.bitnet.clone().unwrap();
        assert_eq!(q.linear, BitNetLinear::Packed);
        assert!(q.converts("model.layers.0.mlp.up_proj") && !q.converts("lm_head"));
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        // BitNet defaults to relu2; autobitlinear offline.
        let c = parse(
            r#","model_type":"bitnet","quantization_config":{"quant_method":"bitnet",
            "linear_class":"autobitlinear","quantization_mode":"offline",
            "modules_to_not_convert":["model.layers.0.mlp","q_proj"]}"#,
        )
        .unwrap();
        assert_eq!(
            (c.architecture, c.hidden_act),
            (Architecture::BitNet, Activation::Relu2)
        );
        let q = c.bitnet.clone().unwrap();
        assert_eq!(q.linear, BitNetLinear::AutoOffline);
        // A listed module keeps its float layer: prefix at a module boundary, or suffix.
        assert!(!q.converts("model.layers.0.mlp.up_proj"));
        assert!(q.converts("model.layers.01.mlp.up_proj"));
        assert!(!q.converts("model.layers.3.self_attn.q_proj"));
        assert!(q.converts("model.layers.3.self_attn.k_proj"));
        assert!(q.converts("lm_head"));
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
        for (extra, why) in [
            (r#","quantization_config":{"quant_method":"gptq"}"#, "gptq"),
            (
                r#","quantization_config":{"quant_method":"bitnet","linear_class":"x"}"#,
                "linear_class 'x'",
            ),
            (
                r#","quantization_config":{"quant_method":"bitnet","use_rms_norm":true}"#,
                "use_rms_norm",
            ),
            (
                r#","quantization_config":{"quant_method":"bitnet","modules_to_not_convert":["l.*"]}"#,
                "regular",
            ),
            (r#","hidden_act":"gelu""#, "gelu"),
            (r#","model_type":"mistral""#, "mistral"),
            (r#","attention_bias":true"#, "bias"),
        ] {
            let e = parse(extra).unwrap_err().to_string();
            assert!(e.contains(why), "{extra}: {e}");
        }
    }

    #[test]
    fn bad_configs_should_be_errors() {
        assert!(LlamaConfig::from_hf_json("{").is_err());
        assert!(LlamaConfig::from_hf_json(r#"{"model_type":"gpt2"}"#).is_err());
        let scaled = r#"{"hidden_size":8,"intermediate_size":8,"num_attention_heads":2,
            "num_hidden_layers":1,"vocab_size":4,"rope_scaling":{"rope_type":"llama3","factor":8.0}}"#;
        assert!(
            LlamaConfig::from_hf_json(scaled)
                .unwrap_err()
                .to_string()
                .contains("rope")
        );
        let mut c = LlamaConfig::smollm2_135m();
        c.num_kv_heads = 4;
        assert!(c.validate().is_err());
        c = LlamaConfig::smollm2_135m();
        c.head_dim = 63;
        assert!(c.validate().is_err());
    }
}
