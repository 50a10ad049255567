//! The embedding engine: loads a Hugging Face checkpoint (Llama-family decoder embedders or BERT
//! encoders), tokenises with the model's own tokenizer.json, runs length-sorted token-budget
//! batches through the forward pass and pools each text into one vector.

pub mod attention;
pub mod backbone;
pub mod batching;
pub mod candle;
mod checkpoint;
pub mod config;
pub mod cpu;
pub mod decoder;
pub mod device;
mod encode;
pub mod estimate;
#[cfg(feature = "hub")]
mod hub;
pub mod llama;
pub mod recipe;
pub mod source;

pub use attention::{AttentionBlocks, ATTENTION_BLOCK_ENV, DEFAULT_ATTENTION_BLOCK_ROWS};
pub use backbone::Backbone;
pub use batching::{plan_batches, BatchBudget};
pub use candle::pooling;
pub use checkpoint::{fingerprint, Checkpoint, ModelInfo};
pub use config::{checkpoint_dtype, ModelConfig};
pub use device::{DType, Device};
pub use encode::{Encoded, Encoder, Tokenized};
pub use estimate::{estimate_memory, MemoryEstimate, WorstBatch};
pub use recipe::{
    Architecture, Attention, PaddingSide, Pooling, Recipe, RecipeOverrides, TextKind,
    DEFAULT_INSTRUCTION, DEFAULT_QUERY_TEMPLATE,
};
pub use source::ModelFiles;

/// Default token budget per forward pass on a CPU. Measured with all-MiniLM-L6-v2 on 2 cores,
/// 2,000 MATH problems, the CPU engine: 1024 tokens 89 texts/s, 2048 88, 4096 91, 8192 93-95,
/// 16384 94 (peak RSS 263 MB at 2048, 289 MB at 8192, 414 MB at 16384). candle's backend
/// preferred 1024-2048 (64-72 texts/s; 42-53 at 8192, as its intermediates outgrow the caches):
/// `EXEMPLAR_CPU_ENGINE=candle` runs should pass `--max-batch-tokens 2048`. See README,
/// "Benchmarks".
pub const DEFAULT_MAX_BATCH_TOKENS_CPU: usize = 8192;
/// On a GPU bigger batches keep the device busy.
pub const DEFAULT_MAX_BATCH_TOKENS_GPU: usize = 16384;
/// Attention-score budget of one forward pass on a CPU (see [`BatchBudget`]).
pub const DEFAULT_MAX_ATTENTION_BYTES_CPU: usize = 1 << 30;
/// On a GPU: 32 heads x 512 rows x 32k keys x 4 bytes, one 32k-token text of an 8B model.
pub const DEFAULT_MAX_ATTENTION_BYTES_GPU: usize = 2 << 30;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct EncoderOptions {
    pub device: Device,
    /// Weight and activation precision; `None` follows [`resolve_dtype`]'s rule.
    pub dtype: Option<DType>,
    pub overrides: RecipeOverrides,
    /// Padded-token budget per forward pass; `None` picks a default for the device.
    pub max_batch_tokens: Option<usize>,
}

impl EncoderOptions {
    /// The padded-token budget these options resolve to.
    pub fn batch_tokens(&self) -> usize {
        self.max_batch_tokens
            .unwrap_or(if self.device.is_cpu() {
                DEFAULT_MAX_BATCH_TOKENS_CPU
            } else {
                DEFAULT_MAX_BATCH_TOKENS_GPU
            })
            .max(1)
    }

    /// The attention-score budget for this device.
    pub fn attention_bytes(&self) -> usize {
        if self.device.is_cpu() {
            DEFAULT_MAX_ATTENTION_BYTES_CPU
        } else {
            DEFAULT_MAX_ATTENTION_BYTES_GPU
        }
    }
}

/// The precision a model runs in: the one asked for; otherwise f32 on the CPU (bf16 and f16
/// matmuls are slow there) and, on CUDA, the checkpoint's own `torch_dtype` from config.json
/// (`dtype` in newer transformers), which is what its weights are stored in: bf16 for
/// llama-embed-nemotron-8b. A missing or unknown value gives f32.
pub fn resolve_dtype(
    requested: Option<DType>,
    device: Device,
    config: &serde_json::Value,
) -> DType {
    if let Some(d) = requested {
        return d;
    }
    if device.is_cpu() {
        return DType::F32;
    }
    checkpoint_dtype(config).unwrap_or(DType::F32)
}

/// Cosine similarity of two vectors (for tests and diagnostics).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dtype_follows_the_flag_then_the_device_then_the_checkpoint() {
        let bf16 = json!({"torch_dtype": "bfloat16"});
        let cuda = Device::Cuda(0);
        assert_eq!(resolve_dtype(None, Device::Cpu, &bf16), DType::F32);
        assert_eq!(resolve_dtype(None, cuda, &bf16), DType::BF16);
        assert_eq!(resolve_dtype(Some(DType::F16), cuda, &bf16), DType::F16);
        assert_eq!(
            resolve_dtype(Some(DType::BF16), Device::Cpu, &bf16),
            DType::BF16
        );
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"dtype": "float16"})),
            DType::F16
        );
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"torch_dtype": "float32"})),
            DType::F32
        );
        // Missing or unusable: f32.
        assert_eq!(resolve_dtype(None, cuda, &json!({})), DType::F32);
        assert_eq!(
            resolve_dtype(None, cuda, &json!({"torch_dtype": "float64"})),
            DType::F32
        );
    }
}
