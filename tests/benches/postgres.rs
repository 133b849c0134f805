//! Rows into PostgreSQL: a generator → `postgres` sink job through weir, beside a plain
//! client (the same `postgres` crate) writing the same rows with the same statements and
//! the same text parameters, and no weir (no JSON to decode, no job), so that the ratio shows weir's own cost. Both batched (multi-row
//! `INSERT`s of 500 rows) and per row (`batch_rows = 1`; the plain client one `INSERT`
//! per row), each in transactions of a checkpoint's worth of rows (weir: exactly once,
//! a `PREPARE TRANSACTION` and `COMMIT PREPARED` per checkpoint; the plain client: a
//! `COMMIT` per 10 000 rows). The server runs on the same two cores, unsynced
//! (`fsync=off`), so the figures are the client side's.
//!
//! `cargo bench -p weir-host --bench postgres`; `WEIR_BENCH_ROWS` sets the batched runs'
//! rows (default 200 000; the per-row runs write a tenth). Needs PostgreSQL
//! (`bash scripts/install-postgres`).

#[allow(dead_code)]
#[path = "../common/postgres.rs"]
mod server;

use std::time::{Duration, Instant};

use postgres::types::ToSql;
use weir::{Job, JobOptions, JobSpec};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const KEYS: u64 = 1000;

/// Rows like the generator's: `("key-k", seq, value)`, as the text weir sends.
fn rows(count: u64) -> Vec<[Text; 3]> {
    (0..count)
        .map(|seq| [Text(format!("key-{}", seq % KEYS)), Text(seq.to_string()), Text((seq * 7 % 1000).to_string())])
        .collect()
}

/// A parameter in text format, as the sink sends every cell (PostgreSQL parses it as
/// the column's type), so that both sides send the server the same bytes.
#[derive(Debug)]
struct Text(String);

impl ToSql for Text {
    fn to_sql(
        &self,
        _: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0.as_bytes());
        Ok(postgres::types::IsNull::No)
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
    fn encode_format(&self, _: &postgres::types::Type) -> postgres::types::Format {
        postgres::types::Format::Text
    }
}

fn reset(server: &server::Postgres) {
    server.sql("shop", "DROP TABLE IF EXISTS bench; CREATE TABLE bench (key text, seq bigint, value bigint)");
}

/// Writes `count` rows with the plain client, `batch` rows a statement, a commit
/// every 10 000 rows.
fn plain(server: &server::Postgres, count: u64, batch: usize) -> Duration {
    reset(server);
    let rows = rows(count);
    let mut client = server.client();
    let statement = |n: usize| {
        let values: Vec<String> = (0..n).map(|r| format!("(${}, ${}, ${})", 3 * r + 1, 3 * r + 2, 3 * r + 3)).collect();
        format!("INSERT INTO bench (key, seq, value) VALUES {}", values.join(", "))
    };
    let started = Instant::now();
    let full = client.prepare(&statement(batch)).unwrap();
    let mut transaction = client.transaction().unwrap();
    let mut in_transaction = 0;
    for chunk in rows.chunks(batch) {
        let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flatten().map(|c| c as &(dyn ToSql + Sync)).collect();
        if chunk.len() == batch {
            transaction.execute(&full, &params).unwrap();
        } else {
            transaction.execute(statement(chunk.len()).as_str(), &params).unwrap();
        }
        in_transaction += chunk.len();
        if in_transaction >= 10_000 {
            transaction.commit().unwrap();
            transaction = client.transaction().unwrap();
            in_transaction = 0;
        }
    }
    transaction.commit().unwrap();
    let took = started.elapsed();
    let written = server.rows("SELECT count(*) FROM bench");
    assert_eq!(written, [count.to_string()]);
    took
}

/// The same rows through a weir job; returns the time from start to the last commit.
fn weir(server: &server::Postgres, dir: &std::path::Path, count: u64, batch: usize) -> Duration {
    reset(server);
    std::fs::write(dir.join("pw"), server::PASSWORD).unwrap();
    let text = format!(
        r#"
        name = "pg-bench"
        [[source]]
        type = "generator"
        uid = "events"
        count = {count}
        keys = {KEYS}
        [[sink]]
        type = "postgres"
        uid = "table"
        connection = "{connection}"
        password_file = "pw"
        table = "bench"
        columns = {{ key = "$key", seq = "seq", value = "value" }}
        batch_rows = {batch}
        [[edge]]
        from = "events"
        to = "table"
        [checkpoint]
        dir = "checkpoints-{batch}"
        interval_ms = 1000
        "#,
        connection = server.connection(),
    );
    let spec = JobSpec::parse(&text, dir).unwrap();
    let job = Job::new(spec, &JobOptions::default()).unwrap();
    let started = Instant::now();
    job.run().unwrap();
    let took = started.elapsed();
    let written = server.rows("SELECT count(*) FROM bench");
    assert_eq!(written, [count.to_string()], "every row, once");
    took
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rows_batched = env_u64("WEIR_BENCH_ROWS", 200_000);
    let rows_single = rows_batched / 10;
    let server = server::Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    println!("PostgreSQL {} rows batched (500 a statement), {} rows one by one; best of 3", rows_batched, rows_single);
    println!("{:<28} {:>12} {:>12} {:>10}", "run", "rows/s", "plain rows/s", "weir/plain");
    for (label, count, batch) in [("batched (500 rows/INSERT)", rows_batched, 500), ("per row", rows_single, 1)] {
        let best = |f: &dyn Fn() -> Duration| (0..3).map(|_| f()).min().unwrap();
        let plain_took = best(&|| plain(&server, count, batch));
        let weir_took = best(&|| weir(&server, dir.path(), count, batch));
        let rate = |took: Duration| count as f64 / took.as_secs_f64();
        println!(
            "{label:<28} {:>12.0} {:>12.0} {:>9.2}×",
            rate(weir_took),
            rate(plain_took),
            rate(weir_took) / rate(plain_took)
        );
    }
}
