//! Tokens as `serve` and the CLI take them: each checked once, at start-up, with the problem
//! named; and the admin token file, which `serve` creates when no token is given (random,
//! readable by its owner only, kept across restarts) and client commands on the host read.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

/// The token file's name, beside the database.
pub const FILE_NAME: &str = "admin.token";
/// 256 random bits.
const RANDOM_BYTES: usize = 32;

/// Whether `serve` made the token file or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Created,
    Reused,
}

/// `admin.token` in the database's directory.
pub fn default_path(db: &Path) -> PathBuf {
    db.parent().unwrap_or(Path::new("")).join(FILE_NAME)
}

/// A token travels in a header: printable ASCII, no spaces. `Err` names `what`.
pub fn check(what: &str, token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} contains {c:?}: a token is printable ASCII without spaces, as it is sent in a header"
        ));
    }
    Ok(())
}

/// The token in the file at `path`; `None` when there is no such file. A file that others
/// may read, that is not a regular file, or whose token is empty or malformed is an error
/// naming the file and the problem.
pub fn read(path: &Path) -> Result<Option<String>, String> {
    let at = |m: String| format!("token file {}: {m}", path.display());
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(at(format!("cannot open it: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| at(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(at("is not a regular file".into()));
    }
    owner_only(&meta).map_err(|m| at(format!("{m}; run `chmod 600 {}`", path.display())))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| at(format!("cannot read it: {e}")))?;
    let token = text.trim_end_matches(['\n', '\r']);
    check("its token", token).map_err(|m| {
        if token.is_empty() {
            at(format!("{m}; delete the file to have a new token made"))
        } else {
            at(m)
        }
    })?;
    Ok(Some(token.to_owned()))
}

/// The token in the file at `path`, or a new random one written there, readable by its
/// owner only, if there is no file yet.
pub fn load_or_create(path: &Path) -> Result<(String, Origin), String> {
    if let Some(t) = read(path)? {
        return Ok((t, Origin::Reused));
    }
    let token = random_token()?;
    let mut opts = OpenOptions::new();
    // Created with its final mode, never widened and narrowed later; and never over a file
    // that another start wrote in the meantime.
    opts.write(true).create_new(true);
    owner_only_mode(&mut opts);
    let mut file = match opts.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return read(path)?
                .map(|t| (t, Origin::Reused))
                .ok_or_else(|| format!("token file {}: vanished while read", path.display()));
        }
        Err(e) => {
            return Err(format!(
                "token file {}: cannot create it: {e}",
                path.display()
            ))
        }
    };
    let written = file
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Half a file would be refused at the next start; leave none.
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "token file {}: cannot write it: {e}",
            path.display()
        ));
    }
    Ok((token, Origin::Created))
}

fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("no random numbers for a new admin token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(unix)]
fn owner_only(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o} lets group or others read or change it; only its owner may"
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

#[cfg(unix)]
fn owner_only_mode(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    opts.mode(0o600);
}

#[cfg(not(unix))]
fn owner_only_mode(_: &mut OpenOptions) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_file_is_beside_the_database() {
        assert_eq!(
            default_path(Path::new("linnet.db")),
            Path::new("admin.token")
        );
        assert_eq!(
            default_path(Path::new("/var/lib/linnet/l.db")),
            Path::new("/var/lib/linnet/admin.token")
        );
    }

    #[test]
    fn created_once_owner_only_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read(&path).unwrap(), None);
        let (token, origin) = load_or_create(&path).unwrap();
        assert_eq!(origin, Origin::Created);
        assert_eq!(token.len(), 2 * RANDOM_BYTES);
        check("token", &token).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create(&path).unwrap(),
            (token.clone(), Origin::Reused)
        );
        // Another file, another token.
        let (other, _) = load_or_create(&dir.path().join("b.token")).unwrap();
        assert_ne!(other, token);
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let refused = |contents: &str, mode: u32| {
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_or_create(&path).unwrap_err();
            assert!(e.contains(&path.display().to_string()), "{e}");
            // Nothing was written over it.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), contents);
            e
        };
        assert!(refused("abc\n", 0o644).contains("mode 0644"));
        assert!(refused("abc\n", 0o640).contains("chmod 600"));
        assert!(refused("\n", 0o600).contains("empty"));
        assert!(refused("", 0o600).contains("empty"));
        assert!(refused("a b\n", 0o600).contains("' '"));
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        // A good one is read with its newline dropped.
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn tokens_are_header_safe() {
        assert!(check("--token", "")
            .unwrap_err()
            .contains("--token is empty"));
        assert!(check("--token", "a\tb")
            .unwrap_err()
            .contains("--token contains"));
        assert!(check("--token", "é").is_err());
        check("--token", "s3cr3t-_.~+/=").unwrap();
    }
}
