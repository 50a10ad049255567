//! Arrow cells as JSON values: the one conversion used wherever records come out of Parquet
//! (corpus input, index records, plot labels and metadata).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::*;
use serde_json::{Map, Value};

/// One cell as JSON: strings, integers, floats and booleans natively, null as null, lists as
/// arrays and structs and maps as objects (recursively), anything else (dates, decimals, bytes)
/// in Arrow's own display form.
pub fn cell_json(col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Utf8 => Value::String(col.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Value::String(col.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Value::String(col.as_string_view().value(i).to_owned()),
        DataType::Boolean => Value::Bool(col.as_boolean().value(i)),
        DataType::Int8 => col.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(col.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(col.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => list_json(col.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list_json(col.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(..) => list_json(col.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(fields) => {
            let s = col.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), cell_json(c.as_ref(), i)))
                    .collect(),
            )
        }
        DataType::Map(..) => {
            let entries = col.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            Value::Object(
                (0..entries.len())
                    .map(|j| {
                        let key = value_text(&cell_json(keys.as_ref(), j)).unwrap_or_default();
                        (key, cell_json(values.as_ref(), j))
                    })
                    .collect(),
            )
        }
        _ => {
            let opts = arrow::util::display::FormatOptions::default();
            match arrow::util::display::ArrayFormatter::try_new(col, &opts) {
                Ok(f) => Value::String(f.value(i).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

fn list_json(items: &dyn Array) -> Value {
    Value::Array((0..items.len()).map(|j| cell_json(items, j)).collect())
}

/// NaN and infinities have no JSON form: they become null.
fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Row `i` of a batch as a JSON object of every column (skipping those named in `skip`).
pub fn row_json(batch: &RecordBatch, i: usize, skip: &[&str]) -> Map<String, Value> {
    let schema = batch.schema();
    let mut m = Map::new();
    for (f, col) in schema.fields().iter().zip(batch.columns()) {
        if !skip.contains(&f.name().as_str()) {
            m.insert(f.name().clone(), cell_json(col.as_ref(), i));
        }
    }
    m
}

/// A value as plain text (strings without quotes); None for null.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One cell as plain text; None for null.
pub fn cell_text(col: &dyn Array, i: usize) -> Option<String> {
    value_text(&cell_json(col, i))
}
