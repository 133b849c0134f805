//! `weir build`: one entry for building a component in any SDK language. It detects the
//! language from the source and runs that SDK's build (componentize-py for Python,
//! componentize-js for JavaScript, cargo for Rust, clang and wit-component for C), with
//! the tools `scripts/setup` installs under `~/.cache/weir-tools` (or from Debian).
//!
//! The host's `weir build` and the test suite's guest build both use this crate, so a
//! guest is built one way wherever it is built.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

pub mod c;

/// The language of a component source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    C,
}

impl Language {
    /// A `.py`, `.js`/`.mjs` or `.c` file, a directory with a `Cargo.toml` (Rust), or a
    /// directory of `.c` files.
    pub fn detect(source: &Path) -> anyhow::Result<Language> {
        if source.is_dir() {
            if source.join("Cargo.toml").is_file() {
                return Ok(Language::Rust);
            }
            if !c::sources(source)?.is_empty() {
                return Ok(Language::C);
            }
            bail!("{}: a directory must hold a Cargo.toml (a Rust guest crate) or .c files", source.display());
        }
        match source.extension().and_then(|e| e.to_str()) {
            Some("py") => Ok(Language::Python),
            Some("js" | "mjs") => Ok(Language::JavaScript),
            Some("c") => Ok(Language::C),
            _ => bail!(
                "{}: cannot tell the language; give a .py, .js or .c file, a Rust crate's directory or a directory of .c files",
                source.display()
            ),
        }
    }
}

/// Where the SDKs are: `$WEIR_SDK_DIR`, a `guest-sdk` directory above `start` or above the
/// current directory, or the checkout this `weir` was built from.
pub fn sdk_dir(start: &Path) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEIR_SDK_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let is_sdk = |dir: &Path| dir.join("python/weir/build.py").is_file();
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    let here = std::env::current_dir().unwrap_or_default();
    // The checkout this crate was built from: a build cache shared between checkouts
    // may hold a path that no longer exists, so this comes last.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    start
        .ancestors()
        .chain(here.ancestors())
        .map(|dir| dir.join("guest-sdk"))
        .find(|dir| is_sdk(dir))
        .or_else(|| is_sdk(&built_from).then_some(built_from))
        .context("cannot find weir's guest-sdk directory above the source; set WEIR_SDK_DIR")
}

/// Where `scripts/setup` installs the toolchains: `$WEIR_TOOLS` or `~/.cache/weir-tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("WEIR_TOOLS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/weir-tools")
    })
}

fn dir_name(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map_or_else(|| "component".into(), |n| n.to_string_lossy().into_owned())
}

pub(crate) fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    // The tools' chatter goes to stderr: stdout is the built component's path.
    command.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = command.status().with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Builds the component for `source` into `output` (for Rust, the default is the crate's
/// own target directory) and returns its path.
pub fn build(source: &Path, output: Option<&Path>) -> anyhow::Result<PathBuf> {
    build_with(source, output, &[])
}

/// As [`build`], passing `sdk_args` on to the Python or JavaScript SDK's builder (for
/// example `--componentize-defaults`, which the tests use to build a component with
/// componentize-js's default imports).
pub fn build_with(source: &Path, output: Option<&Path>, sdk_args: &[&str]) -> anyhow::Result<PathBuf> {
    let language = Language::detect(source)?;
    let default_output = || source.with_extension("wasm");
    match language {
        Language::Python => {
            let output = output.map_or_else(default_output, Path::to_path_buf);
            let sdk = sdk_dir(source)?;
            let tool = tools_dir().join("py/bin/componentize-py");
            if !tool.is_file() {
                bail!("componentize-py is not installed ({}); run `bash scripts/setup`", tool.display());
            }
            let mut command = Command::new("python3");
            command.arg(sdk.join("python/weir/build.py")).arg(source).arg("-o").arg(&output);
            command.arg("--componentize-py").arg(tool).args(sdk_args);
            run(command, "componentize-py")?;
            Ok(output)
        }
        Language::JavaScript => {
            let output = output.map_or_else(default_output, Path::to_path_buf);
            let sdk = sdk_dir(source)?;
            let tool = tools_dir().join("js/node_modules/@bytecodealliance/componentize-js");
            if !tool.join("package.json").is_file() {
                bail!("componentize-js is not installed ({}); run `bash scripts/setup`", tool.display());
            }
            let mut command = Command::new("node");
            command.arg(sdk.join("js/build.mjs")).arg(source).arg("-o").arg(&output);
            command.arg("--componentize-js").arg(tool).args(sdk_args);
            run(command, "componentize-js")?;
            Ok(output)
        }
        Language::C => {
            let output = output.map_or_else(
                || if source.is_dir() { source.join(format!("{}.wasm", dir_name(source))) } else { default_output() },
                Path::to_path_buf,
            );
            c::build(source, &sdk_dir(source)?, &output)?;
            Ok(output)
        }
        Language::Rust => {
            let manifest = source.join("Cargo.toml");
            let mut command = Command::new("cargo");
            command.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"]).arg(&manifest);
            run(command, "cargo build")?;
            let metadata = Command::new("cargo")
                .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
                .arg(&manifest)
                .output()
                .context("cannot run cargo metadata")?;
            let metadata: serde_json::Value =
                serde_json::from_slice(&metadata.stdout).context("reading cargo metadata")?;
            let target = metadata["target_directory"].as_str().context("cargo metadata has no target directory")?;
            let manifest = std::fs::canonicalize(&manifest)?;
            let package = metadata["packages"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path())))
                .context("the crate is not in its own cargo metadata")?;
            let name = package["name"].as_str().unwrap_or_default().replace('-', "_");
            let built = Path::new(target).join("wasm32-wasip2/release").join(format!("{name}.wasm"));
            match output {
                Some(output) => {
                    std::fs::copy(&built, output).with_context(|| format!("copying {}", built.display()))?;
                    Ok(output.to_path_buf())
                }
                None => Ok(built),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// This crate's directory, read at run time: a build cache shared between
    /// checkouts may hold a test binary compiled in another one.
    pub(crate) fn manifest_dir() -> std::path::PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo test").into()
    }

    #[test]
    fn languages_are_told_by_the_source() {
        assert_eq!(Language::detect(Path::new("app.py")).unwrap(), Language::Python);
        assert_eq!(Language::detect(Path::new("app.mjs")).unwrap(), Language::JavaScript);
        let crate_dir = manifest_dir().join("../examples/keyed-count");
        assert_eq!(Language::detect(&crate_dir).unwrap(), Language::Rust);
        assert_eq!(Language::detect(Path::new("app.c")).unwrap(), Language::C);
        let error = Language::detect(Path::new("app.go")).unwrap_err().to_string();
        assert!(error.contains("cannot tell the language"), "{error}");
    }
}
