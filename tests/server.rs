//! The deployment server (`weir serve`, `host/src/server`): bundles uploaded, jobs run,
//! savepoints triggered and polled, jobs stopped, all over its REST API with its token.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use weir::plugin::Runtime;
use weir::server::{RunningServer, ServerConfig};

/// A job that runs a while (a paced generator) with checkpoints, writing `out`.
fn paced_job(dir: &Path, out: &Path) -> std::path::PathBuf {
    std::fs::copy(guests::KEYED_COUNT, dir.join("keyed_count.wasm")).unwrap();
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            name = "counting"
            checkpoint = {{ interval_ms = 100 }}
            [[source]]
            type = "generator"
            uid = "events"
            count = 4000
            keys = 10
            seed = 9
            rate = 2000
            [[operator]]
            uid = "count"
            component = "keyed_count.wasm"
            [[sink]]
            type = "file"
            uid = "out"
            path = "{}"
            [[edge]]
            from = "events"
            to = "count"
            partition = "keyed"
            [[edge]]
            from = "count"
            to = "out"
            "#,
            out.display()
        ),
    )
    .unwrap();
    path
}

/// A server on a free loopback port (plain HTTP) with its data in `data`.
fn local_server(data: &Path) -> RunningServer {
    RunningServer::start(&ServerConfig {
        data_dir: data.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        insecure: false,
        tls: None,
        connections: Default::default(),
    })
    .unwrap()
}

/// The Python of the tools `scripts/setup` installs (with prometheus_client).
fn weir_toolchain_python() -> std::path::PathBuf {
    weir::toolchain::tools_dir().join("py/bin/python")
}

/// Reads a Prometheus scrape from stdin with prometheus_client's parser and prints each
/// sample as `name label=value ... value`.
const PARSE_PROMETHEUS: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = " ".join(f"{k}={v}" for k, v in sorted(s.labels.items(), key=lambda kv: ["job", "jid", "node", "kind", "outcome"].index(kv[0])))
        print(s.name, labels, s.value)
"#;

struct Client {
    base: String,
    token: String,
}

impl Client {
    fn call(&self, method: &str, route: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let url = format!("{}{route}", self.base);
        let auth = format!("Bearer {}", self.token);
        let response = if method == "GET" {
            let mut request = ureq::get(&url).config().http_status_as_error(false).build().header("Authorization", &auth);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.call()
        } else {
            let mut request = ureq::post(&url).config().http_status_as_error(false).build().header("Authorization", &auth);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.send(body.unwrap_or_default())
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    fn get(&self, route: &str) -> (u16, serde_json::Value) {
        self.call("GET", route, None, &[])
    }

    fn post(&self, route: &str, body: &str) -> (u16, serde_json::Value) {
        self.call("POST", route, Some(body.as_bytes()), &[("Content-Type", "application/json")])
    }

    /// Polls `route` until its answer satisfies `what` (for at most a minute).
    fn wait_for(&self, route: &str, what: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, answer) = self.get(route);
            if what(&answer) {
                return answer;
            }
            assert!(std::time::Instant::now() < deadline, "{route} never got there: {answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A bundle of the paced counting job with the counter guest `guest` (as `component`),
/// writing `out`, its job text changed by `edit`.
fn counter_bundle(out: &Path, component: &str, guest: &str, version: &str, edit: impl Fn(String) -> String) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let job = paced_job(dir.path(), out);
    std::fs::copy(guest, dir.path().join(component)).unwrap();
    let text = std::fs::read_to_string(&job).unwrap().replace("keyed_count.wasm", component);
    std::fs::write(&job, edit(text)).unwrap();
    let file = dir.path().join("bundle.weir");
    weir::bundle::pack(&job, version, &file, &Runtime::new().unwrap()).unwrap();
    std::fs::read(file).unwrap()
}

/// Per key, the (version, count) of every line the counters wrote to `out`, checked to
/// count 1, 2, 3, ... in order and never go from v2 back to v1.
fn counts_per_key(out: &Path) -> std::collections::BTreeMap<String, Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(out).unwrap();
    let mut per_key: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        per_key.entry(v["key"].as_str().unwrap().into()).or_default().push((v["v"].as_u64().unwrap(), v["count"].as_u64().unwrap()));
    }
    for (key, seen) in &per_key {
        let counts: Vec<u64> = seen.iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>(), "key {key}: every event counted once, in order");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "key {key}: v2 never before v1");
    }
    per_key
}

