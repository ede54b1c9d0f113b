//! How results look to people: aligned tables and `field: value` lists;
//! and how they are written ([`emit`], through the `out!`/`outln!` macros).

use chrono::{DateTime, Utc};
use reprise_core::size::format_size;

/// Write to standard output. A closed pipe (`reprise snapshot list | head
/// -1`, `… | grep -q Running`) ends the command quietly, as Unix tools do,
/// instead of a panic with a backtrace.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(crate::EXIT_ERROR);
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit(&format!($($arg)*)) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    () => { $crate::output::emit("\n") };
    ($($arg:tt)*) => { $crate::output::emit(&format!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {out, outln};

pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn size(bytes: u64) -> String {
    format_size(bytes)
}

pub fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// `field: value` lines, fields aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:")))
        .collect()
}

/// Recovery points drawn as a tree, oldest first at each level, with the
/// instance's position marked.
pub fn point_tree(instance: &str, points: &[reprise_core::model::Point]) -> String {
    use reprise_core::model::Point;
    fn label(p: &Point) -> String {
        let mut s = format!(
            "{}  {}  {}{}  holds {}  {}",
            p.name,
            time(&p.created_at),
            if p.memory { "memory" } else { "disk" },
            if p.memory {
                String::new()
            } else {
                format!(", {}", p.consistency)
            },
            p.size_bytes.map(size).unwrap_or_else(|| "?".into()),
            if p.state == reprise_core::model::PointState::Ready {
                String::new()
            } else {
                format!("[{}]", p.state)
            },
        );
        s = s.trim_end().to_string();
        if p.current {
            s.push_str("  <- you are here");
        }
        s
    }
    fn walk(points: &[Point], parent: Option<uuid::Uuid>, prefix: &str, out: &mut String) {
        let children: Vec<&Point> = points.iter().filter(|p| p.parent_id == parent).collect();
        for (i, p) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            out.push_str(&format!(
                "{prefix}{}{}\n",
                if last { "└─ " } else { "├─ " },
                label(p)
            ));
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            walk(points, Some(p.id), &deeper, out);
        }
    }
    let mut out = format!("{instance}\n");
    // Points whose parent is gone are drawn at the root.
    let known: Vec<uuid::Uuid> = points.iter().map(|p| p.id).collect();
    let rooted: Vec<Point> = points
        .iter()
        .cloned()
        .map(|mut p| {
            if p.parent_id.is_some_and(|id| !known.contains(&id)) {
                p.parent_id = None;
            }
            p
        })
        .collect();
    walk(&rooted, None, "", &mut out);
    if points.is_empty() {
        out.push_str("(no recovery points)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_show_branches_and_position() {
        use reprise_core::model::{Point, PointState};
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mk = |name: &str, parent: Option<uuid::Uuid>, current: bool| Point {
            id: uuid::Uuid::new_v4(),
            name: name.into(),
            description: String::new(),
            account_id: uuid::Uuid::nil(),
            instance_id: uuid::Uuid::nil(),
            instance: "vm".into(),
            parent_id: parent,
            current,
            state: PointState::Ready,
            memory: name == "b",
            memory_save: None,
            consistency: "filesystem".into(),
            frozen_ms: Some(40),
            volume_ids: vec![],
            size_bytes: Some(1 << 20),
            vm_state_bytes: None,
            error: None,
            policy_id: None,
            expires_at: None,
            created_at: at,
            protected: false,
        };
        let a = mk("a", None, false);
        let b = mk("b", Some(a.id), false);
        let c = mk("c", Some(a.id), true);
        let tree = point_tree("vm", &[a, b, c]);
        let want = concat!(
            "vm\n",
            "└─ a  2023-11-14 22:13:20 UTC  disk, filesystem  holds 1M\n",
            "   ├─ b  2023-11-14 22:13:20 UTC  memory  holds 1M\n",
            "   └─ c  2023-11-14 22:13:20 UTC  disk, filesystem  holds 1M  <- you are here\n",
        );
        assert_eq!(tree, want);
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "SIZE"],
            &[
                vec!["db".into(), "10G".into()],
                vec!["logs-01".into(), "1G".into()],
            ],
        );
        assert_eq!(t, "NAME     SIZE\ndb       10G\nlogs-01  1G\n");
    }
}
