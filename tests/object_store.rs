//! Checkpoints in object storage (`[checkpoint] dir = "s3://..."`, `file://...`): a
//! job killed with SIGKILL and restarted on a "new machine" (its local checkpoints and
//! RocksDB's working directory deleted) restores from the store and commits exactly
//! the output of an uninterrupted run, on both backends. S3 is a real S3 server
//! (s3s-fs, installed by `scripts/install-s3s`) on a loopback port.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::crash::*;
use weir::JobSpec;
use weir::job::spec::BackendKind;

/// The login-anomaly crash job with its checkpoints in the store at `url`.
fn job_in_store(dir: &Path, backend: BackendKind, rate: f64, url: &str, options: &[(&str, String)]) -> PathBuf {
    let path = crash_job("login-anomaly", dir, backend, 1, rate);
    let mut spec = JobSpec::load(&path).unwrap();
    let checkpoint = spec.checkpoint.as_mut().unwrap();
    checkpoint.dir = Some(url.into());
    checkpoint.store_options = options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    std::fs::write(&path, toml::to_string(&spec).unwrap()).unwrap();
    path
}

/// The newest complete checkpoint in the store, as `newest` finds it.
fn run_moving_machines(job: &Path, kills: &[u64], newest: &dyn Fn() -> u64, env: &[(&str, String)]) -> String {
    let dir = job.parent().unwrap();
    let mut logs = String::new();
    let run = || {
        let mut command = weir_run(job);
        command.arg("--log=weir=info").envs(env.iter().map(|(k, v)| (k, v)));
        command
    };
    for &after in kills {
        let before = newest();
        let mut child = run().spawn().unwrap();
        for _ in 0..2000 {
            if newest() > before || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(after));
        let _ = child.kill(); // SIGKILL
        logs.push_str(&String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr));
        // Another machine: nothing local survives but the sink's output.
        for local in [dir.join(".weir"), dir.join("state")] {
            if local.exists() {
                std::fs::remove_dir_all(&local).unwrap();
            }
        }
    }
    let output = run().output().unwrap();
    logs.push_str(&String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the last restart failed:\n{logs}");
    logs
}

fn holds_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| e.path().is_file() || holds_files(&e.path()))
}

fn alerts(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("alerts.jsonl")).unwrap()
}

/// Kills, moves and compares, for the store `url` whose checkpoints land in `root`.
fn exactly_once_across_machines(url: &dyn Fn(&Path) -> (String, PathBuf), options: &[(&str, String)], env: &[(&str, String)]) {
    for backend in [BackendKind::Memory, BackendKind::Rocksdb] {
        let straight = tempfile::tempdir().unwrap();
        let (straight_url, _) = url(straight.path());
        let job = job_in_store(straight.path(), backend, 500.0, &straight_url, options);
        run_moving_machines(&job, &[], &|| 0, env);
        let moved = tempfile::tempdir().unwrap();
        let (moved_url, root) = url(moved.path());
        let job = job_in_store(moved.path(), backend, 25.0, &moved_url, options);
        let logs = run_moving_machines(&job, &kill_moments(21, 3), &|| newest_checkpoint_in(&root), env);
        let downloads = logs.matches("checkpoint downloaded from the store").count();
        assert!(downloads > 0, "no run restored from the store ({backend:?}):\n{logs}");
        let expected = alerts(straight.path());
        assert!(!expected.is_empty(), "empty reference output");
        assert_eq!(alerts(moved.path()), expected, "{backend:?}: output after moving machines differs");
        // Old checkpoints are deleted from the store as from the local directory (a
        // store on disk may leave their directories behind, empty).
        let kept = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("chk-") && holds_files(&e.path()))
            .count();
        assert!((1..=3).contains(&kept), "{kept} checkpoints left in the store");
    }
}

#[test]
fn a_job_moved_to_another_machine_restores_from_a_file_url_store_exactly_once() {
    exactly_once_across_machines(
        &|dir| {
            let root = dir.join("store").join("checkpoints");
            (format!("file://{}", root.display()), root)
        },
        &[],
        &[],
    );
}

