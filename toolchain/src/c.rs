//! C guests: clang (Debian's `clang-19` with `wasi-libc`) compiles the sources with the C
//! SDK's headers and the `wit-bindgen c` bindings of the world the sources implement into
//! a WASI preview1 reactor module; wit-component turns that into a component, adapting
//! its preview1 calls with wasmtime's reactor adapter (pinned by Cargo.lock).
//!
//! The world is told by the SDK header the sources include: `weir.h` (an operator),
//! `weir_aggregate.h`, `weir_reduce.h` or `weir_process_window.h` (window functions).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// A world of the contract a C guest can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Operator,
    Aggregate,
    Reduce,
    ProcessWindow,
}

impl World {
    /// The SDK header that selects the world, and the world's bindings directory under
    /// `guest-sdk/c/bindings` (named as wit-bindgen names the world's files).
    const ALL: [(World, &'static str, &'static str); 4] = [
        (World::Aggregate, "weir_aggregate.h", "aggregate_function"),
        (World::Reduce, "weir_reduce.h", "reduce_function"),
        (World::ProcessWindow, "weir_process_window.h", "process_window_function"),
        (World::Operator, "weir.h", "co_operator"),
    ];

    fn bindings(self) -> &'static str {
        World::ALL.iter().find(|(w, ..)| *w == self).map(|(_, _, b)| *b).unwrap()
    }

    /// The world whose header the sources include (the window headers include
    /// `weir.h`'s common part, so they are looked for first).
    pub fn detect(sources: &[PathBuf]) -> anyhow::Result<World> {
        let mut text = String::new();
        for source in sources {
            text += &std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
        }
        let includes = |header: &str| {
            text.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with("#include") && (line.contains(&format!("\"{header}\"")) || line.contains(&format!("<{header}>")))
            })
        };
        World::ALL.iter().find(|(_, header, _)| includes(header)).map(|(world, ..)| *world).with_context(|| {
            "the C sources include none of the SDK's headers: include \"weir.h\" for an operator, or \
             \"weir_aggregate.h\", \"weir_reduce.h\" or \"weir_process_window.h\" for a window function"
                .to_string()
        })
    }
}

/// The `.c` files of a guest: the file itself, or every `.c` file of a directory.
pub fn sources(source: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !source.is_dir() {
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .with_context(|| format!("reading {}", source.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "c") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// The C compiler: `$WEIR_CLANG`, else Debian's `clang-19`, else `clang`.
fn clang() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEIR_CLANG") {
        return Ok(PathBuf::from(path));
    }
    for name in ["clang-19", "clang"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
        if let Some(Some(path)) = found {
            return Ok(path);
        }
    }
    bail!(
        "clang is not installed: C guests need clang with the wasm32-wasi target and wasi-libc \
         (Debian: `apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32`, which \
         `bash scripts/setup` does), or set WEIR_CLANG"
    )
}

/// Compiles `source` (a `.c` file or a directory of them) against the SDK in `sdk`
/// (`guest-sdk`) into the component `output`.
pub fn build(source: &Path, sdk: &Path, output: &Path) -> anyhow::Result<()> {
    let sources = sources(source)?;
    let world = World::detect(&sources)?;
    let bindings = sdk.join("c/bindings").join(world.bindings());
    let name = world.bindings();
    let core = output.with_extension("core.wasm");
    let mut command = Command::new(clang()?);
    command
        .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"])
        .arg("-I")
        .arg(sdk.join("c/include"))
        .arg("-I")
        .arg(&bindings)
        .args(&sources)
        .arg(bindings.join(format!("{name}.c")))
        .arg(bindings.join(format!("{name}_component_type.o")))
        .arg("-o")
        .arg(&core);
    eprintln!("weir build: {command:?}");
    crate::run(command, "clang")?;
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = componentize(&module).context("turning the C module into a component")?;
    let _ = std::fs::remove_file(&core);
    std::fs::write(output, component).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// A core module with embedded WIT metadata and WASI preview1 imports, as a component.
pub fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(module)?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_bindings_are_generated_from_the_current_wit() {
        // guest-sdk/c/generate.sh records the digests of the WIT files it generated
        // the bindings from; a contract change without regenerating them fails here.
        use sha2::Digest as _;
        let root = crate::tests::manifest_dir().join("..");
        let recorded = std::fs::read_to_string(root.join("guest-sdk/c/bindings/wit.sha256")).unwrap();
        let mut files = 0;
        for line in recorded.lines() {
            let (digest, file) = line.split_once("  ").unwrap();
            let actual = sha2::Sha256::digest(std::fs::read(root.join(file)).unwrap());
            let actual: String = actual.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(actual, digest, "{file} changed: run `bash guest-sdk/c/generate.sh`");
            files += 1;
        }
        let wit_files: usize = ["wit", "wit/v0.3"]
            .iter()
            .map(|dir| std::fs::read_dir(root.join(dir)).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "wit")).count())
            .sum();
        assert_eq!(files, wit_files, "a WIT file was added: run `bash guest-sdk/c/generate.sh`");
    }

    #[test]
    fn the_world_is_told_by_the_included_header() {
        let dir = std::env::temp_dir().join(format!("weir-c-world-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let op = file("op.c", "#include <stdio.h>\n#include \"weir.h\"\n");
        let agg = file("agg.c", "#include \"weir_aggregate.h\"\n");
        let none = file("none.c", "#include <stdio.h>\n");
        assert_eq!(World::detect(&[op]).unwrap(), World::Operator);
        assert_eq!(World::detect(&[agg]).unwrap(), World::Aggregate);
        let error = World::detect(&[none]).unwrap_err().to_string();
        assert!(error.contains("include \"weir.h\""), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
