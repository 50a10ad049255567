//! Corpora as users have them, and extractions that cannot fail silently: `embed extract` and
//! `embed index build` run as processes on real files with the tiny fixture model.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::{embed, embed_cmd, read_json, repo, tiny_llama as tiny};

/// `embed ARGS` run in `cwd` (the test's own folder when None).
fn embed_in(cwd: Option<&Path>, args: &[&str]) -> Output {
    let mut c = embed_cmd(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    c.output().unwrap()
}

/// (stdout, stderr) of a run that must succeed.
fn ok(o: Output) -> (String, String) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "failed: {err}");
    (String::from_utf8_lossy(&o.stdout).into_owned(), err)
}

/// stderr of a run that must fail.
fn fails(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "unexpectedly succeeded: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `embed extract --quiet --model TINY --input INPUT --out OUT EXTRA...`
fn extract(input: &Path, out: &Path, extra: &[&str]) -> Output {
    embed_cmd(&["extract", "--quiet", "--model"])
        .arg(tiny())
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn index_build(emb: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "index",
        "build",
        "--quiet",
        "--embeddings",
        s(emb),
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    embed(&args)
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// id -> (vector, the other columns) over every shard of an extraction.
fn shards(dir: &Path) -> BTreeMap<String, (Vec<f32>, Map<String, Value>)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float32Type;
    let mut out = BTreeMap::new();
    for batch in crate::util::shard_batches(dir) {
        let emb = batch
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list();
        let dim = emb.value_length() as usize;
        let values = emb.values().as_primitive::<Float32Type>().values();
        for i in 0..batch.num_rows() {
            let mut rec = exemplar::arrow_json::row_json(&batch, i, &["embedding"]);
            let id = rec.remove("id").unwrap().as_str().unwrap().to_string();
            let v = values[i * dim..(i + 1) * dim].to_vec();
            assert!(out.insert(id.clone(), (v, rec)).is_none(), "{id} twice");
        }
    }
    out
}

/// The tiny model's document vector of `text`, as `embed encode` makes it.
fn encode(text: &str) -> Vec<f32> {
    let enc = exemplar::encoder::Encoder::load(s(&tiny()), &Default::default()).unwrap();
    let out = enc
        .encode(&[text], exemplar::encoder::TextKind::Document)
        .unwrap();
    out.vectors[0].clone()
}

/// Same vector to float precision (other batches pad differently).
fn assert_same_vector(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let dot: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        dot > 0.99999 && max < 1e-4,
        "{what}: cosine {dot}, max diff {max}"
    );
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn sample_lines(n: usize) -> Vec<Value> {
    std::fs::read_to_string(repo().join("datasets/sample/train.jsonl"))
        .unwrap()
        .lines()
        .take(n)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A small corpus of the bundled sample (id, problem, ...) at `dir/corpus.jsonl`.
fn corpus(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    write_lines(&path, &sample_lines(n));
    path
}

#[test]
fn records_without_an_id_field_get_file_and_line_ids() {
    let tmp = tempfile::tempdir().unwrap();
    // NuminaMath-style: no id. Line 3 is blank, so the third record is on line 4.
    let input = tmp.path().join("numina.jsonl");
    let rec = |p: &str| json!({"problem": p, "solution": "s", "answer": "1"}).to_string();
    let text = [
        rec("What is 1+1?"),
        rec("What is 2+2?"),
        String::new(),
        rec("3+3?"),
    ];
    std::fs::write(&input, text.join("\n") + "\n").unwrap();
    let out = tmp.path().join("emb");
    let (_, err) = ok(extract(&input, &out, &["--shards", "2"]));
    assert_eq!(
        err.matches("ids are FILE:LINE").count(),
        1,
        "said once: {err}"
    );
    let got = shards(&out);
    let ids: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(ids, ["numina.jsonl:1", "numina.jsonl:2", "numina.jsonl:4"]);
    assert_same_vector(&got["numina.jsonl:4"].0, &encode("3+3?"), "text");
    assert_eq!(got["numina.jsonl:4"].1["answer"], "1");
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(m["text"]["id_field"], "{file}:{line}");

    // Parquet rows are numbered from 1.
    let pq = tmp.path().join("rows.parquet");
    write_chat_parquet(&pq, false);
    let out = tmp.path().join("emb-pq");
    ok(extract(&pq, &out, &["--shards", "1"]));
    let ids: Vec<String> = shards(&out).into_keys().collect();
    assert_eq!(ids, ["rows.parquet:1", "rows.parquet:2"]);

    // A named id field stays required, and the error lists the fields there are.
    let err = fails(extract(
        &input,
        &tmp.path().join("e3"),
        &["--id-field", "id"],
    ));
    assert!(
        err.contains("missing id field \"id\"") && err.contains("\"solution\""),
        "{err}"
    );
}

#[test]
fn the_text_field_is_detected_or_the_fields_found_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let gsm = tmp.path().join("gsm8k.jsonl");
    write_lines(
        &gsm,
        &[
            json!({"id": "g1", "question": "Tom has 3 apples.", "answer": "#### 3"}),
            json!({"id": "g2", "question": "Ann has 5 pears.", "answer": "#### 5"}),
        ],
    );
    let out = tmp.path().join("emb");
    let (_, err) = ok(extract(&gsm, &out, &["--shards", "1"]));
    assert!(err.contains("{question} (detected"), "{err}");
    assert_eq!(
        read_json(&out.join("manifest.json"))["text"]["doc_template"],
        "{question}"
    );
    assert_same_vector(&shards(&out)["g2"].0, &encode("Ann has 5 pears."), "g2");

    // Naming a field the records do not have says so and lists those they have.
    let err = fails(extract(
        &gsm,
        &tmp.path().join("e2"),
        &["--text-field", "problem"],
    ));
    assert!(
        err.contains("{problem}") && err.contains("\"question\"") && err.contains("\"answer\""),
        "{err}"
    );
    assert!(!err.contains("empty text (template"), "{err}");

    // No known text field: the fields found are listed.
    let odd = tmp.path().join("odd.jsonl");
    write_lines(&odd, &[json!({"id": 1, "body": "x", "title": "y"})]);
    let err = fails(extract(&odd, &tmp.path().join("e3"), &[]));
    assert!(
        err.contains("no text field found") && err.contains("\"body\", \"title\""),
        "{err}"
    );
}

#[test]
fn a_template_field_that_no_record_has_is_refused_listing_the_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let gsm = tmp.path().join("gsm8k.jsonl");
    write_lines(
        &gsm,
        &[
            json!({"id": "g1", "question": "Tom has 3 apples.", "answer": "#### 3"}),
            json!({"id": "g2", "question": "Ann has 5 pears."}),
        ],
    );
    let out = tmp.path().join("emb");
    let err = fails(extract(
        &gsm,
        &out,
        &["--doc-template", "{question}\\n{anwser}"],
    ));
    assert!(
        err.contains("{anwser}")
            && err.contains("no record has")
            && err.contains("\"id\", \"question\", \"answer\""),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written");
    // A field that only some records have is fine: empty where missing.
    ok(extract(
        &gsm,
        &out,
        &["--doc-template", "{question}\\n{answer}"],
    ));
    let got = shards(&out);
    assert_same_vector(&got["g2"].0, &encode("Ann has 5 pears.\n"), "g2");
    assert_same_vector(&got["g1"].0, &encode("Tom has 3 apples.\n#### 3"), "g1");
}

/// Two chat records (`messages`: list of {role, content}), with or without an `id` column.
fn write_chat_parquet(path: &Path, with_id: bool) {
    use arrow::array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, StructArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let turns = [
        ("system", "You are terse."),
        ("user", "What is 6*7?"),
        ("assistant", "42"),
        ("user", "Name a prime."),
        ("assistant", "7"),
    ];
    let string = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    let (role, content) = (
        Arc::new(Field::new("role", DataType::Utf8, true)),
        Arc::new(Field::new("content", DataType::Utf8, true)),
    );
    let structs = StructArray::from(vec![
        (role, string(turns.iter().map(|t| t.0).collect())),
        (content, string(turns.iter().map(|t| t.1).collect())),
    ]);
    let item = Arc::new(Field::new("item", structs.data_type().clone(), true));
    let messages = ListArray::new(
        item.clone(),
        OffsetBuffer::from_lengths([3, 2]),
        Arc::new(structs),
        None,
    );
    let mut fields = vec![Field::new("messages", DataType::List(item), true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(messages)];
    if with_id {
        fields.insert(0, Field::new("id", DataType::Utf8, false));
        columns.insert(0, string(vec!["c1", "c2"]));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn chat_cells_become_json_and_template_paths_pick_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let pq = tmp.path().join("chat.parquet");
    write_chat_parquet(&pq, true);
    // Detected: the last user turn.
    let out = tmp.path().join("emb");
    let (_, err) = ok(extract(&pq, &out, &["--shards", "1"]));
    assert!(err.contains("{messages[role=user][-1].content}"), "{err}");
    let got = shards(&out);
    assert_same_vector(&got["c1"].0, &encode("What is 6*7?"), "c1");
    assert_same_vector(&got["c2"].0, &encode("Name a prime."), "c2");
    // The list passes through as JSON, not a debug string.
    let cell = got["c1"].1["messages"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(cell).unwrap_or_else(|e| panic!("{cell}: {e}"));
    assert_eq!(
        parsed,
        json!([{"role": "system", "content": "You are terse."},
               {"role": "user", "content": "What is 6*7?"},
               {"role": "assistant", "content": "42"}])
    );
    // Explicit paths: first and last turn.
    for (template, c1, c2) in [
        ("{messages[0].content}", "You are terse.", "Name a prime."),
        ("{messages[-1].content}", "42", "7"),
    ] {
        let out = tmp.path().join(format!("emb-{}", c1.len()));
        ok(extract(&pq, &out, &["--doc-template", template]));
        let got = shards(&out);
        assert_same_vector(&got["c1"].0, &encode(c1), template);
        assert_same_vector(&got["c2"].0, &encode(c2), template);
    }
    // A shard's JSON column is itself a chat input: the path steps into the JSON text.
    let again = tmp.path().join("again");
    let shard = out.join("shard-00000-of-00001.parquet");
    ok(extract(&shard, &again, &["--shards", "1"]));
    assert_same_vector(&shards(&again)["c2"].0, &encode("Name a prime."), "again");
}

#[test]
fn corpora_with_id_and_problem_keep_their_ids_texts_and_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 40);
    let out = tmp.path().join("emb");
    let (_, err) = ok(extract(&input, &out, &["--shards", "2"]));
    assert!(
        !err.contains("detected") && !err.contains("FILE:LINE"),
        "{err}"
    );
    let m = read_json(&out.join("manifest.json"));
    assert_eq!(
        m["text"],
        json!({"id_field": "id", "doc_template": "{problem}"})
    );
    let got = shards(&out);
    for rec in sample_lines(40) {
        let id = rec["id"].as_str().unwrap();
        let want = encode(rec["problem"].as_str().unwrap());
        assert_same_vector(&got[id].0, &want, id);
    }
    assert_eq!(got.len(), 40);
}

#[test]
fn a_damaged_shard_fails_index_build_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 60);
    let emb = tmp.path().join("emb");
    ok(extract(&input, &emb, &["--shards", "2"]));
    let m = read_json(&emb.join("manifest.json"));
    let recorded = &m["shard_files"]["shard-00001-of-00002.parquet"];
    assert_eq!(recorded["sha256"].as_str().unwrap().len(), 64, "{m}");
    assert_eq!(recorded["rows"], m["rows_per_shard"][1]);
    // Flip bytes in the middle of the second shard (data pages, not the footer).
    let shard = emb.join("shard-00001-of-00002.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0x55;
    }
    std::fs::write(&shard, bytes).unwrap();
    let idx = tmp.path().join("idx");
    let err = fails(index_build(&emb, &idx, &[]));
    assert!(
        err.contains("shard-00001-of-00002.parquet") && err.contains("damaged"),
        "{err}"
    );
    assert!(!idx.exists());
}

#[test]
fn an_extraction_without_its_manifest_is_refused_unless_external_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 30);
    let emb = tmp.path().join("emb");
    ok(extract(&input, &emb, &["--shards", "2"]));
    std::fs::remove_file(emb.join("manifest.json")).unwrap();
    let idx = tmp.path().join("idx");
    let err = fails(index_build(&emb, &idx, &[]));
    assert!(
        err.contains("no manifest.json") && err.contains("--external"),
        "{err}"
    );
    assert!(!idx.exists());
    // Said explicitly, the shards are indexed as vectors another tool wrote.
    ok(index_build(&emb, &idx, &["--external"]));
    let m = read_json(&idx.join("manifest.json"));
    assert_eq!(m["count"], 30);
    assert!(m["external"].is_object(), "{m}");
    // And --external on a real extraction is refused.
    let emb2 = tmp.path().join("emb2");
    ok(extract(&input, &emb2, &["--shards", "1"]));
    let err = fails(index_build(
        &emb2,
        &tmp.path().join("idx2"),
        &["--external"],
    ));
    assert!(err.contains("drop --external"), "{err}");
}

