//! Avro-encoded records decoded to JSON for guests: a Kafka source with
//! `format = "avro"` (each record a bare Avro datum) or `"avro-confluent"` (Confluent's
//! wire format: a zero byte and a four-byte schema id before the datum) and `schema`,
//! an `.avsc` file. The guests, key and timestamp fields see the record as JSON, as
//! Flink's `AvroDeserializationSchema` with a JSON row would give it.
//!
//! The schema is the writer's schema, from the file: the schema id of the Confluent
//! format is not looked up in a registry.

use std::path::Path;

#[cfg(feature = "avro")]
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// How a Kafka record's value is encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// JSON (or anything, passed as it is when no field is read).
    #[default]
    Json,
    /// A bare Avro datum of `schema`.
    Avro,
    /// Confluent's wire format: magic byte 0, a 4-byte schema id, the Avro datum.
    AvroConfluent,
}

/// Decodes the values of one schema.
pub struct AvroDecoder {
    #[cfg(feature = "avro")]
    schema: Schema,
    confluent: bool,
    /// The schema file, for errors.
    file: String,
}

/// Why a host built without the `avro` feature cannot decode Avro.
pub const AVRO_ABSENT: &str = "this weir was built without Avro support (the `avro` feature, left out of the \
     quick start's build): build it with `cargo build -p weir-host` (default features)";

#[cfg(not(feature = "avro"))]
impl AvroDecoder {
    pub fn load(_: &Path, _: RecordFormat) -> Result<Self, String> {
        Err(AVRO_ABSENT.into())
    }

    pub fn to_json(&self, _: &[u8]) -> Result<Vec<u8>, String> {
        Err(format!("{AVRO_ABSENT} ({}, confluent: {})", self.file, self.confluent))
    }
}

#[cfg(feature = "avro")]
impl AvroDecoder {
    pub fn load(path: &Path, format: RecordFormat) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the schema {}: {e}", path.display()))?;
        let schema = Schema::parse_str(&text).map_err(|e| format!("{} is not an Avro schema: {e}", path.display()))?;
        Ok(AvroDecoder { schema, confluent: format == RecordFormat::AvroConfluent, file: path.display().to_string() })
    }

    /// The record `payload` as JSON text, or why it is not a datum of the schema.
    pub fn to_json(&self, payload: &[u8]) -> Result<Vec<u8>, String> {
        let mut datum = payload;
        if self.confluent {
            match payload {
                [0, _, _, _, _, rest @ ..] => datum = rest,
                _ => return Err("not in Confluent's wire format (a zero byte and a schema id first)".into()),
            }
        }
        let value = apache_avro::from_avro_datum(&self.schema, &mut datum, None)
            .map_err(|e| format!("not Avro of the schema in {}: {e}", self.file))?;
        if !datum.is_empty() {
            return Err(format!("{} bytes left after an Avro datum of the schema in {}", datum.len(), self.file));
        }
        let json = serde_json::Value::try_from(value).map_err(|e| format!("an Avro value JSON cannot hold: {e}"))?;
        Ok(serde_json::to_vec(&json).expect("JSON values serialize"))
    }
}

#[cfg(all(test, feature = "avro"))]
mod tests {
    use super::*;
    use apache_avro::types::Record;

    const SCHEMA: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"order_id","type":"string"},{"name":"amount","type":"double"},
        {"name":"items","type":{"type":"array","items":"string"}},{"name":"note","type":["null","string"],"default":null}]}"#;

    fn encoded() -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let mut record = Record::new(&schema).unwrap();
        record.put("order_id", "ORD-1");
        record.put("amount", 12.5);
        record.put("items", apache_avro::types::Value::Array(vec!["a".into(), "b".into()]));
        record.put("note", apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)));
        apache_avro::to_avro_datum(&schema, record).unwrap()
    }

    fn decoder(format: RecordFormat) -> AvroDecoder {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("order.avsc"), SCHEMA).unwrap();
        AvroDecoder::load(&dir.path().join("order.avsc"), format).unwrap()
    }

    #[test]
    fn avro_datums_become_json() {
        let json = decoder(RecordFormat::Avro).to_json(&encoded()).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), r#"{"amount":12.5,"items":["a","b"],"note":null,"order_id":"ORD-1"}"#);
        let mut framed = vec![0, 0, 0, 0, 7];
        framed.extend(encoded());
        assert!(decoder(RecordFormat::AvroConfluent).to_json(&framed).is_ok());
        assert!(decoder(RecordFormat::AvroConfluent).to_json(&encoded()).unwrap_err().contains("wire format"));
        let error = decoder(RecordFormat::Avro).to_json(b"{\"order_id\":1}").unwrap_err();
        assert!(error.contains("not Avro of the schema") || error.contains("bytes left"), "{error}");
    }
}
