//! `solve --out submission.parquet`: the Parquet submission the AIMO 3 gateway reads (id:
//! string, answer: int64), and the CSV default beside it.

use crate::util::server::{MockServer, Reply};
use crate::util::*;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn read_parquet(path: &std::path::Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let mut batches = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batch = batches.next().unwrap().unwrap();
    assert!(batches.next().is_none(), "one batch");
    batch
}

#[test]
fn a_parquet_out_writes_id_string_and_answer_int64_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let input = problems(tmp.path(), 3);
    let server = MockServer::start(|req, _| {
        Reply::Completion(format!("\\boxed{{{}}}", right_answer(&req.last_user())))
    });
    let out = tmp.path().join("out/submission.parquet");
    // solve_cmd's own --out is the CSV; this run names the Parquet file instead.
    let mut c = std::process::Command::new(solve_bin());
    c.args([
        "--endpoint",
        &server.url,
        "--input",
        input.to_str().unwrap(),
    ])
    .args([
        "--rag",
        "k=0",
        "--samples",
        "1",
        "--backoff",
        "0.01",
        "--quiet",
    ])
    .arg("--out")
    .arg(&out)
    .env_remove("EXEMPLAR_ENDPOINT");
    run_ok(c);
    let batch = read_parquet(&out);
    let schema = batch.schema();
    let types: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [("id", &DataType::Utf8), ("answer", &DataType::Int64)]
    );
    let ids: Vec<&str> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    let answers: Vec<i64> = batch
        .column(1)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, ["p1", "p2", "p3"]);
    assert_eq!(answers, [11, 22, 33]);
    // Traces sit beside it, as for a CSV; no CSV is written.
    assert_eq!(traces(tmp.path()).len(), 3);
    assert!(!tmp.path().join("out/submission.csv").exists());
}
