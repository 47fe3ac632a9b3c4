//! Which process writes a scan, and whether it still lives: a scan with no
//! finish time whose writer is gone was interrupted, not running.
//!
//! A writer is named `BOOT_ID/PID/START_TIME`: the pid with its start time
//! (field 22 of /proc/PID/stat, clock ticks since boot) names one process of
//! one boot, since a pid is reused but never with the same start time, and
//! the boot id tells a process of an earlier boot (whose pid may be alive
//! again after a reboot) from one of this boot.

use std::path::Path;

/// This process's name as a writer, or `None` when /proc cannot say (then the
/// scan's writer is unknown and, once it stops being ours, it counts as
/// interrupted unless finished).
pub(crate) fn current_writer() -> Option<String> {
    let boot_id = boot_id(Path::new("/proc/sys/kernel/random/boot_id"))?;
    let pid = std::process::id();
    let start = start_time(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(format!("{boot_id}/{pid}/{start}"))
}

/// Whether the process named by `writer` is alive on this machine now.
/// `None` when that cannot be told (the name is malformed, or /proc cannot be
/// read); a writer of another boot is dead.
pub(crate) fn writer_alive(writer: &str) -> Option<bool> {
    let mut parts = writer.split('/');
    let (Some(boot), Some(pid), Some(start), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let pid: u32 = pid.parse().ok()?;
    let start: u64 = start.parse().ok()?;
    let this_boot = boot_id(Path::new("/proc/sys/kernel/random/boot_id"))?;
    if boot != this_boot {
        return Some(false);
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => Some(start_time(&stat) == Some(start)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

fn boot_id(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim();
    (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
}

/// Field 22 (start time) of a /proc/PID/stat line. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn start_time(stat: &str) -> Option<u64> {
    let after_comm = stat.get(stat.rfind(')')? + 1..)?;
    // After the name come field 3 (state) onwards: field 22 is the 20th.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (evil) name) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(start_time(stat), Some(987_654));
        assert_eq!(start_time("1 (init) S"), None);
        assert_eq!(start_time("no parenthesis"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let writer = current_writer().expect("/proc is mounted");
        assert_eq!(writer_alive(&writer), Some(true));
        let mut parts: Vec<&str> = writer.split('/').collect();
        let other_start = format!("{}", parts[2].parse::<u64>().expect("number") + 1);
        parts[2] = &other_start;
        assert_eq!(writer_alive(&parts.join("/")), Some(false));
        assert_eq!(writer_alive("another-boot/1/1"), Some(false));
        assert_eq!(writer_alive("garbage"), None);
    }
}
