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
    Bert,
}

pub const SUPPORTED_ARCHITECTURES: &str = "llama (model_type \"llama\" or \"llama_bidirec\": \
     LlamaModel, LlamaForCausalLM, LlamaBidirectionalModel) and bert (model_type \"bert\": BertModel, \
     e.g. all-MiniLM-L6-v2, bge)";

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
        Architecture::Llama => (Attention::Causal, Pooling::Last),
    };
    if let Some(p) = sentence_transformers_pooling(files)? {
        pooling = p;
    }

    let mut max_length = match sentence_bert_max_length(files)? {
        Some(n) => n,
        None => match architecture {
            Architecture::Bert => head.max_position_embeddings.unwrap_or(512),
            Architecture::Llama => head
                .max_position_embeddings
                .unwrap_or(DECODER_DEFAULT_MAX_LENGTH)
                .min(DECODER_DEFAULT_MAX_LENGTH),
        },
    };
    if architecture == Architecture::Bert {
        // Absolute position embeddings end there.
        max_length = max_length.min(head.max_position_embeddings.unwrap_or(512));
    }

    let (st_query, st_document) = sentence_transformers_prompts(files)?;
    let recipe = Recipe {
        architecture,
        attention,
        pooling,
        normalize: true,
        append_eos: false,
        max_length,
        document_template: st_document.unwrap_or_else(|| DEFAULT_DOCUMENT_TEMPLATE.to_string()),
        // Decoder embedders are trained with an instruction on the query side; BERT-family
        // sentence encoders (without prompts of their own) embed queries as plain text.
        query_template: st_query.unwrap_or_else(|| match architecture {
            Architecture::Llama => DEFAULT_QUERY_TEMPLATE.to_string(),
            Architecture::Bert => DEFAULT_DOCUMENT_TEMPLATE.to_string(),
        }),
        instruction: DEFAULT_INSTRUCTION.to_string(),
        // The reference usage of decoder embedders pads on the left; BERT's absolute positions
        // need right padding.
        padding_side: match architecture {
            Architecture::Llama => PaddingSide::Left,
            Architecture::Bert => PaddingSide::Right,
        },
    };
    let recipe = overrides.apply(recipe)?;
    check_recipe(&recipe)?;
    Ok(recipe)
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
