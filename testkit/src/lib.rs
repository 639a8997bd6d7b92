//! Where Linnet's test suites find what the build made: the repository, and the release
//! `.wasm` files that `make wasm` copies into `dist/`.
//!
//! The wasm suites (`wasm-tests`) and the Envoy suites (`e2e`) load those files. One older than
//! a source it is built from would be tested in place of the change under test, and pass or
//! fail for the wrong reason, so it is refused with the command that rebuilds it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A `.wasm` the suites load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wasm {
    /// Linnet's filter: `$LINNET_WASM`, else `dist/linnet.wasm`.
    Filter,
    /// The filter's `responses` build, which also counts responses per variant:
    /// `dist/linnet-responses.wasm`.
    Responses,
    /// The benchmarks' baselines (`baselines/`): `dist/baselines.wasm`.
    Baselines,
    /// The lean no-op baseline, without the SDK (`baselines/lean/`): `dist/lean.wasm`.
    Lean,
}

impl Wasm {
    /// Every `.wasm` that `make wasm` builds.
    pub const ALL: [Wasm; 4] = [Wasm::Filter, Wasm::Responses, Wasm::Baselines, Wasm::Lean];

    /// Its name in `dist/`, as the Envoy configurations under `envoy/` write it.
    pub fn file_name(self) -> &'static str {
        match self {
            Wasm::Filter => "linnet.wasm",
            Wasm::Responses => "linnet-responses.wasm",
            Wasm::Baselines => "baselines.wasm",
            Wasm::Lean => "lean.wasm",
        }
    }

    /// The one whose `dist/` name `file` ends with.
    pub fn from_file_name(file: &str) -> Option<Wasm> {
        Wasm::ALL
            .into_iter()
            .find(|w| Path::new(file).file_name() == Some(w.file_name().as_ref()))
    }

    /// What it is built from, relative to the repository.
    fn sources(self) -> &'static [&'static str] {
        match self {
            Wasm::Filter | Wasm::Responses => &[
                "core/src",
                "core/Cargo.toml",
                "filter/src",
                "filter/Cargo.toml",
            ],
            Wasm::Baselines => &["baselines/src", "baselines/Cargo.toml"],
            Wasm::Lean => &["baselines/lean/src", "baselines/lean/Cargo.toml"],
        }
    }

    /// The file to load. A file named by `$LINNET_WASM` is the caller's own and is taken as
    /// it is; the one in `dist/` must exist and be newer than every source it is built from.
    pub fn path(self) -> Result<PathBuf, String> {
        if self == Wasm::Filter {
            if let Some(p) = std::env::var_os("LINNET_WASM") {
                let p = PathBuf::from(p);
                return if p.is_file() {
                    Ok(p)
                } else {
                    Err(format!(
                        "LINNET_WASM names {}, which is not a file",
                        p.display()
                    ))
                };
            }
        }
        let root = repo_root();
        fresh(
            &root.join("dist").join(self.file_name()),
            &root,
            self.sources(),
        )
    }
}

/// The repository root (the workspace that holds `envoy/`, `dist/` and `.venv/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `built`, if it exists and no file under `sources` (relative to `root`) is newer.
fn fresh(built: &Path, root: &Path, sources: &[&str]) -> Result<PathBuf, String> {
    let at = modified(built).ok_or_else(|| {
        format!(
            "the filter is not built: {} is missing; run `make wasm` to build it (or set LINNET_WASM)",
            built.display()
        )
    })?;
    let newest = sources
        .iter()
        .filter_map(|s| newest(&root.join(s)))
        .max_by_key(|(_, t)| *t);
    match newest {
        Some((source, t)) if t > at => Err(format!(
            "{} is older than {}: run `make wasm` to rebuild it (or set LINNET_WASM to the file to test)",
            built.display(),
            source.strip_prefix(root).unwrap_or(&source).display()
        )),
        _ => Ok(built.to_path_buf()),
    }
}

/// The most recently modified file at or under `path`.
fn newest(path: &Path) -> Option<(PathBuf, SystemTime)> {
    if !path.is_dir() {
        return modified(path).map(|t| (path.to_path_buf(), t));
    }
    fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest(&e.path()))
        .max_by_key(|(_, t)| *t)
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn touch(path: &Path, at: SystemTime) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn a_wasm_older_than_a_source_names_the_source_and_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let wasm = dir.path().join("dist/linnet.wasm");
        touch(&dir.path().join("core/src/decide.rs"), t0);
        touch(&wasm, t0 + Duration::from_secs(10));
        let sources = Wasm::Filter.sources();
        assert_eq!(fresh(&wasm, dir.path(), sources).unwrap(), wasm);

        touch(
            &dir.path().join("filter/src/deep/http.rs"),
            t0 + Duration::from_secs(20),
        );
        let e = fresh(&wasm, dir.path(), sources).unwrap_err();
        assert!(e.contains("is older than filter/src/deep/http.rs"), "{e}");
        assert!(e.contains("run `make wasm` to rebuild it"), "{e}");
    }

    #[test]
    fn a_missing_wasm_says_how_to_build_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = fresh(&dir.path().join("dist/linnet.wasm"), dir.path(), &[]).unwrap_err();
        assert!(e.contains("run `make wasm` to build it"), "{e}");
        assert!(e.contains("dist/linnet.wasm"), "{e}");
    }

    #[test]
    fn names_in_envoy_configs_map_to_their_wasm() {
        assert_eq!(Wasm::from_file_name("dist/linnet.wasm"), Some(Wasm::Filter));
        assert_eq!(
            Wasm::from_file_name("/abs/dist/baselines.wasm"),
            Some(Wasm::Baselines)
        );
        assert_eq!(Wasm::from_file_name("dist/lean.wasm"), Some(Wasm::Lean));
        assert_eq!(
            Wasm::from_file_name("dist/linnet-responses.wasm"),
            Some(Wasm::Responses)
        );
        assert_eq!(Wasm::from_file_name("dist/other.wasm"), None);
        assert_eq!(Wasm::from_file_name("dist/xlinnet.wasm"), None);
    }
}
