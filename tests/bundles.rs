//! Bundles: a job and its components in one file, packed, checked and refused before
//! anything runs when any part is wrong (`host/src/bundle.rs`, `docs/bundles.md`).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use common::*;
use weir::bundle::{self, HostMaximums};
use weir::plugin::Runtime;

const JOB: &str = r#"
name = "counting"
[[source]]
type = "generator"
uid = "events"
count = 500
keys = 5
seed = 3
[[operator]]
uid = "count"
component = "keyed_count.wasm"
parallelism = 2
[[sink]]
type = "file"
uid = "out"
path = "/OUT/out.jsonl"
[[edge]]
from = "events"
to = "count"
partition = "keyed"
[[edge]]
from = "count"
to = "out"
"#;

/// A directory with a job file and the keyed-count component; returns the job file.
fn job_dir(dir: &Path, job: &str, out: &Path) -> PathBuf {
    std::fs::copy(guests::KEYED_COUNT, dir.join("keyed_count.wasm")).unwrap();
    let path = dir.join("job.toml");
    std::fs::write(&path, job.replace("/OUT", &out.display().to_string())).unwrap();
    path
}

fn verify(file: &Path) -> Result<(bundle::Manifest, weir::JobSpec), String> {
    let into = tempfile::tempdir().unwrap();
    let runtime = Runtime::new().unwrap();
    bundle::verify(file, into.path(), &runtime, &HostMaximums::default()).map_err(|e| e.to_string())
}

/// A gzip-compressed tar written byte by byte, so that it can hold what a well-behaved
/// tar writer refuses to write: `(name, type flag, declared size, bytes)`.
fn raw_bundle(path: &Path, entries: &[(&str, u8, u64, &[u8])]) {
    let mut tar = Vec::new();
    for (name, flag, size, bytes) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = *flag;
        if *flag == b'2' {
            header[157..168].copy_from_slice(b"/etc/passwd");
        }
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| *b as u32).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&header);
        tar.extend_from_slice(bytes);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap();
}

#[test]
fn a_packed_bundle_verifies_and_runs_as_the_job_would() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let job = job_dir(dir.path(), JOB, out.path());
    let file = dir.path().join("counting.weir");
    let manifest = bundle::pack(&job, "1.2.0", &file, &Runtime::new().unwrap()).unwrap();
    assert_eq!((manifest.name.as_str(), manifest.version.as_str(), manifest.job.as_str()), ("counting", "1.2.0", "job.toml"));
    assert_eq!(manifest.components.len(), 1);
    assert_eq!(manifest.components[0].world, "weir:operator/operator@0.3.0");
    assert_eq!(manifest.components[0].bytes, std::fs::metadata(guests::KEYED_COUNT).unwrap().len());

    // Run the job from what the bundle unpacked, beside the same job from its directory.
    let into = tempfile::tempdir().unwrap();
    let (_, spec) = bundle::verify(&file, into.path(), &Runtime::new().unwrap(), &HostMaximums::default()).unwrap();
    run(spec).unwrap();
    let from_bundle = sorted_lines(&out.path().join("out.jsonl"));
    std::fs::remove_file(out.path().join("out.jsonl")).unwrap();
    run(weir::JobSpec::load(&job).unwrap()).unwrap();
    assert_eq!(from_bundle, sorted_lines(&out.path().join("out.jsonl")));
    assert_eq!(from_bundle.len(), 500);

    // The CLI: pack, verify, inspect.
    let weir = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_weir")).args(args).current_dir(dir.path()).output().unwrap();
    let packed = weir(&["bundle", "pack", ".", "--version", "2.0.0"]);
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
    assert_eq!(String::from_utf8_lossy(&packed.stdout).trim(), "counting-2.0.0.weir");
    let inspected = weir(&["bundle", "inspect", "counting-2.0.0.weir"]);
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(text.contains("bundle `counting` version 2.0.0"), "{text}");
    assert!(text.contains("component keyed_count.wasm: weir:operator/operator@0.3.0"), "{text}");
}

