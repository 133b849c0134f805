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
    ("faulty", "faulty"),
    ("passthrough", "passthrough"),
    ("not-an-operator", "not_an_operator"),
    ("counter-v1", "counter_v1"),
    ("counter-v2", "counter_v2"),
    ("counter-bad-migration", "counter_bad_migration"),
    ("conformance", "conformance"),
    ("window-average", "window_average"),
    ("window-count", "window_count"),
    ("window-max", "window_max"),
    ("window-summary", "window_summary"),
];

/// (name, app module, SDK language): guests written with another language's SDK, built
/// by its toolchain (installed by `scripts/setup`). The constant is `PY_<NAME>`.
const PYTHON_GUESTS: &[(&str, &str)] = &[
    ("conformance", "tests/conformance/python/app.py"),
    ("average", "tests/conformance/python/average.py"),
    ("summary", "tests/conformance/python/summary.py"),
    ("anomaly", "examples/python-log-analyzer/anomaly.py"),
    ("metrics", "examples/python-log-analyzer/metrics.py"),
    ("profiler", "examples/python-recommendations/profiler.py"),
];

/// (name, app module): JavaScript guests, built with the JS SDK's `build.mjs` and
/// componentize-js. The constant is `JS_<NAME>`.
const JS_GUESTS: &[(&str, &str, &[&str])] = &[
    ("conformance", "tests/conformance/js/app.js", &[]),
    ("anomaly", "examples/js-log-analyzer/anomaly.js", &[]),
    ("average", "tests/conformance/js/average.js", &[]),
    ("summary", "tests/conformance/js/summary.js", &[]),
    // componentize-js's defaults import `wasi:http`: the host's error must say so.
    ("with-wasi-http", "bench/js/keyed_count.js", &["--componentize-defaults"]),
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
    for (name, path) in build_python(&root, &target_dir.join("python")) {
        generated.push_str(&format!(
            "/// The `{name}` Python guest component.\npub const PY_{}: &str = {:?};\n",
            name.to_uppercase().replace('-', "_"),
            path.display().to_string()
        ));
    }
    for (name, path) in build_js(&root, &target_dir.join("js")) {
        generated.push_str(&format!(
            "/// The `{name}` JavaScript guest component.\npub const JS_{}: &str = {:?};\n",
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

/// The componentize-py that `scripts/setup` installs (or `$WEIR_COMPONENTIZE_PY`).
fn componentize_py() -> PathBuf {
    if let Some(path) = env::var_os("WEIR_COMPONENTIZE_PY") {
        return PathBuf::from(path);
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let path = home.join(".cache/weir-tools/py/bin/componentize-py");
    assert!(
        path.is_file(),
        "componentize-py is missing ({}): run `bash scripts/setup`, which installs it from PyPI",
        path.display()
    );
    path
}

/// A digest of the files a Python guest is built from, so that it is rebuilt only
/// when one of them changes (componentize-py takes ~20 s per component).
fn inputs_digest(root: &Path, app: &Path, tool: &Path, sdk: &str) -> String {
    let mut files = vec![app.to_path_buf(), tool.to_path_buf()];
    for dir in [sdk, "wit"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        entries.sort();
        files.extend(entries);
    }
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for file in files {
        let bytes = if file == tool { file.display().to_string().into_bytes() } else { std::fs::read(&file).unwrap() };
        // Paths relative to the repository, so that clones share built guests.
        let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for b in name.bytes().chain(bytes) {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Builds every Python guest that changed, two at a time, and returns their paths.
fn build_python(root: &Path, out_dir: &Path) -> Vec<(&'static str, PathBuf)> {
    std::fs::create_dir_all(out_dir).unwrap();
    let tool = componentize_py();
    let jobs: Vec<_> = PYTHON_GUESTS
        .iter()
        .map(|(name, app)| {
            let app = root.join(app);
            let wasm = out_dir.join(format!("{name}.wasm"));
            let stamp = out_dir.join(format!("{name}.digest"));
            let digest = inputs_digest(root, &app, &tool, "guest-sdk/python/weir");
            let fresh = wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest);
            (*name, app, wasm, stamp, digest, fresh)
        })
        .collect();
    std::thread::scope(|scope| {
        let mut running = Vec::new();
        for (name, app, wasm, stamp, digest, fresh) in &jobs {
            if *fresh {
                continue;
            }
            let tool = &tool;
            running.push(scope.spawn(move || {
                let status = Command::new("python3")
                    .arg(root.join("guest-sdk/python/weir/build.py"))
                    .arg(app)
                    .arg("-o")
                    .arg(wasm)
                    .arg("--componentize-py")
                    .arg(tool)
                    .env("PYTHONPATH", root.join("guest-sdk/python"))
                    .status()
                    .expect("running componentize-py");
                assert!(status.success(), "building the Python guest `{name}` failed (see the output above)");
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
    jobs.into_iter().map(|(name, _, wasm, ..)| (name, wasm)).collect()
}

/// componentize-js as `scripts/setup` installs it (or `$WEIR_COMPONENTIZE_JS`).
fn componentize_js() -> PathBuf {
    if let Some(path) = env::var_os("WEIR_COMPONENTIZE_JS") {
        return PathBuf::from(path);
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let path = home.join(".cache/weir-tools/js/node_modules/@bytecodealliance/componentize-js");
    assert!(
        path.join("package.json").is_file(),
        "componentize-js is missing ({}): run `bash scripts/setup`, which installs it from npm",
        path.display()
    );
    path
}

/// Builds every JavaScript guest that changed and returns their paths.
fn build_js(root: &Path, out_dir: &Path) -> Vec<(&'static str, PathBuf)> {
    std::fs::create_dir_all(out_dir).unwrap();
    let tool = componentize_js();
    let version = tool.join("package.json");
    JS_GUESTS
        .iter()
        .map(|(name, app, flags)| {
            let app = root.join(app);
            let wasm = out_dir.join(format!("{name}.wasm"));
            let stamp = out_dir.join(format!("{name}.digest"));
            let digest = inputs_digest(root, &app, &version, "guest-sdk/js") + &flags.join(" ");
            if !(wasm.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|d| d == digest)) {
                let status = Command::new("node")
                    .arg(root.join("guest-sdk/js/build.mjs"))
                    .arg(&app)
                    .arg("-o")
                    .arg(&wasm)
                    .arg("--componentize-js")
                    .arg(&tool)
                    .args(flags.iter())
                    .status()
                    .expect("running node to build a JavaScript guest");
                assert!(status.success(), "building the JavaScript guest `{name}` failed (see the output above)");
                std::fs::write(&stamp, digest).unwrap();
            }
            (*name, wasm)
        })
        .collect()
}
