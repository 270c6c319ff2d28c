//! `cutover serve`'s watcher under real deployments: no work while idle,
//! permission errors, two files for one plugin, WAT or binary by content,
//! the directory replaced (including the Kubernetes ConfigMap atomic
//! writer's layout), files rewritten without pause, half-written files.

use crate::common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{math_version, write_atomic, Options, Server, MATH_V1};
use serde_json::json;

fn mul3(server: &Server) -> serde_json::Value {
    let (status, body) = server.call("math.mul3", r#"{"args": [[1]]}"#);
    assert_eq!(status, 200, "{body}");
    body
}

fn binary_of(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid WAT")
}

#[test]
fn an_idle_server_reads_no_file() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    assert_eq!(mul3(&server)["generation"], 1);
    let reads = server.metric("cutover_plugin_file_reads_total").expect("reads metric");
    // Observe ten debounce periods of idleness: reading a file must not
    // schedule another read (it did, through inotify's open/access events).
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(server.metric("cutover_plugin_file_reads_total"), Some(reads), "{}", server.log());

    // A real change is read (once per change), then quiet again.
    write_atomic(&server.path("math.wat"), &math_version(1));
    server.wait_generation("math", 2);
    let reads = server.metric("cutover_plugin_file_reads_total").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(server.metric("cutover_plugin_file_reads_total"), Some(reads));
}

#[test]
fn an_unreadable_file_or_directory_keeps_the_old_generation_serving() {
    // A symlink loop (ELOOP) renamed over the plugin: an error, not a deletion.
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    let link = server.path("tmp-link");
    std::os::unix::fs::symlink("math.wat", &link).unwrap();
    std::fs::rename(&link, server.path("math.wat")).unwrap();
    server.wait_for("the error recorded", |s| s.plugin("math").is_some_and(|p| p["last_error"].is_string()));
    assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
    write_atomic(&server.path("math.wat"), &math_version(1));
    // The listing is not one atomic snapshot: the new generation may show a
    // moment before the old error is cleared.
    server.wait_for("generation 2, the error cleared", |s| {
        s.plugin("math").is_some_and(|p| p["generation"] == 2 && p["last_error"].is_null())
    });
}

#[test]
fn chmod_000_keeps_the_old_generation_serving() {
    // Root ignores permission bits: run the server as `nobody` then.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("math.wat"), MATH_V1).unwrap();
    let uid = common::is_root().then_some(65534);
    let mut binary = None;
    if uid.is_some() {
        // `nobody` must reach the directory and the binary (copied next to
        // it: the build directory may not be traversable by others).
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = tmp.path().join("cutover");
        std::fs::copy(common::binary(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        binary = Some(copy);
    }
    let server = Server::start_at(dir.clone(), Some(tmp), &[], Options { uid, binary, ..Options::default() });
    let set_mode = |path: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };

    // The file.
    set_mode(&server.path("math.wat"), 0o000);
    server.wait_for("the file's error", |s| {
        s.plugin("math").is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("ermission denied")))
    });
    assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
    set_mode(&server.path("math.wat"), 0o644);
    server.wait_for("the error cleared", |s| s.plugin("math").is_some_and(|p| p["last_error"].is_null()));
    assert_eq!(server.plugin("math").unwrap()["generation"], 1, "same content: no reload");

    // The directory.
    set_mode(&dir, 0o000);
    server.wait_for("the directory's error", |s| {
        s.plugin("math").is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("ermission denied")))
    });
    assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
    set_mode(&dir, 0o755);
    server.wait_for("the error cleared", |s| s.plugin("math").is_some_and(|p| p["last_error"].is_null()));
    assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
}

