//! `embed extract` end to end with the tiny fixture model: shard union, kill -9 and resume,
//! per-shard runs, manifest checks, bad input.

use crate::util::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn extract_cmd(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = embed_cmd(&[
        "extract",
        "--model",
        tiny_llama().to_str().unwrap(),
        "--quiet",
    ]);
    c.arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

/// id -> (embedding, problem) over every shard file in `dir`.
fn read_shards(dir: &Path) -> BTreeMap<String, (Vec<f32>, Option<String>)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Float32Type;
    let mut out = BTreeMap::new();
    for batch in crate::util::shard_batches(dir) {
        let ids = batch
            .column_by_name("id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let emb = batch
            .column_by_name("embedding")
            .unwrap()
            .as_fixed_size_list()
            .clone();
        let problems = batch
            .column_by_name("problem")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let dim = emb.value_length() as usize;
        let values = emb.values().as_primitive::<Float32Type>().values().to_vec();
        for i in 0..batch.num_rows() {
            let v = values[i * dim..(i + 1) * dim].to_vec();
            let prev = out.insert(
                ids.value(i).to_string(),
                (v, Some(problems.value(i).to_string())),
            );
            assert!(prev.is_none(), "id {} appears twice", ids.value(i));
        }
    }
    out
}

fn input_ids(path: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn union_of_shards_equals_the_input_and_fields_pass_through() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 300);
    let out = tmp.path().join("emb");
    let o = run_ok(extract_cmd(&input, &out, &["--shards", "3"]));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("300 rows") && log.contains("3/3 shards complete") && log.contains("dim 64"),
        "{log}"
    );

    let got = read_shards(&out);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), input_ids(&input));
    // Passed-through text equals the input record's, and vectors are unit length.
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&input)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let (v, problem) = &got[first["id"].as_str().unwrap()];
    assert_eq!(problem.as_deref(), first["problem"].as_str());
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let manifest = read_json(&out.join("manifest.json"));
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["rows"], 300);
    assert_eq!(manifest["shards"], 3);
    assert_eq!(manifest["recipe"]["pooling"], "last");
    assert!(manifest["inputs"][0]["sha256"].as_str().unwrap().len() == 64);
    assert!(!out.join(".parts").exists(), "part files left behind");

    // Vectors equal what `embed encode` gives for the same text.
    let enc = exemplar::encoder::Encoder::load(tiny_llama().to_str().unwrap(), &Default::default())
        .unwrap();
    let want = enc
        .encode(
            &[first["problem"].as_str().unwrap()],
            exemplar::encoder::TextKind::Document,
        )
        .unwrap();
    assert_close(v, &want.vectors[0], "extract vs encode");

    // Re-running a finished job does no work and changes nothing.
    let o = run_ok(extract_cmd(&input, &out, &["--shards", "3"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("(0 embedded in this run)"));
    assert_eq!(read_shards(&out), got);
}

#[test]
fn killed_run_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 2500);
    let reference = tmp.path().join("reference");
    run_ok(extract_cmd(
        &input,
        &reference,
        &["--shards", "2", "--checkpoint-rows", "40"],
    ));
    let want = read_shards(&reference);

    let out = tmp.path().join("killed");
    let mut child = extract_cmd(&input, &out, &["--shards", "2", "--checkpoint-rows", "40"])
        .spawn()
        .unwrap();
    let parts = out.join(".parts/shard-00000-of-00002");
    let started = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(&parts).map(|d| d.count()).unwrap_or(0);
        if n >= 4 || started.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("manifest.json").exists()
            || read_json(&out.join("manifest.json"))["status"] != "complete"
    );
    // Nothing a later stage could take for a finished shard.
    assert!(
        !out.join("shard-00000-of-00002.json").exists(),
        "killed too late to test resume"
    );

    let o = run_ok(extract_cmd(
        &input,
        &out,
        &["--shards", "2", "--checkpoint-rows", "40"],
    ));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !log.contains("(2500 embedded in this run)"),
        "nothing was resumed: {log}"
    );
    let got = read_shards(&out);
    assert_eq!(got.len(), 2500);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (id, (v, _)) in &got {
        assert_eq!(v, &want[id].0, "vector of {id} differs after resume");
    }
}

