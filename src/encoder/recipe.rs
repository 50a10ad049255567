//! The per-model embedding recipe: how texts become vectors. Read from the checkpoint's own files
//! (config.json, sentence-transformers' modules.json / 1_Pooling / config_sentence_transformers.json /
//! sentence_bert_config.json), then overridden by flags.
//!
//! A wrong recipe raises no error, it only gives worse neighbours, so every default here is
//! chosen from what the checkpoint says about itself.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use super::source::ModelFiles;

pub const DEFAULT_INSTRUCTION: &str =
    "Given a math problem, retrieve solved problems that are similar to it";
pub const DEFAULT_QUERY_TEMPLATE: &str = "Instruct: {instruction}\nQuery: {text}";
pub const DEFAULT_DOCUMENT_TEMPLATE: &str = "{text}";
/// Decoder configs often advertise 128k positions; attention memory grows with the square of the
/// length, so an unset `--max-length` stops here.
pub const DECODER_DEFAULT_MAX_LENGTH: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Llama,
    /// Qwen3: Llama's build plus an RMSNorm on each query and key head (Qwen3-Embedding).
    Qwen3,
    /// Qwen2: Llama's build with q/k/v biases (gte-Qwen2).
    Qwen2,
    /// Mistral: Llama's build with sliding-window attention (e5-mistral, SFR-Embedding).
    Mistral,
    Bert,
}

impl Architecture {
    /// Built like Llama (pre-norm decoder, rotary positions, SwiGLU): one decoder runs them all.
    pub fn is_decoder(self) -> bool {
        self != Architecture::Bert
    }
}

pub const SUPPORTED_ARCHITECTURES: &str = "llama (model_type \"llama\" or \"llama_bidirec\": \
     LlamaModel, LlamaForCausalLM, LlamaBidirectionalModel), qwen3 (Qwen3Model, e.g. \
     Qwen3-Embedding), qwen2 (Qwen2Model, e.g. gte-Qwen2), mistral (MistralModel, e.g. \
     e5-mistral) and bert (model_type \"bert\": BertModel, e.g. all-MiniLM-L6-v2, bge)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    Causal,
    Bidirectional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Last,
    Cls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingSide {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    Query,
    Document,
}

crate::named_enum!(Attention { Causal => "causal", Bidirectional => "bidirectional" });
crate::named_enum!(Pooling { Mean => "mean", Last => "last", Cls => "cls" });
crate::named_enum!(PaddingSide { Left => "left", Right => "right" });
crate::named_enum!(TextKind { Query => "query", Document => "document" });

/// Everything that decides what vector a text gets. Stored in every manifest so that stages
/// never mix vectors made by different recipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub architecture: Architecture,
    pub attention: Attention,
    pub pooling: Pooling,
    pub normalize: bool,
    pub append_eos: bool,
    pub max_length: usize,
    pub document_template: String,
    pub query_template: String,
    pub instruction: String,
    pub padding_side: PaddingSide,
    /// Matryoshka truncation (`--dim N`): keep the first N components of each pooled vector,
    /// then normalise. Absent: the whole vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_dim: Option<usize>,
}

/// Flag values that replace what the checkpoint says. `None` keeps the checkpoint's choice.
#[derive(Debug, Clone, Default)]
pub struct RecipeOverrides {
    pub attention: Option<Attention>,
    pub pooling: Option<Pooling>,
    pub normalize: Option<bool>,
    pub append_eos: Option<bool>,
    pub max_length: Option<usize>,
    pub document_template: Option<String>,
    pub query_template: Option<String>,
    pub instruction: Option<String>,
    pub padding_side: Option<PaddingSide>,
    pub truncate_dim: Option<usize>,
}

impl Recipe {
    /// The exact string fed to the tokenizer for `text`.
    pub fn format(&self, text: &str, kind: TextKind) -> String {
        let template = match kind {
            TextKind::Query => &self.query_template,
            TextKind::Document => &self.document_template,
        };
        // Instruction first: a text containing "{instruction}" must stay untouched.
        template
            .replace("{instruction}", &self.instruction)
            .replace("{text}", text)
    }
}

/// The parts of config.json that decide the architecture and the recipe.
#[derive(Debug, Deserialize)]
struct ConfigHead {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    /// llama-embed-nemotron writes `"pooling": "avg"` into config.json.
    #[serde(default)]
    pooling: Option<String>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    hidden_size: Option<usize>,
}

pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

pub fn detect_architecture(config_path: &Path, config: &serde_json::Value) -> Result<Architecture> {
    let head: ConfigHead = serde_json::from_value(config.clone())
        .with_context(|| format!("{}: unexpected field types", config_path.display()))?;
    let model_type = head.model_type.as_deref().unwrap_or("");
    let archs = head.architectures.unwrap_or_default();
    let is = |names: &[&str]| archs.iter().any(|a| names.contains(&a.as_str()));
    if matches!(model_type, "llama" | "llama_bidirec")
        || is(&["LlamaModel", "LlamaForCausalLM", "LlamaBidirectionalModel"])
    {
        return Ok(Architecture::Llama);
    }
    for (ty, arch) in [
        ("qwen3", Architecture::Qwen3),
        ("qwen2", Architecture::Qwen2),
        ("mistral", Architecture::Mistral),
    ] {
        let prefix = |a: &String| a.to_ascii_lowercase().starts_with(ty);
        if model_type == ty || (model_type.is_empty() && archs.iter().any(prefix)) {
            return Ok(arch);
        }
    }
    if model_type == "bert" || is(&["BertModel", "BertForMaskedLM"]) {
        return Ok(Architecture::Bert);
    }
    bail!(
        "{}: unsupported architecture (model_type {:?}, architectures {:?}); supported: {}",
        config_path.display(),
        model_type,
        archs,
        SUPPORTED_ARCHITECTURES
    )
}

/// Build the recipe from the checkpoint's files, then apply `overrides`.
pub fn resolve_recipe(
    files: &ModelFiles,
    config: &serde_json::Value,
    architecture: Architecture,
    overrides: &RecipeOverrides,
) -> Result<Recipe> {
    let head: ConfigHead = serde_json::from_value(config.clone())
        .with_context(|| format!("{}: unexpected field types", files.config.display()))?;
    let archs = head.architectures.clone().unwrap_or_default();
    let bidirectional_llama = head.model_type.as_deref() == Some("llama_bidirec")
        || archs.iter().any(|a| a == "LlamaBidirectionalModel")
        || head.pooling.as_deref() == Some("avg");

    let (attention, mut pooling) = match architecture {
        Architecture::Bert => (Attention::Bidirectional, Pooling::Mean),
        Architecture::Llama if bidirectional_llama => (Attention::Bidirectional, Pooling::Mean),
        // A plain decoder used as an embedder: causal attention, last token sees the whole text.
        _ => (Attention::Causal, Pooling::Last),
    };
    let st_pooling = sentence_transformers_pooling(files)?;
    if let Some(p) = st_pooling {
        pooling = p;
    }
    // Qwen3-Embedding's recipe pools the last token on an EOS its tokenizer appends; with a
    // tokenizer that appends none, the EOS is added here (see `tokenizer_appends_eos`).
    let append_eos = architecture.is_decoder()
        && st_pooling == Some(Pooling::Last)
        && !tokenizer_appends_eos(files, config)?;

    let max_length = max_length(files, &head, architecture)?;

    let (st_query, st_document) = sentence_transformers_prompts(files)?;
    let (st_query, st_instruction) = match st_query.as_deref().and_then(instruct_template) {
        Some((template, instruction)) => (Some(template), Some(instruction)),
        None => (st_query, None),
    };
    let recipe = Recipe {
        architecture,
        attention,
        pooling,
        normalize: true,
        append_eos,
        max_length,
        document_template: st_document.unwrap_or_else(|| DEFAULT_DOCUMENT_TEMPLATE.to_string()),
        // Decoder embedders are trained with an instruction on the query side; BERT-family
        // sentence encoders (without prompts of their own) embed queries as plain text.
        query_template: st_query.unwrap_or_else(|| match architecture {
            Architecture::Bert => DEFAULT_DOCUMENT_TEMPLATE.to_string(),
            _ => DEFAULT_QUERY_TEMPLATE.to_string(),
        }),
        instruction: st_instruction.unwrap_or_else(|| DEFAULT_INSTRUCTION.to_string()),
        // The reference usage of decoder embedders pads on the left; BERT's absolute positions
        // need right padding.
        padding_side: match architecture {
            Architecture::Bert => PaddingSide::Right,
            _ => PaddingSide::Left,
        },
        truncate_dim: None,
    };
    let recipe = overrides.apply(recipe)?;
    if let (Some(n), Some(dim)) = (recipe.truncate_dim, head.hidden_size) {
        if n == 0 || n > dim {
            bail!("--dim {n}: the model's vectors have {dim} components (pass 1 to {dim})");
        }
    }
    check_recipe(&recipe)?;
    Ok(recipe)
}

