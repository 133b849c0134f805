//! Builds every example and test guest to a `wasm32-wasip2` component and generates a
//! constant per guest, so a test names its guest by constant and a missing guest is a
//! compile error rather than a runtime surprise.
//!
//! The nested cargo uses its own target directory (`<target>/guests`): the outer build
//! holds the lock on the main one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, crate file stem): the guests to build.
const GUESTS: &[(&str, &str)] = &[
    ("keyed-count", "keyed_count"),
    ("word-count", "word_count"),
    ("login-anomaly", "login_anomaly"),
    ("sessions", "sessions"),
    ("session-summary", "session_summary"),
    ("tumbling-count", "tumbling_count"),
    ("buffering", "buffering"),
    ("enrichment", "enrichment"),
    ("dynamic-rules", "dynamic_rules"),
    ("orders-validate", "orders_validate"),
    ("orders-enrich", "orders_enrich"),
    ("faulty", "faulty"),
    ("passthrough", "passthrough"),
    ("liar", "liar"),
    ("model", "model"),
    ("not-an-operator", "not_an_operator"),
    ("counter-v1", "counter_v1"),
    ("counter-v2", "counter_v2"),
    ("counter-bad-migration", "counter_bad_migration"),
    ("counter-layouts", "counter_layouts"),
    ("counter-unmigrated", "counter_unmigrated"),
    ("conformance", "conformance"),
    ("window-average", "window_average"),
    ("window-count", "window_count"),
    ("window-max", "window_max"),
    ("window-summary", "window_summary"),
];

/// Guests written with another language's SDK, built by `weir build`'s toolchain
/// (`weir-toolchain`, with the tools `scripts/setup` installs): (constant prefix, name,
/// source, arguments for the SDK's builder). The constant is `<PREFIX>_<NAME>`.
const SDK_GUESTS: &[(&str, &str, &str, &[&str])] = &[
    ("PY", "conformance", "tests/conformance/python/app.py", &[]),
    ("PY", "average", "tests/conformance/python/average.py", &[]),
    ("PY", "summary", "tests/conformance/python/summary.py", &[]),
    ("PY", "anomaly", "examples/python-log-analyzer/anomaly.py", &[]),
    ("PY", "metrics", "examples/python-log-analyzer/metrics.py", &[]),
    ("PY", "profiler", "examples/python-recommendations/profiler.py", &[]),
    ("PY", "enrichment", "examples/python-enrichment/enrich.py", &[]),
    ("PY", "buffering", "examples/python-buffering/buffer.py", &[]),
    ("JS", "conformance", "tests/conformance/js/app.js", &[]),
    ("JS", "anomaly", "examples/js-log-analyzer/anomaly.js", &[]),
    ("JS", "enrichment", "examples/js-enrichment/enrich.js", &[]),
    ("JS", "buffering", "examples/js-buffering/buffer.js", &[]),
    ("JS", "average", "tests/conformance/js/average.js", &[]),
    ("JS", "summary", "tests/conformance/js/summary.js", &[]),
    // componentize-js's defaults import `wasi:http`: the host's error must say so.
    ("JS", "with-wasi-http", "bench/js/keyed_count.js", &["--componentize-defaults"]),
    ("C", "conformance", "tests/conformance/c/app.c", &[]),
    ("C", "average", "tests/conformance/c/average.c", &[]),
    ("C", "summary", "tests/conformance/c/summary.c", &[]),
    ("C", "anomaly", "examples/c-log-analyzer/anomaly.c", &[]),
    ("C", "buffering", "examples/c-buffering/buffer.c", &[]),
    ("C", "enrichment", "examples/c-enrichment/enrich.c", &[]),
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    for dir in ["wit", "guest-sdk", "examples", "tests/guests", "tests/conformance", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
        .join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target();

    let mut command = Command::new(&cargo);
    command
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for (package, _) in GUESTS {
        command.args(["-p", package]);
    }
    // Settings meant for the outer (host) build must not leak into the guest build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR",
                "CARGO_MAKEFLAGS", "MAKEFLAGS", "MFLAGS", "CARGO_PRIMARY_PACKAGE"] {
        command.env_remove(var);
    }
    let status = command.status().expect("running cargo to build the test guests");
    assert!(status.success(), "building the guests for {TARGET} failed (see the output above)");

    let out_dir = target_dir.join(TARGET).join("release");
    let mut generated = format!(
        "/// Directory holding every built guest component.\npub const GUEST_DIR: &str = {:?};\n",
        out_dir.display().to_string()
    );
    for (package, stem) in GUESTS {
        let path = out_dir.join(format!("{stem}.wasm"));
        assert!(path.is_file(), "{} was not built", path.display());
        generated.push_str(&format!(
            "/// The `{package}` guest component.\npub const {}: &str = {:?};\n",
            stem.to_uppercase(),
            path.display().to_string()
        ));
    }
    for (prefix, name, path) in build_sdk_guests(&root, &target_dir) {
        generated.push_str(&format!(
            "/// The `{name}` guest component ({prefix}).\npub const {prefix}_{}: &str = {:?};\n",
            name.to_uppercase().replace('-', "_"),
            path.display().to_string()
        ));
    }
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(dest, generated).unwrap();
}

