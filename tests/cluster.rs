//! One job run by several weir processes on loopback, coordinated by a real broker's
//! consumer group (tansu) with checkpoints in a shared object store: a member that
//! joins takes over part of the partitions, a member killed with SIGKILL has its tasks
//! restored on the other from the store, and no input is lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::guests;
use common::kafka::Broker;

const KEYS: usize = 16;
const PER_KEY: usize = 120;
const PARTITIONS: i32 = 4;

/// The keyed count as a cluster job. `source` adds settings to the Kafka source,
/// `count` to the count operator and `cluster` to the `[cluster]` table.
fn job(dir: &Path, broker: &Broker, name: &str, source: &str, count: &str, cluster: &str) -> std::path::PathBuf {
    std::fs::copy(guests::KEYED_COUNT, dir.join("keyed_count.wasm")).unwrap();
    let text = format!(
        r#"
        name = "{name}"
        [[source]]
        type = "kafka"
        uid = "in"
        brokers = "{addr}"
        topics = ["in"]
        {source}

        [[operator]]
        uid = "count"
        component = "keyed_count.wasm"
        {count}

        [[sink]]
        type = "kafka"
        uid = "out"
        brokers = "{addr}"
        topic = "counts"
        delivery = "at-least-once"
        # Sent at once: nothing waits in the producer when a member is stopped.
        properties = {{ "linger.ms" = "0" }}

        [[edge]]
        from = "in"
        to = "count"
        partition = "keyed"

        [[edge]]
        from = "count"
        to = "out"

        [checkpoint]
        interval_ms = 500
        dir = "file://{store}"

        [cluster]
        session_timeout_ms = 3000
        {cluster}
        "#,
        addr = broker.addr(),
        store = dir.join("store").display(),
    );
    // Each member has a directory of its own (its own local checkpoints and state), as
    // on separate machines; they share the broker and the store.
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a member from a copy of the job file in `home` (its own machine).
fn member(job: &Path, home: &Path) -> Child {
    std::fs::create_dir_all(home).unwrap();
    std::fs::copy(job, home.join("job.toml")).unwrap();
    std::fs::copy(job.with_file_name("keyed_count.wasm"), home.join("keyed_count.wasm")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run"])
        .arg(home.join("job.toml"))
        .arg("--log=weir=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(home.join("log")).unwrap())
        .spawn()
        .unwrap()
}

/// How many records the output topic holds (one round trip, where reading them all
/// takes many on a busy broker).
fn written(broker: &Broker) -> i64 {
    let consumer: rdkafka::consumer::BaseConsumer = broker.config().create().unwrap();
    rdkafka::consumer::Consumer::fetch_watermarks(&consumer, "counts", 0, Duration::from_secs(10)).unwrap().1
}

/// Each key's counts seen in the output topic so far.
fn counts(broker: &Broker) -> BTreeMap<String, BTreeSet<u64>> {
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for read in broker.read_all("counts") {
        let value: serde_json::Value = serde_json::from_str(&read.value).unwrap();
        seen.entry(value["key"].as_str().unwrap().to_string()).or_default().insert(value["count"].as_u64().unwrap());
    }
    seen
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting until {what}");
        // Not too often: a look may read the whole output topic.
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// Whether every key's count reached `per_key` in the output.
fn counted_to(broker: &Broker, per_key: usize) -> bool {
    let seen = counts(broker);
    seen.len() == KEYS && seen.values().all(|c| c.last() >= Some(&(per_key as u64)))
}

/// Stops a member with SIGINT (it leaves the group, stopping its tasks), checks that
/// it exited cleanly, and returns its log.
fn leave(mut member: Child, home: &Path) -> String {
    unsafe { libc::kill(member.id() as i32, libc::SIGINT) };
    let status = member.wait().unwrap();
    let log = std::fs::read_to_string(home.join("log")).unwrap();
    assert!(status.success(), "member at {} failed:\n{log}", home.display());
    log
}

/// The tasks a member's log says it started.
fn started_tasks(home: &Path) -> BTreeSet<String> {
    let log = std::fs::read_to_string(home.join("log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("task assigned: starting"))
        .filter_map(|l| Some(l.split("task=").nth(1)?.split_whitespace().next()?.to_string()))
        .collect()
}

/// Creates the input (`PARTITIONS` partitions, co-partitioned: every record of a key
/// in the same partition, keyed by it) and the output topic.
fn co_partitioned_input(broker: &Broker, per_key: usize) {
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("counts", 1);
    let keys: Vec<String> = (0..KEYS).map(|k| format!("k{k}")).collect();
    broker.produce(
        "in",
        (0..KEYS * per_key).map(|i| {
            let k = i % KEYS;
            ((k as i32) % PARTITIONS, Some(keys[k].as_str()), format!("{{\"i\":{i}}}"), None)
        }),
    );
}

/// Starts member a, and member b once a runs every task of the co-partitioned job
/// and has written output; returns when b has taken over some tasks.
fn two_members(job: &Path, broker: &Broker, dir: &Path) -> (Child, Child, std::path::PathBuf, std::path::PathBuf) {
    let (home_a, home_b) = (dir.join("a"), dir.join("b"));
    let a = member(job, &home_a);
    wait_until("member a runs all four tasks", Duration::from_secs(60), || started_tasks(&home_a).len() == 4);
    wait_until("output appears", Duration::from_secs(60), || written(broker) > 0);
    let b = member(job, &home_b);
    wait_until("member b takes over some tasks", Duration::from_secs(60), || !started_tasks(&home_b).is_empty());
    (a, b, home_a, home_b)
}

#[test]
fn members_share_the_partitions_and_a_killed_members_tasks_move_without_loss() {
    let broker = Broker::start();
    co_partitioned_input(&broker, PER_KEY);
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &broker, "cluster-count", "rate = 60", "", "standbys = 1");
    let (mut a, b, _, home_b) = two_members(&job, &broker, dir.path());
    let moved = started_tasks(&home_b);
    assert!(moved.len() < 4, "b took every partition from a live member: {moved:?}");
    // standbys = 1: b refreshes copies of the checkpoints of the tasks it does not
    // run while tasks start and stop on it (a rebalance on tansu often moves every task
    // to b before the kill, so the copies themselves are checked in the storage's unit
    // tests).
    std::thread::sleep(Duration::from_millis(500));
    a.kill().unwrap(); // SIGKILL: a's tasks move to b after the session timeout
    a.wait().unwrap();
    wait_until("b runs every task", Duration::from_secs(60), || started_tasks(&home_b).len() == 4);
    wait_until("every key is counted to the end", Duration::from_secs(120), || counted_to(&broker, PER_KEY));
    // SIGINT: b leaves the group, stopping its tasks.
    let log_b = leave(b, &home_b);
    assert!(log_b.contains("restoring from checkpoint"), "b restored nothing:\n{log_b}");

    // No input lost, across the join and the kill: each key's counts 1..=PER_KEY all
    // reached the topic (a restore may repeat some, never skip one).
    for (key, counts) in counts(&broker) {
        assert_eq!(counts, (1..=PER_KEY as u64).collect(), "counts of {key}");
    }
}

/// Input keyed by a field of the value, spread over every partition: the count's
/// keyed edge goes through a repartition topic (one partition per subtask of the
/// count), the first stage's tasks write it and the count's tasks read it. When a
/// member is killed, its first-stage tasks restore elsewhere and write records again
/// since their checkpoints; the count's tasks drop them by producer and sequence, so
/// every event is still counted once.
#[test]
fn a_keyed_edge_on_another_key_goes_through_a_repartition_topic_and_a_kill_counts_nothing_twice() {
    let broker = Broker::start();
    // Every user's events in every partition, without a Kafka key.
    input_by_user(&broker, PER_KEY);
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &broker, "cluster-by-user", "key_field = \"user\"\n        rate = 30", "parallelism = 3", "");
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));

    let mut a = member(&job, &home_a);
    let all_tasks = 4 + 3;
    wait_until("member a runs every task", Duration::from_secs(60), || started_tasks(&home_a).len() == all_tasks);
    let log_a = std::fs::read_to_string(home_a.join("log")).unwrap();
    assert!(log_a.contains("created a repartition topic"), "{log_a}");
    assert!(started_tasks(&home_a).contains("cluster-by-user-count-r2"), "{:?}", started_tasks(&home_a));
    wait_until("output appears", Duration::from_secs(60), || written(&broker) > 0);
    let b = member(&job, &home_b);
    wait_until("member b takes over some tasks", Duration::from_secs(60), || !started_tasks(&home_b).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    a.kill().unwrap();
    a.wait().unwrap();
    wait_until("b runs every task", Duration::from_secs(60), || started_tasks(&home_b).len() == all_tasks);
    wait_until("every user is counted to the end", Duration::from_secs(120), || counted_to(&broker, PER_KEY));
    leave(b, &home_b);
    // Each user's events came from four partitions, through the repartition topic, to
    // one count task: counted once each, none skipped.
    for (user, counts) in counts(&broker) {
        assert_eq!(counts, (1..=PER_KEY as u64).collect(), "counts of {user}");
    }
}

/// A member stopped (SIGSTOP) past the session timeout, while its tasks still have
/// input to count, loses them to the other member; when it resumes (SIGCONT) it must
/// write nothing: its tasks' leases expired while it was stopped, so their output is
/// held and then dropped, and it joins the group again as a new member.
#[test]
fn a_stalled_member_writes_nothing_when_it_resumes_and_joins_again() {
    const PER_KEY: usize = 200;
    let broker = Broker::start();
    co_partitioned_input(&broker, PER_KEY);
    let dir = tempfile::tempdir().unwrap();
    // 800 records per partition at 25 a second: a's tasks are far from done when it stops.
    let job = job(dir.path(), &broker, "cluster-stall", "rate = 25", "", "");
    let (mut a, mut b, home_a, home_b) = two_members(&job, &broker, dir.path());
    let before_stop = written(&broker);
    unsafe { libc::kill(a.id() as i32, libc::SIGSTOP) };
    wait_until("b runs every task", Duration::from_secs(90), || started_tasks(&home_b).len() == 4);
    // b counts the rest: the output stops growing once every input is counted.
    let mut last = (written(&broker), Instant::now());
    wait_until("b has counted everything", Duration::from_secs(180), || {
        let now = written(&broker);
        if now != last.0 {
            last = (now, Instant::now());
        }
        now >= (KEYS * PER_KEY) as i64 && last.1.elapsed() > Duration::from_secs(3)
    });
    let total = last.0;
    assert!(
        (before_stop as usize) < KEYS * PER_KEY * 3 / 4,
        "a had counted most of the input before it stopped ({before_stop} records): the test shows nothing"
    );
    // SIGCONT: a's tasks wake up mid-stream with input left to count.
    unsafe { libc::kill(a.id() as i32, libc::SIGCONT) };
    wait_until("a notices its stall", Duration::from_secs(30), || {
        std::fs::read_to_string(home_a.join("log")).unwrap_or_default().contains("joining the group again")
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(written(&broker), total, "the stalled member wrote after it resumed");
    for child in [&mut a, &mut b] {
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        assert!(status.success(), "a member failed");
    }
    for (key, counts) in counts(&broker) {
        assert_eq!(counts, (1..=PER_KEY as u64).collect(), "counts of {key}");
    }
}

/// The count by user in one process (the count at parallelism 2), as `one.toml` in
/// `dir`; `source` adds settings to the Kafka source.
fn one_process(dir: &Path, broker: &Broker, name: &str, source: &str) -> std::path::PathBuf {
    std::fs::copy(guests::KEYED_COUNT, dir.join("keyed_count.wasm")).unwrap();
    let path = dir.join("one.toml");
    std::fs::write(
        &path,
        format!(
            r#"
            name = "{name}"
            [[source]]
            type = "kafka"
            uid = "in"
            brokers = "{addr}"
            topics = ["in"]
            key_field = "user"
            {source}

            [[operator]]
            uid = "count"
            component = "keyed_count.wasm"
            parallelism = 2

            [[sink]]
            type = "kafka"
            uid = "out"
            brokers = "{addr}"
            topic = "counts"
            delivery = "at-least-once"

            [[edge]]
            from = "in"
            to = "count"
            partition = "keyed"

            [[edge]]
            from = "count"
            to = "out"
            "#,
            addr = broker.addr()
        ),
    )
    .unwrap();
    path
}

/// Each user's counts in the output from record `from` on.
fn counts_from(broker: &Broker, from: usize) -> BTreeMap<String, BTreeSet<u64>> {
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for read in broker.read_all("counts").into_iter().skip(from) {
        let value: serde_json::Value = serde_json::from_str(&read.value).unwrap();
        seen.entry(value["key"].as_str().unwrap().to_string()).or_default().insert(value["count"].as_u64().unwrap());
    }
    seen
}

/// Input by user, spread over every partition: `KEYS * per_key` events.
fn input_by_user(broker: &Broker, per_key: usize) -> Vec<String> {
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("counts", 1);
    let users: Vec<String> = (0..KEYS).map(|k| format!("u{k}")).collect();
    broker.produce(
        "in",
        (0..KEYS * per_key).map(|i| {
            let partition = ((i / KEYS) as i32) % PARTITIONS;
            (partition, None, format!("{{\"user\":\"{}\",\"i\":{i}}}", users[i % KEYS]), None)
        }),
    );
    users
}

/// One process stopped with a savepoint mid-input starts a cluster from it (the count
/// at parallelism 3 behind a repartition topic, on two members); the cluster is stopped
/// with a savepoint in its turn, and one process finishes the input from that. Each
/// user's counts go on across both hand-overs with no gap and no repeat. A cluster task
/// that restored every key of the savepoint rather than its key-group range would
/// leave stale counts in the cluster's savepoint, which the last run would go on from.
#[test]
fn a_savepoint_of_one_process_starts_a_cluster_whose_savepoint_goes_back_to_one_process() {
    // Enough input that two members join and the cluster stops before it ends.
    const PER_KEY: usize = 240;
    let broker = Broker::start();
    let users = input_by_user(&broker, PER_KEY);
    let dir = tempfile::tempdir().unwrap();
    let log = |home: &Path| std::fs::read_to_string(home.join("log")).unwrap_or_default();

    // 1. One process, stopped with a savepoint.
    let one = one_process(dir.path(), &broker, "round-trip", "rate = 150");
    let mut first = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&one)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let control = dir.path().join(".weir/round-trip/control.addr");
    wait_until("the process counts", Duration::from_secs(60), || control.exists() && written(&broker) >= 200);
    let sp1 = dir.path().join("sp1");
    let stop = Command::new(env!("CARGO_BIN_EXE_weir")).arg("stop").arg(&one).arg("--savepoint").arg(&sp1).output().unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    // A stopped job exits with 130, as after Ctrl-C.
    assert!(exits_within(&mut first, Duration::from_secs(30)).is_some(), "{}", log(dir.path()));
    let after_one = broker.read_all("counts").len();
    let by_one = counts_from(&broker, 0);
    let at = |counts: &BTreeMap<String, BTreeSet<u64>>, user: &str| counts.get(user).and_then(|c| c.last().copied()).unwrap_or(0);
    assert!(users.iter().all(|u| at(&by_one, u) < PER_KEY as u64), "the input ended before the stop: {by_one:?}");

    // 2. A cluster from that savepoint, stopped with a savepoint of its own.
    let job = job(dir.path(), &broker, "round-trip", "key_field = \"user\"\n        rate = 20", "parallelism = 3", "");
    let start = |home: &Path| {
        std::fs::create_dir_all(home).unwrap();
        std::fs::copy(&job, home.join("job.toml")).unwrap();
        std::fs::copy(dir.path().join("keyed_count.wasm"), home.join("keyed_count.wasm")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("run")
            .arg(home.join("job.toml"))
            .arg("--from-savepoint")
            .arg(&sp1)
            .arg("--log=weir=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("log")).unwrap())
            .spawn()
            .unwrap()
    };
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = start(&home_a);
    wait_until("member a runs every task", Duration::from_secs(60), || started_tasks(&home_a).len() == 4 + 3);
    wait_until("the cluster counts", Duration::from_secs(60), || written(&broker) > after_one as i64);
    let mut b = start(&home_b);
    wait_until("member b takes over some tasks", Duration::from_secs(60), || !started_tasks(&home_b).is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let sp2 = format!("file://{}/sp2", dir.path().display());
    let stop = Command::new(env!("CARGO_BIN_EXE_weir")).arg("stop").arg(&job).args(["--savepoint", &sp2]).output().unwrap();
    assert!(stop.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&stop.stderr), log(&home_a), log(&home_b));
    assert!(exits_within(&mut a, Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", log(&home_a));
    assert!(exits_within(&mut b, Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", log(&home_b));
    assert!(log(&home_a).contains("restoring from savepoint"), "{}", log(&home_a));
    let after_cluster = broker.read_all("counts").len();
    let by_cluster = counts_from(&broker, after_one);
    for user in &users {
        let (from, to) = (at(&by_one, user), at(&by_cluster, user).max(at(&by_one, user)));
        assert_eq!(by_cluster.get(user).cloned().unwrap_or_default(), (from + 1..=to).collect(), "{user}'s counts in the cluster");
    }
    assert!(users.iter().any(|u| at(&by_cluster, u) < PER_KEY as u64), "the input ended before the cluster's stop");

    // 3. One process from the cluster's savepoint, to the end of the input.
    let last = one_process(dir.path(), &broker, "round-trip-end", "bounded = true");
    let run = Command::new(env!("CARGO_BIN_EXE_weir")).arg("run").arg(&last).args(["--from-savepoint", &sp2]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let by_last = counts_from(&broker, after_cluster);
    for user in &users {
        let from = at(&by_cluster, user).max(at(&by_one, user));
        assert_eq!(
            by_last.get(user).cloned().unwrap_or_default(),
            (from + 1..=PER_KEY as u64).collect(),
            "{user}'s counts after the cluster's savepoint"
        );
    }
}

/// Waits until `child` exits, at most `timeout` (then kills it): how it exited.
fn exits_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster stopped with a savepoint in the middle of its input, while its count
/// (behind a repartition topic) runs on both members, goes on in one process at another
/// parallelism from that savepoint: each user's counts continue exactly where the
/// cluster's output left them. Records in flight between the stages at the stop would
/// be lost (a gap), and a part taken past the first stage's would count them twice (a
/// repeat); a savepoint without the count's state starts the counts at 1 again.
#[test]
fn a_cluster_stopped_with_a_savepoint_goes_on_in_one_process_at_another_parallelism() {
    let broker = Broker::start();
    let users = input_by_user(&broker, PER_KEY);
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &broker, "cluster-stop", "key_field = \"user\"\n        rate = 20", "parallelism = 3", "");
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = member(&job, &home_a);
    wait_until("member a runs every task", Duration::from_secs(60), || started_tasks(&home_a).len() == 4 + 3);
    wait_until("output appears", Duration::from_secs(60), || written(&broker) > 0);
    let mut b = member(&job, &home_b);
    wait_until("member b takes over some tasks", Duration::from_secs(60), || !started_tasks(&home_b).is_empty());
    std::thread::sleep(Duration::from_millis(1500));

    let url = format!("file://{}/savepoints/stopped", dir.path().display());
    let stop = Command::new(env!("CARGO_BIN_EXE_weir")).arg("stop").arg(&job).args(["--savepoint", &url]).output().unwrap();
    let log = |home: &Path| std::fs::read_to_string(home.join("log")).unwrap_or_default();
    assert!(
        stop.status.success(),
        "{}\nmember a:\n{}\nmember b:\n{}",
        String::from_utf8_lossy(&stop.stderr),
        log(&home_a),
        log(&home_b)
    );
    assert_eq!(String::from_utf8_lossy(&stop.stdout).trim(), url);
    assert!(exits_within(&mut a, Duration::from_secs(30)).is_some_and(|s| s.success()), "member a did not leave cleanly:\n{}", log(&home_a));
    assert!(exits_within(&mut b, Duration::from_secs(30)).is_some_and(|s| s.success()), "member b did not leave cleanly:\n{}", log(&home_b));
    for home in [&home_a, &home_b] {
        assert!(log(home).contains("cluster savepoint complete"), "{}", log(home));
    }
    // One savepoint of the whole job: the count's three key-group ranges, every user.
    let inspect = Command::new(env!("CARGO_BIN_EXE_weir")).args(["savepoint", "inspect", &url]).output().unwrap();
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(inspect.status.success(), "{}", String::from_utf8_lossy(&inspect.stderr));
    assert!(shown.contains("operator `count`: parallelism 3"), "{shown}");
    assert!(shown.contains(&format!("keys: {KEYS}")), "{shown}");
    let by_cluster = broker.read_all("counts").len();
    let cluster = counts(&broker);
    let stopped_at: BTreeMap<String, u64> =
        users.iter().map(|u| (u.clone(), cluster.get(u).and_then(|c| c.last().copied()).unwrap_or(0))).collect();
    assert!(
        stopped_at.values().any(|&c| c < PER_KEY as u64),
        "the input ended before the stop, so the savepoint tests nothing: {stopped_at:?}"
    );
    for (user, seen) in &cluster {
        assert_eq!(seen, &(1..=stopped_at[user]).collect(), "the cluster's counts of {user}");
    }

    // The same job in one process, the count at parallelism 2, reading to the end.
    let single = one_process(dir.path(), &broker, "single-after-cluster", "bounded = true");
    let run = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&single)
        .args(["--from-savepoint", &url])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut after = counts_from(&broker, by_cluster);
    for user in &users {
        let went_on = after.remove(user).unwrap_or_default();
        assert_eq!(
            went_on,
            (stopped_at[user] + 1..=PER_KEY as u64).collect(),
            "{user}'s counts after the cluster's, which stopped at {}",
            stopped_at[user]
        );
    }
}

/// How many times a member's log says it started a task.
fn starts(home: &Path) -> usize {
    std::fs::read_to_string(home.join("log")).unwrap_or_default().matches("task assigned: starting").count()
}

/// Three members through a repartition topic, each joining mid-run: one is killed,
/// then another; the output, read as a deduplicating reader reads it (by the producer
/// and sequence number each record carries), equals a single process's run of the same
/// job on the same input: every count once, none missing, none repeated.
#[test]
fn three_members_and_two_kills_give_the_output_of_one_process() {
    const PER_KEY: usize = 150;
    let broker = Broker::start();
    input_by_user(&broker, PER_KEY);
    broker.create_topic("counts-single", 1);
    let dir = tempfile::tempdir().unwrap();
    let job = job(dir.path(), &broker, "cluster-three", "key_field = \"user\"\n        rate = 15", "parallelism = 3", "");
    let text = std::fs::read_to_string(&job).unwrap();
    let numbered = text.replacen("delivery = \"at-least-once\"", "delivery = \"at-least-once\"\n        sequence = true", 1);
    std::fs::write(&job, &numbered).unwrap();

    // The same job in one process, reading the input to its end.
    let single = dir.path().join("single.toml");
    let one = numbered.split("[checkpoint]").next().unwrap();
    let one = one
        .replacen("name = \"cluster-three\"", "name = \"one-process\"", 1)
        .replacen("topics = [\"in\"]", "topics = [\"in\"]\n        bounded = true", 1)
        .replacen("rate = 15", "", 1)
        .replacen("topic = \"counts\"", "topic = \"counts-single\"", 1);
    std::fs::write(&single, one).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_weir")).arg("run").arg(&single).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for read in broker.read_all("counts-single") {
        let value: serde_json::Value = serde_json::from_str(&read.value).unwrap();
        expected.entry(value["key"].as_str().unwrap().to_string()).or_default().push(value["count"].as_u64().unwrap());
    }
    assert_eq!(expected.len(), KEYS);

    let homes: Vec<std::path::PathBuf> = ["a", "b", "c"].iter().map(|m| dir.path().join(m)).collect();
    let mut a = member(&job, &homes[0]);
    wait_until("member a runs every task", Duration::from_secs(60), || started_tasks(&homes[0]).len() == 4 + 3);
    wait_until("output appears", Duration::from_secs(60), || written(&broker) > 0);
    let mut b = member(&job, &homes[1]);
    wait_until("member b takes over some tasks", Duration::from_secs(60), || starts(&homes[1]) > 0);
    let c = member(&job, &homes[2]);
    wait_until("member c takes over some tasks", Duration::from_secs(60), || starts(&homes[2]) > 0);

    // SIGKILL a, then b: their tasks move to the members left.
    let before = starts(&homes[1]) + starts(&homes[2]);
    a.kill().unwrap();
    a.wait().unwrap();
    wait_until("b and c take over a's tasks", Duration::from_secs(60), || starts(&homes[1]) + starts(&homes[2]) > before);
    std::thread::sleep(Duration::from_millis(1000));
    let before = starts(&homes[2]);
    b.kill().unwrap();
    b.wait().unwrap();
    wait_until("c takes over b's tasks", Duration::from_secs(60), || starts(&homes[2]) > before);
    // Done once the output holds a record per event (repeats only add) and has not
    // grown for 5 s (reading the whole topic every second takes longer than that).
    let mut seen = Vec::new();
    wait_until("every event is counted", Duration::from_secs(180), || {
        seen.push(written(&broker));
        seen.len() > 5 && seen[seen.len() - 6..].iter().all(|&n| n == seen[seen.len() - 1] && n >= (KEYS * PER_KEY) as i64)
    });
    leave(c, &homes[2]);

    // As a deduplicating reader reads it: a record written again after a restore
    // carries the number it had, and the same value.
    let mut numbered: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut repeats = 0;
    for read in broker.read_all("counts") {
        let header = |name: &str| read.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let number = (header("weir-producer").expect("numbered"), header("weir-seq").expect("numbered"));
        match numbered.get(&number) {
            Some(value) => {
                assert_eq!(value, &read.value, "record {number:?} written again with another value");
                repeats += 1;
            }
            None => {
                numbered.insert(number, read.value.clone());
            }
        }
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for value in numbered.values() {
        let value: serde_json::Value = serde_json::from_str(value).unwrap();
        got.entry(value["key"].as_str().unwrap().to_string()).or_default().push(value["count"].as_u64().unwrap());
    }
    for counts in got.values_mut() {
        counts.sort_unstable();
    }
    for counts in expected.values_mut() {
        counts.sort_unstable();
    }
    assert_eq!(got, expected, "the cluster's output, deduplicated ({repeats} repeats dropped), against one process's");
}

#[test]
fn a_cluster_without_a_shared_store_or_kafka_input_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.toml");
    std::fs::write(
        &path,
        r#"
        name = "not-a-cluster"
        [[source]]
        type = "generator"
        uid = "in"
        count = 10
        [[sink]]
        type = "discard"
        uid = "out"
        [[edge]]
        from = "in"
        to = "out"
        "#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weir")).args(["run", "--cluster"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("needs exactly one source, of type \"kafka\""), "{stderr}");
}
