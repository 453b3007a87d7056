//! Replacing a password file atomically: what `midge passwd` writes is seen by a broker
//! reloading the file either whole or not at all, and survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::origin;

/// Replaces `path` with `contents` so that readers (a broker reloading the file) see either
/// the old or the new file, never a mix, and a crash leaves one of the two: the data goes
/// to a temporary file in the same directory (a rename is only atomic within one file
/// system), is fsynced, and is renamed over `path`; then the directory is fsynced so the
/// rename itself survives a crash.
///
/// A symlink is followed, so the file it points to is replaced, not the link. An existing
/// file keeps its permissions and (when allowed) its owner, since the broker may read it as
/// another user; a new file gets mode 0600, as it holds password hashes. Returns a warning
/// if the owner could not be kept.
pub(super) fn write_atomically(path: &Path, contents: &[u8]) -> Result<Option<String>, String> {
    let shown = origin(path);
    let target = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    let existing = match fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{shown}: {e}")),
    };
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        return Err(format!("{shown}: not a regular file"));
    }
    let Some(name) = target.file_name() else {
        return Err(format!("{shown}: not a file name"));
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{:08x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        getrandom::u32().unwrap_or(0)
    ));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let result = fill_and_replace(&mut file, &tmp, &target, contents, existing.as_ref());
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| format!("{shown}: {e}"))
}

/// The part of [`write_atomically`] after the temporary file exists; on error the caller
/// removes it.
fn fill_and_replace(
    file: &mut File,
    tmp: &Path,
    target: &Path,
    contents: &[u8],
    existing: Option<&fs::Metadata>,
) -> Result<Option<String>, String> {
    file.write_all(contents)
        .map_err(|e| format!("cannot write the temporary file: {e}"))?;
    let mut warning = None;
    if let Some(meta) = existing {
        file.set_permissions(meta.permissions())
            .map_err(|e| format!("cannot copy the file's permissions: {e}"))?;
        warning = keep_owner(file, meta);
    }
    file.sync_all()
        .map_err(|e| format!("cannot flush the temporary file to disk: {e}"))?;
    fs::rename(tmp, target).map_err(|e| format!("cannot replace the file: {e}"))?;
    sync_parent(target);
    Ok(warning)
}

/// Gives the new file the old one's owner and group (possible as root, or for the group
/// when the user belongs to it), so that a broker running as another user can still read
/// it after an administrator edits it.
#[cfg(unix)]
fn keep_owner(file: &File, meta: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let new = file.metadata().ok()?;
    if new.uid() == meta.uid() && new.gid() == meta.gid() {
        return None;
    }
    match std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid())) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "could not keep the file's owner {}:{} ({e}); it is now owned by {}:{}",
            meta.uid(),
            meta.gid(),
            new.uid(),
            new.gid()
        )),
    }
}

#[cfg(not(unix))]
fn keep_owner(_file: &File, _meta: &fs::Metadata) -> Option<String> {
    None
}

/// Fsyncs the directory holding `target` so the rename is durable (unix only; elsewhere a
/// directory cannot be opened this way). Failure is ignored: the data itself is on disk.
fn sync_parent(target: &Path) {
    #[cfg(unix)]
    if let Some(dir) = target.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = target;
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, load, ok, run_args, with_fast, TempDir};
    use super::*;

    #[cfg(unix)]
    #[test]
    fn rewrite_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("perms");
        let real = dir.path("real");
        ok(run_args(&with_fast(&[
            "-c",
            "-b",
            &dir.arg("real"),
            "a",
            "1",
        ])));
        assert!(fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).is_ok());
        assert!(std::os::unix::fs::symlink(&real, dir.path("link")).is_ok());
        ok(run_args(&with_fast(&["-b", &dir.arg("link"), "b", "2"])));
        let link_meta = fs::symlink_metadata(dir.path("link"));
        assert!(link_meta.is_ok_and(|m| m.file_type().is_symlink()));
        let mode = fs::metadata(&real).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o640));
        let f = load(&real);
        assert!(f.verify("a", b"1") && f.verify("b", b"2"));
    }

    #[test]
    fn write_atomically_refuses_a_directory() {
        let dir = TempDir::new("dir");
        let e = err(write_atomically(&dir.0, b"x"));
        assert!(e.ends_with("not a regular file"), "{e}");
    }
}
