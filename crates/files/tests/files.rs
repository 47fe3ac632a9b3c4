//! The file mechanisms against real FIFOs, device nodes, symlinks, owners and
//! concurrent updaters, in temporary directories.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use perimeter_files::{
    FileError, MAX_CONFIG_BYTES, lock_for_update, read_bytes, read_text, write_atomic,
};
use perimeter_testlab::{Requirement, require};

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

#[test]
fn a_fifo_is_refused_at_once_not_read_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("approvals.toml");
    mkfifo(&fifo);
    let started = Instant::now();
    let err = read_text(&fifo, "approvals", MAX_CONFIG_BYTES).expect_err("a FIFO is refused");
    assert!(started.elapsed() < Duration::from_secs(5), "open blocked");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a FIFO (named pipe), not a regular file",
            fifo.display()
        )
    );
}

#[test]
fn dev_zero_and_directories_are_refused() {
    let err = read_bytes(Path::new("/dev/zero"), "a targets file", MAX_CONFIG_BYTES)
        .expect_err("a device is refused");
    assert_eq!(
        err.to_string(),
        "/dev/zero: is a character device, not a regular file"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let err = read_bytes(dir.path(), "a targets file", MAX_CONFIG_BYTES).expect_err("dir");
    assert!(
        err.to_string()
            .ends_with("is a directory, not a regular file"),
        "{err}"
    );
}

#[test]
fn a_file_over_the_cap_is_refused_with_what_it_was_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.toml");
    fs::write(&path, vec![b'#'; 4097]).expect("write");
    let err = read_text(&path, "the environments file", 4096).expect_err("too large");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is larger than the 4 KiB allowed for the environments file",
            path.display()
        )
    );
    fs::write(&path, vec![b'#'; 4096]).expect("write");
    assert_eq!(read_text(&path, "x", 4096).expect("at the cap").len(), 4096);
}

#[test]
fn text_that_is_not_utf8_names_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("approvals.toml");
    fs::write(&path, b"version = 1\nreason = \"caf\xe9\"\n").expect("write");
    let err = read_text(&path, "approvals", MAX_CONFIG_BYTES).expect_err("latin-1");
    assert!(
        matches!(
            err,
            FileError::NotUtf8 {
                line: 2,
                column: 14,
                byte: 0xe9,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}:2:14: not UTF-8 text (byte 0xe9)", path.display())
    );
}

#[test]
fn a_missing_file_says_so() {
    let err = read_text(Path::new("/nonexistent/perimeter.toml"), "x", 10).expect_err("missing");
    assert!(err.is_not_found());
}

#[test]
fn writing_through_a_symlink_updates_its_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    fs::create_dir(&repo).expect("mkdir");
    let target = repo.join("approvals.toml");
    fs::write(&target, "old\n").expect("write");
    let link = dir.path().join("perimeter-approvals.toml");
    symlink("repo/approvals.toml", &link).expect("symlink");

    write_atomic(&link, b"new\n", 0o644).expect("write through");

    assert!(
        fs::symlink_metadata(&link)
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&target).expect("read"), "new\n");
    // No temporary file is left beside either.
    let leftovers: Vec<_> = fs::read_dir(&repo)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, vec!["approvals.toml"]);
}

#[test]
fn a_dangling_symlink_is_written_through_and_loops_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("out.xml");
    symlink("real.xml", &link).expect("symlink");
    write_atomic(&link, b"<x/>", 0o644).expect("write");
    assert_eq!(
        fs::read(dir.path().join("real.xml")).expect("read"),
        b"<x/>"
    );

    let a = dir.path().join("a");
    let b = dir.path().join("b");
    symlink(&b, &a).expect("symlink");
    symlink(&a, &b).expect("symlink");
    let err = write_atomic(&a, b"x", 0o644).expect_err("loop");
    assert!(
        err.to_string()
            .ends_with("too many levels of symbolic links"),
        "{err}"
    );
}

#[test]
fn a_device_node_is_never_replaced() {
    if !require(Requirement::Root) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let null = dir.path().join("null");
    // The same device as /dev/null (1, 3), made inside the temp dir.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &null,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    let err = write_atomic(&null, b"scan results", 0o644).expect_err("a device is refused");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a character device, not a regular file",
            null.display()
        )
    );
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(&null)
                .expect("lstat")
                .file_type()
                .is_char_device()
        );
    }
    // Nor through a symlink to it.
    let link = dir.path().join("out.xml");
    symlink(&null, &link).expect("symlink");
    assert!(write_atomic(&link, b"x", 0o644).is_err());
}

#[test]
fn owner_group_and_mode_are_kept() {
    if !require(Requirement::Root) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("approvals.toml");
    fs::write(&path, "old").expect("write");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");

    write_atomic(&path, b"new", 0o644).expect("write");

    let meta = fs::metadata(&path).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65534, 65534, 0o640)
    );
    assert_eq!(fs::read(&path).expect("read"), b"new");
}

#[test]
fn a_new_file_gets_the_asked_mode_and_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new.json");
    write_atomic(&path, b"{}", 0o600).expect("write");
    assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
    let err = write_atomic(&dir.path().join("typo/dir/x.json"), b"{}", 0o644)
        .expect_err("no such directory");
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn concurrent_updates_take_turns_and_none_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Arc::new(dir.path().join("counter"));
    fs::write(&*path, "0").expect("write");
    let n_workers = 8;
    let barrier = Arc::new(Barrier::new(n_workers));
    let workers: Vec<_> = (0..n_workers)
        .map(|_| {
            let path = Arc::clone(&path);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..20 {
                    // Each lock opens its own file description, so threads
                    // contend exactly as processes do.
                    let lock = lock_for_update(&path).expect("lock");
                    let value: u32 = fs::read_to_string(&lock.target)
                        .expect("read")
                        .trim()
                        .parse()
                        .expect("number");
                    write_atomic(&lock.target, (value + 1).to_string().as_bytes(), 0o644)
                        .expect("write");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    assert_eq!(fs::read_to_string(&*path).expect("read"), "160");
}

#[test]
fn creating_a_new_file_concurrently_also_takes_turns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Arc::new(dir.path().join("new-approvals.toml"));
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|idx| {
            let path = Arc::clone(&path);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let lock = lock_for_update(&path).expect("lock");
                let mut text = fs::read_to_string(&lock.target).unwrap_or_default();
                text.push_str(&format!("entry {idx}\n"));
                write_atomic(&lock.target, text.as_bytes(), 0o644).expect("write");
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let text = fs::read_to_string(&*path).expect("read");
    assert_eq!(text.lines().count(), 4, "{text}");
}