/// An S3 server on a free loopback port, its buckets directories under `dir`.
struct S3Server {
    child: Child,
    port: u16,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ACCESS_KEY: &str = "weir-test";
const SECRET_KEY: &str = "weir-test-secret";

fn s3s_binary() -> PathBuf {
    std::env::var_os("WEIR_S3S")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-tools/bin/s3s-fs")))
        .filter(|p| p.exists())
        .expect("s3s-fs is not installed: run `bash scripts/install-s3s` (scripts/test does)")
}

fn start_s3(dir: &Path) -> S3Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new(s3s_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return S3Server { child, port };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("s3s-fs did not start on port {port}");
}

#[test]
fn a_job_moved_to_another_machine_restores_from_s3_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let server = start_s3(data.path());
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let options = [("aws_endpoint", format!("http://127.0.0.1:{}", server.port)), ("aws_allow_http", "true".into())];
    let bucket = std::sync::atomic::AtomicUsize::new(0);
    exactly_once_across_machines(
        &|_| {
            // A bucket per run: s3s-fs keeps a bucket as a directory of its root.
            let name = format!("run{}", bucket.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            std::fs::create_dir_all(data.path().join(&name)).unwrap();
            (format!("s3://{name}/jobs/login"), data.path().join(&name).join("jobs").join("login"))
        },
        &options,
        &env,
    );
}

#[test]
fn secrets_in_the_job_file_and_foreign_objects_in_the_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let url = format!("file://{}", root.display());
    let job = job_in_store(dir.path(), BackendKind::Memory, 500.0, &url, &[("aws_secret_access_key", "x".into())]);
    let output = weir_run(&job).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is a secret: set it in the environment"), "{stderr}");
    assert!(!stderr.contains("aws_secret_access_key = \"x\"") && !stderr.contains("\"x\""), "{stderr}");

    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("notes.txt"), "mine").unwrap();
    let job = job_in_store(dir.path(), BackendKind::Memory, 500.0, &url, &[]);
    let output = weir_run(&job).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("holds `notes.txt`, which weir did not write"), "{stderr}");
    assert_eq!(std::fs::read_to_string(root.join("notes.txt")).unwrap(), "mine");
}

#[test]
fn a_checkpoint_file_larger_than_an_upload_part_round_trips_through_s3() {
    use weir::checkpoint::remote::RemoteStore;
    use weir::checkpoint::{CheckpointMetadata, CheckpointStorage, TaskState};
    use weir::state::snapshot::{FileEntry, file_crc};

    let data = tempfile::tempdir().unwrap();
    let server = start_s3(data.path());
    std::fs::create_dir_all(data.path().join("big")).unwrap();
    // SAFETY: set before any thread of this test reads the environment; other tests
    // pass credentials to their child processes instead.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", "us-east-1");
    }
    let options = [
        ("aws_endpoint".to_string(), format!("http://127.0.0.1:{}", server.port)),
        ("aws_allow_http".to_string(), "true".to_string()),
    ]
    .into();
    let remote = RemoteStore::open("s3://big/checkpoints", &options).unwrap();
    // A 20 MiB file of a checkpoint (three parts of an upload), then its metadata.
    let local = tempfile::tempdir().unwrap();
    let relative = "chk-00000001/sink#0/channels.ent";
    let bytes: Vec<u8> = (0..20 * 1024 * 1024 + 7).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir_all(local.path().join("chk-00000001/sink#0")).unwrap();
    std::fs::write(local.path().join(relative), &bytes).unwrap();
    let entry = FileEntry {
        path: relative.into(),
        size: bytes.len() as u64,
        crc32: file_crc(&local.path().join(relative)).unwrap(),
    };
    let tasks = [("sink#0".to_string(), TaskState::Sink { state: serde_json::Value::Null, channel_state: Some(entry) })];
    let metadata = CheckpointMetadata { format: 1, job: "big".into(), id: 1, created_ms: 0, tasks: tasks.into() };
    CheckpointStorage::with_remote(local.path().to_path_buf(), std::sync::Arc::new(remote))
        .complete(&metadata)
        .unwrap();
    // Another machine gets it back whole.
    let other = tempfile::tempdir().unwrap();
    let remote = RemoteStore::open("s3://big/checkpoints", &options).unwrap();
    let restored = CheckpointStorage::with_remote(other.path().to_path_buf(), std::sync::Arc::new(remote))
        .latest()
        .unwrap()
        .expect("the checkpoint is in the store");
    assert_eq!(restored.metadata.id, 1);
    assert!(std::fs::read(other.path().join(relative)).unwrap() == bytes, "the file came back different");
}