#[test]
fn extractions_older_than_shard_checksums_still_build_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 30);
    let emb = tmp.path().join("emb");
    ok(extract(&input, &emb, &["--shards", "2"]));
    // Strip what older versions did not write.
    let mut m = read_json(&emb.join("manifest.json"));
    m.as_object_mut().unwrap().remove("shard_files").unwrap();
    std::fs::write(emb.join("manifest.json"), m.to_string()).unwrap();
    for k in 0..2 {
        let p = emb.join(format!("shard-0000{k}-of-00002.json"));
        let mut r = read_json(&p);
        let r_obj = r.as_object_mut().unwrap();
        r_obj.remove("sha256").unwrap();
        r_obj.remove("bytes").unwrap();
        std::fs::write(&p, r.to_string()).unwrap();
    }
    let (_, err) = ok(index_build(&emb, &tmp.path().join("idx"), &[]));
    assert!(
        err.contains("no recorded checksum") && err.contains("not verified"),
        "{err}"
    );
}

#[test]
fn extract_refuses_a_folder_of_other_files_and_leaves_it_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 10);
    let out = tmp.path().join("mydocs");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
    for extra in [&[][..], &["--force"][..]] {
        let err = fails(extract(&input, &out, extra));
        assert!(
            err.contains("not empty") && err.contains("not an `embed extract` folder"),
            "{err}"
        );
        assert_eq!(listing(&out), ["thesis.tex"]);
    }
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
        "years of work"
    );
    // An empty folder is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(extract(&input, &empty, &["--shards", "1"]));
}

