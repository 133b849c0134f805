//! The PostgreSQL sink against a real server (Debian's PostgreSQL, started per test in
//! a temporary directory on a loopback port): exactly-once rows across SIGKILLs and a
//! database restart, upserts, passwords kept out of job files, and rows the table
//! refuses named with their column.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::crash::{kill_moments, run_with_kills, weir_run};
use common::postgres::{PASSWORD, Postgres};

/// The keyed count of `count` generated events over 40 keys into table `table` of the
/// test server, checkpointing every 50 ms; `sink` adds settings to the sink.
fn count_job(server: &Postgres, dir: &Path, table: &str, count: u64, rate: f64, sink: &str) -> PathBuf {
    std::fs::write(dir.join("pg-password"), format!("{PASSWORD}\n")).unwrap();
    let job = format!(
        r#"
        name = "pg-counts"

        [[source]]
        type = "generator"
        uid = "events"
        count = {count}
        keys = 40
        seed = 11
        rate = {rate:?}

        [[operator]]
        uid = "count"
        component = "keyed_count.wasm"
        parallelism = 2

        [[sink]]
        type = "postgres"
        uid = "table"
        connection = "{connection}"
        password_file = "pg-password"
        table = "{table}"
        columns = {{ key = "key", count = "count", at = "$timestamp" }}
        batch_rows = 64
        {sink}

        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"

        [[edge]]
        from = "count"
        to = "table"

        [state]
        dir = "state"

        [checkpoint]
        dir = "checkpoints"
        interval_ms = 50
        "#,
        connection = server.connection(),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

/// Every key's counts as the table holds them, in order.
fn counts_per_key(server: &Postgres, table: &str) -> BTreeMap<String, Vec<i64>> {
    let mut keys = BTreeMap::<String, Vec<i64>>::new();
    for row in server.rows(&format!("SELECT key, count FROM {table} ORDER BY key, count")) {
        let (key, count) = row.split_once('|').unwrap();
        keys.entry(key.into()).or_default().push(count.parse().unwrap());
    }
    keys
}

/// What an uninterrupted run writes: each key's counts 1..=n once, `total` in all.
fn assert_each_count_once(keys: &BTreeMap<String, Vec<i64>>, total: u64) {
    for (key, counts) in keys {
        let expected: Vec<i64> = (1..=counts.len() as i64).collect();
        assert_eq!(counts, &expected, "key {key}: counts missing or repeated");
    }
    assert_eq!(keys.values().map(Vec::len).sum::<usize>() as u64, total, "rows in the table");
    assert_eq!(keys.len(), 40, "keys in the table");
}

fn no_prepared_transactions_left(server: &Postgres) {
    assert_eq!(server.rows("SELECT gid FROM pg_prepared_xacts"), Vec::<String>::new());
}

#[test]
fn rows_are_exactly_once_across_sigkills() {
    let server = Postgres::start();
    server.sql("shop", "CREATE TABLE counts (key text NOT NULL, count bigint NOT NULL, at timestamptz)");
    let dir = tempfile::tempdir().unwrap();
    let job = count_job(&server, dir.path(), "counts", 6_000, 3_000.0, "");

    let resumes = run_with_kills(&job, &kill_moments(27, 3));
    assert!(resumes >= 3, "every restart resumed from a checkpoint ({resumes})");

    assert_each_count_once(&counts_per_key(&server, "counts"), 6_000);
    no_prepared_transactions_left(&server);
    // Event time became a timestamp: the generator's first event is at 0 ms.
    let first = server.rows("SELECT min(at) FROM counts");
    assert_eq!(first, ["1970-01-01 00:00:00+00"]);
}

#[test]
fn idempotent_upserts_leave_each_keys_last_count_across_sigkills() {
    let server = Postgres::start();
    server.sql("shop", "CREATE TABLE totals (key text PRIMARY KEY, count bigint NOT NULL, at timestamptz)");
    let dir = tempfile::tempdir().unwrap();
    let job = count_job(
        &server,
        dir.path(),
        "totals",
        6_000,
        3_000.0,
        "primary_key = [\"key\"]\ndelivery = \"at-least-once\"",
    );

    run_with_kills(&job, &kill_moments(31, 2));

    let rows = server.rows("SELECT key, count FROM totals ORDER BY key");
    assert_eq!(rows.len(), 40, "{rows:?}");
    let total: i64 = rows.iter().map(|r| r.split_once('|').unwrap().1.parse::<i64>().unwrap()).sum();
    assert_eq!(total, 6_000, "each key's last count sums to every event: {rows:?}");
}

#[test]
fn a_database_restart_mid_run_loses_and_repeats_nothing() {
    let mut server = Postgres::start();
    server.sql("shop", "CREATE TABLE counts (key text NOT NULL, count bigint NOT NULL, at timestamptz)");
    let dir = tempfile::tempdir().unwrap();
    let job = count_job(&server, dir.path(), "counts", 8_000, 2_000.0, "");
    let mut child = weir_run(&job).arg("--log=weir=info").spawn().unwrap();

    // Once the job is committing rows, the server dies (open transactions lost,
    // prepared ones kept) and comes back two seconds later.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.rows("SELECT count(*) FROM counts") == ["0"] {
        assert!(Instant::now() < deadline, "no rows after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    server.start_again();

    let status = common::memory::wait_for(&mut child, Duration::from_secs(120));
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "the job failed:\n{stderr}");
    assert!(stderr.contains("reconnected to PostgreSQL"), "the sink reconnected:\n{stderr}");
    assert_each_count_once(&counts_per_key(&server, "counts"), 8_000);
    no_prepared_transactions_left(&server);
}

/// A file source of orders into `orders`, with `settings` in the sink.
fn orders_job(server: &Postgres, dir: &Path, lines: &[&str], sink: &str) -> weir::JobSpec {
    let input = common::write_input(dir, "orders.jsonl", lines);
    common::job(
        &format!(
            r#"
            name = "orders"
            [[source]]
            type = "file"
            uid = "orders"
            path = "{input}"
            key_field = "id"

            [[sink]]
            type = "postgres"
            uid = "db"
            connection = "{connection}"
            table = "shop.orders"
            columns = {{ id = "id", amount = "amount", customer = "customer.name", doc = "$value" }}
            {sink}

            [[edge]]
            from = "orders"
            to = "db"
            "#,
            input = input.display(),
            connection = server.connection(),
        ),
        dir,
    )
}

fn orders_table(server: &Postgres) {
    server.sql(
        "shop",
        "CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, amount numeric(10,2) CHECK (amount > 0), \
         customer varchar(20) NOT NULL, doc jsonb)",
    );
}

#[test]
fn json_fields_fill_their_columns_and_bad_rows_are_named_with_their_column() {
    let server = Postgres::start();
    orders_table(&server);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let good = [
        r#"{"id": 1, "amount": 12.5, "customer": {"name": "ada"}}"#,
        r#"{"id": 2, "amount": "3", "customer": {"name": "bob"}, "note": "x"}"#,
    ];
    common::run(orders_job(&server, dir.path(), &good, "password_file = \"pw\"")).unwrap();
    assert_eq!(
        server.rows("SELECT id, amount, customer, doc->>'note' FROM shop.orders ORDER BY id"),
        ["1|12.50|ada|NULL", "2|3.00|bob|x"]
    );

    // A value weir can tell does not fit: named before it reaches the server.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let lines = [r#"{"id": 3, "amount": 1, "customer": {"name": "c"}}"#, r#"{"id": 4, "amount": "lots", "customer": {"name": "d"}}"#];
    let error = common::run(orders_job(&server, dir.path(), &lines, "password_file = \"pw\"")).unwrap_err().to_string();
    assert!(
        error.contains("row 2 (key \"4\")") && error.contains("column `amount` (numeric)") && error.contains("\"lots\""),
        "{error}"
    );

    // What only the server can tell (a constraint, a length): the batch is written
    // again row by row to name the row.
    for (line, expect) in [
        (r#"{"id": 5, "amount": -1, "customer": {"name": "e"}}"#, "orders_amount_check"),
        (r#"{"id": 6, "amount": 1, "customer": {}}"#, "column `customer`"),
        (r#"{"id": 7, "amount": 1, "customer": {"name": "a name much longer than twenty"}}"#, "too long"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        let lines = [r#"{"id": 10, "amount": 1, "customer": {"name": "ok"}}"#, line];
        let error =
            common::run(orders_job(&server, dir.path(), &lines, "password_file = \"pw\"")).unwrap_err().to_string();
        assert!(error.contains("row 2") && error.contains(expect), "{expect}: {error}");
    }
    // Without checkpoints each batch commits on its own; the failed runs' batches
    // (each refused as a whole) left nothing.
    assert_eq!(server.rows("SELECT id FROM shop.orders ORDER BY id"), ["1", "2"]);
}

#[test]
fn the_password_comes_from_the_environment_or_a_file_never_the_job_file() {
    let server = Postgres::start();
    orders_table(&server);
    let dir = tempfile::tempdir().unwrap();
    let line = [r#"{"id": 1, "amount": 2, "customer": {"name": "ada"}}"#];

    // From the environment, in a `weir run` process.
    let spec = orders_job(&server, dir.path(), &line, "password_env = \"SHOP_DB_PASSWORD\"");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, toml::to_string(&spec).unwrap()).unwrap();
    let output = weir_run(&job).env("SHOP_DB_PASSWORD", PASSWORD).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(server.rows("SELECT id FROM shop.orders"), ["1"]);

    // Not set: says which variable.
    let output = weir_run(&job).env_remove("SHOP_DB_PASSWORD").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("SHOP_DB_PASSWORD"), "{stderr}");

    // A wrong one: the server's refusal, not a retry loop.
    let started = Instant::now();
    let output = weir_run(&job).env("SHOP_DB_PASSWORD", "wrong").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("password authentication failed"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused logins are not retried");

    // In the connection string: refused when the job file is read, without echoing it.
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("password_env = \"SHOP_DB_PASSWORD\"\n", "")
        .replace("user=weir", "user=weir password=hunter2");
    let error = weir::JobSpec::parse(&text, dir.path()).unwrap_err().to_string();
    assert!(error.contains("carries a password") && !error.contains("hunter2"), "{error}");
}

#[test]
fn exactly_once_needs_prepared_transactions_and_says_so() {
    let mut server = Postgres::start();
    server.settings = "-c max_prepared_transactions=0".into();
    server.stop();
    server.start_again();
    server.sql("shop", "CREATE TABLE counts (key text, count bigint, at timestamptz)");
    let dir = tempfile::tempdir().unwrap();
    let job = count_job(&server, dir.path(), "counts", 100, 1000.0, "");
    let output = weir_run(&job).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("max_prepared_transactions = 0") && stderr.contains("at-least-once"), "{stderr}");
}

#[test]
fn a_slow_database_back_pressures_the_job_instead_of_buffering() {
    let server = Postgres::start();
    // Every INSERT statement takes 100 ms: at 64 rows a statement, ~640 rows/s.
    server.sql(
        "shop",
        "CREATE TABLE counts (key text, count bigint, at timestamptz); \
         CREATE TABLE pause (seconds float8); INSERT INTO pause VALUES (0.1); \
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN PERFORM pg_sleep(seconds) FROM pause; RETURN NULL; END $$; \
         CREATE TRIGGER slow AFTER INSERT ON counts FOR EACH STATEMENT EXECUTE FUNCTION slow();",
    );
    let dir = tempfile::tempdir().unwrap();
    let job = count_job(&server, dir.path(), "counts", 2_000_000, 1e9, "");
    let job = weir::Job::load(&job, &common::options()).unwrap();
    let (control, metrics) = (job.control(), job.live_metrics());
    let running = std::thread::spawn(move || job.run());

    let progress = || {
        let summary = metrics.snapshot();
        (summary.node("events").unwrap().records_out, summary.node("table").unwrap().records_in)
    };
    std::thread::sleep(Duration::from_secs(3));
    let (read_before, written_before) = progress();
    std::thread::sleep(Duration::from_secs(3));
    let (read, written) = progress();
    // Fast again, so that the stop does not wait for the slow drain of what is in flight.
    // (Not by dropping the trigger: that would wait for the sink's open transaction.)
    server.sql("shop", "UPDATE pause SET seconds = 0");
    control.stop();
    running.join().unwrap().unwrap();

    // The generator could make two million events in this time; once the channels
    // between source and sink are full, it reads only as fast as the sink writes.
    assert!(written > written_before, "the sink kept writing ({written_before} then {written})");
    assert!(written < 10_000, "the sink wrote {written} rows at ~640 rows/s");
    assert!(read < 200_000, "the source read {read} events (the sink wrote {written})");
    let (read_more, written_more) = (read - read_before, written - written_before);
    assert!(
        read_more <= written_more + 20_000,
        "in 3 s the source read {read_more} events and the sink wrote {written_more}: output is being buffered"
    );
}

#[test]
fn refused_rows_go_to_the_dead_letter_output_and_the_rest_to_the_table() {
    let server = Postgres::start();
    orders_table(&server);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let lines = [
        r#"{"id": 1, "amount": 5, "customer": {"name": "ada"}}"#,
        r#"{"id": 2, "amount": "lots", "customer": {"name": "bob"}}"#,
        r#"{"id": 3, "amount": 7, "customer": {"name": "cy"}}"#,
        r#"{"id": 4, "amount": -1, "customer": {"name": "dee"}}"#,
        r#"{"id": 5, "amount": 9, "customer": {"name": "eve"}}"#,
    ];
    let mut spec = orders_job(&server, dir.path(), &lines, "password_file = \"pw\"");
    spec.sinks.push(weir::job::spec::SinkSpec::File {
        uid: "dead".into(),
        path: dir.path().join("dead.jsonl"),
        format: weir::job::spec::SinkFormat::Envelope,
    });
    let mut edge = spec.edges[0].clone();
    edge.from = "db".into();
    edge.to = "dead".into();
    edge.output = Some("dlq".into());
    spec.edges.push(edge);
    spec.checkpoint = Some(weir::checkpoint::CheckpointSettings {
        dir: Some(dir.path().join("checkpoints")),
        interval_ms: 50,
        ..Default::default()
    });

    let summary = common::run(spec).unwrap();
    assert_eq!(summary.node("db").unwrap().dead_lettered, 2);
    assert_eq!(server.rows("SELECT id FROM shop.orders ORDER BY id"), ["1", "3", "5"]);
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["value"]["id"], 2, "the original record");
    assert_eq!(letters[0]["key"], "2");
    let reason = letters[0]["headers"]["weir.error"].as_str().unwrap();
    assert!(reason.contains("column `amount` (numeric)"), "{reason}");
    assert_eq!(letters[0]["headers"]["weir.error.origin"], "db");
    assert_eq!(letters[1]["value"]["id"], 4);
    let reason = letters[1]["headers"]["weir.error"].as_str().unwrap();
    assert!(reason.contains("orders_amount_check"), "{reason}");
    no_prepared_transactions_left(&server);
}

/// The tutorials' order-processing pipeline (`examples/orders-pipeline`), as its job
/// file says, on a real broker and database: valid orders enriched into the table,
/// every rejected one in the dead-letter topic with who rejected it and why,
/// checkpoints in an object store (`file://` here; the example's script uses S3).
#[test]
fn the_orders_pipeline_example_splits_orders_between_the_table_and_the_dead_letter_topic() {
    use weir::job::spec::{SinkSpec, SourceSpec};
    let broker = common::kafka::Broker::start();
    // One partition: the order of the two ORD-1002 lines decides which one the table
    // keeps (the tutorial's producer keys orders by id, which does the same).
    broker.create_topic("orders", 1);
    broker.create_topic("orders-dlq", 1);
    let example = common::root().join("examples/orders-pipeline");
    let lines = std::fs::read_to_string(example.join("orders.jsonl")).unwrap();
    broker.produce("orders", lines.lines().map(|l| (0, None, l.to_string(), None)));
    let server = Postgres::start();
    server.sql("shop", &std::fs::read_to_string(example.join("schema.sql")).unwrap());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let mut spec = weir::JobSpec::load(&example.join("job.toml")).unwrap();
    for source in &mut spec.sources {
        if let SourceSpec::Kafka(kafka) = source {
            kafka.brokers = broker.addr();
        }
    }
    for sink in &mut spec.sinks {
        match sink {
            SinkSpec::Kafka(kafka) => kafka.brokers = broker.addr(),
            SinkSpec::Postgres(pg) => {
                pg.connection = server.connection();
                pg.password_env = None;
                pg.password_file = Some(dir.path().join("pw"));
            }
            SinkSpec::Files(files) => {
                files.dir = dir.path().join("archive").display().to_string();
                files.store_options.clear();
            }
            _ => {}
        }
    }
    let checkpoint = spec.checkpoint.as_mut().unwrap();
    checkpoint.dir = Some(format!("file://{}", dir.path().join("store").display()).into());
    checkpoint.store_options.clear();
    checkpoint.interval_ms = 100;

    let summary = common::run(spec).unwrap();
    assert_eq!(summary.node("orders").unwrap().dead_lettered, 1);
    assert_eq!(summary.node("orders-db").unwrap().dead_lettered, 1);

    assert_eq!(
        server.rows("SELECT order_id, customer_id, total_amount, items, ordered_at, tier, region FROM orders ORDER BY order_id"),
        [
            "ORD-1001|C1|120.50|1|2024-01-15 10:30:00+00|gold|eu",
            "ORD-1002|C2|35.00|1|2024-01-15 10:31:10+00|silver|us",
            "ORD-1005|C1|310.99|2|2024-01-15 10:34:30+00|gold|eu",
            "ORD-1007|C9|42.00|1|2024-01-15 10:36:00+00|unknown|",
            "ORD-1010|C4|99.90|1|2024-01-15 10:39:00+00|gold|eu",
            "ORD-1011|C3|7.50|1|2024-01-15 10:41:00+00|bronze|eu",
        ]
    );
    let mut letters: Vec<(String, String)> = broker
        .read_all("orders-dlq")
        .into_iter()
        .map(|r| {
            let header = |name: &str| r.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
            let id = serde_json::from_str::<serde_json::Value>(&r.value).unwrap()["order_id"].as_str().unwrap_or("-").to_string();
            (format!("{id} {}", header("weir.error.origin")), header("weir.error"))
        })
        .collect();
    letters.sort();
    let expected = [
        ("- orders", "missing key field `order_id`"),
        ("ORD-1002 orders-db", "duplicate key value violates unique constraint \"orders_pkey\""),
        ("ORD-1003 validate", "no customer_id"),
        ("ORD-1004 validate", "total_amount -5 is not positive"),
        ("ORD-1006 validate", "no items"),
        ("ORD-1009 validate", "total_amount is not a number"),
    ];
    assert_eq!(letters.len(), expected.len(), "{letters:?}");
    for ((who, why), (want_who, want_why)) in letters.iter().zip(expected) {
        assert_eq!(who, want_who);
        assert!(why.contains(want_why), "{who}: {why}");
    }
    let archived: Vec<_> = std::fs::read_dir(dir.path().join("archive")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(archived, ["part-orders-pipeline-archive-0.parquet"]);
}
