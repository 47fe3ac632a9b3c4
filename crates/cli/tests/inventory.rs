//! `perimeter inventory`, `inventory export` and `inventory diff` end to end:
//! the real binary on the fixture dpkg database and tree (`--root`), on
//! fixture manifests, on a root with a package installed by a real `rpm
//! --root`, and on this host with a process started from an executable no
//! package owns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{code, run, stderr, stdout};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../inventory/tests/fixtures")
}

fn fixture_root() -> String {
    fixtures().join("root").display().to_string()
}

fn manifest(name: &str) -> String {
    fixtures()
        .join("manifests")
        .join(name)
        .display()
        .to_string()
}

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status,
            stdout(output),
            stderr(output)
        )
    })
}

/// (rule, severity, subject) of every finding, in report order.
fn findings(doc: &Value) -> Vec<(String, String, String)> {
    doc["findings"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["rule"].as_str().unwrap_or_default().to_owned(),
                        f["severity"].as_str().unwrap_or_default().to_owned(),
                        f["subject"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn triple(rule: &str, severity: &str, subject: &str) -> (String, String, String) {
    (rule.to_owned(), severity.to_owned(), subject.to_owned())
}

#[test]
fn fixture_findings_with_verify() {
    let root = fixture_root();
    let output = run(
        None,
        &["inventory", "--root", &root, "--verify", "--format", "json"],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc = json(&output);
    assert_eq!(doc["schema"], "perimeter.inventory/1");
    assert_eq!(doc["host"]["hostname"], "fixture-host");
    assert_eq!(doc["host"]["verified"], true);
    assert_eq!(doc["problems"], serde_json::json!([]));
    assert_eq!(
        findings(&doc),
        vec![
            triple("pkg.modified-file", "high", "/usr/bin/tool"),
            triple("pkg.unowned-file", "medium", "/usr/sbin/dropped"),
            triple(
                "pkg.unowned-unit",
                "medium",
                "/usr/lib/systemd/system/hello.service.d/override.conf"
            ),
            triple("pkg.modified-file", "low", "/usr/share/doc/tool/README"),
            triple("pkg.modified-file", "low", "/usr/share/doc/tool/examples"),
            triple("pkg.unowned-file", "low", "/opt/app"),
            triple("pkg.unowned-file", "low", "/usr/local/bin/custom"),
            triple(
                "pkg.unowned-unit",
                "low",
                "/etc/systemd/system/miner.service"
            ),
            triple("pkg.modified-conffile", "info", "/etc/hello.conf"),
        ]
    );
    assert_eq!(doc["summary"]["packages"], 2);
    assert_eq!(doc["summary"]["packages_without_origin"], 1);
    assert_eq!(doc["summary"]["unowned_files"], 4);
    assert_eq!(doc["summary"]["unowned_units"], 2);
    assert_eq!(doc["summary"]["files_modified"], 3);
    assert_eq!(doc["packages"][0]["origin"], "Example fixture/main");
    assert_eq!(doc["unowned_files"][1]["links"][0], "/usr/local/bin/app");
    // Files are not hashed for the report, only for the manifest.
    assert_eq!(doc["unowned_files"][0]["file"]["sha256"], Value::Null);
}

/// `PERIMETER_MD5` forces a checksum backend: every one this CPU runs
/// reaches the same verdicts, and the document says which ran; a name it does
/// not know, or a backend this CPU cannot run, is an error.
#[test]
fn md5_backend_forced_by_environment() {
    let root = fixture_root();
    let verify = |backend: &str| {
        Command::new(common::perimeter())
            .args(["inventory", "--root", &root, "--verify", "--format", "json"])
            .env("PERIMETER_MD5", backend)
            .env_remove("PERIMETER_APPROVALS")
            .env_remove("PERIMETER_DB")
            .stdin(Stdio::null())
            .output()
            .expect("perimeter runs")
    };
    let auto = json(&verify("auto"));
    let calibration = auto["stats"]["checksum_calibration"].clone();
    let mut ran = vec!["portable".to_owned()];
    for measured in calibration.as_array().into_iter().flatten() {
        ran.push(measured[0].as_str().unwrap_or_default().to_owned());
    }
    for backend in ["portable", "avx2", "avx512"] {
        let output = verify(backend);
        let runs_here = ran.iter().any(|name| name.starts_with(backend))
            || auto["stats"]["checksum_backend"]
                .as_str()
                .is_some_and(|name| name.starts_with(backend));
        if !runs_here {
            assert_eq!(code(&output), 2, "{backend}: {}", stderr(&output));
            assert!(
                stderr(&output).contains("does not run"),
                "{}",
                stderr(&output)
            );
            continue;
        }
        assert_eq!(code(&output), 0, "{backend}: {}", stderr(&output));
        let doc = json(&output);
        assert!(
            doc["stats"]["checksum_backend"]
                .as_str()
                .is_some_and(|name| name.starts_with(backend)),
            "{backend}: {}",
            doc["stats"]
        );
        assert_eq!(doc["stats"]["checksum_calibration"], serde_json::json!([]));
        assert_eq!(findings(&doc), findings(&auto), "{backend}");
    }
    let output = verify("sse9");
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("PERIMETER_MD5=sse9: not one of auto, avx512, avx2, portable"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn fixture_without_verify_and_fail_on() {
    let root = fixture_root();
    let output = run(None, &["inventory", "--root", &root, "--format", "json"]);
    assert_eq!(code(&output), 0);
    let doc = json(&output);
    assert_eq!(doc["modified_files"], Value::Null);
    let rules: Vec<String> = findings(&doc)
        .into_iter()
        .map(|(rule, _, _)| rule)
        .collect();
    assert!(!rules.iter().any(|r| r == "pkg.modified-file"), "{rules:?}");
    assert!(rules.iter().any(|r| r == "pkg.modified-conffile"));

    // The worst finding without --verify is medium.
    let gate = |threshold: &str| {
        code(&run(
            None,
            &["inventory", "--root", &root, "--fail-on", threshold],
        ))
    };
    assert_eq!(gate("medium"), 1);
    assert_eq!(gate("high"), 0);
}

#[test]
fn human_report_names_each_section() {
    let root = fixture_root();
    let output = run(None, &["inventory", "--root", &root, "--verify"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    for needle in [
        "perimeter inventory of fixture-host",
        "Packages: 2 installed (1 Example fixture/main)",
        "1 in no configured repository at their installed version: tool 1.0-1",
        "Executables no package owns: 4",
        "/opt/app/bin/run (via /usr/local/bin/app)",
        "systemd units no package ships: 2 (1 masked, 2 enablement links made by systemctl enable)",
        "Conffiles changed from what their package shipped: 1 of 2 checked",
        "Package files that no longer match their md5sums: 3 of 5 checked",
        "pkg.modified-file",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn export_writes_a_manifest_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("fixture.manifest.json");
    let out_arg = out.display().to_string();
    let root = fixture_root();
    let output = run(
        None,
        &["inventory", "export", "--root", &root, "--output", &out_arg],
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), "", "the manifest goes to the file");
    let text = std::fs::read_to_string(&out).expect("manifest written");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["schema"], "perimeter.manifest/1");
    assert_eq!(doc["hostname"], "fixture-host");
    let custom = doc["unowned_files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == "/usr/local/bin/custom"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        custom["file"]["sha256"],
        "d3d3248485c1647c78364c46e2f5932e689e7d0e6e1d9159617f3df098db5b8d"
    );
    assert_eq!(custom["file"]["owner"], "root");
    assert!(
        custom.get("pids").is_none(),
        "no pids in a manifest: {custom}"
    );
    assert_eq!(doc["conffiles"][0]["path"], "/etc/hello.conf");
    assert!(doc["conffiles"][0]["file"]["sha256"].is_string());
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["fixture.manifest.json"]);

    // Without --output the manifest goes to stdout, identical but for the time.
    let to_stdout = run(None, &["inventory", "export", "--root", &root]);
    assert_eq!(code(&to_stdout), 0);
    let mut a = json(&to_stdout);
    let mut b = doc;
    a["created_at"] = Value::Null;
    b["created_at"] = Value::Null;
    assert_eq!(a, b);
}

#[test]
fn export_change_export_diff() {
    let copy = tempfile::tempdir().expect("tempdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", fixture_root()))
        .arg(copy.path())
        .status()
        .expect("cp");
    assert!(status.success());
    let root = copy.path().display().to_string();
    let before = copy.path().join("before.json").display().to_string();
    let after = copy.path().join("after.json").display().to_string();
    let export = |out: &str| {
        let output = run(
            None,
            &["inventory", "export", "--root", &root, "--output", out],
        );
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    };
    export(&before);
    std::fs::write(
        copy.path().join("usr/local/bin/custom"),
        b"#!/bin/sh\necho replaced\n",
    )
    .expect("write");
    std::fs::remove_file(copy.path().join("usr/sbin/dropped")).expect("remove");
    export(&after);

    let output = run(
        None,
        &["inventory", "diff", &before, &after, "--format", "json"],
    );
    assert_eq!(code(&output), 1, "changes exit 1: {}", stderr(&output));
    let doc = json(&output);
    assert_eq!(doc["schema"], "perimeter.manifest-diff/1");
    let kinds: Vec<(String, String)> = doc["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["kind"].as_str().unwrap_or_default().to_owned(),
                        c["subject"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        kinds,
        vec![
            (
                "file-changed".to_owned(),
                "/usr/local/bin/custom".to_owned()
            ),
            ("file-removed".to_owned(), "/usr/sbin/dropped".to_owned()),
        ]
    );
    let detail = doc["changes"][0]["details"][0].as_str().unwrap_or_default();
    assert!(detail.starts_with("sha256 d3d3248485c1 -> "), "{detail}");

    // A manifest against itself: no changes, exit 0.
    let same = run(None, &["inventory", "diff", &before, &before]);
    assert_eq!(code(&same), 0);
    assert!(stdout(&same).contains(": 0 changes"), "{}", stdout(&same));
}

#[test]
fn diff_of_fixture_manifests() {
    let (prod, dev) = (manifest("prod.json"), manifest("dev.json"));
    let output = run(
        None,
        &["inventory", "diff", &prod, &dev, "--format", "json"],
    );
    assert_eq!(code(&output), 1);
    let doc = json(&output);
    assert_eq!(doc["a"]["hostname"], "prod-1");
    assert_eq!(doc["b"]["hostname"], "dev-1");
    let changes: Vec<(String, String, Value)> = doc["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["kind"].as_str().unwrap_or_default().to_owned(),
                        c["subject"].as_str().unwrap_or_default().to_owned(),
                        c["details"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<(String, String, Value)> = [
        ("package-added", "nodejs:amd64", Value::Null),
        ("package-changed", "openssl:amd64", Value::Null),
        ("package-removed", "redis-server:amd64", Value::Null),
        (
            "file-removed",
            "/etc/systemd/system/backup.timer",
            Value::Null,
        ),
        (
            "file-removed",
            "/etc/systemd/system/timers.target.wants/backup.timer",
            Value::Null,
        ),
        ("file-added", "/opt/tool/bin/x", Value::Null),
        (
            "file-changed",
            "/usr/local/bin/backup",
            serde_json::json!(["sha256 111111111111 -> 222222222222", "mode 0755 -> 0775"]),
        ),
    ]
    .into_iter()
    .map(|(k, s, d)| (k.to_owned(), s.to_owned(), d))
    .collect();
    // The conffile with the same content and the deploy hook owned by the
    // same account name under another uid are not changes.
    assert_eq!(changes, expected);
    assert_eq!(doc["changes"][1]["before"], "3.0.15-1~deb12u1");
    assert_eq!(doc["changes"][1]["after"], "3.0.16-1~deb12u1");
    assert_eq!(doc["summary"]["file-removed"], 2);

    let human = run(None, &["inventory", "diff", &prod, &dev]);
    assert_eq!(code(&human), 1);
    let text = stdout(&human);
    assert!(text.contains("-> "), "{text}");
    assert!(text.contains("7 changes"), "{text}");
    assert!(
        text.contains("3.0.15-1~deb12u1 -> 3.0.16-1~deb12u1"),
        "{text}"
    );
}

#[test]
fn bad_manifests_exit_2_naming_the_file() {
    let prod = manifest("prod.json");
    let cases = [
        (
            manifest("newer.json"),
            "written by a newer perimeter (schema perimeter.manifest/2); this one reads perimeter.manifest/1",
        ),
        (
            manifest("invalid.json"),
            "invalid perimeter.manifest/1 document: missing field",
        ),
        (manifest("does-not-exist.json"), "cannot read"),
        (
            fixtures().join("root/etc/hostname").display().to_string(),
            "not JSON",
        ),
    ];
    for (bad, needle) in cases {
        let output = run(None, &["inventory", "diff", &prod, &bad]);
        assert_eq!(code(&output), 2, "{bad}");
        let err = stderr(&output);
        assert!(err.contains(&bad), "names the file: {err}");
        assert!(err.contains(needle), "{needle:?} in {err}");
        assert_eq!(stdout(&output), "");
    }
}

#[test]
fn rules_lists_the_pkg_rules() {
    let output = run(None, &["rules"]);
    let text = stdout(&output);
    for rule in [
        "pkg.unowned-file",
        "pkg.unowned-unit",
        "pkg.modified-conffile",
        "pkg.modified-file",
    ] {
        assert!(text.contains(rule), "{rule} in {text}");
    }
}

#[test]
fn bad_root_is_an_error() {
    let output = run(
        None,
        &["inventory", "--root", "/nonexistent/perimeter-root"],
    );
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("/nonexistent/perimeter-root: not a directory"));
}

#[test]
fn rpm_root_lists_its_package_and_its_unowned_executable() {
    if !perimeter_testlab::require_rpm() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("root");
    perimeter_testlab::install_rpm_fixture(work.path(), &root, "/var/lib/rpm")
        .expect("build and install the rpm fixture");
    let unowned = root.join("usr/local/bin/perimeter-rpm-unowned");
    std::fs::create_dir_all(root.join("usr/local/bin")).expect("mkdir");
    std::fs::write(&unowned, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(
        &unowned,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");

    let root = root.display().to_string();
    let output = run(None, &["inventory", "--root", &root, "--format", "json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc = json(&output);
    assert_eq!(doc["problems"], serde_json::json!([]));
    assert_eq!(
        doc["packages"],
        serde_json::json!([{
            "arch": "noarch",
            "manager": "rpm",
            "name": perimeter_testlab::RPM_FIXTURE_PACKAGE,
            "origin": null,
            "status": "installed",
            "version": "1.0-1",
        }])
    );
    // The packaged /usr/bin executable is rpm's, so only the other one is
    // reported.
    let unowned: Vec<&str> = doc["unowned_files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(unowned, vec!["/usr/local/bin/perimeter-rpm-unowned"]);
}

/// A process started from a copy of `sleep` in a temporary directory: no
/// package owns the copy, and it runs. Killed on drop.
struct UnownedSleeper {
    child: Child,
    _dir: tempfile::TempDir,
    exe: PathBuf,
}

impl UnownedSleeper {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("perimeter-test-sleeper");
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
        let child = Command::new(&exe)
            .arg("300")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the copy");
        UnownedSleeper {
            child,
            _dir: dir,
            exe,
        }
    }
}

impl Drop for UnownedSleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn live_process_from_an_unowned_executable() {
    let sleeper = UnownedSleeper::start();
    let exe = std::fs::canonicalize(&sleeper.exe).expect("exists");
    let exe = exe.display().to_string();
    let pid = sleeper.child.id();
    let output = run(None, &["inventory", "--no-origins", "--format", "json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc = json(&output);
    let process = doc["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not among {:#}", doc["processes"]));
    assert_eq!(process["exe"], exe.as_str());
    assert_eq!(process["ownership"], "unpackaged");
    let file = doc["unowned_files"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["path"] == exe.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(file["area"], "elsewhere");
    assert_eq!(file["pids"], serde_json::json!([pid]));
    // Found only because it runs, and running: medium raised to high.
    assert!(
        findings(&doc).contains(&triple("pkg.unowned-file", "high", &exe)),
        "{:#}",
        doc["findings"]
    );
    // The packaged sleep itself is nobody's finding.
    assert!(!findings(&doc).iter().any(|(_, _, s)| s == "/usr/bin/sleep"));
}

/// A process executed from a memfd (what runc does on purpose, and fileless
/// malware too) is listed with ownership unknown and the reason, and makes no
/// unowned-file finding (there is no file).
#[test]
fn live_process_from_a_memfd() {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    let memfd =
        nix::sys::memfd::memfd_create("perimeter-test-memfd", nix::sys::memfd::MFdFlags::empty())
            .expect("memfd_create");
    let mut file = std::fs::File::from(memfd);
    file.write_all(&std::fs::read("/bin/sleep").expect("read sleep"))
        .expect("fill the memfd");
    let child = Command::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .arg("300")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("exec the memfd");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    drop(file);
    let pid = child.0.id();

    let output = run(None, &["inventory", "--no-origins", "--format", "json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let doc = json(&output);
    let process = doc["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"] == pid))
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} not among {:#}", doc["processes"]));
    assert_eq!(process["exe"], "/memfd:perimeter-test-memfd");
    assert_eq!(process["ownership"], "unknown");
    assert_eq!(
        process["reason"],
        "runs from an anonymous memory file (memfd), not from a file on disk"
    );
    assert!(
        !findings(&doc)
            .iter()
            .any(|(_, _, subject)| subject.contains("memfd")),
        "{:#}",
        doc["findings"]
    );
}