#[test]
fn per_shard_runs_merge_to_the_local_result() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 200);
    let local = tmp.path().join("local");
    run_ok(extract_cmd(
        &input,
        &local,
        &["--shards", "4", "--workers", "2"],
    ));
    let distributed = tmp.path().join("distributed");
    for k in 0..4 {
        let mut c = extract_cmd(
            &input,
            &distributed,
            &["--shards", "4", "--shard-id", "auto"],
        );
        c.env("SLURM_ARRAY_TASK_ID", k.to_string());
        let o = run_ok(c);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(&format!("{}/4 shards complete", k + 1))
        );
    }
    assert_eq!(read_shards(&distributed), read_shards(&local));
    assert_eq!(
        read_json(&distributed.join("manifest.json"))["status"],
        "complete"
    );
}

#[test]
fn a_different_job_in_the_same_folder_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 30);
    let out = tmp.path().join("emb");
    run_ok(extract_cmd(&input, &out, &["--shards", "2"]));
    let err = run_err(extract_cmd(
        &input,
        &out,
        &["--shards", "2", "--pooling", "mean"],
    ));
    assert!(
        err.contains("recipe.pooling") && err.contains("--force"),
        "{err}"
    );
    let err = run_err(extract_cmd(&input, &out, &["--shards", "3"]));
    assert!(err.contains("field shards"), "{err}");
    let err = run_err(extract_cmd(
        &input,
        &out,
        &["--shards", "2", "--text-field", "solution"],
    ));
    assert!(err.contains("text.doc_template"), "{err}");
    // The refused runs did not touch the finished output.
    assert_eq!(read_shards(&out).len(), 30);
    // --force starts over with the new recipe.
    run_ok(extract_cmd(
        &input,
        &out,
        &["--shards", "2", "--pooling", "mean", "--force"],
    ));
    assert_eq!(
        read_json(&out.join("manifest.json"))["recipe"]["pooling"],
        "mean"
    );
}

const BAD: &str = r#"{"id": "a", "problem": "What is 1+1?"}
{"id": "b", "problem": "What is 2+2?"
{"id": "c", "problem": ""}
{"id": "a", "problem": "duplicate"}
{"problem": "no id"}
{"id": "d", "problem": "What is 3+3?"}
"#;

#[test]
fn bad_lines_stop_with_their_line_number() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, BAD).unwrap();
    let out = tmp.path().join("emb");
    let err = run_err(extract_cmd(&input, &out, &["--shards", "2"]));
    assert!(
        err.contains("bad.jsonl:2") && err.contains("invalid JSON") && err.contains("--skip-bad"),
        "{err}"
    );
    assert!(!out.join("shard-00000-of-00002.parquet").exists());
}