#[test]
fn a_bundle_that_fails_any_check_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let job = job_dir(dir.path(), JOB, out.path());
    let runtime = Runtime::new().unwrap();
    let good = dir.path().join("good.weir");
    let manifest = bundle::pack(&job, "1.0.0", &good, &runtime).unwrap();
    let manifest_text = toml::to_string(&manifest).unwrap();
    let job_text = std::fs::read(&job).unwrap();
    let component = std::fs::read(guests::KEYED_COUNT).unwrap();
    let outside_component = out.path().join("keyed_count.wasm");
    std::fs::write(&outside_component, &component).unwrap();
    // The good bundle's manifest and job, with the component named by `path`.
    let outside_entries = |manifest: &str, job: &[u8], path: &Path| -> Vec<(&'static str, u8, u64, Vec<u8>)> {
        let path = path.display().to_string();
        let manifest = manifest.replace("\"keyed_count.wasm\"", &format!("{path:?}"));
        let job = String::from_utf8_lossy(job).replace("\"keyed_count.wasm\"", &format!("{path:?}"));
        vec![("weir-bundle.toml", b'0', 0, manifest.into_bytes()), ("job.toml", b'0', 0, job.into_bytes())]
    };
    let cases: Vec<(&str, Vec<(&str, u8, u64, Vec<u8>)>)> = vec![
        // A component that is not the one the manifest's digest names.
        ("does not match its sha256", {
            let mut tampered = component.clone();
            *tampered.last_mut().unwrap() ^= 1;
            vec![("weir-bundle.toml", b'0', 0, manifest_text.clone().into_bytes()), ("job.toml", b'0', 0, job_text.clone()), ("keyed_count.wasm", b'0', 0, tampered)]
        }),
        // Paths that leave the bundle's directory, and links.
        ("escapes the bundle", vec![("../escaped.txt", b'0', 0, b"x".to_vec())]),
        ("escapes the bundle", vec![("/tmp/absolute.txt", b'0', 0, b"x".to_vec())]),
        ("not a regular file", vec![("passwd", b'2', 0, vec![])]),
        // A header that claims more than a component may have: refused unread.
        ("more than", vec![("keyed_count.wasm", b'0', 1 << 32, vec![])]),
        // A file the manifest does not list.
        ("is not in the manifest", vec![
            ("weir-bundle.toml", b'0', 0, manifest_text.clone().into_bytes()),
            ("job.toml", b'0', 0, job_text.clone()),
            ("keyed_count.wasm", b'0', 0, component.clone()),
            ("extra.sh", b'0', 0, b"rm -rf /".to_vec()),
        ]),
        ("no weir-bundle.toml", vec![("job.toml", b'0', 0, job_text.clone())]),
        // A manifest and job that name a component outside the bundle (an attacker could
        // swap it later, or probe which files exist), and a device (read without end).
        ("its path escapes the bundle", outside_entries(&manifest_text, &job_text, &outside_component)),
        ("its path escapes the bundle", outside_entries(&manifest_text, &job_text, Path::new("/dev/zero"))),
    ];
    for (i, (reason, entries)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.weir"));
        let entries: Vec<(&str, u8, u64, &[u8])> = entries
            .iter()
            .map(|(n, f, size, b)| (*n, *f, if *size == 0 { b.len() as u64 } else { *size }, b.as_slice()))
            .collect();
        raw_bundle(&file, &entries);
        let error = verify(&file).unwrap_err();
        assert!(error.contains(reason), "case {i}: expected {reason:?} in: {error}");
    }
    assert!(!dir.path().join("escaped.txt").exists() && !Path::new("/tmp/absolute.txt").exists());

    // A component that implements no operator world, and limits beyond the host's.
    let other = tempfile::tempdir().unwrap();
    let wrong = job_dir(other.path(), &JOB.replace("keyed_count.wasm", "not_an_operator.wasm"), out.path());
    std::fs::copy(guests::NOT_AN_OPERATOR, other.path().join("not_an_operator.wasm")).unwrap();
    let error = bundle::pack(&wrong, "1.0.0", &other.path().join("x.weir"), &runtime).unwrap_err().to_string();
    assert!(error.contains("does not implement the weir:operator/operator world"), "{error}");
    let greedy = job_dir(other.path(), &JOB.replace("parallelism = 2", "parallelism = 2\nlimits = { memory_mib = 100000 }"), out.path());
    let file = other.path().join("greedy.weir");
    bundle::pack(&greedy, "1.0.0", &file, &runtime).unwrap();
    let error = verify(&file).unwrap_err();
    assert!(error.contains("limits.memory_mib = 100000 (this host allows at most 4096)"), "{error}");
    // A component outside the job's directory cannot be packed.
    let outside = job_dir(other.path(), &JOB.replace("keyed_count.wasm", "../keyed_count.wasm"), out.path());
    let error = bundle::pack(&outside, "1.0.0", &other.path().join("y.weir"), &runtime).unwrap_err().to_string();
    assert!(error.contains("must be a relative path inside"), "{error}");
}