/// The job started on a second machine while the first still runs it (a stalled
/// process that comes back, an operator's mistake): the newest start takes the
/// checkpoints over, and the first is fenced at its next checkpoint: it stops, with an
/// error saying why, without writing another checkpoint into the store.
#[test]
fn a_second_start_elsewhere_fences_the_first_at_its_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let url = format!("file://{}", root.display());
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    for home in [&home_a, &home_b] {
        std::fs::create_dir_all(home).unwrap();
    }
    // Output that needs nothing local to resume (a file sink resumes its own file).
    let discarding = |home: &Path| {
        // 29 records at 2 a second: the first machine is far from done when the second starts.
        let path = job_in_store(home, BackendKind::Memory, 2.0, &url, &[]);
        let mut spec = JobSpec::load(&path).unwrap();
        for sink in &mut spec.sinks {
            *sink = weir::job::spec::SinkSpec::Discard { uid: sink.uid().to_string() };
        }
        std::fs::write(&path, toml::to_string(&spec).unwrap()).unwrap();
        path
    };
    let (job_a, job_b) = (discarding(&home_a), discarding(&home_b));
    let wait_for = |what: &str, done: &mut dyn FnMut() -> bool| {
        for _ in 0..3000 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("timed out waiting until {what}");
    };
    let mut a = weir_run(&job_a).arg("--log=weir=info").spawn().unwrap();
    wait_for("the first machine completes a checkpoint", &mut || newest_checkpoint_in(&root) > 0);
    let mut b = weir_run(&job_b).arg("--log=weir=info").spawn().unwrap();
    wait_for("the first machine stops", &mut || a.try_wait().unwrap().is_some());
    let output_a = a.wait_with_output().unwrap();
    let log_a = String::from_utf8_lossy(&output_a.stderr);
    assert!(!output_a.status.success(), "{log_a}");
    assert!(log_a.contains("fenced: the checkpoints in file://"), "{log_a}");
    // The second goes on checkpointing.
    let taken = newest_checkpoint_in(&root);
    wait_for("the second machine completes checkpoints", &mut || {
        newest_checkpoint_in(&root) > taken || b.try_wait().unwrap().is_some()
    });
    let _ = b.kill();
    let output_b = b.wait_with_output().unwrap();
    let log_b = String::from_utf8_lossy(&output_b.stderr);
    assert!(!log_b.contains("fenced"), "{log_b}");
    assert!(newest_checkpoint_in(&root) > taken, "{log_b}");
}

// ---- part files in object storage (the `files` sink) ----

/// The keyed count of `count` generated events over 40 keys into part files in
/// `dir_url`, rolled every `roll_bytes` and every 20 ms (so that a replay rolls at other
/// records than the first run did), checkpointing every 50 ms.
fn parts_job(dir: &Path, dir_url: &str, format: &str, roll_bytes: u64, count: u64, options: &[(&str, String)]) -> PathBuf {
    let options: Vec<String> = options.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    let job = format!(
        r#"
        name = "parts"
        [[source]]
        type = "generator"
        uid = "events"
        count = {count}
        keys = 40
        seed = 3
        rate = 4000.0
        [[operator]]
        uid = "count"
        component = "keyed_count.wasm"
        parallelism = 2
        [[sink]]
        type = "files"
        uid = "archive"
        dir = "{dir_url}"
        format = "{format}"
        roll_bytes = {roll_bytes}
        roll_ms = 20
        store_options = {{ {options} }}
        [[edge]]
        from = "events"
        to = "count"
        partition = "keyed"
        [[edge]]
        from = "count"
        to = "archive"
        [checkpoint]
        dir = "checkpoints"
        interval_ms = 50
        "#,
        options = options.join(", "),
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, job).unwrap();
    path
}