#[test]
fn two_files_for_one_plugin_are_a_conflict_and_content_decides_the_format() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    std::fs::write(server.path("math.wasm"), binary_of(&math_version(2))).unwrap();
    server.wait_for("the conflict reported", |s| {
        s.plugin("math").is_some_and(|p| {
            p["last_error"].as_str().is_some_and(|e| e.contains("math.wat") && e.contains("math.wasm"))
        })
    });
    // Touching either file reloads nothing while the conflict lasts.
    write_atomic(&server.path("math.wat"), &math_version(3));
    std::fs::write(server.path("math.wasm"), binary_of(&math_version(4))).unwrap();
    let reads = server.metric("cutover_plugin_file_reads_total").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.metric("cutover_plugin_file_reads_total"), Some(reads));
    for _ in 0..5 {
        assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
    }

    // Resolved: the remaining (binary) file loads.
    std::fs::remove_file(server.path("math.wat")).unwrap();
    server.wait_reloaded("math", 2);
    assert_eq!(mul3(&server), json!({"result": [4_000_003], "generation": 2}));
    let math = server.plugin("math").unwrap();
    assert!(math["last_error"].is_null(), "{math}");
    assert_eq!(math["format"], "wasm");

    // Text in a `.wasm` file, binary in a `.wat` file: told by content.
    std::fs::write(server.path("text.wasm"), math_version(5)).unwrap();
    std::fs::write(server.path("bin.wat"), binary_of(&math_version(6))).unwrap();
    server.wait_generation("text", 1);
    server.wait_generation("bin", 1);
    assert_eq!(server.plugin("text").unwrap()["format"], "wat");
    assert_eq!(server.plugin("bin").unwrap()["format"], "wasm");
    assert_eq!(server.call("text.mul3", r#"{"args": [[1]]}"#).1["result"], json!([5_000_003]));
    assert_eq!(server.call("bin.mul3", r#"{"args": [[1]]}"#).1["result"], json!([6_000_003]));
}

/// A server over `<tmp>/plugins`, so the directory itself can be replaced.
fn server_in_subdir(files: &[(&str, &str)]) -> (Server, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_owned();
    let dir = base.join("plugins");
    std::fs::create_dir(&dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    (Server::start_at(dir, Some(tmp), &[], Options::default()), base)
}

#[test]
fn replacing_the_directory_keeps_hot_reload_working() {
    let (server, base) = server_in_subdir(&[("math.wat", MATH_V1)]);
    let dir = base.join("plugins");

    // rm -rf + mkdir.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("math.wat"), math_version(1)).unwrap();
    server.wait_for("version 1 after rm -rf + mkdir", |s| {
        s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([1_000_003])
    });

    // A new directory renamed over the old one.
    let staged = base.join("plugins.new");
    std::fs::create_dir(&staged).unwrap();
    std::fs::write(staged.join("math.wat"), math_version(2)).unwrap();
    std::fs::rename(&dir, base.join("plugins.old")).unwrap();
    std::fs::rename(&staged, &dir).unwrap();
    server.wait_for("version 2 after the rename", |s| {
        s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([2_000_003])
    });

    // And it is still watched: an edit in the new directory is picked up.
    write_atomic(&dir.join("math.wat"), &math_version(3));
    server.wait_for("version 3 by an edit", |s| {
        s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([3_000_003])
    });
}

/// One update of a Kubernetes ConfigMap volume, in the order the kubelet's
/// atomic writer does it: a new timestamped directory with the payload, a
/// `..data_tmp` symlink to it renamed over `..data` (the atomic step), the
/// user-visible `<key> -> ..data/<key>` symlinks created if missing, and the
/// old timestamped directory removed.
fn configmap_update(dir: &Path, payload: &[(&str, &str)]) {
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let ts_name = format!("..{}_{:09}", chrono_like(nanos / 1_000_000_000), nanos % 1_000_000_000);
    let ts = dir.join(&ts_name);
    std::fs::create_dir(&ts).unwrap();
    for (key, content) in payload {
        std::fs::write(ts.join(key), content).unwrap();
    }
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&ts_name, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &data).unwrap();
    for (key, _) in payload {
        let visible = dir.join(key);
        if std::fs::symlink_metadata(&visible).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), &visible).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// `YYYY_MM_DD_hh_mm_ss` for `secs` since the epoch (UTC), as the kubelet
/// names its timestamped directories.
fn chrono_like(secs: u128) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[test]
fn a_configmap_volume_is_hot_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    configmap_update(&dir, &[("math.wat", MATH_V1)]);
    let server = Server::start_at(dir.clone(), Some(tmp), &[], Options::default());
    assert_eq!(mul3(&server), json!({"result": [3], "generation": 1}));
    assert!(server.plugins().len() == 1, "only math is a plugin: {:?}", server.plugins());

    for k in 1..=3 {
        configmap_update(&dir, &[("math.wat", &math_version(k)), ("geo.wat", &math_version(10 + k))]);
        server.wait_for(&format!("ConfigMap update {k}"), |s| {
            s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([k * 1_000_000 + 3])
                && s.call("geo.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([(10 + k) * 1_000_000 + 3])
        });
        assert!(server.plugin("math").unwrap()["last_error"].is_null());
    }
    assert_eq!(server.plugin("math").unwrap()["generation"], 4);
}

#[test]
fn a_file_rewritten_without_pause_is_loaded_after_the_maximum_wait() {
    let server = Server::start(&[("math.wat", MATH_V1)], &["--debounce-ms", "300", "--debounce-max-ms", "800"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (std::sync::Arc::clone(&stop), server.path("math.wat"));
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut k = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < common::DEADLINE {
                std::fs::write(&path, math_version(k)).unwrap();
                k = k % 50 + 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    server.wait_for("a reload while the file keeps changing", |s| {
        s.plugin("math").is_some_and(|p| p["generation"].as_u64() >= Some(2))
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap(), "the writer was still writing when the reload happened");
}

#[test]
fn a_file_copied_in_small_writes_leaves_no_error_once_complete() {
    let server = Server::start(&[("math.wat", MATH_V1)], &[]);
    // A large valid module, written the way `cp` does: many small writes.
    let padding: String = (0..20_000).map(|i| format!(";; padding line {i} of a large module\n")).collect();
    for k in 1..=3 {
        let content = format!("{padding}{}", math_version(k));
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(server.path("math.wat")).unwrap();
            for chunk in content.as_bytes().chunks(4096) {
                file.write_all(chunk).unwrap();
            }
        }
        server.wait_for(&format!("version {k}"), |s| {
            s.call("math.mul3", r#"{"args": [[1]]}"#).1["result"] == json!([k * 1_000_000 + 3])
        });
        let math = server.plugin("math").unwrap();
        assert!(math["last_error"].is_null(), "{math}");
    }
}
