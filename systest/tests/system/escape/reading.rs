//! Escape attempts: what the jail can read.

use super::*;

/// A script that returns the errno of opening (or listing) each path, or 0 if it worked.
fn probe_paths(paths: &[(&str, &str)]) -> String {
    let table: Vec<String> = paths
        .iter()
        .map(|(name, path)| format!("({name:?}, {path:?})"))
        .collect();
    py(&format!(
        r#"
        import os

        def main():
            seen = {{}}
            for name, path in [{}]:
                try:
                    if os.path.isdir(path) or path.endswith("/"):
                        os.listdir(path)
                    else:
                        open(path, "rb").read(1)
                    seen[name] = 0
                except OSError as e:
                    seen[name] = e.errno
            return seen
        "#,
        table.join(", ")
    ))
}

#[tokio::test]
async fn etc_shadow_and_the_rest_of_etc_do_not_exist() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("shadow", "/etc/shadow"),
            ("passwd", "/etc/passwd"),
            ("etc", "/etc/"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"shadow": ENOENT, "passwd": ENOENT, "etc": ENOENT}),
    );
}

#[tokio::test]
async fn root_and_home_directories_do_not_exist() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("root", "/root/"),
            ("bashrc", "/root/.bashrc"),
            ("home", "/home/"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"root": ENOENT, "bashrc": ENOENT, "home": ENOENT}),
    );
}

#[tokio::test]
async fn the_jobs_database_is_not_reachable() {
    let sandbox = sandbox().await;
    let file = sandbox
        .app
        .database_url
        .strip_prefix("sqlite://")
        .expect("a SQLite URL")
        .to_owned();
    let dir = format!(
        "{}/",
        std::path::Path::new(&file)
            .parent()
            .expect("a directory")
            .display()
    );
    assert!(std::path::Path::new(&file).exists(), "{file}");
    let job = sandbox
        .contain(&probe_paths(&[("file", &file), ("dir", &dir)]))
        .await;
    assert_result(&job, &json!({"file": ENOENT, "dir": ENOENT}));
}

#[tokio::test]
async fn proc_is_absent_so_no_process_environment_can_be_read() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import glob

            def main():
                seen = {"others": glob.glob("/proc/*/environ")}
                for name, path in [("pid1", "/proc/1/environ"), ("self", "/proc/self/environ")]:
                    try:
                        open(path, "rb").read()
                        seen[name] = 0
                    except OSError as e:
                        seen[name] = e.errno
                return seen
        "#))
        .await;
    assert_result(&job, &json!({"others": [], "pid1": ENOENT, "self": ENOENT}));
}

#[tokio::test]
async fn the_worker_binary_and_the_service_config_are_not_reachable() {
    let sandbox = sandbox().await;
    let bin_dir = crate::app::bin_dir();
    let worker = bin_dir.join("worker").display().to_string();
    let api = bin_dir.join("api").display().to_string();
    let config = repo_root().join("nsjail.cfg").display().to_string();
    assert!(std::path::Path::new(&worker).exists(), "{worker}");
    let job = sandbox
        .contain(&probe_paths(&[
            ("worker", &worker),
            ("api", &api),
            ("config", &config),
            ("nsjail", "/opt/runbox/bin/nsjail"),
        ]))
        .await;
    assert_result(
        &job,
        &json!({"worker": ENOENT, "api": ENOENT, "config": ENOENT, "nsjail": ENOENT}),
    );
}

#[tokio::test]
async fn the_jail_holds_only_the_interpreter_its_libraries_and_the_job() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                return {d: sorted(os.listdir(d)) for d in ["/", "/usr", "/usr/bin", "/opt", "/opt/runbox", "/job"]}
        "#))
        .await;
    assert_result(
        &job,
        &json!({
            "/": ["dev", "job", "lib64", "opt", "tmp", "usr"],
            "/usr": ["bin", "lib", "share"],
            "/usr/bin": ["python3", "python3.11"],
            "/opt": ["runbox"],
            "/opt/runbox": ["python"],
            "/job": ["harness.py", "script.py"],
        }),
    );
}

#[tokio::test]
async fn dev_holds_only_null_zero_random_and_urandom() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    return sorted(os.listdir('/dev'))\n")
        .await;
    assert_result(&job, &json!(["null", "random", "urandom", "zero"]));
}

#[tokio::test]
async fn sysfs_and_the_cgroup_tree_are_absent() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&probe_paths(&[
            ("sys", "/sys/"),
            ("cgroup", "/sys/fs/cgroup/"),
        ]))
        .await;
    assert_result(&job, &json!({"sys": ENOENT, "cgroup": ENOENT}));
}

#[tokio::test]
async fn the_environment_carries_nothing_of_the_worker() {
    let sandbox = sandbox_with(vec![("RUNBOX_TEST_SECRET", "hunter2".to_owned())]).await;
    let job = sandbox
        .contain("import os\n\ndef main():\n    return dict(os.environ)\n")
        .await;
    assert_result(
        &job,
        &json!({
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }),
    );
}

#[tokio::test]
async fn only_stdio_and_the_result_pipe_are_inherited() {
    let sandbox = sandbox().await;
    let job = sandbox
        .contain(&py(r#"
            import os

            def main():
                open_fds = []
                for fd in range(1024):
                    try:
                        os.fstat(fd)
                        open_fds.append(fd)
                    except OSError:
                        pass
                return open_fds
        "#))
        .await;
    assert_result(&job, &json!([0, 1, 2, 3]));
}