/// Tokens per text: sentence-transformers' `max_seq_length` where given, else the positions
/// the config declares (decoders capped at [`DECODER_DEFAULT_MAX_LENGTH`]); BERT never beyond
/// its absolute position embeddings.
fn max_length(files: &ModelFiles, head: &ConfigHead, architecture: Architecture) -> Result<usize> {
    let declared = head.max_position_embeddings;
    let n = match sentence_bert_max_length(files)? {
        Some(n) => n,
        None => match architecture {
            Architecture::Bert => declared.unwrap_or(512),
            _ => declared
                .unwrap_or(DECODER_DEFAULT_MAX_LENGTH)
                .min(DECODER_DEFAULT_MAX_LENGTH),
        },
    };
    Ok(match architecture {
        Architecture::Bert => n.min(declared.unwrap_or(512)),
        _ => n,
    })
}

impl RecipeOverrides {
    /// The flags' values over the checkpoint's.
    fn apply(&self, mut recipe: Recipe) -> Result<Recipe> {
        if let Some(n) = self.max_length {
            if n < 2 {
                bail!("--max-length must be at least 2, got {n}");
            }
            recipe.max_length = n;
        }
        let set = |slot: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                *slot = v.clone();
            }
        };
        set(&mut recipe.document_template, &self.document_template);
        set(&mut recipe.query_template, &self.query_template);
        set(&mut recipe.instruction, &self.instruction);
        recipe.attention = self.attention.unwrap_or(recipe.attention);
        recipe.pooling = self.pooling.unwrap_or(recipe.pooling);
        recipe.normalize = self.normalize.unwrap_or(recipe.normalize);
        recipe.append_eos = self.append_eos.unwrap_or(recipe.append_eos);
        recipe.padding_side = self.padding_side.unwrap_or(recipe.padding_side);
        recipe.truncate_dim = self.truncate_dim.or(recipe.truncate_dim);
        Ok(recipe)
    }
}

/// Combinations that cannot give correct vectors.
fn check_recipe(recipe: &Recipe) -> Result<()> {
    for (name, t) in [
        ("document template", &recipe.document_template),
        ("query template", &recipe.query_template),
    ] {
        if !t.contains("{text}") {
            bail!("the {name} {t:?} has no {{text}} placeholder");
        }
    }
    if recipe.architecture == Architecture::Bert {
        if recipe.attention == Attention::Causal {
            bail!("--attention causal is not available for BERT models");
        }
        if recipe.padding_side == PaddingSide::Left {
            bail!("BERT models use absolute positions and need --padding-side right");
        }
    }
    Ok(())
}

/// Pooling from `1_Pooling/config.json` (or whichever folder modules.json names for Pooling).
fn sentence_transformers_pooling(files: &ModelFiles) -> Result<Option<Pooling>> {
    let mut folder = "1_Pooling".to_string();
    if let Some(modules) = files.optional("modules.json") {
        let json = read_json(&modules)?;
        if let Some(list) = json.as_array() {
            for m in list {
                let ty = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
                if ty.ends_with("Pooling") {
                    if let Some(p) = m.get("path").and_then(|p| p.as_str()) {
                        folder = p.to_string();
                    }
                }
            }
        }
    }
    let Some(path) = files.optional(&format!("{folder}/config.json")) else {
        return Ok(None);
    };
    let json = read_json(&path)?;
    let flag = |k: &str| json.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let mode = if flag("pooling_mode_cls_token") {
        Some(Pooling::Cls)
    } else if flag("pooling_mode_lasttoken") {
        Some(Pooling::Last)
    } else if flag("pooling_mode_mean_tokens") {
        Some(Pooling::Mean)
    } else {
        None
    };
    if mode.is_none() {
        bail!(
            "{}: no supported pooling mode set (supported: mean_tokens, cls_token, lasttoken)",
            path.display()
        );
    }
    Ok(mode)
}

