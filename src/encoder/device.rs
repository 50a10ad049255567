//! Where a model runs and in what precision, parsed once from the command line and carried
//! typed from there on (manifests store them as the same strings: `cpu`, `cuda:0`, `bf16`).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by ordinal (needs a build with the `cuda` feature).
    Cuda(usize),
}

impl Device {
    pub fn is_cpu(self) -> bool {
        self == Device::Cpu
    }

    /// The candle device; CUDA is refused clearly by a build without the `cuda` feature.
    pub fn open(self) -> Result<candle_core::Device> {
        match self {
            Device::Cpu => Ok(candle_core::Device::Cpu),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                candle_core::Device::new_cuda(n).with_context(|| format!("opening CUDA device {n}"))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(n) => bail!(
                "--device cuda:{n}: this build has no CUDA support; rebuild with `--features cuda` \
                 (scripts/build-cuda.sh)"
            ),
        }
    }
}

impl FromStr for Device {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => {
                    Ok(Device::Cuda(n.parse().with_context(|| {
                        format!("device {s:?}: expected cuda:N")
                    })?))
                }
                None => bail!("device {s:?}: expected cpu or cuda:N"),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<Device> for String {
    fn from(d: Device) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Device {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Weight and activation precision (pooling is always done in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    F32,
    BF16,
    F16,
    /// int8 weights per output channel and activations per row (CPU engine only).
    Int8,
}

impl DType {
    /// The candle dtype; int8 has none (it runs on the CPU engine only).
    pub fn to_candle(self) -> Result<candle_core::DType> {
        match self {
            DType::F32 => Ok(candle_core::DType::F32),
            DType::BF16 => Ok(candle_core::DType::BF16),
            DType::F16 => Ok(candle_core::DType::F16),
            DType::Int8 => {
                bail!("--dtype int8 runs on the CPU only (use --device cpu, or bf16 on a GPU)")
            }
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::Int8 => 1,
        }
    }
}

impl FromStr for DType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" => Ok(DType::F16),
            "int8" => Ok(DType::Int8),
            other => bail!("dtype {other:?}: expected f32, bf16, f16 or int8"),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::Int8 => "int8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in ["cpu", "cuda:0", "cuda:7"] {
            assert_eq!(s.parse::<Device>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        assert_eq!(
            serde_json::to_string(&Device::Cuda(1)).unwrap(),
            "\"cuda:1\""
        );
        assert_eq!(serde_json::to_string(&DType::BF16).unwrap(), "\"bf16\"");
        assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::BF16);
        assert!("f64".parse::<DType>().is_err());
    }
}
