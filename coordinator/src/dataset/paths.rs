//! Joining a file name from a CSV onto its data folder without ever leaving that folder.

use std::path::{Component, Path, PathBuf};

/// `dir/name`, or why `name` may not be used: it is empty, absolute, or climbs out of
/// `dir` with `..`.
pub(crate) fn join_inside(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("the filename is empty".into());
    }
    let relative = Path::new(name);
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "{name:?} climbs out of the data folder with \"..\""
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{name:?} is an absolute path; names must be relative to the data folder"
                ));
            }
        }
    }
    Ok(dir.join(relative))
}

/// An absolute form of `path` for the manifest, without touching the file system
/// beyond the current directory.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_names_and_refuses_escapes() {
        let dir = Path::new("/data/train");
        assert_eq!(join_inside(dir, "a.jpg").unwrap(), dir.join("a.jpg"));
        assert_eq!(
            join_inside(dir, "sub/./a.jpg").unwrap(),
            dir.join("sub/./a.jpg")
        );
        assert!(
            join_inside(dir, "../secret.jpg")
                .unwrap_err()
                .contains("..")
        );
        assert!(
            join_inside(dir, "sub/../../x.jpg")
                .unwrap_err()
                .contains("..")
        );
        assert!(
            join_inside(dir, "/etc/passwd")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(join_inside(dir, "").unwrap_err().contains("empty"));
    }
}