/// Installs the wasm32-wasip2 standard library through rustup when it is missing, so
/// that `cargo test` works on a fresh machine.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().is_some_and(|out| {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Path::new(&root).join("lib/rustlib").join(TARGET).is_dir()
    });
    if installed {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let ok = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the {TARGET} target is missing: run `rustup target add {TARGET}`");
}

/// A digest of what a guest is built from (its source, its SDK, the WIT and the tool's
/// version), so that it is rebuilt only when one of them changes: componentize-py and
/// componentize-js take 10-20 s per component.
fn inputs_digest(root: &Path, source: &Path, tool: &str, dirs: &[&str]) -> String {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__" && n != "node_modules") {
                    walk(&path, files);
                }
            } else {
                files.push(path);
            }
        }
    }
    let mut files = vec![source.to_path_buf()];
    for dir in dirs {
        walk(&root.join(dir), &mut files);
    }
    files[1..].sort();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(tool.as_bytes());
    for file in files {
        // Paths relative to the repository, so that clones share built guests.
        feed(file.strip_prefix(root).unwrap_or(&file).display().to_string().as_bytes());
        feed(&std::fs::read(&file).unwrap());
    }
    format!("{hash:016x}")
}

/// The version of the tool that builds a language's guests, for the digest.
fn tool_version(prefix: &str) -> String {
    let tools = weir_toolchain::tools_dir();
    match prefix {
        "PY" => tools.join("py/bin/componentize-py").display().to_string()
            + &std::fs::read_to_string(tools.join("py/pyvenv.cfg")).unwrap_or_default(),
        "JS" => std::fs::read_to_string(tools.join("js/node_modules/@bytecodealliance/componentize-js/package.json"))
            .unwrap_or_default(),
        _ => Command::new("clang-19")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default(),
    }
}

/// Builds every SDK guest that changed, two at a time, and returns their paths.
fn build_sdk_guests(root: &Path, target_dir: &Path) -> Vec<(&'static str, &'static str, PathBuf)> {
    let jobs: Vec<_> = SDK_GUESTS
        .iter()
        .map(|(prefix, name, source, args)| {
            let out_dir = target_dir.join(prefix.to_lowercase());
            std::fs::create_dir_all(&out_dir).unwrap();
            let source = root.join(source);
            let wasm = out_dir.join(format!("{name}.wasm"));
            let stamp = out_dir.join(format!("{name}.digest"));
            let sdk: &[&str] = match *prefix {
                "PY" => &["guest-sdk/python/weir", "wit"],
                "JS" => &["guest-sdk/js", "wit"],
                _ => &["guest-sdk/c", "wit"],
            };
            let digest = inputs_digest(root, &source, &(tool_version(prefix) + &args.join(" ")), sdk);
            let fresh = wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest);
            (*prefix, *name, source, *args, wasm, stamp, digest, fresh)
        })
        .collect();
    std::thread::scope(|scope| {
        let mut running = Vec::new();
        for (prefix, name, source, args, wasm, stamp, digest, fresh) in &jobs {
            if *fresh {
                continue;
            }
            running.push(scope.spawn(move || {
                if let Err(error) = weir_toolchain::build_with(source, Some(wasm), args) {
                    panic!("building the {prefix} guest `{name}` failed: {error:#} (see the output above)");
                }
                std::fs::write(stamp, digest).unwrap();
            }));
            if running.len() == 2 {
                running.remove(0).join().unwrap();
            }
        }
        for handle in running {
            handle.join().unwrap();
        }
    });
    jobs.into_iter().map(|(prefix, name, _, _, wasm, ..)| (prefix, name, wasm)).collect()
}