#[test]
fn a_bundle_is_uploaded_run_savepointed_and_stopped_over_rest() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.jsonl");
    let job = paced_job(work.path(), &out);
    let file = work.path().join("counting.weir");
    weir::bundle::pack(&job, "1.0.0", &file, &Runtime::new().unwrap()).unwrap();

    let server = local_server(&data.path().join("weir"));
    let token = std::fs::read_to_string(&server.token_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&server.token_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let client = Client { base: format!("http://{}", server.address), token };

    // Without the token, for another Host, or from a page: refused.
    let stranger = Client { base: client.base.clone(), token: "guess".into() };
    assert_eq!(stranger.get("/jobs").0, 401);
    assert_eq!(client.call("GET", "/jobs", None, &[("Host", "evil.example")]).0, 403);
    assert_eq!(client.call("GET", "/jobs", None, &[("Origin", "http://evil.example")]).0, 403);

    // A bundle that is not one is refused with the reason.
    let (status, answer) = client.call("POST", "/bundles", Some(b"not a bundle"), &[]);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.to_string().contains("unreadable"), "{answer}");

    let (status, bundle) = client.call("POST", "/bundles", Some(&std::fs::read(&file).unwrap()), &[]);
    assert_eq!(status, 200, "{bundle}");
    assert_eq!((bundle["name"].as_str(), bundle["version"].as_str()), (Some("counting"), Some("1.0.0")));
    let id = bundle["id"].as_str().unwrap().to_string();
    assert_eq!(client.get("/bundles").1["bundles"][0]["id"], bundle["id"]);

    // A savepoint path outside the data directory is refused.
    let (status, answer) = client.post(&format!("/bundles/{id}/run"), r#"{"savepointPath": "/etc"}"#);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = client.post(&format!("/bundles/{id}/run"), "{}");
    assert_eq!(status, 200, "{answer}");
    let jid = answer["jobid"].as_str().unwrap().to_string();
    assert_eq!(client.get("/jobs").1["jobs"][0]["status"], "RUNNING");

    // While it runs: per-node counts in the job, and a Prometheus scrape that
    // prometheus_client's own parser reads.
    std::thread::sleep(Duration::from_millis(300));
    let details = client.get(&format!("/jobs/{jid}")).1;
    let count = details["vertices"].as_array().unwrap().iter().find(|v| v["id"] == "count").cloned().unwrap();
    assert!(count["metrics"]["read-records"].as_u64().unwrap() > 0, "{details}");
    assert!(count["state-size"].as_u64().unwrap() > 0 && count["timers"].is_u64(), "{details}");
    let scrape = client.get("/metrics").1;
    let scrape = scrape.as_str().unwrap_or_else(|| panic!("{scrape}")).to_string();
    let parsed = std::process::Command::new(weir_toolchain_python())
        .args(["-c", PARSE_PROMETHEUS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), scrape.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(parsed.status.success(), "{}\n{scrape}", String::from_utf8_lossy(&parsed.stderr));
    let samples = String::from_utf8_lossy(&parsed.stdout);
    assert!(samples.contains(&format!("weir_job_running job=counting jid={jid} 1.0")), "{samples}");
    assert!(samples.lines().any(|l| l.starts_with("weir_records_in_total") && l.contains("node=count")), "{samples}");
    assert!(samples.lines().any(|l| l.starts_with("weir_state_bytes") && l.contains("node=count")), "{samples}");
    assert!(samples.lines().any(|l| l.starts_with("weir_operator_call_seconds_total") && l.contains("node=count")), "{samples}");
    assert!(count["calls"].as_u64().unwrap() > 0, "{details}");
    // Checkpoints every 100 ms: counted, with the latest one's duration and size.
    let stats = client.wait_for(&format!("/jobs/{jid}/checkpoints"), |a| a["counts"]["completed"].as_u64() > Some(0));
    let latest = &stats["latest"]["completed"];
    assert!(latest["id"].as_u64().unwrap() > 0 && latest["state_size"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["counts"]["failed"], 0, "{stats}");

    // A savepoint: 202 with a request id, polled until it completes, under the data dir.
    std::thread::sleep(Duration::from_millis(300));
    let (status, answer) = client.post(&format!("/jobs/{jid}/savepoints"), "");
    assert_eq!(status, 202, "{answer}");
    let request = answer["request-id"].as_str().unwrap().to_string();
    let done = client.wait_for(&format!("/jobs/{jid}/savepoints/{request}"), |a| a["status"]["id"] == "COMPLETED");
    let location = done["operation"]["location"].as_str().unwrap_or_else(|| panic!("{done}"));
    assert!(Path::new(location).starts_with(data.path()) && Path::new(location).join("_savepoint").is_file(), "{location}");

    // Stop with a savepoint, then run the bundle again from it: the output is the whole
    // input exactly once, as one uninterrupted run would write it.
    let (status, answer) = client.post(&format!("/jobs/{jid}/stop"), r#"{"savepoint": true}"#);
    assert_eq!(status, 202, "{answer}");
    let stopped = client.wait_for(&format!("/jobs/{jid}/savepoints/{}", answer["request-id"].as_str().unwrap()), |a| {
        a["status"]["id"] == "COMPLETED"
    });
    let savepoint = stopped["operation"]["location"].as_str().unwrap().to_string();
    client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] == "CANCELED" || a["state"] == "FINISHED");
    let (status, answer) = client.post(&format!("/bundles/{id}/run"), &format!(r#"{{"savepointPath": {savepoint:?}}}"#));
    assert_eq!(status, 200, "{answer}");
    let second = answer["jobid"].as_str().unwrap().to_string();
    let finished = client.wait_for(&format!("/jobs/{second}"), |a| a["state"] == "FINISHED" || a["state"] == "FAILED");
    assert_eq!(finished["state"], "FINISHED", "{finished}");
    let lines = sorted_lines(&out);
    assert_eq!(lines.len(), 4000, "each event counted once across the stop");
    let mut counts = std::collections::BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let n = counts.entry(key).or_insert(0u64);
        *n += 1;
    }
    assert_eq!(counts.values().sum::<u64>(), 4000);
    for (key, n) in &counts {
        let last = lines.iter().filter(|l| l.contains(&format!("\"key\":\"{key}\""))).filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l).ok()?["count"].as_u64()
        }).max().unwrap();
        assert_eq!(last, *n, "key {key}: the counts went on from the savepoint");
    }
    server.stop();
}

