//! Where reprise lives when nothing says otherwise, shared by the daemon
//! (where it keeps its data) and the client (where it finds the admin key
//! on the daemon's own host). Pure: the caller reads the facts.

use std::path::PathBuf;

/// The API's address when the config names none: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

/// The data directory: `/var/lib/reprise` for root, else
/// `$XDG_DATA_HOME/reprise`, else `$HOME/.local/share/reprise`.
pub fn data_dir(is_root: bool, xdg_data_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/reprise");
    }
    match xdg_data_home {
        Some(d) if !d.as_os_str().is_empty() => d.join("reprise"),
        _ => home
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/reprise"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_follows_the_user() {
        assert_eq!(
            data_dir(true, None, None),
            PathBuf::from("/var/lib/reprise")
        );
        assert_eq!(
            data_dir(false, Some("/x".into()), Some("/home/a".into())),
            PathBuf::from("/x/reprise")
        );
        assert_eq!(
            data_dir(false, Some("".into()), Some("/home/a".into())),
            PathBuf::from("/home/a/.local/share/reprise")
        );
    }
}
