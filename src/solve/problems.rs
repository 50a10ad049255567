//! The problems to solve: records of csv / jsonl / parquet with a problem text, an id, and
//! optionally `answer` (for `--eval`) and `source`. The problem and id fields are found as
//! `embed extract` finds its text and ids (docs/corpora.md): `problem`, `question`, `prompt`,
//! `text`, or the last user turn of `messages`/`conversations`; `id`, else `FILE:LINE`.

use anyhow::{bail, Result};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::Path;

use super::answer;
use crate::extract::plan::{field_list, TextChoice, TextSpec, CHAT_FIELDS, LINE_IDS, TEXT_FIELDS};
use crate::progress::Progress;

/// A problem to solve.
#[derive(Debug, Clone)]
pub struct Problem {
    pub id: String,
    pub problem: String,
    pub expected: Option<u64>,
    pub source: Option<String>,
}

/// `--problem-field` and `--id-field`; what is unset is found from the first record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProblemFields {
    pub problem: Option<String>,
    pub id: Option<String>,
}

/// Read every problem of `path`; what was detected rather than given is logged once.
pub fn read_problems(
    path: &Path,
    fields: &ProblemFields,
    progress: &dyn Progress,
) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut spec: Option<TextSpec> = None;
    for raw in crate::corpus::stream_records(&[path.to_path_buf()]) {
        let raw = raw?;
        let loc = raw.location();
        let record = raw.fields.map_err(|e| anyhow::anyhow!("{loc}: {e}"))?;
        let spec = match &mut spec {
            Some(s) => s,
            None => spec.insert(resolve(path, fields, &record, &loc, progress)?),
        };
        let (id, problem, _) = match spec.apply_at(&record, &raw.file, raw.line) {
            Ok(v) => v,
            Err(e) => bail!("{loc}: {e}"),
        };
        if !seen.insert(id.clone()) {
            bail!("{loc}: duplicate id {id:?}");
        }
        let expected = ["answer_int", "answer"]
            .iter()
            .find_map(|k| match record.get(*k) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => answer::parse_integer(s),
                _ => None,
            });
        let source = crate::corpus::field_as_text(&record, "source");
        out.push(Problem {
            id,
            problem,
            expected,
            source,
        });
    }
    if out.is_empty() {
        bail!("{}: no problems", path.display());
    }
    Ok(out)
}

/// The problem and id fields for a file whose first record is `first`.
fn resolve(
    path: &Path,
    fields: &ProblemFields,
    first: &Map<String, Value>,
    loc: &str,
    progress: &dyn Progress,
) -> Result<TextSpec> {
    let choice = TextChoice {
        id_field: fields.id.clone(),
        text_field: fields.problem.clone(),
        doc_template: None,
    };
    let Ok((spec, _)) = choice.resolve(first, loc) else {
        bail!(
            "{loc}: no problem field found: looked for {}, or a {} list of {{role, content}} \
             turns with a user turn; this record has fields {}. Choose one with \
             --problem-field NAME",
            TEXT_FIELDS.join(", "),
            CHAT_FIELDS.join("/"),
            field_list(first.keys())
        );
    };
    let file = path.display();
    if spec.id_field == LINE_IDS {
        progress.log(&format!(
            "{file}: the problems have no \"id\" field: ids are FILE:LINE (the first is {}); \
             --id-field NAME to use a field",
            crate::extract::plan::line_id(&file.to_string(), line_of(loc))
        ));
    }
    if fields.problem.is_none() && spec.doc_template != "{problem}" {
        progress.log(&format!(
            "{file}: the problem is {} (detected; --problem-field NAME to choose another)",
            spec.doc_template
        ));
    }
    Ok(spec)
}

fn line_of(loc: &str) -> usize {
    loc.rsplit_once(':')
        .and_then(|(_, l)| l.parse().ok())
        .unwrap_or(0)
}