/// Every published part file under `dir` (names not starting with `.`), and the
/// hidden pending ones.
fn part_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    all.sort();
    all.into_iter().partition(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
}

/// Each key's counts in the published JSON-lines parts, checking on the way that
/// every line of every visible part is a whole record.
fn counts_in_parts(dir: &Path) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut keys = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for part in part_files(dir).0 {
        let text = std::fs::read_to_string(&part).unwrap();
        assert!(text.ends_with('\n'), "{} ends mid-line", part.display());
        for line in text.lines() {
            let record: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: a partial record ({e}): {line}", part.display()));
            keys.entry(record["key"].as_str().unwrap().into()).or_default().push(record["count"].as_u64().unwrap());
        }
    }
    for counts in keys.values_mut() {
        counts.sort();
    }
    keys
}

#[test]
fn part_files_in_s3_are_visible_only_with_their_checkpoint_and_exactly_once_across_sigkills() {
    let data = tempfile::tempdir().unwrap();
    let server = start_s3(data.path());
    std::fs::create_dir_all(data.path().join("lake")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = [
        ("aws_endpoint", format!("http://127.0.0.1:{}", server.port)),
        ("aws_allow_http", "true".to_string()),
        ("aws_region", "us-east-1".to_string()),
    ];
    let job = parts_job(dir.path(), "s3://lake/orders/counts", "value", 4096, 8_000, &options);
    let parts = data.path().join("lake").join("orders").join("counts");
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];

    // Killed three times once it has completed a checkpoint of its own (mid-roll:
    // parts roll every 4 KiB and 20 ms, several times between checkpoints).
    let mut seen = Vec::new();
    kill_with_env(&job, &kill_moments(41, 3), &env, |run| {
        // Whatever is visible is whole, each count at most once, and final: a reader
        // never sees a part that is later changed or taken back.
        for part in part_files(&parts).0 {
            seen.push((part.clone(), std::fs::read(&part).unwrap()));
        }
        for (key, counts) in counts_in_parts(&parts) {
            let mut unique = counts.clone();
            unique.dedup();
            assert_eq!(unique, counts, "run {run}: key {key} has a count twice among the visible parts");
        }
    });
    let output = weir_run(&job).envs(env).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let keys = counts_in_parts(&parts);
    assert_eq!(keys.len(), 40);
    for (key, counts) in &keys {
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        assert_eq!(counts, &expected, "key {key}: counts missing or repeated");
    }
    assert_eq!(keys.values().map(Vec::len).sum::<usize>(), 8_000);
    for (part, content) in &seen {
        let now = std::fs::read(part).unwrap_or_default();
        assert!(now == *content, "{} was visible after a kill and changed later", part.display());
    }
    let (published, pending) = part_files(&parts);
    assert!(published.len() > 3, "parts rolled: {published:?}");
    assert!(pending.is_empty(), "pending parts left behind: {pending:?}");
}

#[test]
fn parquet_parts_read_back_with_pyarrow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lake");
    let job = parts_job(dir.path(), "lake", "parquet", 64 << 10, 3_000, &[]);
    let output = weir_run(&job).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (published, pending) = part_files(&out);
    assert!(!published.is_empty() && pending.is_empty(), "{published:?} {pending:?}");
    assert!(published.iter().all(|p| p.extension().is_some_and(|e| e == "parquet")));

    // pyarrow (installed by scripts/setup) reads the directory as a dataset.
    let python = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-tools/py/bin/python")).unwrap();
    let script = "import sys, pyarrow.dataset as ds\n\
                  t = ds.dataset(sys.argv[1], format='parquet').to_table()\n\
                  print(t.schema.field('key').type, t.schema.field('count').type)\n\
                  rows = sorted(zip(t.column('key').to_pylist(), t.column('count').to_pylist()))\n\
                  print(len(rows))\n\
                  print(max(c for _, c in rows), sum(1 for _, c in rows if c == 1))\n";
    let read = Command::new(python).arg("-c").arg(script).arg(&out).output().unwrap();
    assert!(read.status.success(), "pyarrow: {}", String::from_utf8_lossy(&read.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&read.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "string int64", "inferred column types");
    assert_eq!(lines[1], "3000", "every record once");
    let (max, firsts) = lines[2].split_once(' ').unwrap();
    assert_eq!(firsts, "40", "each key's count starts at 1");
    assert!(max.parse::<u64>().unwrap() >= 3000 / 40);
}