fn sentence_bert_max_length(files: &ModelFiles) -> Result<Option<usize>> {
    let Some(path) = files.optional("sentence_bert_config.json") else {
        return Ok(None);
    };
    let json = read_json(&path)?;
    Ok(json
        .get("max_seq_length")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize))
}

/// Query / document prompts from config_sentence_transformers.json, as templates.
fn sentence_transformers_prompts(files: &ModelFiles) -> Result<(Option<String>, Option<String>)> {
    let Some(path) = files.optional("config_sentence_transformers.json") else {
        return Ok((None, None));
    };
    let json = read_json(&path)?;
    let prompts = json.get("prompts").and_then(|p| p.as_object());
    let get = |names: &[&str]| {
        names.iter().find_map(|n| {
            prompts
                .and_then(|p| p.get(*n))
                .and_then(|v| v.as_str())
                .map(|prefix| format!("{prefix}{{text}}"))
        })
    };
    Ok((get(&["query"]), get(&["document", "passage"])))
}

/// Qwen3-Embedding's query prompt, `Instruct: <task>\nQuery:` (with or without a space after),
/// as a template with an `{instruction}` slot and its task: the task is what users replace with
/// their own (`--instruction`), as the model card says to.
fn instruct_template(template: &str) -> Option<(String, String)> {
    let prefix = template.strip_suffix("{text}")?;
    let rest = prefix.strip_prefix("Instruct: ")?;
    let (task, tail) = rest.split_once("\nQuery:")?;
    if task.contains('{') || !tail.trim().is_empty() {
        return None;
    }
    Some((
        format!("Instruct: {{instruction}}\nQuery:{tail}{{text}}"),
        task.to_string(),
    ))
}

/// Whether the tokenizer's post-processor ends every single text with the EOS token (Qwen3-
/// Embedding's tokenizer does; SmolLM2's and Llama's add none). Read from tokenizer.json alone:
/// a `TemplateProcessing` whose `single` template ends with a special token that is the EOS
/// (config.json's `eos_token_id`, else tokenizer_config.json's `eos_token`).
fn tokenizer_appends_eos(files: &ModelFiles, config: &serde_json::Value) -> Result<bool> {
    // `embed info --estimate` may look at a folder holding config.json alone.
    if !files.tokenizer.is_file() {
        return Ok(false);
    }
    let tokenizer = read_json(&files.tokenizer)?;
    let Some(post) = tokenizer.get("post_processor").filter(|p| !p.is_null()) else {
        return Ok(false);
    };
    // A `Sequence` of processors: any of them may add it.
    let processors = match post.get("processors").and_then(|p| p.as_array()) {
        Some(list) => list.iter().collect(),
        None => vec![post],
    };
    let eos_content = eos_token_content(files, config, &tokenizer)?;
    let Some(eos) = eos_content else {
        return Ok(false);
    };
    Ok(processors.iter().any(|p| {
        let last = p
            .get("single")
            .and_then(|s| s.as_array())
            .and_then(|s| s.last());
        let special = last
            .and_then(|l| l.get("SpecialToken"))
            .and_then(|t| t.get("id"))
            .and_then(|id| id.as_str());
        special == Some(eos.as_str())
    }))
}

/// The EOS token's text: config.json's `eos_token_id` looked up in tokenizer.json's added
/// tokens, else tokenizer_config.json's `eos_token`.
fn eos_token_content(
    files: &ModelFiles,
    config: &serde_json::Value,
    tokenizer: &serde_json::Value,
) -> Result<Option<String>> {
    let id = config
        .get("eos_token_id")
        .and_then(|v| v.as_u64().or_else(|| v.as_array()?.first()?.as_u64()));
    if let Some(id) = id {
        let added = tokenizer.get("added_tokens").and_then(|a| a.as_array());
        let found = added.into_iter().flatten().find_map(|t| {
            (t.get("id")?.as_u64()? == id).then(|| t.get("content")?.as_str().map(String::from))?
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    let Some(path) = files.optional("tokenizer_config.json") else {
        return Ok(None);
    };
    let tc = read_json(&path)?;
    let token = tc.get("eos_token");
    Ok(token
        .and_then(|t| t.as_str().or_else(|| t.get("content")?.as_str()))
        .map(String::from))
}