/// Starts `weir serve` on `data` and returns it with its base URL (from its first line).
fn serve(data: &Path) -> (std::process::Child, String) {
    serve_with(data, &[])
}

fn serve_with(data: &Path, extra: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "weir serve ended before listening");
    }
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let base = line.split("listening on ").nth(1).unwrap().split(';').next().unwrap().trim().to_string();
    (child, base)
}

#[test]
fn a_killed_server_resumes_its_jobs_exactly_once() {
    // SIGKILL the server mid-job; started again on the same data directory, it resumes
    // the job from its latest checkpoint, and the file sink holds every count once.
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out.jsonl");
    let job = paced_job(work.path(), &out);
    let file = work.path().join("counting.weir");
    weir::bundle::pack(&job, "1.0.0", &file, &Runtime::new().unwrap()).unwrap();

    let (mut first, base) = serve(data.path());
    let token = std::fs::read_to_string(data.path().join("token")).unwrap();
    let client = Client { base, token: token.clone() };
    let (status, bundle) = client.call("POST", "/bundles", Some(&std::fs::read(&file).unwrap()), &[]);
    assert_eq!(status, 200, "{bundle}");
    let (status, answer) = client.post(&format!("/bundles/{}/run", bundle["id"].as_str().unwrap()), "{}");
    assert_eq!(status, 200, "{answer}");
    let jid = answer["jobid"].as_str().unwrap().to_string();
    // Let it take a few checkpoints, then kill the whole server.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(client.get(&format!("/jobs/{jid}")).1["state"], "RUNNING", "killed mid-job");
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, base) = serve(data.path());
    let client = Client { base, token };
    let finished = client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] == "FINISHED" || a["state"] == "FAILED");
    assert_eq!(finished["state"], "FINISHED", "{finished}");
    let lines = sorted_lines(&out);
    assert_eq!(lines.len(), 4000, "every event counted exactly once across the kill");
    let mut last = std::collections::BTreeMap::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = last.entry(v["key"].as_str().unwrap().to_string()).or_insert(0);
        *n = (*n).max(v["count"].as_u64().unwrap());
    }
    assert_eq!(last.values().sum::<u64>(), 4000, "counts went on from the checkpoint");
    second.kill().unwrap();
    second.wait().unwrap();
}