// ---- reading files from object storage (the `files` source) ----

/// Puts `text` at `key` of bucket `lake` on the S3 server, through the object store
/// client weir itself uses (as another writer would).
fn put_object(server: &S3Server, key: &str, text: String) {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name("lake")
        .with_endpoint(format!("http://127.0.0.1:{}", server.port))
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .build()
        .unwrap();
    use object_store::ObjectStoreExt;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(store.put(&key.into(), text.into_bytes().into())).unwrap();
}

fn lines_of(file: usize, count: usize) -> String {
    (0..count).map(|i| format!("{{\"file\":{file},\"n\":{i},\"k\":\"k{}\"}}\n", i % 7)).collect()
}

#[test]
fn files_under_an_s3_prefix_are_read_exactly_once_across_sigkills_and_new_ones_picked_up() {
    let data = tempfile::tempdir().unwrap();
    let server = start_s3(data.path());
    std::fs::create_dir_all(data.path().join("lake")).unwrap();
    // Small files, so that kills land after some are read to the end.
    for file in 0..6 {
        put_object(&server, &format!("in/orders-{file}.jsonl"), lines_of(file, 400));
    }
    // Hidden and marker files are not input.
    put_object(&server, "in/_SUCCESS", String::new());
    put_object(&server, "in/.orders-9.jsonl.inprogress", "not input\n".into());
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let text = |monitor: &str| {
        format!(
            r#"
            name = "from-s3"
            [[source]]
            type = "files"
            uid = "in"
            dir = "s3://lake/in"
            key_field = "k"
            rate = 2000.0
            {monitor}
            store_options = {{ aws_endpoint = "http://127.0.0.1:{port}", aws_allow_http = "true", aws_region = "us-east-1" }}
            [[sink]]
            type = "file"
            uid = "out"
            path = "out.jsonl"
            [[edge]]
            from = "in"
            to = "out"
            [checkpoint]
            dir = "checkpoints"
            interval_ms = 50
            "#,
            port = server.port
        )
    };
    std::fs::write(&job, text("")).unwrap();
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    kill_with_env(&job, &kill_moments(5, 3), &env, |_| {});
    let output = weir_run(&job).envs(env).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected: Vec<String> = (0..6).flat_map(|f| lines_of(f, 400).lines().map(str::to_string).collect::<Vec<_>>()).collect();
    let got: Vec<String> = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines().map(str::to_string).collect();
    // One source subtask: the files in name order, each line once.
    assert_eq!(got.len(), expected.len(), "lines read");
    assert!(got == expected, "the output differs from the input, in order");

    // Monitoring: a new file is read once it appears, and none twice.
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, text("monitor_ms = 50").replace("rate = 2000.0", "")).unwrap();
    let mut child = weir_run(&job).envs(env).spawn().unwrap();
    let out = dir.path().join("out.jsonl");
    let wait_for = |count: usize| {
        for _ in 0..600 {
            if std::fs::read_to_string(&out).unwrap_or_default().lines().count() >= count {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("fewer than {count} lines after 30 s");
    };
    wait_for(2400);
    put_object(&server, "in/orders-6.jsonl", lines_of(6, 10));
    wait_for(2410);
    let _ = child.kill();
    child.wait().unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(got.lines().count(), 2410);
    assert!(got.ends_with(&lines_of(6, 10)), "the new file's lines came last");
}