#[test]
fn the_same_input_twice_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 10);
    let out = tmp.path().join("emb");
    let again = tmp.path().join(".").join("corpus.jsonl");
    for second in [input.clone(), again] {
        let err = fails(extract(&input, &out, &["--input", s(&second)]));
        assert!(
            err.contains("given twice") && err.contains("corpus.jsonl"),
            "{err}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn the_same_file_named_by_another_path_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 20);
    let model = s(&tiny()).to_string();
    let args = [
        "extract",
        "--quiet",
        "--model",
        &model,
        "--input",
        "corpus.jsonl",
        "--out",
        "emb",
        "--shards",
        "2",
    ];
    ok(embed_in(Some(tmp.path()), &args));
    let m = read_json(&tmp.path().join("emb/manifest.json"));
    let stored = m["inputs"][0]["path"].as_str().unwrap();
    assert!(Path::new(stored).is_absolute(), "{stored}");
    assert_eq!(Path::new(stored), std::fs::canonicalize(&input).unwrap());
    // Absolute now: the same job, so it resumes (nothing left to do).
    let (_, err) = ok(extract(&input, &tmp.path().join("emb"), &["--shards", "2"]));
    assert!(err.contains("(0 embedded in this run"), "{err}");
}

#[test]
fn index_query_works_from_another_folder_and_after_the_project_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    let models = proj.join("models/tiny");
    std::fs::create_dir_all(&models).unwrap();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), models.join(e.file_name())).unwrap();
    }
    corpus(&proj, 20);
    // Everything named relative to the project folder, as a user in it would.
    let in_proj = |args: &[&str]| ok(embed_in(Some(&proj), args));
    in_proj(&[
        "extract",
        "--quiet",
        "--model",
        "models/tiny",
        "--input",
        "corpus.jsonl",
        "--out",
        "emb",
        "--shards",
        "1",
    ]);
    in_proj(&[
        "index",
        "build",
        "--quiet",
        "--embeddings",
        "emb",
        "--out",
        "idx",
    ]);
    let m = read_json(&proj.join("idx/manifest.json"));
    let model_path = m["embeddings"]["model_path"].as_str().unwrap();
    assert!(Path::new(model_path).is_absolute(), "{model_path}");
    let query = |cwd: &Path, index: &Path| {
        let (out, _) = ok(embed_in(
            Some(cwd),
            &[
                "index",
                "query",
                "--index",
                s(index),
                "--text",
                "apples",
                "-k",
                "3",
                "--json",
            ],
        ));
        let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        v["results"].as_array().unwrap().len()
    };
    // From another working directory.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    assert_eq!(query(&elsewhere, &proj.join("idx")), 3);
    // The whole project moved: the model is found relative to the index.
    let moved = tmp.path().join("moved");
    std::fs::rename(&proj, &moved).unwrap();
    assert_eq!(query(&elsewhere, &moved.join("idx")), 3);
    assert_eq!(query(&moved, Path::new("idx")), 3);
}