#[test]
fn an_operator_is_upgraded_live_from_another_uploaded_bundle() {
    // counter v1 runs; the bundle of v2 is uploaded and its component swapped in live:
    // v2 migrates v1's state, so every key's count goes on without a gap or a repeat.
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("out.jsonl");
    let v1 = counter_bundle(&out, "counter_v1.wasm", guests::COUNTER_V1, "1.0.0", |t| t);
    let v2 = counter_bundle(&out, "counter_v2.wasm", guests::COUNTER_V2, "1.0.0", |t| t);
    let server = local_server(data.path());
    let client = Client { base: format!("http://{}", server.address), token: std::fs::read_to_string(&server.token_file).unwrap() };
    let upload = |bytes: &[u8]| client.call("POST", "/bundles", Some(bytes), &[]).1["id"].as_str().unwrap().to_string();
    let (first, second) = (upload(&v1), upload(&v2));
    let jid = client.post(&format!("/bundles/{first}/run"), "{}").1["jobid"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let (status, answer) = client.post(&format!("/jobs/{jid}/upgrade"), r#"{"operator": "nope", "bundle": "x"}"#);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = client.post(&format!("/jobs/{jid}/upgrade"), &format!(r#"{{"operator": "count", "bundle": "{second}"}}"#));
    assert_eq!(status, 202, "{answer}");
    let request = answer["request-id"].as_str().unwrap();
    let done = client.wait_for(&format!("/jobs/{jid}/upgrades/{request}"), |a| a["status"]["id"] == "COMPLETED");
    assert!(done["operation"]["location"].is_string(), "{done}");
    let finished = client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] != "RUNNING");
    assert_eq!(finished["state"], "FINISHED", "{finished}");
    // The history: one upgrade, asked through the server, whose probation passed when
    // the input ended.
    let (status, history) = client.get(&format!("/jobs/{jid}/history"));
    assert_eq!(status, 200, "{history}");
    let record = &history["upgrades"][0];
    assert_eq!((record["operator"].as_str(), record["by"].as_str()), (Some("count"), Some("weir serve")), "{history}");
    assert_eq!(record["outcome"]["state"], "done", "{history}");
    assert!(record["to"]["path"].as_str().unwrap().ends_with("counter_v2.wasm"), "{history}");
    // Per key, counts 1, 2, 3, ... in order, first from v1 and then from v2.
    let per_key = counts_per_key(&out);
    let upgraded = per_key.values().flatten().filter(|(v, _)| *v == 2).count();
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 4000);
    assert!(upgraded > 0 && upgraded < 4000, "the switch happened mid-stream: {upgraded} lines from v2");
    server.stop();
}

#[test]
fn the_cli_deploys_and_lists_jobs() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let job = paced_job(work.path(), &work.path().join("out.jsonl"));
    let file = work.path().join("counting.weir");
    weir::bundle::pack(&job, "1.0.0", &file, &Runtime::new().unwrap()).unwrap();
    let (mut server, base) = serve(data.path());
    let weir = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .args(["--server", &base, "--data-dir"])
            .arg(data.path())
            .env_remove("WEIR_TOKEN")
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).trim().to_string(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, jid, stderr) = weir(&["deploy", file.to_str().unwrap(), "--run"]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("uploaded `counting` 1.0.0"), "{stderr}");
    let (ok, listed, stderr) = weir(&["jobs"]);
    assert!(ok, "{stderr}");
    assert!(listed.contains(&jid) && listed.contains("counting"), "{listed}");
    // A savepoint and a stop with savepoint, their progress on stderr, locations on stdout.
    let (ok, location, stderr) = weir(&["jobs", "savepoint", &jid]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("savepoint complete"), "{stderr}");
    assert!(Path::new(&location).join("_savepoint").is_file(), "{location}");
    let (ok, location, stderr) = weir(&["jobs", "stop", &jid, "--savepoint"]);
    assert!(ok, "{stderr}");
    assert!(Path::new(&location).join("_savepoint").is_file(), "{location}");
    let (ok, listed, _) = weir(&["jobs"]);
    assert!(ok && !listed.contains("RUNNING"), "{listed}");
    // Without the token: a clear refusal.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["jobs", "--server", &base, "--data-dir"])
        .arg(elsewhere.path())
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the server's token"));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn every_operation_of_the_openapi_description_is_served() {
    // The checked-in description and the router agree: each documented operation
    // reaches a handler (a JSON answer, even if "no job"), not the router's 404 or 405.
    let data = tempfile::tempdir().unwrap();
    let server = local_server(data.path());
    let client = Client { base: format!("http://{}", server.address), token: std::fs::read_to_string(&server.token_file).unwrap() };
    let (status, served) = client.get("/openapi.json");
    assert_eq!(status, 200);
    let described: serde_json::Value = serde_json::from_str(weir::server::OPENAPI).unwrap();
    assert_eq!(served, described);
    let mut operations = 0;
    for (path, methods) in described["paths"].as_object().unwrap() {
        let route = path.replace("{id}", "no-such-id").replace("{request}", "no-such-request");
        for method in methods.as_object().unwrap().keys() {
            let (status, answer) = match method.as_str() {
                "get" => client.get(&route),
                "post" => client.post(&route, r#"{"operator": "x", "bundle": "y"}"#),
                other => panic!("{other}"),
            };
            assert_ne!(status, 405, "{method} {path}");
            assert!(status != 404 || answer["errors"].is_array(), "{method} {path}: the router has no such route");
            operations += 1;
        }
    }
    assert_eq!(operations, 14);
    server.stop();
}

