//! Part files into an S3 server: a generator → `files` sink job through weir (JSON
//! lines, exactly once: parts hidden until their checkpoint completes, then copied to
//! their names), beside a plain `object_store` client uploading the same bytes in parts
//! of the same size with no weir, so that the ratio shows weir's own cost (the job, the
//! local part file, the copy at the commit). The server is s3s-fs on a loopback port,
//! on the same two cores and disk.
//!
//! `cargo bench -p weir-host --bench object_store`; `WEIR_BENCH_RECORDS` sets the
//! records (default 200 000, about 1 KiB each). Needs s3s-fs (`bash scripts/install-s3s`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use weir::source::{GeneratorSource, Source, SourcePoll};
use weir::{Job, JobOptions, JobSpec};

const ACCESS_KEY: &str = "weir-bench";
const SECRET_KEY: &str = "weir-bench-secret";
const PAD: usize = 1000;
const ROLL_BYTES: usize = 8 << 20;

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let binary = std::env::var_os("WEIR_S3S")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-tools/bin/s3s-fs")))
        .expect("s3s-fs: run `bash scripts/install-s3s`");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    Server(child, port)
}

/// The generator's records as JSON lines, in parts of `ROLL_BYTES`.
fn parts(records: u64) -> Vec<Vec<u8>> {
    let mut source = GeneratorSource::new("bench", Some(records), None, 1000, 7, 0, 1).unwrap().with_payload(PAD);
    let mut parts = vec![Vec::new()];
    while let SourcePoll::Record { event, .. } = source.poll().unwrap() {
        let part = parts.last_mut().unwrap();
        part.extend_from_slice(&event.value);
        part.push(b'\n');
        if part.len() >= ROLL_BYTES {
            parts.push(Vec::new());
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

fn plain(port: u16, bucket: &str, parts: &[Vec<u8>]) -> Duration {
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    for (n, part) in parts.iter().enumerate() {
        let key = format!("plain/part-{n}.jsonl").into();
        runtime.block_on(store.put(&key, PutPayload::from(part.clone()))).unwrap();
    }
    started.elapsed()
}

fn weir(port: u16, bucket: &str, records: u64, dir: &std::path::Path) -> Duration {
    let text = format!(
        r#"
        name = "s3-bench"
        [[source]]
        type = "generator"
        uid = "events"
        count = {records}
        keys = 1000
        seed = 7
        step_ms = 1
        payload_bytes = {PAD}
        [[sink]]
        type = "files"
        uid = "archive"
        dir = "s3://{bucket}/weir"
        roll_bytes = {ROLL_BYTES}
        store_options = {{ aws_endpoint = "http://127.0.0.1:{port}", aws_allow_http = "true", aws_region = "us-east-1" }}
        [[edge]]
        from = "events"
        to = "archive"
        [checkpoint]
        dir = "checkpoints-{bucket}"
        interval_ms = 1000
        "#
    );
    let spec = JobSpec::parse(&text, dir).unwrap();
    let job = Job::new(spec, &JobOptions::default()).unwrap();
    let started = Instant::now();
    job.run().unwrap();
    started.elapsed()
}

fn main() {
    let records = std::env::var("WEIR_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000u64);
    // SAFETY: set before any other thread starts; the object store reads them.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    }
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path());
    let dir = tempfile::tempdir().unwrap();
    let parts = parts(records);
    let bytes: usize = parts.iter().map(Vec::len).sum();
    let mib = bytes as f64 / (1 << 20) as f64;
    println!("{records} records, {mib:.0} MiB of JSON lines, parts of {} MiB, into s3s-fs; best of 3", ROLL_BYTES >> 20);
    let mut best = (Duration::MAX, Duration::MAX);
    for run in 0..3 {
        let bucket = format!("run{run}");
        std::fs::create_dir_all(data.path().join(&bucket)).unwrap();
        best.0 = best.0.min(plain(server.1, &bucket, &parts));
        best.1 = best.1.min(weir(server.1, &bucket, records, dir.path()));
    }
    let rate = |took: Duration| mib / took.as_secs_f64();
    println!("{:<24} {:>10}", "run", "MiB/s");
    println!("{:<24} {:>10.1}", "plain object_store puts", rate(best.0));
    println!("{:<24} {:>10.1}", "weir files sink", rate(best.1));
    println!("weir / plain: {:.2}×", rate(best.1) / rate(best.0));
}