#[test]
fn skip_bad_sets_every_rejected_record_aside_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, BAD).unwrap();
    let out = tmp.path().join("emb");
    let o = run_ok(extract_cmd(&input, &out, &["--shards", "2", "--skip-bad"]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("4 rejected"));
    let rejected: Vec<serde_json::Value> = std::fs::read_to_string(out.join("rejected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String)> = rejected
        .iter()
        .map(|r| {
            (
                r["location"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert!(summary[0].0 == "2" && summary[0].1.contains("invalid JSON"));
    assert!(summary[1].0 == "3" && summary[1].1.contains("empty text"));
    assert!(summary[2].0 == "4" && summary[2].1.contains("duplicate id"));
    assert!(summary[3].0 == "5" && summary[3].1.contains("missing id"));
    let got = read_shards(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["a", "d"]);
    assert_eq!(got["a"].1.as_deref(), Some("What is 1+1?"));
    assert_eq!(read_json(&out.join("manifest.json"))["rejected"], 4);
}

#[test]
fn csv_and_parquet_inputs_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = repo().join("datasets/sample/test.csv");
    let from_csv = tmp.path().join("csv");
    run_ok(extract_cmd(&csv, &from_csv, &["--shards", "1"]));
    let got = read_shards(&from_csv);
    assert_eq!(got.len(), 100);
    // The shards are themselves a valid Parquet input (the embedding column is not passed on).
    let from_parquet = tmp.path().join("parquet");
    let shard = from_csv.join("shard-00000-of-00001.parquet");
    run_ok(extract_cmd(&shard, &from_parquet, &["--shards", "2"]));
    let again = read_shards(&from_parquet);
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (id, (v, problem)) in &again {
        // Other shards, other batches: equal to float precision, not bit for bit.
        assert_close(v, &got[id].0, id);
        assert_eq!(problem, &got[id].1);
    }
}

#[test]
fn bad_csv_row_is_reported_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.csv");
    std::fs::write(&input, "id,problem\n1,\"fine\"\n2,\"too\",\"many\"\n").unwrap();
    let err = run_err(extract_cmd(
        &input,
        &tmp.path().join("o"),
        &["--shards", "1"],
    ));
    assert!(
        err.contains("bad.csv:3") && err.contains("3 fields where the header has 2"),
        "{err}"
    );
}

#[test]
fn shards_open_in_pyarrow_with_the_documented_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 120);
    let out = tmp.path().join("emb");
    run_ok(extract_cmd(&input, &out, &["--shards", "3"]));
    let o = Command::new(venv_python())
        .arg(repo().join("scripts/check_shards.py"))
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("3 shards, 120 rows, dim 64"), "{stdout}");
}

/// Every scheduler variable `--shard-id auto` reads, so a test sets exactly the ones it means.
const SCHEDULER_VARS: [&str; 8] = [
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
];

#[test]
fn two_cpu_devices_give_the_vectors_of_one_worker_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 160);
    let one = tmp.path().join("one");
    run_ok(extract_cmd(&input, &one, &["--shards", "4"]));
    let two = tmp.path().join("two");
    run_ok(extract_cmd(
        &input,
        &two,
        &["--shards", "4", "--devices", "cpu,cpu"],
    ));
    assert_eq!(read_shards(&two), read_shards(&one));
    assert_eq!(read_shards(&one).len(), 160);
}

#[test]
fn ranks_of_a_multi_process_launch_pick_their_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 120);
    let local = tmp.path().join("local");
    run_ok(extract_cmd(&input, &local, &["--shards", "4"]));
    let ranked = tmp.path().join("ranked");
    // torchrun-style: LOCAL_RANK 1 of 2 runs shards 1 and 3; srun-style: SLURM_PROCID 0 of 2
    // runs shards 0 and 2.
    for (vars, done) in [
        ([("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")], vec![1, 3]),
        (
            [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")],
            vec![0, 1, 2, 3],
        ),
    ] {
        let mut c = extract_cmd(&input, &ranked, &["--shards", "4", "--shard-id", "auto"]);
        for v in SCHEDULER_VARS {
            c.env_remove(v);
        }
        c.envs(vars);
        run_ok(c);
        let m = read_json(&ranked.join("manifest.json"));
        let completed: Vec<u64> = m["completed_shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            completed,
            done.iter().map(|&k| k as u64).collect::<Vec<_>>()
        );
    }
    assert_eq!(read_shards(&ranked), read_shards(&local));
    let mut c = extract_cmd(&input, &ranked, &["--shards", "4", "--shard-id", "auto"]);
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    c.envs([("RANK", "2"), ("WORLD_SIZE", "2")]);
    assert!(run_err(c).contains("RANK=2 is not below WORLD_SIZE=2"));
}

#[test]
fn a_refused_job_is_refused_before_the_model_is_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample_corpus(tmp.path(), 20);
    // A checkpoint whose config, tokenizer and fingerprint are fine but whose weights file holds
    // no tensors: any attempt to load the model fails.
    let model = tmp.path().join("hollow-model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tiny_llama().join(f), model.join(f)).unwrap();
    }
    let header = b"{}      ";
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend_from_slice(header);
    std::fs::write(model.join("model.safetensors"), weights).unwrap();
    let out = tmp.path().join("emb");
    let with_model = |extra: &[&str]| {
        let mut c = embed_cmd(&["extract", "--quiet", "--model", model.to_str().unwrap()]);
        c.arg("--input")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .args(extra);
        c
    };
    // The first run writes its manifest, then fails to load the weights.
    let err = run_err(with_model(&["--shards", "2"]));
    assert!(err.contains("loading"), "{err}");
    assert!(out.join("manifest.json").is_file());
    // A different job is refused by name: the weights were never touched.
    let err = run_err(with_model(&["--shards", "3"]));
    assert!(err.contains("field shards differs"), "{err}");
    assert!(!err.contains("loading"), "{err}");
}
