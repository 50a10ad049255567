//! Rotary position settings, from either layout: `rope_parameters` (transformers 5) or
//! `rope_theta` + `rope_scaling` (before), resolved into one [`Rope`].

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{Map, Value};

/// Rotary position settings, resolved from either layout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rope {
    pub rope_type: RopeType,
    pub theta: f64,
    /// `linear` and `llama3`: the factor positions are stretched by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `llama3` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama3: Option<Llama3Rope>,
    /// Where it was read: `rope_parameters` or `rope_theta/rope_scaling`.
    pub source: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeType {
    Default,
    Linear,
    Llama3,
}

crate::named_enum!(RopeType { Default => "default", Linear => "linear", Llama3 => "llama3" });

/// Llama 3.1's frequency-dependent scaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Llama3Rope {
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Rotary settings from `rope_parameters` (transformers 5), else `rope_theta` + `rope_scaling`.
pub(super) fn rope(obj: &Map<String, Value>) -> Result<Rope> {
    if let Some(p) = obj.get("rope_parameters").filter(|v| !v.is_null()) {
        let p = p.as_object().context("rope_parameters is not an object")?;
        let rope = rope_from(
            p,
            "rope_parameters",
            p.get("rope_theta").or(obj.get("rope_theta")),
        )?;
        // A config carrying both layouts must not say two things.
        if obj.contains_key("rope_theta") || obj.get("rope_scaling").is_some_and(|v| !v.is_null()) {
            let legacy = legacy_rope(obj)?;
            if (
                legacy.rope_type,
                legacy.theta,
                legacy.factor,
                &legacy.llama3,
            ) != (rope.rope_type, rope.theta, rope.factor, &rope.llama3)
            {
                bail!(
                    "rope_parameters ({}) and rope_theta / rope_scaling ({}) disagree",
                    Value::Object(p.clone()),
                    serde_json::json!({"rope_theta": obj.get("rope_theta"),
                                       "rope_scaling": obj.get("rope_scaling")})
                );
            }
        }
        return Ok(rope);
    }
    legacy_rope(obj)
}

fn legacy_rope(obj: &Map<String, Value>) -> Result<Rope> {
    let empty = Map::new();
    let scaling = match obj.get("rope_scaling") {
        None | Some(Value::Null) => &empty,
        Some(v) => v.as_object().context("rope_scaling is not an object")?,
    };
    rope_from(scaling, "rope_scaling", obj.get("rope_theta"))
}

/// Keys a rope block may hold; any other changes the computation in a way not implemented
/// (`partial_rotary_factor`, yarn's `beta_fast`, longrope's factor lists, ...).
const ROPE_KEYS: &[&str] = &[
    "rope_type",
    "type",
    "rope_theta",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];

/// One rope block (`field` names it in errors); `theta` as found, 10,000 when absent (the
/// transformers default for Llama).
fn rope_from(
    block: &Map<String, Value>,
    field: &'static str,
    theta: Option<&Value>,
) -> Result<Rope> {
    let name = block
        .get("rope_type")
        .or(block.get("type"))
        .map(|v| {
            v.as_str()
                .with_context(|| format!("{field}.rope_type {v} is not a string"))
        })
        .transpose()?
        .unwrap_or("default");
    let rope_type: RopeType = name.parse().map_err(|_| {
        anyhow::anyhow!(
            "{field}.rope_type {name:?} is not supported (supported: {})",
            RopeType::NAMES.join(", ")
        )
    })?;
    if let Some(k) = block.keys().find(|k| !ROPE_KEYS.contains(&k.as_str())) {
        bail!("{field}.{k} ({}) is not supported", block[k]);
    }
    let number = |k: &str| -> Result<Option<f64>> {
        block
            .get(k)
            .filter(|v| !v.is_null())
            .map(|v| {
                v.as_f64()
                    .with_context(|| format!("{field}.{k} {v} is not a number"))
            })
            .transpose()
    };
    let required = |k: &str| -> Result<f64> {
        number(k)?.with_context(|| format!("{field}.rope_type {name:?} needs {field}.{k}"))
    };
    let theta = match theta.filter(|v| !v.is_null()) {
        Some(v) => v
            .as_f64()
            .with_context(|| format!("rope_theta {v} is not a number"))?,
        None => 10_000.0,
    };
    let (factor, llama3) = match rope_type {
        RopeType::Default => (None, None),
        RopeType::Linear => (Some(required("factor")?), None),
        RopeType::Llama3 => (
            Some(required("factor")?),
            Some(Llama3Rope {
                low_freq_factor: required("low_freq_factor")?,
                high_freq_factor: required("high_freq_factor")?,
                original_max_position_embeddings: required("original_max_position_embeddings")?
                    as usize,
            }),
        ),
    };
    Ok(Rope {
        rope_type,
        theta,
        factor,
        llama3,
        source: if field == "rope_parameters" {
            "rope_parameters"
        } else {
            "rope_theta/rope_scaling"
        },
    })
}

impl std::fmt::Display for Rope {
    /// One line for `embed info`: type, base, scaling, and where it was read.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, theta {}", self.rope_type, self.theta)?;
        if let Some(factor) = self.factor {
            write!(f, ", factor {factor}")?;
        }
        if let Some(l) = &self.llama3 {
            write!(
                f,
                ", low_freq_factor {}, high_freq_factor {}, original_max_position_embeddings {}",
                l.low_freq_factor, l.high_freq_factor, l.original_max_position_embeddings
            )?;
        }
        write!(f, " (from {})", self.source)
    }
}

impl Rope {
    /// Inverse frequencies for heads of `head_dim`, scaling applied (Llama 3.1's
    /// frequency-dependent scaling as transformers computes it).
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base =
            (0..head_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f64 / head_dim as f64));
        let factor = self.factor.unwrap_or(1.0);
        match (&self.rope_type, &self.llama3) {
            (RopeType::Linear, _) => base.map(|f| (f / factor) as f32).collect(),
            (RopeType::Llama3, Some(l)) => {
                let (low, high) = (l.low_freq_factor, l.high_freq_factor);
                let old_ctx = l.original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
                base.map(|freq| {
                    let wavelen = 2.0 * std::f64::consts::PI / freq;
                    let scaled = if wavelen < high_wavelen {
                        freq
                    } else if wavelen > low_wavelen {
                        freq / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    };
                    scaled as f32
                })
                .collect()
            }
            _ => base.map(|f| f as f32).collect(),
        }
    }
}