/// The page at `url` after its scripts ran, from headless Chromium (Debian's, installed
/// by scripts/setup), and a screenshot of it at `png`.
fn chromium(url: &str, png: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let output = std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=3000", "--window-size=1100,600"])
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium is installed by scripts/setup");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&[&format!("--screenshot={}", png.display())]);
    run(&["--dump-dom"])
}

#[test]
fn the_dashboard_shows_what_the_rest_api_says() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let job = paced_job(work.path(), &work.path().join("out.jsonl"));
    let text = std::fs::read_to_string(&job).unwrap().replace("rate = 2000", "");
    std::fs::write(&job, text).unwrap();
    let file = work.path().join("counting.weir");
    weir::bundle::pack(&job, "1.0.0", &file, &Runtime::new().unwrap()).unwrap();
    let server = local_server(data.path());
    let token = std::fs::read_to_string(&server.token_file).unwrap();
    let client = Client { base: format!("http://{}", server.address), token: token.clone() };
    let id = client.call("POST", "/bundles", Some(&std::fs::read(&file).unwrap()), &[]).1["id"].as_str().unwrap().to_string();
    let jid = client.post(&format!("/bundles/{id}/run"), "{}").1["jobid"].as_str().unwrap().to_string();
    let rest = client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] == "FINISHED");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dom = chromium(&format!("{}/#token={}", client.base, token.trim()), &shots.join("dashboard.png"));
    assert!(dom.contains(&format!("<small>{jid}</small>")) && dom.contains(r#"class="state FINISHED""#), "{dom}");
    for vertex in rest["vertices"].as_array().unwrap() {
        let row = format!(
            r#"<td>{}</td><td>{}</td><td>{}</td><td class="read">{}</td><td class="write">{}</td>"#,
            vertex["id"].as_str().unwrap(),
            vertex["kind"].as_str().unwrap(),
            vertex["parallelism"],
            vertex["metrics"]["read-records"],
            vertex["metrics"]["write-records"]
        );
        assert!(dom.contains(&row), "the page lacks {row}: {dom}");
    }
    let checkpoints = client.get(&format!("/jobs/{jid}/checkpoints")).1;
    assert!(dom.contains(&format!("checkpoints: {} completed", checkpoints["counts"]["completed"])), "{dom}");
    let png = std::fs::read(shots.join("dashboard.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "a screenshot of the page");
    // Without the token, the page asks for it and shows no job.
    let bare = chromium(&format!("{}/", client.base), &shots.join("dashboard-login.png"));
    assert!(bare.contains(r#"<p id="login">"#) && !bare.contains(&jid), "{bare}");
    server.stop();
}

#[test]
fn the_whole_deployment_flow_loses_and_repeats_nothing() {
    // Upload two versions, run v1, savepoint, upgrade live to v2, stop with a savepoint,
    // run v2's bundle from it: per key, the counts are 1, 2, 3, ... to the end, each once,
    // as one uninterrupted run of either version would count.
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("out.jsonl");
    let bundle_of = |component: &str, guest: &str| {
        counter_bundle(&out, component, guest, "1.0.0", |t| t.replace("count = 4000", "count = 20000"))
    };
    let server = local_server(data.path());
    let client = Client { base: format!("http://{}", server.address), token: std::fs::read_to_string(&server.token_file).unwrap() };
    let upload = |bytes: &[u8]| client.call("POST", "/bundles", Some(bytes), &[]).1["id"].as_str().unwrap().to_string();
    let (v1, v2) = (upload(&bundle_of("counter_v1.wasm", guests::COUNTER_V1)), upload(&bundle_of("counter_v2.wasm", guests::COUNTER_V2)));
    let completed = |jid: &str, kind: &str, answer: serde_json::Value| {
        let request = answer["request-id"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string();
        let done = client.wait_for(&format!("/jobs/{jid}/{kind}/{request}"), |a| a["status"]["id"] == "COMPLETED");
        done["operation"]["location"].as_str().unwrap_or_else(|| panic!("{done}")).to_string()
    };
    let jid = client.post(&format!("/bundles/{v1}/run"), "{}").1["jobid"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(400));
    completed(&jid, "savepoints", client.post(&format!("/jobs/{jid}/savepoints"), "").1);
    completed(&jid, "upgrades", client.post(&format!("/jobs/{jid}/upgrade"), &format!(r#"{{"operator": "count", "bundle": "{v2}"}}"#)).1);
    std::thread::sleep(Duration::from_millis(300));
    let savepoint = completed(&jid, "savepoints", client.post(&format!("/jobs/{jid}/stop"), r#"{"savepoint": true}"#).1);
    client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] == "CANCELED");
    let again = client.post(&format!("/bundles/{v2}/run"), &format!(r#"{{"savepointPath": {savepoint:?}}}"#)).1;
    let again = again["jobid"].as_str().unwrap_or_else(|| panic!("{again}")).to_string();
    let finished = client.wait_for(&format!("/jobs/{again}"), |a| a["state"] != "RUNNING");
    assert_eq!(finished["state"], "FINISHED", "{finished}");

    let per_key = counts_per_key(&out);
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 20000, "every event once");
    let versions: std::collections::BTreeSet<u64> = per_key.values().flatten().map(|(v, _)| *v).collect();
    assert_eq!(versions, [1, 2].into(), "both versions wrote");
    server.stop();

    // The same job run once, uninterrupted, by `weir run` from the command line: the
    // same (key, count) lines (v2 also writes its version and a sum).
    let cli = tempfile::tempdir().unwrap();
    let cli_out = cli.path().join("out.jsonl");
    let job = paced_job(cli.path(), &cli_out);
    std::fs::copy(guests::COUNTER_V1, cli.path().join("counter_v1.wasm")).unwrap();
    let text = std::fs::read_to_string(&job).unwrap().replace("keyed_count.wasm", "counter_v1.wasm").replace("count = 4000", "count = 20000");
    std::fs::write(&job, text.replace("rate = 2000", "")).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_weir")).arg("run").arg(&job).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let key_counts = |path: &Path| {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                serde_json::json!({ "key": v["key"].take(), "count": v["count"].take() }).to_string()
            })
            .collect();
        lines.sort();
        lines
    };
    let (served, ran) = (key_counts(&out), key_counts(&cli_out));
    let differ: Vec<_> = served.iter().zip(&ran).filter(|(a, b)| a != b).take(3).collect();
    assert!(served == ran, "the server flow wrote what one CLI run writes: {} vs {} lines; first differences {differ:?}", served.len(), ran.len());
}

/// A job of the faulty test guest in `mode`, reading `input` (a file) or generating
/// `count` events, writing `out`.
fn faulty_job(dir: &Path, mode: &str, source: &str, restart: &str, out: &Path) -> std::path::PathBuf {
    std::fs::copy(guests::FAULTY, dir.join("faulty.wasm")).unwrap();
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            name = "faulty"
            {restart}
            {source}
            [[operator]]
            uid = "faulty"
            component = "faulty.wasm"
            config = {{ mode = "{mode}" }}
            [[sink]]
            type = "file"
            uid = "out"
            path = "{}"
            [[edge]]
            from = "events"
            to = "faulty"
            [[edge]]
            from = "faulty"
            to = "out"
            "#,
            out.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn back_pressure_and_guest_traps_show_in_the_job_and_in_metrics() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();
    let server = local_server(data.path());
    let token = std::fs::read_to_string(&server.token_file).unwrap();
    let client = Client { base: server.url(), token };
    let deploy = |name: &str, job: &Path| {
        let file = work.path().join(format!("{name}.weir"));
        weir::bundle::pack(job, "1.0.0", &file, &runtime).unwrap();
        let id = client.call("POST", "/bundles", Some(&std::fs::read(&file).unwrap()), &[]).1["id"].as_str().unwrap().to_string();
        client.post(&format!("/bundles/{id}/run"), "{}").1["jobid"].as_str().unwrap().to_string()
    };

    // A slow operator (20 ms an element) behind an unpaced generator: the source waits
    // on full channels nearly all the time, which Flink calls high back-pressure.
    let slow_dir = tempfile::tempdir().unwrap();
    let source = "[[source]]\ntype = \"generator\"\nuid = \"events\"\ncount = 1000000\nkeys = 10";
    let slow = deploy("slow", &faulty_job(slow_dir.path(), "slow", source, "", &work.path().join("slow.jsonl")));
    let details = client.wait_for(&format!("/jobs/{slow}"), |a| {
        a["vertices"].as_array().is_some_and(|v| v.iter().any(|v| v["id"] == "events" && v["backpressure"]["level"] == "high"))
    });
    let faulty = details["vertices"].as_array().unwrap().iter().find(|v| v["id"] == "faulty").unwrap();
    assert_eq!(faulty["backpressure"]["level"], "ok", "the slow operator itself is busy, not back-pressured: {details}");

    // A guest that traps on one element, restarted twice: three traps, then FAILED.
    let input = work.path().join("input.jsonl");
    std::fs::write(&input, "{\"v\":1}\n{\"v\":\"boom\"}\n").unwrap();
    let trap_dir = tempfile::tempdir().unwrap();
    let source = format!("[[source]]\ntype = \"file\"\nuid = \"events\"\npath = \"{}\"", input.display());
    let restart = "restart = { strategy = \"fixed-delay\", max_attempts = 2, delay_ms = 10 }";
    let trapping = deploy("trapping", &faulty_job(trap_dir.path(), "panic", &source, restart, &work.path().join("trap.jsonl")));
    let failed = client.wait_for(&format!("/jobs/{trapping}"), |a| a["state"] == "FAILED");
    assert_eq!(failed["failures"], 3, "{failed}");
    assert!(failed["failure-cause"].as_str().unwrap().contains("boom element reached the faulty operator"), "{failed}");

    let scrape = client.get("/metrics").1;
    let scrape = scrape.as_str().unwrap();
    let trap_line = format!("weir_failures_total{{job=\"faulty\",jid=\"{trapping}\",node=\"faulty\",cause=\"trap\"}} 3");
    assert!(scrape.contains(&trap_line), "{scrape}");
    let ratio = scrape
        .lines()
        .find(|l| l.starts_with(&format!("weir_backpressure_ratio{{job=\"faulty\",jid=\"{slow}\",node=\"events\"")))
        .unwrap_or_else(|| panic!("{scrape}"));
    assert!(ratio.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.5, "{ratio}");
    assert!(scrape.contains(&format!("weir_backpressured_seconds_total{{job=\"faulty\",jid=\"{slow}\",node=\"events\"")), "{scrape}");
    server.stop();
}

#[test]
fn the_server_speaks_tls_to_clients_that_trust_its_certificate() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=weir test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed by scripts/setup");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let (mut server, base) =
        serve_with(data.path(), &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let weir = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["jobs", "--server", &base, "--data-dir"])
            .arg(data.path())
            .args(extra)
            .env_remove("WEIR_TOKEN")
            .env_remove("WEIR_CA_CERT")
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // Trusting the server's certificate: the CLI talks to it.
    let (ok, stderr) = weir(&["--ca-cert", cert.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    // Not trusting it: refused, saying why.
    let (ok, stderr) = weir(&[]);
    assert!(!ok && stderr.to_lowercase().contains("certificate"), "{stderr}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = base.replace("https://", "http://");
    assert!(ureq::get(&format!("{plain}/jobs")).call().is_err());
    server.kill().unwrap();
    server.wait().unwrap();

    // A non-loopback address without TLS is refused unless --insecure.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address") && stderr.contains("--tls-cert"), "{stderr}");
    // A key that does not belong to the certificate, or a missing file: a clear error.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--tls-cert", cert.to_str().unwrap(), "--tls-key", "/nonexistent/key.pem"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read the TLS private key /nonexistent/key.pem"));
}

/// A page in headless Chromium driven over the DevTools protocol (a websocket): what a
/// user's clicks do, read back from the page.
struct Browser {
    process: std::process::Child,
    socket: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        use std::io::BufRead as _;
        let profile = tempfile::tempdir().unwrap();
        let mut process = std::process::Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("chromium is installed by scripts/setup");
        let mut stderr = std::io::BufReader::new(process.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("DevTools listening on ws://") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "chromium ended before listening");
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let port = line.split("ws://127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().to_string();
        // The page's own debugging socket (the browser's is for targets, not pages).
        let find_page = || -> Option<String> {
            let list: serde_json::Value =
                ureq::get(&format!("http://127.0.0.1:{port}/json/list")).call().ok()?.body_mut().read_json().ok()?;
            Some(list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"].as_str()?.to_string())
        };
        let page = (0..100)
            .find_map(|_| find_page().or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            }))
            .expect("chromium has a page");
        let stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let (socket, _) = tungstenite::client(page.as_str(), stream).unwrap();
        Browser { process, socket, next_id: 0, _profile: profile }
    }

    /// Evaluates `expression` in the page; its value (awaited when a promise).
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let call = serde_json::json!({ "id": id, "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true, "awaitPromise": true } });
        self.socket.send(tungstenite::Message::text(call.to_string())).unwrap();
        loop {
            let message = self.socket.read().unwrap();
            let Ok(text) = message.to_text() else { continue };
            let answer: serde_json::Value = serde_json::from_str(text).unwrap();
            if answer["id"] == id {
                assert!(answer["result"]["exceptionDetails"].is_null(), "{expression}: {answer}");
                return answer["result"]["result"]["value"].clone();
            }
        }
    }

    /// Waits until `expression` is true in the page.
    fn wait_for(&mut self, expression: &str) {
        for _ in 0..300 {
            if self.eval(expression) == serde_json::Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the page never showed {expression}: {}", self.eval("document.body.innerText"));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn the_dashboards_buttons_upgrade_an_operator_and_take_a_savepoint() {
    // counter v1 runs; in the page, the user picks v2's bundle for `count` and clicks
    // Upgrade, then Savepoint: the page follows both to their end, and the job's output
    // goes on from v1 to v2 without a gap or a repeat.
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("out.jsonl");
    let slower = |t: String| t.replace("rate = 2000", "rate = 400");
    let v1 = counter_bundle(&out, "counter_v1.wasm", guests::COUNTER_V1, "1.0.0", slower);
    let v2 = counter_bundle(&out, "counter_v2.wasm", guests::COUNTER_V2, "2.0.0", slower);
    let server = local_server(data.path());
    let token = std::fs::read_to_string(&server.token_file).unwrap();
    let client = Client { base: server.url(), token: token.clone() };
    let upload = |bytes: &[u8]| client.call("POST", "/bundles", Some(bytes), &[]).1["id"].as_str().unwrap().to_string();
    let (first, second) = (upload(&v1), upload(&v2));
    let jid = client.post(&format!("/bundles/{first}/run"), "{}").1["jobid"].as_str().unwrap().to_string();

    let mut page = Browser::open(&format!("{}/#token={}", client.base, token.trim()));
    let select = format!("document.getElementById('bundle-{jid}-count')");
    page.wait_for(&format!("{select} !== null && document.querySelector('#job-{jid} button.upgrade') !== null"));
    // Only operators get an upgrade button; the source and the sink do not.
    assert_eq!(page.eval(&format!("document.querySelectorAll('#job-{jid} button.upgrade').length")), 1);
    page.eval(&format!("{select}.value = '{second}'; document.querySelector('#job-{jid} button.upgrade').click(); true"));
    let status = format!("document.getElementById('op-{jid}').textContent");
    page.wait_for(&format!("{status}.startsWith('upgraded count')"));
    // The upgrade history: on probation, until the savepoint (which commits) passes it.
    let history = format!("(document.querySelector('#job-{jid} .upgrades li') || {{ textContent: '' }}).textContent");
    page.wait_for(&format!("{history}.startsWith('#1 count: counter_v1.wasm → counter_v2.wasm by weir serve')"));
    page.wait_for(&format!("{history}.includes('on probation until')"));
    page.eval(&format!("document.querySelector('#job-{jid} button.savepoint').click(); true"));
    page.wait_for(&format!("{status}.startsWith('savepoint at ')"));
    page.wait_for(&format!("{history}.endsWith(': done')"));
    let location = page.eval(&status).as_str().unwrap().trim_start_matches("savepoint at ").to_string();
    assert!(Path::new(&location).join("_savepoint").is_file(), "{location}");

    let finished = client.wait_for(&format!("/jobs/{jid}"), |a| a["state"] != "RUNNING");
    assert_eq!(finished["state"], "FINISHED", "{finished}");
    let upgraded = counts_per_key(&out).values().flatten().filter(|(v, _)| *v == 2).count();
    assert!(upgraded > 0 && upgraded < 4000, "the click switched versions mid-stream: {upgraded} lines from v2");
    server.stop();
}