#[test]
fn flag_values_are_checked_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 5);
    let out = tmp.path().join("emb");
    let err = fails(extract(&input, &out, &["--workers", "0"]));
    assert!(err.contains("--workers must be at least 1"), "{err}");
    assert!(!out.exists());
    let idx = s(&out);
    let err = fails(embed(&[
        "index", "query", "--index", idx, "--text", "x", "-k", "0",
    ]));
    assert!(err.contains("-k must be at least 1"), "{err}");
    let err = fails(embed(&["index", "eval", "--index", idx, "--k", "0"]));
    assert!(err.contains("at least 1"), "{err}");
}

#[test]
fn json_summaries_are_one_object_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let input = corpus(tmp.path(), 30);
    let emb = tmp.path().join("emb");
    let (out, _) = ok(extract(&input, &emb, &["--shards", "3", "--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(
        (v["rows"].as_u64(), v["shards"].as_u64(), v["dim"].as_u64()),
        (Some(30), Some(3), Some(64))
    );
    assert_eq!(v["truncated"], 0);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        Path::new(v["out"].as_str().unwrap()),
        std::fs::canonicalize(&emb).unwrap()
    );
    let idx = tmp.path().join("idx");
    let (out, _) = ok(index_build(&emb, &idx, &["--json"]));
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(
        (v["rows"].as_u64(), v["dim"].as_u64()),
        (Some(30), Some(64))
    );
    assert_eq!(v["shards"], 3);
    assert!(
        v["seconds"].as_f64().is_some() && v["out"].is_string(),
        "{v}"
    );
}

#[test]
fn extract_reports_truncations_and_logs_progress_when_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "word ".repeat(300);
    let lines: Vec<Value> = (0..30)
        .map(|i| {
            let problem = if i % 10 == 3 {
                long.clone()
            } else {
                "x".into()
            };
            json!({"id": format!("r{i}"), "problem": problem})
        })
        .collect();
    let input = tmp.path().join("mixed.jsonl");
    write_lines(&input, &lines);
    let (out, err) = ok(extract(
        &input,
        &tmp.path().join("emb"),
        &["--max-length", "16", "--json"],
    ));
    assert!(err.contains("3 truncated at 16 tokens"), "{err}");
    assert!(
        err.contains("3 of 30 texts were longer than 16 tokens"),
        "{err}"
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["truncated"], 3);
    // --quiet draws no bar but still says how far it is.
    assert!(err.contains("extract: 30/30 texts (100%)"), "{err}");
}
